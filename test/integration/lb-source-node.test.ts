/**
 * loadBalancerSourceRanges and the node itself, at connect time, with real
 * sockets on a one-node lab. kpr runs inside the lab node's network
 * namespace, so "the node" is that namespace, not the machine's initial one:
 * kpr names it by its netns cookie. kube-proxy's rule (allowFromNode) is
 * that the node is judged by its source address; the LB IP as a source is
 * let in only when a range holds the node's primary address.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, type LabNode } from '../../src/lab/cluster.js';
import { labServicePorts, labSlicePorts } from '../../src/lab/manifest.js';
import { service, slice, type SliceEndpoint } from '../../src/lab/objects.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { requireRoot } from '../helpers/privileged.js';

/** The node (198.51.100.11) is inside this Service's ranges, its pods (192.0.2.0/24) are not. */
const LB_NODE_IN = '198.18.1.31';
/** Neither the node nor its pods are inside this one's. */
const LB_NODE_OUT = '198.18.1.30';

function manifest(node: LabNode): unknown[] {
  const eps: SliceEndpoint[] = node.pods.map((p) => ({ ip: p.ip, ready: true, node: node.name }));
  const lb = (name: string, clusterIP: string, ip: string, ranges: string[]) => [
    service(name, {
      ns: 'lbsr',
      type: 'LoadBalancer',
      clusterIP,
      ports: labServicePorts(),
      extra: { loadBalancerSourceRanges: ranges },
      status: { loadBalancer: { ingress: [{ ip }] } },
    }),
    slice(`${name}-1`, name, eps, labSlicePorts(), { ns: 'lbsr' }),
  ];
  return [...lb('nodein', '198.18.0.31', LB_NODE_IN, ['198.51.100.0/24']), ...lb('nodeout', '198.18.0.30', LB_NODE_OUT, ['203.0.113.0/24'])];
}

test('loadBalancerSourceRanges at connect time: the node is its own netns, judged as kube-proxy judges it', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `ls${process.pid % 100000}`, nodes: 1, podsPerNode: 2 });
  const node = lab.nodes[0]!;
  // Both in the child cgroup kpr hooks: the node's own namespace, and a pod's.
  const fromNode = { netns: node.netns, cgroup: node.cgroup };
  const fromPod = { netns: node.pods[0]!.netns, cgroup: node.cgroup };
  const pods = node.pods.map((p) => p.name).sort();
  const stats = () => withPinnedMaps(node.pinPath, (m) => readStats(m.stats));
  try {
    await lab.up({ manifest: manifest(node) });
    await lab.waitFor(async () => {
      try {
        const rows = withPinnedMaps(node.pinPath, natRows);
        return rows.some((r) => r.frontend.addr === LB_NODE_IN) && rows.some((r) => r.frontend.addr === LB_NODE_OUT);
      } catch {
        return false;
      }
    }, 'kpr to program both LB IPs');

    await t.test('the node inside a range reaches the LB IP from its own namespace, TCP and UDP', async () => {
      const tcp = await lab.probe(fromNode, ['tcp', LB_NODE_IN, '80', '--count', '20']);
      assert.deepEqual(tcp.errors, {});
      assert.deepEqual(Object.keys(tcp.pods).sort(), pods);
      assert.deepEqual(tcp.peers, { [`${LB_NODE_IN}:80`]: 20 }, 'the socket sees the LB IP');
      const udp = await lab.probe(fromNode, ['udp', LB_NODE_IN, '53', '--count', '20']);
      assert.deepEqual(udp.errors, {});
      assert.equal(udp.ok, 20);
    });

    await t.test('a pod outside the ranges is dropped, as kube-proxy drops it, even where the node is let in', async () => {
      const before = stats();
      const r = await lab.probe(fromPod, ['tcp', LB_NODE_IN, '80', '--count', '2', '--timeout', '700']);
      assert.equal(r.ok, 0);
      assert.deepEqual(r.errors, { ETIMEDOUT: 2 });
      const after = stats();
      assert.ok(after.sock_blackhole - before.sock_blackhole >= 2, 'connect-time saw a source outside the ranges');
      assert.ok(after.tc_drop_policy - before.tc_drop_policy >= 2, 'and the per-packet path dropped the pod\'s SYNs');
    });

    await t.test('the node outside every range is refused at once, with the error a drop gives, and nothing sent', async () => {
      const before = stats();
      const r = await lab.probe(fromNode, ['tcp', LB_NODE_OUT, '80', '--count', '2', '--timeout', '20000']);
      assert.equal(r.ok, 0);
      assert.deepEqual(r.errors, { ETIMEDOUT: 2 });
      assert.ok(r.elapsedMs < 20_000, `the errno came from connect(), not from the probe's own 20 s timer: ${r.elapsedMs} ms`);
      const after = stats();
      assert.equal(after.sock_blackhole - before.sock_blackhole, 2);
      assert.equal(after.tc_drop_policy - before.tc_drop_policy, 0, 'no packet reached the per-packet path');
    });

    await t.test('outside the hooked cgroup the node is not load-balanced at all (the hooks are scoped to it)', async () => {
      const r = await lab.probe({ netns: node.netns }, ['tcp', LB_NODE_IN, '80', '--count', '1', '--timeout', '700']);
      assert.equal(r.ok, 0);
    });
  } finally {
    await lab.down();
  }
});
