import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import pino from 'pino';
import { Controller } from '../../src/controller/controller.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { ObjectStore } from '../../src/controller/store.js';
import { decodeNatFeKey } from '../../src/datapath/codec.js';
import { Metrics } from '../../src/metrics.js';
import { memoryNatMaps } from '../helpers/memmaps.js';
import { createLogger } from '../../src/log.js';
import { ManifestSource } from '../../src/sources/manifest.js';
import { service, slice } from '../../src/lab/objects.js';

const yaml = (...objs: unknown[]) => objs.map((o) => stringify(o)).join('---\n');

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('manifest source: files, multi-document YAML, JSON, List; edits, moves and deletions', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-'));
  const store = new ObjectStore();
  const changes: string[][] = [];
  store.onChange = (keys) => changes.push([...keys].sort());
  const invalid: string[] = [];
  store.onInvalid = (e) => invalid.push(e.object);
  const src = new ManifestSource({ path: dir, log: createLogger('fatal'), pollMs: 100 });
  try {
    await writeFile(join(dir, 'a.yaml'), yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }])));
    await writeFile(join(dir, 'b.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [service('b', { clusterIP: '198.18.0.2' })] }));
    await writeFile(join(dir, 'notes.txt'), 'not a manifest');
    await src.start(store);
    assert.equal(store.isSynced(), true);
    assert.deepEqual(store.serviceKeys().sort(), ['default/a', 'default/b']);
    assert.equal(store.slicesFor('default/a').length, 1);

    // an edit in one file reaches the store as a change to that Service only
    changes.length = 0;
    await writeFile(join(dir, 'a.yaml'), yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }, { ip: '192.0.2.9' }])));
    await until(() => store.slicesFor('default/a')[0]?.endpoints.length === 2, 'edit picked up');
    assert.deepEqual(changes.flat(), ['default/a']);

    // moving an object to another file is not a deletion
    await writeFile(join(dir, 'c.yaml'), yaml(service('b', { clusterIP: '198.18.0.2' })));
    await writeFile(join(dir, 'b.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [] }));
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(store.service('default/b'), 'b survived the move');

    // broken YAML keeps the file's last good contents
    await writeFile(join(dir, 'a.yaml'), 'kind: Service\n  bad: [indent');
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(store.service('default/a'));

    // a malformed object is reported by name and the rest keep working
    await writeFile(join(dir, 'd.yaml'), yaml(service('d', { clusterIP: 'nope' }), service('e', { clusterIP: '198.18.0.5' })));
    await until(() => !!store.service('default/e'), 'e added');
    assert.ok(invalid.includes('Service default/d'));

    // removing a file removes its objects (an atomic rename replaces, not removes)
    await rename(join(dir, 'c.yaml'), join(dir, 'c.yaml.off'));
    await until(() => !store.service('default/b'), 'b removed');
    await rm(join(dir, 'a.yaml'));
    await until(() => !store.service('default/a') && store.slicesFor('default/a').length === 0, 'a removed');
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

function quietLog() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

/** One kpr life over in-memory maps: adopt, read the manifests, sync. */
async function life(maps: ReturnType<typeof memoryNatMaps>, path: string) {
  const { log, lines } = quietLog();
  const store = new ObjectStore();
  const metrics = new Metrics();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const controller = new Controller({ store, reconciler, log, metrics, resyncIntervalMs: 0 });
  controller.start();
  const src = new ManifestSource({
    path,
    log,
    pollMs: 50,
    onParseError: () => metrics.skipped.inc({ kind: 'Document', reason: 'parse-error' }),
    onDuplicate: (id) => metrics.skipped.inc({ kind: id.split(' ')[0] as string, reason: 'duplicate' }),
  });
  await src.start(store);
  const skipped = async (reason: string) =>
    (await metrics.skipped.get()).values.filter((v) => v.labels.reason === reason).reduce((a, v) => a + v.value, 0);
  return { store, controller, src, lines, skipped, stop: async () => (await src.stop(), controller.stop()) };
}

const vips = (maps: ReturnType<typeof memoryNatMaps>) => maps.fe.dump().map(([k]) => decodeNatFeKey(k).addr).sort();

test('a restart with a broken document writes and deletes nothing, reports not synced, and syncs once fixed', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-restart-'));
  const file = join(dir, 'svc.yaml');
  const maps = memoryNatMaps();
  const lives: Array<{ stop: () => Promise<void> }> = [];
  try {
    const good = yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }]), service('b', { clusterIP: '198.18.0.2' }));
    await writeFile(file, good);
    const first = await life(maps, file);
    lives.push(first);
    await first.controller.whenIdle();
    assert.deepEqual(vips(maps), ['198.18.0.1', '198.18.0.2']);
    await first.stop();

    // kpr is down; someone adds a broken document, and drops b
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.1' })) + '---\nkind: Service\n  bad: [indent\n');
    const second = await life(maps, file);
    lives.push(second);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(second.store.isSynced(), false, 'a source that never read cleanly is not synced');
    assert.deepEqual(vips(maps), ['198.18.0.1', '198.18.0.2'], 'nothing adopted was deleted');
    assert.equal(second.controller.status().synced, false);
    assert.equal(second.src.status().healthy, false);
    assert.match(second.src.status().message ?? '', /svc\.yaml/);
    assert.equal(await second.skipped('parse-error'), 1);
    assert.ok(second.lines.some((l) => /cannot parse document 1 of svc\.yaml/.test(String(l.msg))));

    // fixed: now the source is synced, and the full sync removes b
    // written atomically, as an editor or kubectl would: a watch must not see a half-written file
    await writeFile(`${file}.tmp`, yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }])));
    await rename(`${file}.tmp`, file);
    await until(() => second.store.isSynced(), 'synced after the fix');
    await until(() => vips(maps).join() === '198.18.0.1', 'b removed by the first full sync, a kept');
  } finally {
    for (const l of lives) await l.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a broken document does not freeze the rest of its file; garbage and duplicates are counted', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-docs-'));
  const maps = memoryNatMaps();
  let k: Awaited<ReturnType<typeof life>> | undefined;
  try {
    await writeFile(join(dir, 'a.yaml'), yaml(service('a', { clusterIP: '198.18.0.1' }), service('b', { clusterIP: '198.18.0.2' })));
    k = await life(maps, dir);
    await k.controller.whenIdle();
    assert.deepEqual(vips(maps), ['198.18.0.1', '198.18.0.2']);

    // b's document breaks while a's changes: a's edit applies, b is kept
    // atomically: a watch that read a half-written file would see b gone
    await writeFile(join(dir, 'a.yaml.tmp'), yaml(service('a', { clusterIP: '198.18.0.11' })) + '---\nkind: Service\nmetadata: {name: b\n');
    await rename(join(dir, 'a.yaml.tmp'), join(dir, 'a.yaml'));
    await until(() => vips(maps).includes('198.18.0.11'), "a's edit applied");
    assert.deepEqual(vips(maps), ['198.18.0.11', '198.18.0.2']);
    assert.equal(await k.skipped('parse-error'), 1);

    // binary garbage is a parse error, counted, and touches nothing
    await writeFile(join(dir, 'junk.yaml'), Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0a, 0x00]));
    await until(() => k!.lines.some((l) => /junk\.yaml/.test(String(l.msg))), 'garbage logged');
    assert.equal(await k.skipped('parse-error'), 2);
    assert.deepEqual(vips(maps), ['198.18.0.11', '198.18.0.2']);

    // the same Service in two files: logged with both names, counted once
    await writeFile(join(dir, 'b.yaml'), yaml(service('a', { clusterIP: '198.18.0.11' })));
    await until(() => k!.lines.some((l) => /default\/a is defined in a\.yaml and b\.yaml/.test(String(l.msg))), 'duplicate logged');
    assert.equal(await k.skipped('duplicate'), 1);
  } finally {
    await k?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
