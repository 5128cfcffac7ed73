/**
 * IPv6 DSR between nodes in different subnets: an IPv6-only lab whose node
 * 1 (A) is on the fabric and node 2 (B) on a second link, joined by a
 * router. The external client reaches A's NodePort; every endpoint is on
 * B, so each request crosses the router carrying kpr's destination option,
 * and B answers the client itself (through the router, not through A).
 * B's proof of the sender is then the router's MAC: the next hop B itself
 * uses towards A (docs/architecture.md, "DSR trust"). A sender that is not
 * that next hop, or an option naming a node that is not a peer, is refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP6, LAB_RTR_IP6, LAB_RTR2_IP6, POD_PORT, type LabNode } from '../../src/lab/cluster.js';
import { ip, run } from '../../src/lab/exec.js';
import { requireRoot } from '../helpers/privileged.js';
import { assertDsr6Flows, BULK_NP, dsr6Manifest, UDP_NP } from '../helpers/dsr6-lab.js';
import { delta, stats } from '../helpers/lab-stats.js';

const MB = 1 << 20;
/** A host on B's link that is no node: it may not steer B's replies. */
const ROGUE_IP6 = '2001:db8:0:200::99';

/**
 * One UDP datagram to dst:port carrying kpr's destination option (set as
 * the socket's IPV6_DSTOPTS, so it follows the fixed header as kpr's
 * does), naming svc:svcPort and node; prints the reply and its source, or
 * null after 1.5 s.
 */
const FORGE_PY = `
import json, socket, struct, sys
dst, port, svc, node, svc_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
h = bytes([0, 4, 0x1e, 36]) + socket.inet_pton(socket.AF_INET6, svc) + socket.inet_pton(socket.AF_INET6, node) + struct.pack('!HH', svc_port, 0)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, h)
s.settimeout(1.5)
s.sendto(b'forged', (dst, port))
try:
    data, src = s.recvfrom(2048)
    print(json.dumps({'reply': data.decode().strip(), 'from': src[0]}))
except socket.timeout:
    print(json.dumps({'reply': None}))
`;

test('IPv6 DSR across a router: NodePort on node A, backends on node B in another subnet', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `v6br${process.pid % 1000}`, nodes: 2, podsPerNode: 2, ipv6Only: true, routed: true });
  const [a, b] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const rogueNs = `${lab.spec.name}-rog`;
  const forge = async (netns: string, node: string) =>
    JSON.parse(await lab.exec({ netns }, 'python3', ['-c', FORGE_PY, b.pods[0]!.ip6, String(POD_PORT), a.ip6, node, String(UDP_NP)])) as { reply: string | null; from?: string };
  try {
    await lab.up({ manifest: dsr6Manifest(b), kprArgs: ['--cluster-node-ips', a.ip6, b.ip6] });
    for (const node of lab.nodes) await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`, 60_000);

    await t.test('the nodes are in different subnets: B reaches A only through the router', async () => {
      const route = await run('ip', ['-n', b.netns, '-j', '-6', 'route', 'get', a.ip6]);
      assert.equal((JSON.parse(route) as Array<{ gateway?: string }>)[0]?.gateway, LAB_RTR2_IP6, route);
    });

    await t.test('TCP and UDP: B sees the client and answers it straight, A sees no reply', async () => {
      await assertDsr6Flows(lab, a, b);
    });

    await t.test('1 MB up and down on four connections by DSR across the router', async () => {
      const beforeA = stats(a);
      const r = await lab.probe(ext, ['bulk', a.ip6, String(BULK_NP), '--count', '4', '--download', String(MB), '--upload', String(MB), '--timeout', '30000', '--duration', '100000']);
      assert.deepEqual(r.errors, {});
      assert.equal(r.ok, 4);
      assert.deepEqual(r.seenAs, { [LAB_EXT_IP6]: 4 });
      const dA = delta(stats(a), beforeA);
      assert.equal(dA.tc_dsr_fwd, 4);
      assert.equal(dA.tc_rev ?? 0, 0, 'the downloads did not come back through A');
    });

    await t.test("B keeps a managed neighbour entry for its next hop towards A, the router", async () => {
      const neigh = await run('ip', ['-n', b.netns, '-6', 'neigh', 'show', LAB_RTR2_IP6]);
      assert.match(neigh, /managed/, neigh);
    });

    await t.test('a host on B\'s link that is not the next hop towards A is refused, though the option names A', async () => {
      await ip(['netns', 'add', rogueNs]);
      await ip(['-n', lab.fabricNs, 'link', 'add', 'p-rog', 'type', 'veth', 'peer', 'name', 'eth0']);
      await ip(['-n', lab.fabricNs, 'link', 'set', 'eth0', 'netns', rogueNs]);
      await ip(['-n', lab.fabricNs, 'link', 'set', 'p-rog', 'master', 'br1', 'up']);
      await ip(['-n', rogueNs, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', rogueNs, '-6', 'addr', 'add', `${ROGUE_IP6}/64`, 'dev', 'eth0', 'nodad']);
      // Straight to B's pod: B is on its link.
      await ip(['-n', rogueNs, '-6', 'route', 'add', b.podCidr6, 'via', b.ip6]);
      const before = stats(b);
      const r = await forge(rogueNs, a.ip6);
      assert.equal(r.reply, null, JSON.stringify(r));
      const d = delta(stats(b), before);
      assert.equal(d.tc_dsr_untrusted, 1, 'counted as untrusted');
      assert.equal(d.tc_dsr_learn ?? 0, 0);
    });

    await t.test('an option naming a node that is not a peer is refused, even through the router', async () => {
      // The client sends straight to B's pod, through the router.
      await ip(['-n', lab.extNs, '-6', 'route', 'add', b.podCidr6, 'via', LAB_RTR_IP6]);
      const before = stats(b);
      const r = await forge(lab.extNs, LAB_EXT_IP6);
      assert.equal(r.reply, null, JSON.stringify(r));
      const d = delta(stats(b), before);
      assert.equal(d.tc_dsr_untrusted, 1);
      assert.equal(d.tc_dsr_learn ?? 0, 0);
    });

    await t.test('what the rule does not prove: the router forwards a peer-naming option from a host on its far side, and B honours it', async () => {
      // The router is inside the trust boundary (docs/architecture.md): it
      // must keep the option away from the node links, which this lab's
      // router does not do.
      const before = stats(b);
      const r = await forge(lab.extNs, a.ip6);
      assert.equal(r.from, a.ip6, JSON.stringify(r));
      assert.equal(delta(stats(b), before).tc_dsr_learn, 1);
    });

    await t.test('kpr cleanup removes the entry it kept for the router', async () => {
      await lab.stopKpr(b);
      const out = await lab.kprCli(b, ['cleanup', '--pin-path', b.pinPath]);
      assert.match(out, new RegExp(`removed neighbour entries ${LAB_RTR2_IP6}/eth0`), out);
      assert.doesNotMatch(await run('ip', ['-n', b.netns, '-6', 'neigh', 'show', LAB_RTR2_IP6]), /managed/);
    });
  } finally {
    await ip(['netns', 'del', rogueNs], { allowFail: true });
    await lab.down();
  }
});
