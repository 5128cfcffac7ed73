/**
 * Path MTU discovery through NAT, with real traffic. The lab puts a router
 * between node 1 and both node 2's pods and the external client, whose
 * routes to them have a 1280-byte MTU, while every link, and so every
 * endpoint's MSS, stays at 1500. The Service's only backend is on node 2.
 *
 * - Upload, client -> Service on node 1 -> backend: the client sends
 *   full-size segments; the router answers with ICMPv6 Packet Too Big
 *   (IPv4: fragmentation needed) about the packet as node 1 translated it.
 *   The client's socket only knows the Service address, so unless node 1
 *   turns the error back into one about client -> Service, the client never
 *   lowers its MSS and the transfer stalls after the first window. NodePort
 *   with SNAT from the external client, and ClusterIP from a pod through
 *   the per-packet path.
 * - Download, backend -> node 1 -> external client: the error is about the
 *   reply as node 1 reverse-translated it (NodePort -> client) and is sent
 *   to node 1's NodePort address; node 1 must turn it into one about
 *   backend -> SNAT address and send it to the backend.
 *
 * Every case starts with the clients' and the backend's learnt path MTUs
 * flushed: an MTU learnt in one case would lower the MSS of the next.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { Lab, POD_BULK_PORT, type LabNode } from '../../src/lab/cluster.js';
import { node, service, slice } from '../../src/lab/objects.js';
import { requireRoot } from '../helpers/privileged.js';

const MB = 1 << 20;
const MTU = 1280;
const VIP4 = '198.18.0.50';
const VIP6 = '2001:db8:f::50';
const NODEPORT = 30170;

function manifest(lab: Lab): unknown[] {
  const n2 = lab.nodes[1]!;
  const ports = [{ name: 'bulk', port: 9000, protocol: 'TCP', targetPort: POD_BULK_PORT, nodePort: NODEPORT }];
  const slicePorts = [{ name: 'bulk', port: POD_BULK_PORT, protocol: 'TCP' }];
  return [
    ...lab.nodes.map((n) => node(n.name, { ip: n.ip })),
    // Endpoints on node 2 only: every flow crosses the router.
    service('far', {
      ns: 'pmtu',
      type: 'NodePort',
      clusterIP: VIP4,
      ports,
      extra: { clusterIPs: [VIP4, VIP6], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' },
    }),
    slice('far-4', 'far', n2.pods.map((p) => ({ ip: p.ip, ready: true, node: n2.name })), slicePorts, { ns: 'pmtu' }),
    slice('far-6', 'far', n2.pods.map((p) => ({ ip: p.ip6, ready: true, node: n2.name })), slicePorts, { ns: 'pmtu', addressType: 'IPv6' }),
  ];
}

/** The router's count of the ICMP errors that say "too big", per family. */
async function tooBigSent(lab: Lab, family: 4 | 6): Promise<number> {
  if (family === 6) {
    const text = await lab.exec({ netns: lab.rtrNs! }, 'cat', ['/proc/net/snmp6']);
    const m = /^Icmp6OutPktTooBigs\s+(\d+)/m.exec(text);
    return Number(m?.[1] ?? NaN);
  }
  // IPv4 has no per-code counter: destination unreachable, which the router sends for nothing else here.
  const lines = (await lab.exec({ netns: lab.rtrNs! }, 'cat', ['/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Icmp:'));
  const names = lines[0]!.split(/\s+/);
  return Number(lines[1]!.split(/\s+/)[names.indexOf('OutDestUnreachs')]);
}

test('PMTU through NAT, both families: real Packet Too Big / fragmentation needed about a NATed flow, either direction, reaches its sender translated, and 4 MB transfers complete', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `mtu${process.pid % 100000}`, nodes: 2, podsPerNode: 1, pathMtu: MTU });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const client = { netns: n1.pods[0]!.netns };
  const icmpTranslated = () => withPinnedMaps(n1.pinPath, (m) => readStats(m.stats)).tc_icmp_err;
  try {
    await lab.up({ manifest: manifest(lab) });
    await lab.waitFor(async () => (await lab.kprLog(n1)).includes('kpr running') && (await lab.kprLog(lab.nodes[1]!)).includes('kpr running'), 'kpr on both nodes', 60_000);

    for (const family of [6, 4] as const) {
      const nodeIP = family === 6 ? n1.ip6 : n1.ip;
      const vip = family === 6 ? VIP6 : VIP4;
      const routeGet = (where: { netns: string }, dst: string) => lab.exec(where, 'ip', [`-${family}`, 'route', 'get', dst]);
      const backend = { netns: n2.pods[0]!.netns };
      const flush = async () => {
        for (const where of [ext, client, backend]) await lab.exec(where, 'ip', [`-${family}`, 'route', 'flush', 'cache']);
      };
      await t.test(`IPv${family} NodePort, download to the external client: the router's error about the reply reaches the backend translated`, async () => {
        await flush();
        assert.doesNotMatch(await routeGet(backend, nodeIP), /mtu \d+/, 'no path MTU learnt before');
        const sent = await tooBigSent(lab, family);
        const xlated = icmpTranslated();
        const r = await lab.probe(ext, ['bulk', nodeIP, String(NODEPORT), '--download', String(4 * MB), '--upload', '0', '--count', '1', '--timeout', '30000']);
        assert.deepEqual(r.errors, {}, 'the download completed');
        assert.deepEqual(r.seenAs, { [nodeIP]: 1 });
        assert.ok((await tooBigSent(lab, family)) > sent, 'the router did send a too-big error');
        assert.ok(icmpTranslated() > xlated, 'node 1 translated an ICMP error about the NATed flow');
        assert.match(await routeGet(backend, nodeIP), new RegExp(`mtu ${MTU}\\b`), "the backend's stack applied it to the SNAT address");
      });
      const cases = [
        { what: `IPv${family} NodePort from the external client (SNAT)`, from: ext, host: nodeIP, port: NODEPORT, seenAs: nodeIP },
        { what: `IPv${family} ClusterIP from a pod through tc`, from: client, host: vip, port: 9000, seenAs: family === 6 ? n1.pods[0]!.ip6 : n1.pods[0]!.ip },
      ];
      for (const c of cases) {
        await t.test(`${c.what}: the router's error is translated back and the client's route learns MTU ${MTU}`, async () => {
          await flush();
          assert.doesNotMatch(await routeGet(c.from, c.host), /mtu \d+/, 'no path MTU learnt before');
          const sent = await tooBigSent(lab, family);
          const xlated = icmpTranslated();
          const r = await lab.probe(c.from, ['bulk', c.host, String(c.port), '--upload', String(4 * MB), '--download', '0', '--count', '1', '--timeout', '30000']);
          assert.deepEqual(r.errors, {}, 'the upload completed');
          assert.equal(r.ok, 1);
          assert.deepEqual(r.seenAs, { [c.seenAs]: 1 });
          assert.ok((await tooBigSent(lab, family)) > sent, 'the router did send a too-big error: the path is really smaller');
          assert.ok(icmpTranslated() > xlated, 'node 1 translated an ICMP error about the NATed flow');
          assert.match(await routeGet(c.from, c.host), new RegExp(`mtu ${MTU}\\b`), "the client's stack applied it to the Service address");
        });
      }
    }
  } finally {
    await lab.down();
  }
});
