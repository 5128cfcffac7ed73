/**
 * A start that fails over a running data path (an upgrade whose new kpr does
 * not come up) puts every hook back as it found it: each cgroup link and tc
 * filter runs the program it ran before, so the older build's maps, which
 * that build (or a downgrade) goes on feeding, are what connections follow.
 * And a flag that cannot work is refused before anything is swapped.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { startDaemon, type DaemonOptions } from '../../src/daemon.js';
import { bpf } from '../../src/datapath/addon.js';
import { BpfMap } from '../../src/datapath/bpf-map.js';
import { decodeNatBeVal, encodeNatBeVal } from '../../src/datapath/codec.js';
import { mapPinPath, pinName } from '../../src/datapath/migrate.js';
import { withPinnedMaps } from '../../src/datapath/pinned.js';
import { DEFAULT_MAP_SIZES, LINKS_DIR, MAP_NAT_BE, PROGS_DIR, TC_HANDLE, TC_PRIORITY } from '../../src/datapath/names.js';
import { nodeArgv } from '../../src/lab/exec.js';
import { service, slice } from '../../src/lab/objects.js';
import { NODE_IP, NODE_IP6, type Pod } from '../../src/lab/topology.js';
import { KPR_NEIGH_PROTO } from '../../src/util/netdev.js';
import { failingSource } from '../helpers/failing-source.js';
import { repoRoot } from '../../src/util/paths.js';
import { Harness } from '../helpers/harness.js';
import { requireRoot } from '../helpers/privileged.js';
import type { StartChildMode } from '../helpers/start-child.js';

const execFileP = promisify(execFile);
const VIP = '198.18.0.10';

function daemonOpts(h: Harness, over: Partial<DaemonOptions> = {}): DaemonOptions {
  return {
    manifests: h.dir,
    pinPath: h.pinPath,
    cgroup: h.cgroup,
    connectTimeLb: true,
    sizes: DEFAULT_MAP_SIZES,
    resyncIntervalMs: 0,
    log: pino({ level: 'silent' }),
    healthzAddress: undefined,
    metricsAddress: undefined,
    healthCheckAddress: '',
    ctScanIntervalMs: 0,
    ...over,
  };
}

/** Program id behind each pin of a pin-path directory (links, or tc programs). */
function pinnedProgIds(dir: string, of: 'link' | 'prog'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of readdirSync(dir).sort()) {
    const fd = bpf.objGet(join(dir, name));
    try {
      out[name] = of === 'link' ? bpf.linkInfo(fd).progId : bpf.progInfo(fd).id;
    } finally {
      bpf.closeFd(fd);
    }
  }
  return out;
}

/** startDaemon (or its preflight) in the node namespace, through test/helpers/start-child.ts. */
async function startInNode(h: Harness, mode: StartChildMode, over: Partial<Omit<DaemonOptions, 'log'>>): Promise<{ ok?: true; error?: string }> {
  const { log: _log, ...opts } = daemonOpts(h, over);
  const script = join(repoRoot(), 'test', 'helpers', 'start-child.ts');
  const { stdout } = await execFileP('nsenter', [`--net=/run/netns/${h.topo.nodeNs}`, process.execPath, ...nodeArgv(script), JSON.stringify({ mode, opts })], {
    timeout: 60_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { ok?: true; error?: string };
}

/** The program ids of kpr's tc filter on each direction of a device in the node namespace (null: none). */
async function tcProgIds(h: Harness, dev: string): Promise<Array<number | null>> {
  const out: Array<number | null> = [];
  for (const dir of ['ingress', 'egress']) {
    const { stdout } = await execFileP('tc', ['-n', h.topo.nodeNs, '-j', 'filter', 'show', 'dev', dev, dir]);
    const rows = JSON.parse(stdout || '[]') as Array<{ pref?: number; options?: { handle?: string; prog?: { id?: number } } }>;
    const ours = rows.find((r) => r.pref === TC_PRIORITY && Number(r.options?.handle) === TC_HANDLE);
    out.push(ours?.options?.prog?.id ?? null);
  }
  return out;
}

test('start-up: a failed upgrade start puts back the programs it swapped into the links, and connections follow the older build\'s map', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`sr${process.pid % 100000}`, 2);
  t.after(() => h.teardown());
  await h.setup();
  const [p1, p2] = h.topo.pods as [Pod, Pod];
  await h.writeManifest('svc.yaml', [service('a', { clusterIP: VIP }), slice('a-1', 'a', [{ ip: p1.ip }])]);
  h.startKpr();
  await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP && r.backends.length === 1), 'one backend');
  assert.deepEqual((await h.probe(['tcp', VIP, '80', '--count', '10'])).pods, { [p1.name]: 10 });
  await h.stopKpr();

  const linksDir = join(h.pinPath, LINKS_DIR);
  const before = pinnedProgIds(linksDir, 'link');
  assert.ok(Object.keys(before).length > 0);
  // As an older build leaves it: kpr_v4_nat_be pinned under its layout-1
  // name, the map the programs in the links read.
  const older = join(h.pinPath, pinName(MAP_NAT_BE, 1));
  await rename(mapPinPath(h.pinPath, MAP_NAT_BE), older);

  await assert.rejects(startDaemon(daemonOpts(h, { source: failingSource })), /source failed to start/);
  assert.deepEqual(pinnedProgIds(linksDir, 'link'), before, 'every link runs the program it ran before the failed start');

  // The older build, serving again, moves the Service to pod 2 in the map it
  // feeds; new connections follow. (With this start's programs left in the
  // links they would read the copy it migrated, which nobody feeds.)
  const be = BpfMap.openPinned(older, MAP_NAT_BE);
  try {
    for (const [k, v] of be.dump()) be.update(k, encodeNatBeVal({ ...decodeNatBeVal(v), addr: p2.ip }));
  } finally {
    be.close();
  }
  const r = await h.probe(['tcp', VIP, '80', '--count', '10']);
  assert.deepEqual(r.errors, {});
  assert.deepEqual(r.pods, { [p2.name]: 10 });
});

