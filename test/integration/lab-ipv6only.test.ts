/**
 * An IPv6-only cluster: two nodes, their pods and the external client have
 * IPv6 addresses only (2001:db8::/48), kpr finds the node address on
 * --devices and gets the IPv6 pod prefix alone. IPv6 Services work by both
 * paths; an IPv4 Service keeps its ClusterIP (kube-proxy programs the other
 * family too) and its NodePort is reported, not written; the health
 * listeners answer over IPv6.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP6, type LabNode } from '../../src/lab/cluster.js';
import { labIpv6OnlyObjects, LAB_VIP4_ON_V6ONLY, LAB_VIP6_DS as VIP6 } from '../../src/lab/manifest.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { requireRoot } from '../helpers/privileged.js';

/** One sample of a metric from Prometheus text, by exact label set. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('IPv6-only lab: kpr starts without IPv4, serves IPv6 ClusterIP (both paths) and NodePort with SNAT, notes the IPv4 NodePort', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `v6o${process.pid % 100000}`, nodes: 2, podsPerNode: 2, ipv6Only: true });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const allPods = lab.allPods().map((p) => p.name).sort();
  const stats = (n: LabNode) => withPinnedMaps(n.pinPath, (m) => readStats(m.stats));
  try {
    await lab.up({ manifest: labIpv6OnlyObjects(lab) });
    for (const node of lab.nodes) {
      await lab.waitFor(
        async () => {
          try {
            return withPinnedMaps(node.pinPath, natRows).some((r) => r.family === 6) && (await lab.kprLog(node)).includes('kpr running');
          } catch {
            return false;
          }
        },
        `kpr on ${node.name} with IPv6 frontends`,
        60_000,
      ).catch(async (err: Error) => {
        throw new Error(`${err.message}; kpr's log ends: ${(await lab.kprLog(node)).slice(-1500)}`);
      });
    }

    await t.test('no IPv4 anywhere: the node found only its IPv6 address, said so, and counts it', async () => {
      for (const node of lab.nodes) {
        const addrs = await lab.exec({ netns: node.netns }, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
        assert.equal(addrs.trim(), '', 'eth0 has no IPv4 address');
        const log = await lab.kprLog(node);
        assert.match(log, /this node has no IPv4 address/);
        const metrics = (await lab.probe({ netns: node.netns }, ['http', 'http://127.0.0.1:10249/metrics'])).body ?? '';
        assert.equal(sample(metrics, 'kpr_node_addresses', 'family="IPv4"'), 0);
        assert.equal(sample(metrics, 'kpr_node_addresses', 'family="IPv6"'), 1);
        assert.ok((sample(metrics, 'kpr_skipped_objects_total', 'kind="Service",reason="no-node-address"') ?? 0) >= 2, 'web4 tcp and udp NodePorts noted');
      }
    });

    await t.test('the IPv4 Service: ClusterIP programmed, no IPv4 NodePort entry (not even the wildcard)', () => {
      const rows = withPinnedMaps(n1.pinPath, natRows);
      const v4 = rows.filter((r) => r.family === 4);
      const fe = (rs: typeof rows) => rs.map((r) => `${r.frontend.addr} ${r.frontend.port}`);
      assert.ok(fe(v4).includes(`${LAB_VIP4_ON_V6ONLY} 80`), JSON.stringify(fe(v4)));
      assert.deepEqual(v4.filter((r) => r.frontend.port === 30160 || r.frontend.port === 30161), [], 'no IPv4 NodePort frontend');
      // and the IPv6 NodePort sits on the node's own address
      assert.ok(fe(rows).includes(`${n1.ip6} 30140`), JSON.stringify(fe(rows)));
    });

    await t.test('IPv6 ClusterIP from a pod at connect time (in the node cgroup): every backend, peer is the VIP, no per-packet NAT', async () => {
      const from = n1.pods[0]!;
      const before = stats(n1);
      const r = await lab.probe({ netns: from.netns, cgroup: n1.cgroup }, ['tcp', VIP6, '80', '--count', '60']);
      const after = stats(n1);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.deepEqual(r.peers, { [`${VIP6}:80`]: 60 });
      assert.deepEqual(r.seenAs, { [from.ip6]: 60 });
      assert.ok(after.sock_xlate - before.sock_xlate >= 60, `sock_xlate +${after.sock_xlate - before.sock_xlate}`);
      assert.equal(after.tc_fwd_new - before.tc_fwd_new, 0, 'no flow went through tc NAT');
      const udp = await lab.probe({ netns: from.netns, cgroup: n1.cgroup }, ['udp', VIP6, '53', '--count', '30']);
      assert.deepEqual(udp.errors, {});
      assert.deepEqual(udp.peers, { [`${VIP6}:53`]: 30 }, 'recvmsg6 reports the VIP');
    });

    await t.test('IPv6 ClusterIP from a pod outside the cgroup (per-packet tc): every backend, replies from the VIP', async () => {
      const from = n2.pods[0]!;
      const before = stats(n2);
      const r = await lab.probe({ netns: from.netns }, ['tcp', VIP6, '80', '--count', '60']);
      const after = stats(n2);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.deepEqual(r.peers, { [`${VIP6}:80`]: 60 });
      const hairpin = r.pods[from.name] ?? 0;
      assert.equal(r.seenAs[from.ip6], 60 - hairpin, JSON.stringify(r.seenAs));
      assert.ok(after.tc_fwd_new - before.tc_fwd_new >= 60, `tc_fwd_new +${after.tc_fwd_new - before.tc_fwd_new}`);
      const udp = await lab.probe({ netns: from.netns }, ['udp', VIP6, '53', '--count', '30']);
      assert.deepEqual(udp.errors, {});
      assert.deepEqual(udp.peers, { [`${VIP6}:53`]: 30 });
    });

    await t.test("IPv6 NodePort from the external client on each node: every backend, SNAT to that node's IPv6 address", async () => {
      for (const node of [n1, n2]) {
        const tcp = await lab.probe(ext, ['tcp', node.ip6, '30140', '--count', '60']);
        assert.deepEqual(tcp.errors, {});
        assert.deepEqual(Object.keys(tcp.pods).sort(), allPods);
        assert.deepEqual(tcp.seenAs, { [node.ip6]: 60 });
        assert.deepEqual(tcp.peers, { [`${node.ip6}:30140`]: 60 });
        const udp = await lab.probe(ext, ['udp', node.ip6, '30141', '--count', '30']);
        assert.deepEqual(udp.errors, {});
        assert.deepEqual(udp.seenAs, { [node.ip6]: 30 });
        assert.deepEqual(udp.peers, { [`${node.ip6}:30141`]: 30 });
      }
    });

    await t.test('eTP=Local over IPv6: node 2 keeps the client address, node 1 drops; health listeners answer over IPv6', async () => {
      const kept = await lab.probe(ext, ['tcp', n2.ip6, '30090', '--count', '20']);
      assert.deepEqual(kept.errors, {});
      assert.deepEqual(kept.seenAs, { [LAB_EXT_IP6]: 20 }, 'client address kept');
      const dropped = await lab.probe(ext, ['tcp', n1.ip6, '30090', '--count', '2', '--timeout', '800']);
      assert.deepEqual(dropped.errors, { ETIMEDOUT: 2 });
      // kubelet and load balancers reach the health ports on the node's IPv6 address
      const hz = await lab.probe(ext, ['http', `http://[${n1.ip6}]:10256/healthz`]);
      assert.deepEqual(hz.status, { 200: 1 }, JSON.stringify(hz));
      await lab.waitFor(async () => (await lab.probe(ext, ['http', `http://[${n2.ip6}]:32100/`])).status?.['200'] === 1, 'healthCheckNodePort on node 2 over IPv6');
      const h1 = await lab.probe(ext, ['http', `http://[${n1.ip6}]:32100/`]);
      assert.deepEqual(h1.status, { 503: 1 }, 'node 1 has no local endpoint');
      assert.match(h1.body ?? '', new RegExp(`"name":"local6".*"localEndpoints":0`));
    });
  } finally {
    await lab.down();
  }
});
