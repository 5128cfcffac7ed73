/**
 * Start-up under bad flags and failures: everything that can be checked is
 * checked before the kernel is touched, and a start that fails half-way takes
 * back what it created (and only that).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { startDaemon, type DaemonOptions } from '../../src/daemon.js';
import { bpf } from '../../src/datapath/addon.js';
import { BpfMap } from '../../src/datapath/bpf-map.js';
import { mapPinPath, pinName } from '../../src/datapath/migrate.js';
import { DEFAULT_MAP_SIZES, MAP_NAT_BE, SOCK_HOOKS, type SockHook } from '../../src/datapath/names.js';
import { service, slice } from '../../src/lab/objects.js';
import { stringify } from 'yaml';
import { checkBpffs, cleanup } from '../../src/datapath/pinned.js';
import { failingSource } from '../helpers/failing-source.js';
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
    healthzAddress: undefined,
    metricsAddress: undefined,
    healthCheckAddress: '',
    ctScanIntervalMs: 0,
    ...over,
  });
  const hooks = () => (Object.keys(SOCK_HOOKS) as SockHook[]).flatMap((h) => bpf.cgroupQuery(cgroup, h));
  /** One good start and stop: the state a restart finds. Returns the hooks it left attached. */
  const startedOnce = async () => {
    const d = await startDaemon(opts());
    await d.controller.whenIdle();
    await d.stop();
    const before = hooks();
    assert.equal(before.length, Object.keys(SOCK_HOOKS).length);
    return before;
  };
  return { pinPath, cgroup, dir, opts, hooks, startedOnce };
}

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
  await s.startedOnce();
  await assert.rejects(startDaemon(s.opts({ source: failingSource })), /source failed to start/);
  assert.ok(existsSync(join(s.pinPath, 'kpr_v4_nat_fe')), 'maps still pinned');
  assert.equal(s.hooks().length, Object.keys(SOCK_HOOKS).length, 'links still attached');
});

test('start-up: a failed upgrade start keeps the older layout pinned (a downgrade reads it) and unpins the new one', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  const svc = [service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }, { ip: '192.0.2.2' }])];
  await writeFile(join(s.dir, 'svc.yaml'), svc.map((o) => stringify(o)).join('---\n'));
  await s.startedOnce();
  // As an older build leaves it: kpr_v4_nat_be pinned under its layout-1 name.
  const current = mapPinPath(s.pinPath, MAP_NAT_BE);
  const older = join(s.pinPath, pinName(MAP_NAT_BE, 1));
  assert.notEqual(current, older);
  await rename(current, older);
  const entries = (path: string) => {
    const m = BpfMap.openPinned(path, MAP_NAT_BE);
    try {
      return m.dump().length;
    } finally {
      m.close();
    }
  };
  const held = entries(older);
  assert.ok(held > 0);

  await assert.rejects(startDaemon(s.opts({ source: failingSource })), /source failed to start/);
  assert.ok(existsSync(older), 'the older layout is still pinned');
  assert.equal(entries(older), held, 'with its entries');
  assert.equal(existsSync(current), false, 'the map this start created is unpinned');
  assert.equal(s.hooks().length, Object.keys(SOCK_HOOKS).length, 'links still attached');

  // A start that goes through migrates and then retires the older layout.
  const again = await startDaemon(s.opts());
  await again.stop();
  assert.ok(existsSync(current));
  assert.equal(existsSync(older), false);
  assert.equal(entries(current), held);
});

test('start-up: a restart whose --cgroup cannot take the hooks leaves the old ones attached', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  const before = await s.startedOnce();
  // On cgroup2, so it passes the filesystem check, but a file: attaching to it fails.
  await assert.rejects(startDaemon(s.opts({ cgroup: join(s.cgroup, 'cgroup.procs') })));
  assert.deepEqual(s.hooks(), before, 'the hooks on the old cgroup are still attached');
});

test('start-up: a failed restart with a moved --cgroup leaves the hooks on the old cgroup; one that goes through moves them', async (t) => {
  if (!requireRoot(t)) return;
  const s = await scene(t);
  const before = await s.startedOnce();
  const moved = await createChildCgroup(`kpr-test-start-${process.pid}-${n++}-moved`);
  t.after(async () => {
    // Links first: they hold the cgroup.
    await cleanup(s.pinPath).catch(() => undefined);
    await removeCgroup(moved);
  });
  const hooksOn = (cg: string) => (Object.keys(SOCK_HOOKS) as SockHook[]).flatMap((h) => bpf.cgroupQuery(cg, h));

  await assert.rejects(startDaemon(s.opts({ cgroup: moved, source: failingSource })), /source failed to start/);
  assert.deepEqual(s.hooks(), before, 'the old cgroup keeps its hooks, with their programs');
  assert.deepEqual(hooksOn(moved), [], 'nothing left on the new one');

  const d = await startDaemon(s.opts({ cgroup: moved }));
  await d.stop();
  assert.deepEqual(s.hooks(), []);
  assert.equal(hooksOn(moved).length, Object.keys(SOCK_HOOKS).length);
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
