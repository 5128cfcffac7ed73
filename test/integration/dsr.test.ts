/**
 * Direct server return on the two-node lab. The external client always
 * reaches node 1 (A); every endpoint is on node 2 (B), so each request must
 * cross to B. Modes come from the per-Service annotation and from the
 * node's --nodeport-mode flag.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import type { CtRow } from '../../src/inspect/ct.js';
import { Lab, LAB_EXT_IP, LAB_EXT_IP2, POD_HTTP_PORT, POD_PORT, type LabNode } from '../../src/lab/cluster.js';
import { run } from '../../src/lab/exec.js';
import { requireRoot } from '../helpers/privileged.js';
import { UDP_GSO_PY } from '../helpers/udp-gso.js';
import { delta, stats } from '../helpers/lab-stats.js';


/**
 * Send one UDP datagram of argv[4] bytes from port argv[3] to argv[1]:argv[2]
 * (DF set) and print the first ICMP error that comes back: its source, type,
 * code, MTU, and the addresses and ports of the quoted header.
 */
const CATCH_FRAG_NEEDED = `
import json, socket, struct, sys
dst, dport, sport, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.settimeout(3)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF, never fragment locally
u.bind(('0.0.0.0', sport))
u.sendto(b'a' * size, (dst, dport))
out = {}
try:
    while True:
        pkt = raw.recv(2048)
        ihl = (pkt[0] & 15) * 4
        t, c = pkt[ihl], pkt[ihl + 1]
        if t != 3:
            continue
        inner = pkt[ihl + 8:]
        iihl = (inner[0] & 15) * 4
        out = {
            'src': socket.inet_ntoa(pkt[12:16]), 'type': t, 'code': c,
            'mtu': struct.unpack('!H', pkt[ihl + 6:ihl + 8])[0],
            'inner_src': socket.inet_ntoa(inner[12:16]), 'inner_dst': socket.inet_ntoa(inner[16:20]),
            'inner_sport': struct.unpack('!H', inner[iihl:iihl + 2])[0],
            'inner_dport': struct.unpack('!H', inner[iihl + 2:iihl + 4])[0],
        }
        break
except socket.timeout:
    out = {'error': 'no ICMP error'}
print(json.dumps(out))
`;

const MODES = { plain: 30200, dsr: 30210, hybrid: 30220, snat: 30230 } as const;

function manifest(b: LabNode): unknown[] {
  const endpoints = b.pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: b.name }));
  return Object.entries(MODES).flatMap(([name, base], i) => [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'dsr', ...(name === 'plain' ? {} : { annotations: { 'kpr.io/nodeport-mode': name } }) },
      spec: {
        type: 'NodePort',
        clusterIP: `198.18.2.${10 + i}`,
        externalIPs: [`198.18.2.${50 + i}`],
        ports: [
          { name: 'tcp', port: 80, protocol: 'TCP', targetPort: POD_PORT, nodePort: base },
          { name: 'udp', port: 53, protocol: 'UDP', targetPort: POD_PORT, nodePort: base + 1 },
          { name: 'http', port: 8000, protocol: 'TCP', targetPort: POD_HTTP_PORT, nodePort: base + 2 },
        ],
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'dsr', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [
        { name: 'tcp', port: POD_PORT, protocol: 'TCP' },
        { name: 'udp', port: POD_PORT, protocol: 'UDP' },
        { name: 'http', port: POD_HTTP_PORT, protocol: 'TCP' },
      ],
      endpoints,
    },
  ]);
}