/** What the node settings maps hold, as hex. */
function settings(pinPath: string): string[][] {
  return withPinnedMaps(pinPath, (m) => [m.config, m.nodeIPs, m.dsrOptout].map((map) => map.dump().map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`).sort()));
}

test('start-up: a failed restart puts back the tc programs it replaced, removes the filters it added, and restores the node settings', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`st${process.pid % 100000}`, 2);
  t.after(() => h.teardown());
  await h.setup();
  const node = { connectTimeLb: false, nodeIPs: [NODE_IP] };
  assert.deepEqual(await startInNode(h, 'start', { ...node, devices: ['veth1'] }), { ok: true });
  const veth1 = await tcProgIds(h, 'veth1');
  assert.ok(veth1.every((id) => id !== null), `kpr's filters on veth1: ${JSON.stringify(veth1)}`);
  assert.deepEqual(await tcProgIds(h, 'veth2'), [null, null]);
  const progsDir = join(h.pinPath, PROGS_DIR);
  const pinned = pinnedProgIds(progsDir, 'prog');
  const held = settings(h.pinPath);

  // Other settings too: a second node address, another NodePort mode, a DSR opt-out.
  const other = { nodeIPs: [NODE_IP, '192.0.2.99'], nodePortMode: 'dsr' as const, dsrOptoutCidrs: [{ family: 4 as const, addr: '203.0.113.0', len: 24 }] };
  assert.deepEqual(await startInNode(h, 'fail', { ...node, ...other, devices: ['veth1', 'veth2'] }), { error: 'source failed to start' });
  assert.deepEqual(await tcProgIds(h, 'veth1'), veth1, 'veth1 runs the programs it ran before');
  assert.deepEqual(await tcProgIds(h, 'veth2'), [null, null], 'the filters this start added are gone');
  // `kpr cleanup` finds the filters through these pins.
  assert.deepEqual(pinnedProgIds(progsDir, 'prog'), pinned, 'the pinned tc programs are the older ones again');
  assert.deepEqual(settings(h.pinPath), held, 'kpr_config, the node addresses and the DSR opt-out hold what they held');
});

test('start-up: a device without any global address is refused before anything is swapped', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`sn${process.pid % 100000}`, 1);
  t.after(() => h.teardown());
  await h.setup();
  // The node's address is on lo; veth1 has none.
  const r = await startInNode(h, 'preflight', { devices: ['veth1'] });
  assert.match(r.error ?? '', /no global IPv4 or IPv6 address on veth1: give --node-ip/);

  // A restart over running hooks: refused with the links untouched.
  assert.deepEqual(await startInNode(h, 'start', {}), { ok: true });
  const linksDir = join(h.pinPath, LINKS_DIR);
  const before = pinnedProgIds(linksDir, 'link');
  assert.match((await startInNode(h, 'start', { devices: ['veth1'] })).error ?? '', /no global IPv4 or IPv6 address on veth1/);
  assert.deepEqual(pinnedProgIds(linksDir, 'link'), before);
});

/** kpr's managed neighbour entries (address/device) in the node namespace. */
async function managedNeighbours(h: Harness): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['-n', h.topo.nodeNs, '-6', '-j', 'neigh', 'show']);
  const rows = JSON.parse(stdout || '[]') as Array<{ dst: string; dev: string; protocol?: string }>;
  return rows.filter((r) => r.protocol === String(KPR_NEIGH_PROTO)).map((r) => `${r.dst}/${r.dev}`).sort();
}

test('start-up: a failed start removes the neighbour entries it made for IPv6 DSR peers, and keeps those an earlier kpr made', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`nbops${process.pid % 100000}`, 2, { family: 'dual' });
  t.after(() => h.teardown());
  await h.setup();
  const [p1, p2] = h.topo.pods as [Pod, Pod];
  // The pods' IPv6 addresses stand in for peer nodes on the links of veth1 and veth2.
  const peer = (p: Pod) => ({ family: 6 as const, addr: p.ip6!, len: 128 });
  const node = { connectTimeLb: false, nodeIPs: [NODE_IP, NODE_IP6] };

  // A first start that fails: nothing of it stays.
  assert.deepEqual(await startInNode(h, 'fail', { ...node, devices: ['veth1'], clusterNodeCidrs: [peer(p1)] }), { error: 'source failed to start' });
  assert.deepEqual(await managedNeighbours(h), [], 'no entry left by the failed first start');

  // A start that goes through makes one, and leaves it when it stops (its data path stays).
  assert.deepEqual(await startInNode(h, 'start', { ...node, devices: ['veth1'], clusterNodeCidrs: [peer(p1)] }), { ok: true });
  assert.deepEqual(await managedNeighbours(h), [`${p1.ip6}/veth1`]);

  // A failed restart with one more peer: its entry goes, the earlier one stays.
  const r = await startInNode(h, 'fail', { ...node, devices: ['veth1', 'veth2'], clusterNodeCidrs: [peer(p1), peer(p2)] });
  assert.deepEqual(r, { error: 'source failed to start' });
  assert.deepEqual(await managedNeighbours(h), [`${p1.ip6}/veth1`], 'the entry the failed restart added is gone');
});
