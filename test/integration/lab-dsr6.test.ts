/**
 * Direct server return over IPv6 on the dual-stack two-node lab: the
 * external client reaches node 1 (A) on its IPv6 address; every endpoint is
 * on node 2 (B), so each request crosses to B carrying kpr's destination
 * option, and B answers the client itself from A's NodePort.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP6, type LabNode } from '../../src/lab/cluster.js';
import { run } from '../../src/lab/exec.js';
import { requireRoot } from '../helpers/privileged.js';
import { assertDsr6Flows, BULK_NP, dsr6Manifest, UDP_NP } from '../helpers/dsr6-lab.js';
import { UDP_GSO_PY } from '../helpers/udp-gso.js';
import { delta, stats } from '../helpers/lab-stats.js';

const MB = 1 << 20;

test('IPv6 DSR: NodePort through node A to backends on node B, the client address kept, replies straight from B', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `d6${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [a, b] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  try {
    // Node B honours the destination option only from its peers, here given by their IPv6 addresses.
    await lab.up({ manifest: dsr6Manifest(b), kprArgs: ['--cluster-node-ips', a.ip6, b.ip6] });
    for (const node of lab.nodes) await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`);

    await t.test('TCP and UDP: B sees the client; A sends each new flow on with the option and sees no reply', async () => {
      await assertDsr6Flows(lab, a, b);
      // A solicits B from its link-local address, so B's proof that the
      // option comes from A is the managed entry kpr keeps for A's address.
      const neigh = await run('ip', ['-n', b.netns, '-6', 'neigh', 'show', a.ip6]);
      assert.match(neigh, /managed/, neigh);
    });

    await t.test('1 MB up and down on four connections by DSR', async () => {
      const beforeA = stats(a);
      const r = await lab.probe(ext, ['bulk', a.ip6, String(BULK_NP), '--count', '4', '--download', String(MB), '--upload', String(MB), '--timeout', '30000', '--duration', '100000']);
      assert.deepEqual(r.errors, {});
      assert.equal(r.ok, 4, 'every 1 MB download and upload completed');
      assert.deepEqual(r.peers, { [`${a.ip6}:${BULK_NP}`]: 4 });
      assert.deepEqual(r.seenAs, { [LAB_EXT_IP6]: 4 });
      const dA = delta(stats(a), beforeA);
      assert.equal(dA.tc_dsr_fwd, 4);
      assert.equal(dA.tc_redirect_fail ?? 0, 0);
    });

    await t.test('a datagram with no room for the option draws Packet Too Big; the client then fragments and is served by SNAT', async () => {
      const before = stats(a);
      // 1452 bytes of UDP payload fill a 1500-byte MTU; the option needs 40 more.
      const first = await lab.probe(ext, ['udp', a.ip6, String(UDP_NP), '--count', '1', '--size', '1452', '--timeout', '1000']);
      assert.equal(first.ok, 0);
      assert.equal(delta(stats(a), before).tc_frag_needed, 1, 'node A sent Packet Too Big');
      const route = await run('ip', ['-n', lab.extNs, '-6', 'route', 'get', a.ip6]);
      assert.match(route, /mtu 1460/, `the client learnt the path MTU: ${route}`);
      const second = await lab.probe(ext, ['udp', a.ip6, String(UDP_NP), '--count', '3', '--size', '1452']);
      assert.equal(second.ok, 3);
      assert.deepEqual(second.seenAs, { [a.ip6]: 3 }, 'fragments take the SNAT path');
      const small = await lab.probe(ext, ['udp', a.ip6, String(UDP_NP), '--count', '3', '--size', '1400']);
      assert.deepEqual(small.seenAs, { [LAB_EXT_IP6]: 3 }, 'a datagram that fits still goes by DSR');
    });

    await t.test('datagrams sent as one UDP GSO packet each carry the option and are all answered by DSR', async () => {
      const before = stats(a);
      const beforeB = stats(b);
      const replies = JSON.parse(await lab.exec(ext, 'python3', ['-c', UDP_GSO_PY, a.ip6, String(UDP_NP), '1000', '3'])) as Array<[string, string]>;
      const dA = delta(stats(a), before);
      const dB = delta(stats(b), beforeB);
      t.diagnostic(`node A: tc_dsr_fwd +${dA.tc_dsr_fwd ?? 0} for 3 datagrams (1: they arrived as one GSO packet); node B: ${JSON.stringify(dB)}`);
      assert.equal(replies.length, 3, JSON.stringify(replies));
      for (const [line, from] of replies) {
        assert.equal(from, a.ip6, 'answered from the NodePort');
        assert.equal(line.split(' ')[1]?.replace(/:\d+$/, ''), LAB_EXT_IP6, 'the backend saw the client');
      }
    });

    await t.test("kpr cleanup removes the neighbour entry it kept for a peer; a stopped kpr leaves it", async () => {
      await lab.stopKpr(b);
      assert.match(await run('ip', ['-n', b.netns, '-6', 'neigh', 'show', a.ip6]), /managed/, 'kept while the data path stays');
      const out = await lab.kprCli(b, ['cleanup', '--pin-path', b.pinPath]);
      assert.match(out, new RegExp(`removed neighbour entries ${a.ip6}/`), out);
      assert.doesNotMatch(await run('ip', ['-n', b.netns, '-6', 'neigh', 'show', a.ip6]), /managed/);
    });
  } finally {
    await lab.down();
  }
});