test('DSR, SNAT and hybrid NodePort through node A to backends on node B', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `ds${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [a, b] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const podsB = b.pods.map((p) => p.name).sort();
  const wrk = async (port: number) => {
    const out = await lab.exec(ext, 'wrk', ['-t1', '-c16', '-d2s', '--timeout', '2s', `http://${a.ip}:${port}/`], 60_000);
    const reqs = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    return { out, reqs, socketErrors: /Socket errors/.test(out), non2xx: /Non-2xx/.test(out) };
  };
  try {
    // Node B honours the DSR option only from its peers (the nodes).
    const peers = ['--cluster-node-ips', a.ip, b.ip];
    await lab.up({ manifest: manifest(b), kprArgs: peers });
    for (const node of lab.nodes) await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`);

    for (const [mode, tcpDsr, udpDsr] of [
      ['snat', false, false],
      ['dsr', true, true],
      ['hybrid', true, false],
    ] as const) {
      const replies = udpDsr ? 'sees no reply at all' : tcpDsr ? 'carries only the UDP replies' : 'carries every reply';
      await t.test(`${mode}: TCP and UDP work; the backend sees ${tcpDsr ? 'the client' : 'node A'} over TCP; node A ${replies}`, async () => {
        const base = MODES[mode];
        // let connections of the previous step finish, so the counters below are ours
        await new Promise((r) => setTimeout(r, 1000));
        const beforeA = stats(a);
        const beforeB = stats(b);
        const tcp = await lab.probe(ext, ['tcp', a.ip, String(base), '--count', '40']);
        assert.deepEqual(tcp.errors, {});
        assert.deepEqual(Object.keys(tcp.pods).sort(), podsB);
        assert.deepEqual(tcp.peers, { [`${a.ip}:${base}`]: 40 }, 'the client talks to the NodePort throughout');
        assert.deepEqual(tcp.seenAs, { [tcpDsr ? LAB_EXT_IP : a.ip]: 40 });
        const udp = await lab.probe(ext, ['udp', a.ip, String(base + 1), '--count', '40']);
        assert.deepEqual(udp.errors, {});
        assert.deepEqual(udp.peers, { [`${a.ip}:${base + 1}`]: 40 }, 'UDP replies come from the NodePort');
        assert.deepEqual(udp.seenAs, { [udpDsr ? LAB_EXT_IP : a.ip]: 40 });

        const dA = delta(stats(a), beforeA);
        const dB = delta(stats(b), beforeB);
        const dsrFlows = (tcpDsr ? 40 : 0) + (udpDsr ? 40 : 0);
        const snatFlows = 80 - dsrFlows;
        // Node A reverse-translates exactly the SNAT flows' replies: DSR replies never reach it.
        if (dsrFlows > 0) {
          assert.equal(dA.tc_dsr_fwd, dsrFlows, 'node A sent each new DSR flow on with the option');
          assert.equal(dB.tc_dsr_learn, dsrFlows, 'node B learnt each one');
          assert.ok((dB.tc_dsr_reply ?? 0) >= dsrFlows, 'node B answered the client itself');
          assert.equal(dA.tc_dsr_reply ?? 0, 0);
        }
        if (snatFlows === 0) assert.equal(dA.tc_rev ?? 0, 0, 'node A saw no reply packet at all');
        else assert.ok((dA.tc_rev ?? 0) >= snatFlows, 'SNAT replies come back through node A');
      });

      await t.test(`${mode}: a bounded wrk run through node A completes with no socket errors`, async () => {
        const r = await wrk(MODES[mode] + 2);
        assert.ok(r.reqs > 100, r.out);
        assert.equal(r.socketErrors, false, r.out);
        assert.equal(r.non2xx, false, r.out);
      });
    }

    await t.test('inspect ct marks DSR entries with their side', async () => {
      await lab.probe(ext, ['udp', a.ip, String(MODES.dsr + 1), '--count', '1', '--bind-port', '40777']);
      const rowsA = JSON.parse(await lab.kprCli(a, ['inspect', 'ct', '--pin-path', a.pinPath, '--json'])) as CtRow[];
      const rowsB = JSON.parse(await lab.kprCli(b, ['inspect', 'ct', '--pin-path', b.pinPath, '--json'])) as CtRow[];
      const onA = rowsA.find((r) => r.client === `${LAB_EXT_IP}:40777`);
      const onB = rowsB.find((r) => r.client === `${LAB_EXT_IP}:40777`);
      assert.equal(onA?.dsrSide, 'ingress');
      assert.equal(onA?.snat, null);
      assert.equal(onB?.dsrSide, 'backend');
      assert.equal(onB?.frontend, `${a.ip}:${MODES.dsr + 1}`);
    });

    await t.test('DSR: datagrams sent as one UDP GSO packet each carry the option and are all answered by DSR', async () => {
      const replies = JSON.parse(await lab.exec(ext, 'python3', ['-c', UDP_GSO_PY, a.ip, String(MODES.dsr + 1), '1000', '3'])) as Array<[string, string]>;
      assert.equal(replies.length, 3, JSON.stringify(replies));
      for (const [line, from] of replies) {
        assert.equal(from, a.ip, 'answered from the NodePort');
        assert.equal(line.split(' ')[1]?.replace(/:\d+$/, ''), LAB_EXT_IP, 'the backend saw the client');
      }
    });

    await t.test('DSR: an oversized DF datagram gets frag-needed; the next one is fragmented and served by SNAT', async () => {
      const before = stats(a);
      // 1472 bytes of UDP payload fill a 1500-byte MTU; the option needs 12 more.
      const first = await lab.probe(ext, ['udp', a.ip, String(MODES.dsr + 1), '--count', '1', '--size', '1472', '--timeout', '1000']);
      assert.equal(first.ok, 0);
      assert.equal(delta(stats(a), before).tc_frag_needed, 1, 'node A sent frag-needed');
      const route = await run('ip', ['-n', lab.extNs, 'route', 'get', a.ip]);
      assert.match(route, /mtu 1488/, `the client learnt the path MTU: ${route}`);
      // The client's kernel now fragments to 1488; fragments take the SNAT path.
      const second = await lab.probe(ext, ['udp', a.ip, String(MODES.dsr + 1), '--count', '3', '--size', '1472']);
      assert.equal(second.ok, 3);
      assert.deepEqual(second.seenAs, { [a.ip]: 3 });
      assert.ok((delta(stats(a), before).tc_dsr_fallback ?? 0) >= 3);
      // A datagram that fits with the option still goes by DSR.
      const small = await lab.probe(ext, ['udp', a.ip, String(MODES.dsr + 1), '--count', '3', '--size', '1400']);
      assert.deepEqual(small.seenAs, { [LAB_EXT_IP]: 3 });
    });

    await t.test('DSR: frag-needed for an established flow quotes the packet the client sent, to the address it used', async () => {
      const extIP = '198.18.2.51'; // the dsr Service's externalIP, routed to node A
      const before = stats(a);
      const small = await lab.probe(ext, ['udp', extIP, '53', '--count', '1', '--bind-port', '40888']);
      assert.deepEqual(small.seenAs, { [LAB_EXT_IP]: 1 }, 'the flow goes by DSR');
      const mid = stats(a);
      // Send the full-size datagram on the same flow and catch the ICMP error
      // it draws on a raw socket, to read its source and the quoted header.
      const icmp = JSON.parse(await lab.exec(ext, 'python3', ['-c', CATCH_FRAG_NEEDED, extIP, '53', '40888', '1472'])) as Record<string, unknown>;
      assert.deepEqual(icmp, { src: extIP, type: 3, code: 4, mtu: 1488, inner_src: LAB_EXT_IP, inner_dst: extIP, inner_sport: 40888, inner_dport: 53 }, 'frag-needed from the address the client used, quoting what it sent');
      assert.equal(delta(stats(a), mid).tc_frag_needed, 1, 'node A sent frag-needed on the known flow');
      assert.equal(delta(stats(a), mid).tc_fwd_new ?? 0, 0, 'no new flow was made');
      assert.equal(delta(mid, before).tc_frag_needed ?? 0, 0);
      // The client's kernel files the MTU under the quoted destination: the
      // externalIP only if the quote is the packet as the client sent it.
      const route = await run('ip', ['-n', lab.extNs, 'route', 'get', extIP]);
      assert.match(route, /mtu 1488/, `the client learnt the path MTU of the address it used: ${route}`);
    });

    await t.test('--nodeport-mode dsr on the node, with an opt-out CIDR falling back to SNAT', async () => {
      await lab.stopKpr(a);
      await lab.startKpr(a, ['--nodeport-mode', 'dsr', '--dsr-optout-cidrs', `${LAB_EXT_IP2}/32`, ...peers]);
      await lab.waitFor(async () => (await lab.kprLog(a)).split('"msg":"kpr running"').length > 2, 'kpr restart on node A');
      const plain = await lab.probe(ext, ['tcp', a.ip, String(MODES.plain), '--count', '20']);
      assert.deepEqual(plain.seenAs, { [LAB_EXT_IP]: 20 }, 'the node default now gives DSR');
      const optedOut = await lab.probe(ext, ['tcp', a.ip, String(MODES.plain), '--count', '20', '--bind', LAB_EXT_IP2]);
      assert.deepEqual(optedOut.errors, {});
      assert.deepEqual(optedOut.seenAs, { [a.ip]: 20 }, 'opted-out clients are masqueraded');
      const annotated = await lab.probe(ext, ['tcp', a.ip, String(MODES.snat), '--count', '10']);
      assert.deepEqual(annotated.seenAs, { [a.ip]: 10 }, 'the Service annotation still wins');
      const r = await wrk(MODES.plain + 2);
      assert.equal(r.socketErrors, false, r.out);
    });

    await t.test('a restart of node B keeps its DSR peers until a source lists the Nodes', async () => {
      // B restarts without --cluster-node-ips, on a manifest that never
      // parses: its source never lists the Nodes, so only what is pinned can
      // still name node A as a peer.
      const broken = join(lab.stateDir, 'broken-b', 'services.yaml');
      await mkdir(dirname(broken), { recursive: true });
      await writeFile(broken, 'kind: Service\nmetadata: {name: [unclosed\n');
      await lab.stopKpr(b);
      await lab.startKpr(b, [], { manifests: broken });
      await lab.waitFor(async () => (await lab.kprLog(b)).split('"msg":"kpr running"').length > 2, 'kpr restart on node B');
      const before = stats(b);
      const r = await lab.probe(ext, ['tcp', a.ip, String(MODES.dsr), '--count', '20']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(r.seenAs, { [LAB_EXT_IP]: 20 }, 'still served by DSR: node B sees the client');
      assert.equal(delta(stats(b), before).tc_dsr_untrusted ?? 0, 0, 'no DSR request refused');
    });
  } finally {
    await lab.down();
  }
});
