/**
 * Start-up under bad flags and failures: everything that can be checked is
 * checked before the kernel is touched, and a start that fails half-way takes
 * back what it created (and only that).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { startDaemon, type DaemonOptions } from '../../src/daemon.js';
import * as bpf from '../../src/datapath/addon.js';
import { DEFAULT_MAP_SIZES, SOCK_HOOKS, type SockHook } from '../../src/datapath/layout.js';
import { checkBpffs, cleanup } from '../../src/datapath/loader.js';
import type { Source } from '../../src/sources/source.js';
import { createChildCgroup, removeCgroup } from '../../src/util/cgroup.js';
import { requireRoot } from '../helpers/privileged.js';
import { nodeArgv } from '../../src/lab/exec.js';
import { repoRoot } from '../../src/util/paths.js';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

const log = pino({ level: 'silent' });
let n = 0;

async function scene(t: TestContext) {
  const id = `${process.pid}-${n++}`;
  const pinPath = `/sys/fs/bpf/kpr-test-start-${id}`;
  const cgroup = await createChildCgroup(`kpr-test-start-${id}`);
  const dir = await mkdtemp(join(tmpdir(), `kpr-start-${id}-`));
  await writeFile(join(dir, 'svc.yaml'), '');
  t.after(async () => {
    await cleanup(pinPath).catch(() => undefined);
    await removeCgroup(cgroup);
    await rm(dir, { recursive: true, force: true });
  });
  const opts = (over: Partial<DaemonOptions> = {}): DaemonOptions => ({
    manifests: dir,
    pinPath,
    cgroup,
    connectTimeLb: true,
    sizes: DEFAULT_MAP_SIZES,
    resyncIntervalMs: 0,
    log,
    healthzAddress: '',
    metricsAddress: '',
    healthCheckAddress: '',
    ctScanIntervalMs: 0,
    ...over,
  });
  const hooks = () => (Object.keys(SOCK_HOOKS) as SockHook[]).flatMap((h) => bpf.cgroupQuery(cgroup, h));
  return { pinPath, cgroup, dir, opts, hooks };
}

const failingSource: Source = {
  name: 'broken',
  start: () => Promise.reject(new Error('source failed to start')),
  stop: () => Promise.resolve(),
};

test('start-up: bad flags are refused before any BPF work, with a message to act on', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);

  await assert.rejects(startDaemon(s.opts({ cgroup: `${s.cgroup}-missing` })), /--cgroup .*-missing: no such directory/);
  assert.equal(existsSync(s.pinPath), false, 'no maps pinned');

  // a directory on tmpfs, as /sys/fs/cgroup is on a hybrid host
  await assert.rejects(startDaemon(s.opts({ cgroup: '/dev/shm' })), /--cgroup \/dev\/shm is not a cgroup v2 directory \(it is on tmpfs.*cgroup v2 is mounted at/);
  assert.equal(existsSync(s.pinPath), false);

  await assert.rejects(startDaemon(s.opts({ manifests: join(s.dir, 'nope.yaml') })), /--manifests .*nope\.yaml: no such file or directory/);
  assert.equal(existsSync(s.pinPath), false);
  assert.deepEqual(s.hooks(), [], 'nothing attached to the cgroup');

  await assert.rejects(startDaemon(s.opts({ devices: ['kpr-nonexistent0'] })), /--devices: no interface named kpr-nonexistent0/);
  assert.equal(existsSync(s.pinPath), false);
});

test('start-up: a failure after attaching rolls back a first start entirely', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  await assert.rejects(startDaemon(s.opts({ source: failingSource })), /source failed to start/);
  assert.equal(existsSync(s.pinPath), false, 'maps unpinned');
  assert.deepEqual(s.hooks(), [], 'links detached');
});

test('start-up: a failed restart leaves the pinned state it found serving', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  const d = await startDaemon(s.opts());
  await d.stop();
  const before = s.hooks();
  assert.equal(before.length, 4);
  await assert.rejects(startDaemon(s.opts({ source: failingSource })), /source failed to start/);
  assert.ok(existsSync(join(s.pinPath, 'kpr_v4_nat_fe')), 'maps still pinned');
  assert.equal(s.hooks().length, 4, 'links still attached');
});

test('start-up: a tc-only run (--connect-time-lb=false) attaches nothing to any cgroup', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  const d = await startDaemon(s.opts({ connectTimeLb: false }));
  try {
    assert.deepEqual(s.hooks(), []);
    assert.equal(existsSync(join(s.pinPath, 'links')), false);
  } finally {
    await d.stop();
  }
});

test('the bpffs check names `ip netns exec` and says to use nsenter', () => {
  assert.throws(() => checkBpffs('/tmp/kpr-not-bpffs', true), /ip netns exec.*nsenter --net=/);
  assert.throws(() => checkBpffs('/tmp/kpr-not-bpffs', false), /mount -t bpf bpf/);
});

test('under `ip netns exec` (which remounts /sys) kpr says to use nsenter --net instead of mounting bpffs', async (t) => {
  if (!requireRoot(t)) return;
  const ns = `kpr-nsx-${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), `kpr-nsx-${process.pid}-`));
  await execFileP('ip', ['netns', 'add', ns]);
  t.after(async () => {
    await execFileP('ip', ['netns', 'del', ns]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  const cli = join(repoRoot(), 'src', 'cli.ts');
  const r = await execFileP('ip', ['netns', 'exec', ns, process.execPath, ...nodeArgv(cli), 'run', '--manifests', dir, '--pin-path', `/sys/fs/bpf/kpr-test-nsx-${process.pid}`, '--connect-time-lb=false', '--healthz-bind-address', '', '--metrics-bind-address', '']).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /ip netns exec.*nsenter --net=/);
});
