/**
 * A rolling upgrade in the lab, one node at a time as the DaemonSet does it
 * (maxSurge 0, maxUnavailable 1: the old kpr exits, then the new one starts):
 *
 *   version A = git revision LAYOUT1_REV, the last one whose kpr_v4_nat_be
 *               kept local backends as a prefix of the cluster set (layout 1),
 *               with its own BPF programs, addon and controller;
 *   version B = this checkout: other programs, nat_be layout 2 (the local set
 *               at NAT_BE_LOCAL_BASE, NAT_BE_F_LOCAL), so it must migrate.
 *
 * While node 1 and then node 2 go from A to B, and node 2 then restarts B
 * (B to B: program replacement through the links, no layout change), loops
 * of new TCP connections run on the connect-time and tc paths, including
 * eTP=Local and iTP=Local Services whose local sets are what the layout
 * change moved. A connection attempt times out after 900 ms, below the
 * first SYN retransmission (1 s), so a dropped SYN is a failure, not a
 * retry. Long-lived TCP connections carry an exchange every 200 ms through
 * it all. Expected: zero failures, every long-lived connection alive.
 *
 * Node 2's first B runs with a manifest that never parses: its source never
 * syncs, so it writes nothing, and the Local-policy traffic it serves can
 * only come from the migrated map. That holds open the window a fast first
 * sync would otherwise hide.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP, type LabNode, type LabProbe } from '../../src/lab/cluster.js';
import { defaultLabManifest } from '../../src/lab/manifest.js';
import { pinName } from '../../src/datapath/migrate.js';
import { MAP_NAT_BE } from '../../src/datapath/names.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { requireRoot } from '../helpers/privileged.js';
import { LAYOUT1_REV, requireRevision } from '../helpers/old-build.js';
import { Client, type Ev } from '../helpers/client-proc.js';

const ECHO_PORT = 9000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function echoObjects(lab: Lab): unknown[] {
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'echo', namespace: 'lab' },
      spec: { type: 'NodePort', clusterIP: '198.18.0.20', ports: [{ name: 'echo', port: 90, protocol: 'TCP', targetPort: ECHO_PORT, nodePort: 30130 }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'echo-1', namespace: 'lab', labels: { 'kubernetes.io/service-name': 'echo' } },
      addressType: 'IPv4',
      ports: [{ name: 'echo', port: ECHO_PORT, protocol: 'TCP' }],
      endpoints: [n1, n2].map((n) => ({ addresses: [n.pods[0]!.ip], conditions: { ready: true }, nodeName: n.name })),
    },
  ];
}

test('rolling upgrade A -> B with a nat_be layout migration, then B -> B: zero failed connections', async (t) => {
  if (!requireRoot(t)) return;
  const oldRoot = requireRevision(t, LAYOUT1_REV);
  if (!oldRoot) return;
  const oldCli = join(oldRoot, 'src', 'cli.ts');

  const lab = new Lab({ name: `up${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const echo: Client[] = [];
  const holders: Array<[string, Client]> = [];
  const stopFile = join(lab.stateDir, 'stop-loops');
  const logged = async (node: LabNode, re: RegExp, times: number) =>
    lab.waitFor(async () => ((await lab.kprLog(node)).match(re) ?? []).length >= times, `${re} on ${node.name} x${times}`, 60_000);
  const running = (node: LabNode, times: number) => logged(node, /"msg":"kpr running"/g, times);
  try {
    await lab.create();
    await lab.startPods();
    await lab.writeManifest([...defaultLabManifest(lab), ...echoObjects(lab)]);
    for (const node of lab.nodes) await lab.startKpr(node, [], { cli: oldCli });
    for (const node of lab.nodes) await running(node, 1);
    for (const node of lab.nodes) {
      assert.ok(existsSync(join(node.pinPath, MAP_NAT_BE)), 'version A pins nat_be under its bare name');
      assert.ok(!existsSync(join(node.pinPath, pinName(MAP_NAT_BE, 2))));
    }
    for (const n of [n1, n2]) {
      const c = new Client({ netns: n.pods[0]!.netns }, ['echo-server', n.pods[0]!.ip, String(ECHO_PORT), n.pods[0]!.name]);
      echo.push(c);
      await c.waitFor((e) => e.some((x) => x.ready), 'echo server ready', 60_000);
    }

    // Long-lived connections, opened under version A.
    const hold = (what: string, where: { netns: string; cgroup?: string }, addr: string, port: string) => {
      const c = new Client(where, ['tcp-echo', addr, port, '240000', '200']);
      holders.push([what, c]);
      return c;
    };
    hold('NodePort via node 1 (tc, SNAT)', { netns: lab.extNs }, n1.ip, '30130');
    hold('NodePort via node 2 (tc, SNAT)', { netns: lab.extNs }, n2.ip, '30130');
    hold('ClusterIP from a node-1 pod (tc)', { netns: n1.pods[1]!.netns }, '198.18.0.20', '90');
    hold('ClusterIP from a node-2 pod (connect-time)', { netns: n2.pods[1]!.netns, cgroup: n2.cgroup }, '198.18.0.20', '90');
    for (const [what, c] of holders) await c.waitFor((e) => e.filter((x) => x.pod).length >= 2, `${what}: replies`, 60_000);

    // Loops of new connections, each on its own path, until the stop file.
    const loop = (where: { netns: string; cgroup?: string }, addr: string, port: string) =>
      lab.probe(where, ['tcp', addr, port, '--count', '20000', '--interval', '20', '--timeout', '900', '--duration', '200000', '--stop-file', stopFile, '--trace']);
    const loops: Array<[string, Promise<LabProbe>]> = [
      ['eTP=Local NodePort via node 2 (tc, local set)', loop({ netns: lab.extNs }, n2.ip, '30090')],
      ['NodePort via node 1 (tc, SNAT)', loop({ netns: lab.extNs }, n1.ip, '30080')],
      ['iTP=Local ClusterIP from a node-1 pod (connect-time, local set)', loop({ netns: n1.pods[1]!.netns, cgroup: n1.cgroup }, '198.18.0.12', '80')],
      ['iTP=Local ClusterIP from a node-2 pod (tc, local set)', loop({ netns: n2.pods[0]!.netns }, '198.18.0.12', '80')],
      ['ClusterIP from a node-2 pod (connect-time)', loop({ netns: n2.pods[1]!.netns, cgroup: n2.cgroup }, '198.18.0.10', '80')],
    ];
    await sleep(1500);
    // When each step happened, to place any failure.
    const phases: Array<[number, string]> = [];
    const phase = (what: string) => phases.push([Date.now(), what]);

    // One node's kpr replaced as the DaemonSet does it: the old one exits, then the new one starts.
    const replace = async (node: LabNode, from: string, to: string, opts: { cli?: string; manifests?: string }, serving: () => Promise<void>) => {
      phase(`${node.name}: stop ${from}`);
      await lab.stopKpr(node);
      await sleep(500);
      phase(`${node.name}: start ${to}`);
      await lab.startKpr(node, [], opts);
      await serving();
      phase(`${node.name}: ${to} serving`);
    };

    // Node 1: A -> B.
    await replace(n1, 'A', 'B', {}, () => running(n1, 2));
    await sleep(1500);

    // Node 2: A -> B whose source never syncs: only the migration serves.
    // Every hook runs B's programs once its tc summary line is out.
    // In a directory of its own: kpr watches a manifest file's directory,
    // and the lab's kpr logs grow in stateDir.
    const broken = join(lab.stateDir, 'broken', 'services.yaml');
    await mkdir(dirname(broken), { recursive: true });
    await writeFile(broken, 'kind: Service\nmetadata: {name: [unclosed\n');
    await replace(n2, 'A', 'B (source never syncs)', { manifests: broken }, () => logged(n2, /"attached":\[[^\]]*\],"msg":"tc programs attached"/g, 2));
    await sleep(3000);
    const frozen = withPinnedMaps(n2.pinPath, natRows).find((r) => r.frontend.port === 30090 && r.frontend.addr === n2.ip);

    // Node 2: B -> B with its real manifest (programs replaced, same layout).
    // third "kpr running" on node 2: A, the B that never synced, this B
    await replace(n2, 'B', 'B', {}, () => running(n2, 3));
    await sleep(1500);
    await writeFile(stopFile, '');
    const results = await Promise.all(loops.map(async ([what, p]) => [what, await p] as const));

    const during = (ts: number) => phases.filter(([at]) => at <= ts).pop()?.[1] ?? 'before the upgrade';
    t.diagnostic(JSON.stringify(results.map(([what, r]) => ({ what, ok: r.ok, errors: r.errors, ms: r.elapsedMs }))));
    // Each node's data-path counters, to attribute a failure (a drop counter
    // such as tc_snat_no_port names the cause; none moving points elsewhere).
    const stats = Object.fromEntries(
      lab.nodes.map((n) => [n.name, Object.fromEntries(Object.entries(withPinnedMaps(n.pinPath, (m) => readStats(m.stats))).filter(([, v]) => v > 0))]),
    );
    t.diagnostic(JSON.stringify({ stats }));
    for (const [what, r] of results) {
      const when = (r.errorTrace ?? []).map(([ts, code]) => `${code} at +${ts - phases[0]![0]} ms (after "${during(ts)}")`);
      assert.deepEqual(r.errors, {}, `${what}: ${JSON.stringify({ ok: r.ok, errors: r.errors, ms: r.elapsedMs, when, phases: phases.map(([at, p]) => `${p} +${at - phases[0]![0]}`), stats })}`);
      assert.ok(r.ok > 100, `${what}: only ${r.ok} connections`);
    }
    const local = results[0]![1];
    assert.deepEqual(Object.keys(local.pods).sort(), n2.pods.map((p) => p.name).sort(), 'eTP=Local: node 2 pods only');
    assert.deepEqual(local.seenAs, { [LAB_EXT_IP]: local.ok }, 'eTP=Local keeps the client address');
    for (const i of [2, 3]) {
      const node = i === 2 ? n1 : n2;
      assert.deepEqual(Object.keys(results[i]![1].pods).sort(), node.pods.map((p) => p.name).sort(), `${results[i]![0]}: own node only`);
    }

    // The migration happened, and the old layout is gone.
    for (const node of lab.nodes) {
      const log = await lab.kprLog(node);
      assert.match(log, /"msg":"migrated pinned maps to this build's layouts"/);
      assert.match(log, /"map":"kpr_v4_nat_be","from":1,"to":2/);
      assert.ok(!existsSync(join(node.pinPath, MAP_NAT_BE)), `${node.name}: the layout-1 map is unpinned`);
      assert.ok(existsSync(join(node.pinPath, pinName(MAP_NAT_BE, 2))));
    }
    // What node 2 served Local traffic from while its source had never synced.
    assert.ok(frozen, 'node 2 has the eTP=Local NodePort frontend');
    assert.deepEqual(frozen.localBackends.map((b) => [b.ordinal, b.local]).sort(), [[0x80000000, true], [0x80000001, true]], JSON.stringify(frozen));

    // Long-lived connections: alive, answered after the last restart.
    const lastStart = Date.now() - 1500;
    for (const [what, c] of holders) {
      const evs: Ev[] = c.events;
      const bad = evs.filter((e) => e.err || e.closed);
      assert.deepEqual(bad, [], `${what}: ${JSON.stringify(bad)}`);
      assert.ok(evs.some((e) => e.pod && e.t > lastStart), `${what}: no reply after the last restart`);
      assert.ok(evs.filter((e) => e.connect).length === 1, `${what}: one connection`);
    }
  } catch (err) {
    // keep the lab's logs for a failure's post-mortem
    await cp(lab.stateDir, `/tmp/kpr-upgrade-test-${process.pid}`, { recursive: true }).catch(() => undefined);
    throw err;
  } finally {
    if (!existsSync(stopFile)) await writeFile(stopFile, '').catch(() => undefined);
    for (const [, c] of holders) c.kill();
    for (const c of echo) c.kill();
    await lab.down();
  }
});
