/**
 * Per-packet NAT on a two-node lab: real TCP and UDP between namespaces laid
 * out like a small cluster, one kpr per node. Pods in a node's cgroup use
 * the connect-time hooks; probes run outside it exercise the tc path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP, LAB_EXT_IP2, type LabNode } from '../../src/lab/cluster.js';
import { defaultLabManifest } from '../../src/lab/manifest.js';
import { withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows, type NatRow } from '../../src/inspect/nat.js';
import { ctRows, type CtRow } from '../../src/inspect/ct.js';
import { requireRoot } from '../helpers/privileged.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('multi-node lab: per-packet NAT, NodePort, external IPs and traffic policies', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `lt${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const pod = (node: LabNode, i = 0, connectTime = false) => ({
    netns: node.pods[i]!.netns,
    ...(connectTime ? { cgroup: node.cgroup } : {}),
  });
  const allPods = lab.allPods().map((p) => p.name).sort();
  // Read the pinned maps in-process: spawning the CLI takes seconds on a busy machine.
  const nat = async (node: LabNode): Promise<NatRow[]> => withPinnedMaps(node.pinPath, natRows);
  const ct = (node: LabNode): CtRow[] => withPinnedMaps(node.pinPath, (m) => ctRows(m.ct));
  try {
    await lab.up();
    for (const node of lab.nodes) {
      await lab.waitFor(async () => (await nat(node).catch(() => [])).length > 0, `kpr on ${node.name}`);
    }

    await t.test('NodePort from outside, TCP and UDP, via either node: every backend, SNAT to that node', async () => {
      for (const node of [n1, n2]) {
        const tcp = await lab.probe(ext, ['tcp', node.ip, '30080', '--count', '80']);
        assert.deepEqual(tcp.errors, {});
        assert.deepEqual(Object.keys(tcp.pods).sort(), allPods);
        assert.deepEqual(tcp.seenAs, { [node.ip]: 80 }, 'backends see the node address (SNAT)');
        assert.deepEqual(tcp.peers, { [`${node.ip}:30080`]: 80 });
        const udp = await lab.probe(ext, ['udp', node.ip, '30081', '--count', '80']);
        assert.deepEqual(udp.errors, {});
        assert.deepEqual(Object.keys(udp.pods).sort(), allPods);
        assert.deepEqual(udp.peers, { [`${node.ip}:30081`]: 80 }, 'replies come from the NodePort');
        assert.deepEqual(udp.seenAs, { [node.ip]: 80 });
      }
    });

    await t.test('ClusterIP from a pod without connect-time hooks: per-packet NAT, client address kept', async () => {
      const from = n1.pods[0]!;
      const tcp = await lab.probe(pod(n1), ['tcp', '198.18.0.10', '80', '--count', '80']);
      assert.deepEqual(tcp.errors, {});
      assert.deepEqual(Object.keys(tcp.pods).sort(), allPods);
      assert.deepEqual(tcp.peers, { '198.18.0.10:80': 80 });
      // only the hairpin case (the pod reaching itself) is masqueraded
      const hairpin = tcp.pods[from.name] ?? 0;
      assert.equal(tcp.seenAs[from.ip], 80 - hairpin);
      assert.equal(tcp.seenAs[n1.ip] ?? 0, hairpin);
      const udp = await lab.probe(pod(n1), ['udp', '198.18.0.10', '53', '--count', '40']);
      assert.deepEqual(udp.errors, {});
      assert.deepEqual(udp.peers, { '198.18.0.10:53': 40 });
    });

    await t.test('ClusterIP from a pod with connect-time hooks, and from a pod on the other node', async () => {
      const ct = await lab.probe(pod(n1, 1, true), ['tcp', '198.18.0.10', '80', '--count', '60']);
      assert.deepEqual(ct.errors, {});
      assert.deepEqual(Object.keys(ct.pods).sort(), allPods);
      assert.deepEqual(ct.peers, { '198.18.0.10:80': 60 });
      const other = await lab.probe(pod(n2), ['tcp', '198.18.0.10', '80', '--count', '60']);
      assert.deepEqual(other.errors, {});
      assert.deepEqual(Object.keys(other.pods).sort(), allPods);
    });

    await t.test('externalIP from outside is served', async () => {
      const r = await lab.probe(ext, ['tcp', '198.18.1.14', '80', '--count', '40']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.deepEqual(r.peers, { '198.18.1.14:80': 40 });
    });

    await t.test('loadBalancerSourceRanges: a source outside is dropped, one inside is served', async () => {
      const denied = await lab.probe(ext, ['tcp', '198.18.1.15', '80', '--count', '2', '--timeout', '700']);
      assert.equal(denied.ok, 0);
      assert.deepEqual(denied.errors, { ETIMEDOUT: 2 });
      const allowed = await lab.probe(ext, ['tcp', '198.18.1.15', '80', '--count', '20', '--bind', LAB_EXT_IP2]);
      assert.deepEqual(allowed.errors, {});
      assert.equal(allowed.ok, 20);
    });

    await t.test('externalTrafficPolicy=Local: local endpoints only, client address kept, dropped where none', async () => {
      const r = await lab.probe(ext, ['tcp', n2.ip, '30090', '--count', '40']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), n2.pods.map((p) => p.name).sort());
      assert.deepEqual(r.seenAs, { [LAB_EXT_IP]: 40 }, 'no SNAT: the backend sees the real client');
      const u = await lab.probe(ext, ['udp', n2.ip, '30091', '--count', '20']);
      assert.deepEqual(u.seenAs, { [LAB_EXT_IP]: 20 });
      const none = await lab.probe(ext, ['tcp', n1.ip, '30090', '--count', '2', '--timeout', '700']);
      assert.deepEqual(none.errors, { ETIMEDOUT: 2 }, 'node 1 has no local endpoint: dropped');
    });

    await t.test('healthCheckNodePort answers like kube-proxy: 200 with local endpoints, 503 without', async () => {
      const good = await lab.probe(ext, ['http', `http://${n2.ip}:32100/`, '--count', '1']);
      assert.deepEqual(good.status, { '200': 1 });
      assert.deepEqual(JSON.parse(good.body!), { service: { namespace: 'lab', name: 'local' }, localEndpoints: 2, serviceProxyHealthy: true });
      const bad = await lab.probe(ext, ['http', `http://${n1.ip}:32100/`, '--count', '1']);
      assert.deepEqual(bad.status, { '503': 1 });
      assert.equal(JSON.parse(bad.body!).localEndpoints, 0);
    });

    await t.test('internalTrafficPolicy=Local: pods reach only endpoints on their node, by either path', async () => {
      for (const connectTime of [false, true]) {
        const r = await lab.probe(pod(n1, 1, connectTime), ['tcp', '198.18.0.12', '80', '--count', '40']);
        assert.deepEqual(r.errors, {});
        assert.deepEqual(Object.keys(r.pods).sort(), n1.pods.map((p) => p.name).sort(), `connect-time ${connectTime}`);
      }
    });

    await t.test('sessionAffinity ClientIP: each client sticks to one backend, by every path', async () => {
      const paths: Array<[string, { netns: string; cgroup?: string }, string, string]> = [
        ['external client via NodePort', ext, n1.ip, '30120'],
        ['pod via tc', pod(n1), '198.18.0.16', '80'],
        ['pod via connect-time', pod(n2, 1, true), '198.18.0.16', '80'],
      ];
      for (const [what, from, addr, port] of paths) {
        const r = await lab.probe(from, ['tcp', addr, port, '--count', '30']);
        assert.deepEqual(r.errors, {}, what);
        assert.equal(Object.keys(r.pods).length, 1, `${what}: ${JSON.stringify(r.pods)}`);
      }
      // without affinity the same client spreads (control)
      const spread = await lab.probe(pod(n1), ['tcp', '198.18.0.10', '80', '--count', '30']);
      assert.ok(Object.keys(spread.pods).length > 1);
    });

    await t.test('no ready endpoint: TCP and UDP are refused at once, never time out', async () => {
      const tcp = await lab.probe(ext, ['tcp', n1.ip, '30100', '--count', '3']);
      assert.deepEqual(tcp.errors, { ECONNREFUSED: 3 });
      const udp = await lab.probe(ext, ['udp', n1.ip, '30101', '--count', '3', '--connected']);
      assert.deepEqual(udp.errors, { ECONNREFUSED: 3 });
      for (const connectTime of [false, true]) {
        const c = await lab.probe(pod(n2, 0, connectTime), ['tcp', '198.18.0.13', '80', '--count', '3']);
        assert.deepEqual(c.errors, { ECONNREFUSED: 3 });
        assert.ok(c.elapsedMs < 1500, `took ${c.elapsedMs} ms`);
      }
    });

    await t.test('inspect ct shows NATed flows with their SNAT and TCP state', async () => {
      await lab.probe(ext, ['tcp', n1.ip, '30080', '--count', '5']);
      const rows = JSON.parse(await lab.kprCli(n1, ['inspect', 'ct', '--pin-path', n1.pinPath, '--json'])) as CtRow[];
      const np = rows.filter((r) => r.frontend === `${n1.ip}:30080` && r.entries === 'flow');
      assert.ok(np.length >= 5, JSON.stringify(rows.slice(0, 3)));
      for (const r of np) {
        assert.equal(r.proto, 'TCP');
        assert.match(r.client, new RegExp(`^${LAB_EXT_IP.replace(/\./g, '\\.')}:`));
        assert.match(r.snat ?? '', new RegExp(`^${n1.ip.replace(/\./g, '\\.')}:`));
        assert.ok(['closed', 'fin-wait', 'established'].includes(r.state), r.state);
      }
    });

    await t.test('a removed backend: a UDP client on a fixed source port moves to a live one within 1 s', async () => {
      // A single flow through node 1 (fixed client port -> one conntrack entry).
      const client = lab.probe(ext, ['udp', n1.ip, '30081', '--count', '5000', '--interval', '10', '--duration', '15000', '--bind-port', '40999', '--trace']);
      // wait until the flow is established (the probe may take a while to start under load)
      await lab.waitFor(async () => ct(n1).some((r) => r.proto === 'UDP' && r.client === `${LAB_EXT_IP}:40999`), 'the UDP flow');
      // let replies come back for a while, so "before" has something to compare
      await sleep(1000);
      const served = (await nat(n1)).find((r) => r.frontend.port === 30081)!;
      assert.equal(served.backends.length, 4);
      // Find the backend this flow is pinned to, then remove it from the Service.
      const flow = ct(n1).find((r) => r.proto === 'UDP' && r.client === `${LAB_EXT_IP}:40999`);
      assert.ok(flow, 'the UDP flow is in conntrack');
      const victimIp = flow.backend.split(':')[0]!;
      const victim = lab.allPods().find((p) => p.ip === victimIp)!;
      const manifest = defaultLabManifest(lab) as Array<Record<string, any>>;
      const web = manifest.find((o) => o.kind === 'EndpointSlice' && o.metadata.name === 'web-1')!;
      web.endpoints = web.endpoints.filter((e: { addresses: string[] }) => e.addresses[0] !== victimIp);
      const removedAt = Date.now();
      await lab.writeManifest(manifest);
      const r = await client;
      const after = (r.trace ?? []).filter(([ts]) => ts > removedAt + 1000);
      const gaps = (r.trace ?? []).flatMap(([ts], i, all) => (i > 0 && ts - all[i - 1]![0] > 300 ? [[all[i - 1]![0], ts]] : []));
      const summary = JSON.stringify({ ok: r.ok, errors: r.errors, pods: r.pods, elapsed: r.elapsedMs, removedAt, first: r.trace?.[0], last: r.trace?.slice(-2), gaps });
      assert.ok(after.length > 20, `client kept running after the removal (${after.length} replies): ${summary}`);
      assert.ok(after.every(([, p]) => p !== victim.name), `still served by the removed ${victim.name} >1 s after removal: ${summary}`);
      // and it was one backend before: the pinned flow really moved
      const before = new Set((r.trace ?? []).filter(([ts]) => ts < removedAt).map(([, p]) => p));
      assert.deepEqual([...before], [victim.name]);
      // restore
      await lab.writeManifest(defaultLabManifest(lab));
    });

    await t.test('the data path keeps forwarding while kpr is down, and a restart keeps flows', async () => {
      await lab.stopKpr(n1);
      const down = await lab.probe(ext, ['tcp', n1.ip, '30080', '--count', '20']);
      assert.deepEqual(down.errors, {});
      await lab.startKpr(n1);
      await lab.waitFor(async () => (await lab.kprLog(n1)).includes('"msg":"kpr running"'), 'kpr restart');
      const up = await lab.probe(ext, ['tcp', n1.ip, '30080', '--count', '20']);
      assert.deepEqual(up.errors, {});
    });
  } finally {
    await lab.down();
  }
});
