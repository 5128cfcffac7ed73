/**
 * The manifest source's watch and its logging of broken manifests (issue
 * 12): a `--manifests FILE` reacts to that file only, and a parse error
 * that repeats is counted every time but logged once.
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { destination, pino } from 'pino';
import { stringify } from 'yaml';
import { ObjectStore } from '../../src/controller/store.js';
import { ManifestSource } from '../../src/sources/manifest.js';
import { service } from '../../src/lab/objects.js';

const yaml = (...objs: unknown[]) => objs.map((o) => stringify(o)).join('---\n');
const BROKEN = '---\nkind: Service\n  bad: [indent\n';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

function capture() {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  return { log, lines, errors: () => lines.filter((l) => l.level >= 50).map((l) => l.msg) };
}

test('--manifests FILE that never parses, logging to a file in its directory: the log does not feed itself', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-watch-'));
  const file = join(dir, 'svc.yaml');
  const logFile = join(dir, 'kpr.log');
  const store = new ObjectStore();
  // kpr's own log, written synchronously beside the manifest, as `kpr run ... 2>> dir/kpr.log` does
  const log = pino({ level: 'info' }, destination({ dest: logFile, sync: true }));
  let failures = 0;
  const src = new ManifestSource({ path: file, log, pollMs: 600_000, onParseError: () => failures++ });
  try {
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.1' })) + BROKEN);
    await src.start(store);
    assert.equal(store.isSynced(), false);
    const lines = async () => (await readFile(logFile, 'utf8')).split('\n').filter(Boolean).length;
    await sleep(1000);
    const settled = await lines();
    assert.ok(settled >= 2, 'the parse error and "not synced" are logged');
    // Before: every log line was a watch event in the directory, a reload, and one more "not synced" line (~74/s).
    await sleep(1000);
    assert.equal(await lines(), settled, 'no log line without a change to the manifest');
    // Other files changing in the directory are not the manifest either.
    for (let i = 0; i < 10; i++) {
      await appendFile(logFile, '');
      await writeFile(join(dir, 'other.yaml'), yaml(service(`o${i}`, { clusterIP: '198.18.0.9' })));
      await sleep(30);
    }
    await sleep(300);
    assert.equal(await lines(), settled);
    assert.equal(store.service('default/o9'), undefined, 'a file beside the named one is not read');
    assert.equal(failures, 1);
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('the same parse error read again is counted but logged once; a new error is logged; recovery is logged', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-watch-'));
  const file = join(dir, 'svc.yaml');
  const store = new ObjectStore();
  const { log, lines, errors } = capture();
  let failures = 0;
  const src = new ManifestSource({ path: dir, log, pollMs: 50, onParseError: () => failures++ });
  const put = async (text: string) => {
    await writeFile(`${file}.tmp`, text);
    await rename(`${file}.tmp`, file);
  };
  try {
    await put(yaml(service('a', { clusterIP: '198.18.0.1' })) + BROKEN);
    await src.start(store);
    assert.equal(failures, 1);
    const parseErrors = () => errors().filter((m) => /cannot parse document 1 of svc\.yaml/.test(m)).length;
    const notSynced = () => errors().filter((m) => /^not synced/.test(m)).length;
    assert.equal(parseErrors(), 1);
    assert.equal(notSynced(), 1);

    // The good document is edited three times; the broken one stays as it is.
    for (const [n, vip] of ['198.18.0.2', '198.18.0.3', '198.18.0.4'].entries()) {
      await put(yaml(service('a', { clusterIP: vip })) + BROKEN);
      await until(() => failures === n + 2, `re-read ${n}`);
    }
    assert.equal(parseErrors(), 1, 'the same error is not logged again');
    assert.equal(notSynced(), 1);

    // A different error is news.
    await put(yaml(service('a', { clusterIP: '198.18.0.4' })) + '---\nkind: Service\nmetadata: {name: b\n');
    await until(() => failures === 5, 'the new error read');
    assert.equal(parseErrors(), 2);

    // Fixed: said once, and the source syncs.
    await put(yaml(service('a', { clusterIP: '198.18.0.4' })));
    await until(() => store.isSynced(), 'synced after the fix');
    assert.equal(lines.filter((l) => /svc\.yaml parses cleanly again/.test(l.msg)).length, 1);
    assert.equal(store.service('default/a')?.clusterIPs[0], '198.18.0.4');
    // ... and a second break of the same kind is logged again.
    await put(yaml(service('a', { clusterIP: '198.18.0.4' })) + BROKEN);
    await until(() => failures === 6, 'broken again');
    assert.equal(parseErrors(), 3);
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('an in-place rewrite of the same size within one clock tick (same mtime and inode) is still read', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-watch-'));
  const file = join(dir, 'svc.yaml');
  const store = new ObjectStore();
  const src = new ManifestSource({ path: file, log: capture().log, pollMs: 600_000 });
  const ip = (key: string) => store.service(key)?.clusterIPs[0];
  try {
    // Every write gets the same whole-second mtime: what two saves within one tick of the file
    // system's coarse clock look like to a stat (whole seconds, so utimes sets it exactly).
    const tick = Math.floor(Date.now() / 1000);
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.1' })));
    await utimes(file, tick, tick);
    await src.start(store);
    assert.equal(ip('default/a'), '198.18.0.1');
    const before = await stat(file);
    // The same length, written into the same inode.
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.2' })));
    await utimes(file, tick, tick);
    const after = await stat(file);
    assert.deepEqual([after.ino, after.size, after.mtimeMs], [before.ino, before.size, before.mtimeMs]);
    // The watch names the file: its read must not be skipped on the stat.
    await until(() => ip('default/a') === '198.18.0.2', 'the watch-triggered read applies the rewrite');
    // A direct reload reads the file whatever the watch has reported yet.
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.3' })));
    await utimes(file, tick, tick);
    await src.reload();
    assert.equal(ip('default/a'), '198.18.0.3');
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
