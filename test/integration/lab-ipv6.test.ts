/**
 * IPv6 per-packet NAT on the dual-stack two-node lab, with IPv4 in the same
 * run: real TCP and UDP between namespaces, one kpr per node. Probes run
 * outside the nodes' cgroups, so only the tc programs translate them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP6, type LabNode } from '../../src/lab/cluster.js';
import { defaultLabManifest, labDualStackObjects, LAB_EMPTY6, LAB_VIP4_DS as VIP4, LAB_VIP6_DS as VIP6 } from '../../src/lab/manifest.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { ctRows } from '../../src/inspect/ct.js';
import { requireRoot } from '../helpers/privileged.js';

test('dual-stack lab: IPv6 ClusterIP via tc and IPv6 NodePort with SNAT, IPv4 in the same run', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `l6${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const pod = (node: LabNode, i = 0) => ({ netns: node.pods[i]!.netns });
  const allPods = lab.allPods().map((p) => p.name).sort();
  try {
    await lab.up({ manifest: [...defaultLabManifest(lab), ...labDualStackObjects(lab)] });
    for (const node of lab.nodes) {
      await lab.waitFor(
        async () => {
          try {
            return withPinnedMaps(node.pinPath, natRows).some((r) => r.family === 6);
          } catch {
            return false;
          }
        },
        `kpr on ${node.name} with IPv6 frontends`,
        60_000,
      );
    }

    await t.test('ClusterIP from a pod without connect-time hooks, IPv6 and IPv4: every backend, client address kept', async () => {
      const from = n1.pods[0]!;
      const tcp6 = await lab.probe(pod(n1), ['tcp', VIP6, '80', '--count', '60']);
      assert.deepEqual(tcp6.errors, {});
      assert.deepEqual(Object.keys(tcp6.pods).sort(), allPods);
      assert.deepEqual(tcp6.peers, { [`${VIP6}:80`]: 60 });
      // Only the pod reaching itself (hairpin) is masqueraded, to the node's IPv6 address.
      const hairpin = tcp6.pods[from.name] ?? 0;
      assert.equal(tcp6.seenAs[from.ip6], 60 - hairpin, JSON.stringify(tcp6.seenAs));
      assert.equal(tcp6.seenAs[n1.ip6] ?? 0, hairpin, JSON.stringify(tcp6.seenAs));
      const udp6 = await lab.probe(pod(n1), ['udp', VIP6, '53', '--count', '40']);
      assert.deepEqual(udp6.errors, {});
      assert.deepEqual(Object.keys(udp6.pods).sort(), allPods);
      assert.deepEqual(udp6.peers, { [`${VIP6}:53`]: 40 }, 'replies come from the ClusterIP');

      const tcp4 = await lab.probe(pod(n1), ['tcp', VIP4, '80', '--count', '40']);
      assert.deepEqual(tcp4.errors, {});
      assert.deepEqual(Object.keys(tcp4.pods).sort(), allPods);
      assert.deepEqual(tcp4.peers, { [`${VIP4}:80`]: 40 });
    });

    await t.test('fragmented UDP to the IPv6 ClusterIP (3000-byte datagrams, 1500-byte links): every datagram reaches a backend and is answered', async () => {
      const stats = () => withPinnedMaps(n1.pinPath, (m) => readStats(m.stats));
      const before = stats();
      const r = await lab.probe(pod(n1, 1), ['udp', VIP6, '53', '--count', '20', '--size', '3000', '--timeout', '2000']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(r.peers, { [`${VIP6}:53`]: 20 }, 'answered from the ClusterIP');
      assert.ok(Object.keys(r.pods).length > 1, JSON.stringify(r.pods));
      const after = stats();
      // The pod's stack cut every datagram in three; none was passed untranslated.
      assert.equal(after.tc_v6_frag - before.tc_v6_frag, 0);
      assert.equal(after.tc_frag_miss - before.tc_frag_miss, 0);
      assert.ok(after.tc_fwd - before.tc_fwd >= 40, `later fragments forwarded on their first one's flow: ${after.tc_fwd - before.tc_fwd}`);
    });

    await t.test("NodePort on each node's IPv6 address from the external client: every backend, SNAT to that node's IPv6 address", async () => {
      for (const node of [n1, n2]) {
        const tcp = await lab.probe(ext, ['tcp', node.ip6, '30140', '--count', '60']);
        assert.deepEqual(tcp.errors, {});
        assert.deepEqual(Object.keys(tcp.pods).sort(), allPods);
        assert.deepEqual(tcp.seenAs, { [node.ip6]: 60 }, 'backends see the node address (SNAT)');
        assert.deepEqual(tcp.peers, { [`${node.ip6}:30140`]: 60 });
        const udp = await lab.probe(ext, ['udp', node.ip6, '30141', '--count', '40']);
        assert.deepEqual(udp.errors, {});
        assert.deepEqual(Object.keys(udp.pods).sort(), allPods);
        assert.deepEqual(udp.peers, { [`${node.ip6}:30141`]: 40 }, 'replies come from the NodePort');
        assert.deepEqual(udp.seenAs, { [node.ip6]: 40 });
        // the same Service's IPv4 NodePort, in the same run
        const tcp4 = await lab.probe(ext, ['tcp', node.ip, '30140', '--count', '20']);
        assert.deepEqual(tcp4.errors, {});
        assert.deepEqual(tcp4.seenAs, { [node.ip]: 20 });
      }
    });

    await t.test('IPv6 ClusterIP from outside the cluster (routed to node 1): served, masqueraded to the node', async () => {
      const r = await lab.probe(ext, ['tcp', VIP6, '80', '--count', '30']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.deepEqual(r.seenAs, { [n1.ip6]: 30 });
      assert.deepEqual(r.peers, { [`${VIP6}:80`]: 30 });
    });

    await t.test('no endpoints over IPv6: TCP gets a RST and UDP a port-unreachable, refused at once', async () => {
      const tcp = await lab.probe(pod(n2), ['tcp', LAB_EMPTY6, '80', '--count', '3']);
      assert.deepEqual(tcp.errors, { ECONNREFUSED: 3 });
      assert.ok(tcp.elapsedMs < 1500, `took ${tcp.elapsedMs} ms`);
      const udp = await lab.probe(pod(n2), ['udp', LAB_EMPTY6, '53', '--count', '3', '--connected']);
      assert.deepEqual(udp.errors, { ECONNREFUSED: 3 });
      const np = await lab.probe(ext, ['tcp', n1.ip6, '30150', '--count', '3']);
      assert.deepEqual(np.errors, { ECONNREFUSED: 3 });
    });

    await t.test('inspect ct reads the IPv6 flows from kpr_v6_ct, masqueraded to the node', async () => {
      await lab.probe(ext, ['tcp', n1.ip6, '30140', '--count', '5']);
      const rows = withPinnedMaps(n1.pinPath, (m) => ctRows(m.ct, process.hrtime.bigint(), m.ct6));
      const mine = rows.filter((r) => r.client.includes(LAB_EXT_IP6) && r.frontend.includes(`${n1.ip6}`));
      assert.ok(mine.length >= 5, JSON.stringify(rows.slice(0, 3)));
      assert.ok(mine.every((r) => r.snat?.includes(n1.ip6)), JSON.stringify(mine[0]));
    });
  } finally {
    await lab.down();
  }
});
