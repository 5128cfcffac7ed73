/**
 * Flows survive a switch of ingress node (ECMP moving a flow), on the
 * two-node dual-stack lab, over IPv4 and over IPv6. The external client
 * keeps HTTP keep-alive connections open to an externalIP routed to node 1,
 * then its route to the VIP moves to node 2 and the same connections carry
 * a second request. The Service uses Maglev (annotation) and DSR, so node 2
 * picks the backend node 1 picked (kpr_v4_maglev or kpr_v6_maglev) and
 * forwards the mid-stream segments to it without SNAT; the backend's node
 * answers the client directly.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP, LAB_EXT_IP6, POD_HTTP_PORT, type LabNode, type LabPod } from '../../src/lab/cluster.js';
import { labNode } from '../../src/lab/manifest.js';
import { ip } from '../../src/lab/exec.js';
import { backendIdentity, buildMaglevTable, flowSlot, sortForMaglev } from '../../src/model/maglev.js';
import { hostPort, type IPFamily } from '../../src/util/ip.js';
import { requireRoot } from '../helpers/privileged.js';

const PORT = 8000;
const M = 16381;

/** What differs between the families: addresses, and how each node trusts the other's DSR header. */
const FAMILY = {
  4: { vip: '198.18.3.10', clusterIP: '198.18.3.1', client: LAB_EXT_IP, podIP: (p: LabPod) => p.ip, nodeIP: (n: LabNode) => n.ip, extra: {} },
  6: {
    vip: '2001:db8:f::3:10',
    clusterIP: '2001:db8:f::3:1',
    client: LAB_EXT_IP6,
    podIP: (p: LabPod) => p.ip6,
    nodeIP: (n: LabNode) => n.ip6,
    extra: { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' },
  },
} as const;

/**
 * The client: opens one keep-alive connection per source port, sends a
 * request on each, prints the answers, waits for a line on stdin, sends a
 * second request on the same sockets, prints, exits. Bounded by a timer.
 * The pods' HTTP keep-alive lasts 5 s: the switch happens well within it.
 */
const CLIENT = `
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
const [vip, port, client, ...sports] = process.argv.slice(2);
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 30000).unref();
const socks = await Promise.all(sports.map((sp) => new Promise((res, rej) => {
  const s = connect({ host: vip, port: Number(port), localAddress: client, localPort: Number(sp) }, () => res(s));
  s.on('error', rej);
})));
const ask = (s) => new Promise((res) => {
  let buf = '';
  const onData = (d) => {
    buf += d;
    // podserver answers one chunk: "<len>\\r\\n<pod> <client>\\n\\r\\n0\\r\\n\\r\\n"
    const end = buf.indexOf('\\r\\n\\r\\n');
    const body = buf.slice(end + 4);
    if (end >= 0 && body.endsWith('\\r\\n0\\r\\n\\r\\n')) { s.off('data', onData); buf = ''; res(body.split('\\r\\n')[1].trim()); }
  };
  s.on('data', onData);
  s.on('error', (e) => res('error ' + e.code));
  s.on('close', () => res('closed'));
  s.write('GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: keep-alive\\r\\n\\r\\n');
});
console.log(JSON.stringify(await Promise.all(socks.map(ask))));
const rl = createInterface({ input: process.stdin });
await once(rl);
function once(r) { return new Promise((res) => r.once('line', res)); }
console.log(JSON.stringify(await Promise.all(socks.map(ask))));
for (const s of socks) s.destroy();
process.exit(0);
`;

function manifest(lab: Lab, family: IPFamily): unknown[] {
  const f = FAMILY[family];
  return [
    // The Node objects make each node trust the other's DSR option.
    ...lab.nodes.map((n) => labNode(n, undefined)),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'ecmp', namespace: 'mg', annotations: { 'kpr.io/lb-algorithm': 'maglev', 'kpr.io/nodeport-mode': 'dsr' } },
      spec: { clusterIP: f.clusterIP, externalIPs: [f.vip], ports: [{ name: 'http', port: PORT, protocol: 'TCP', targetPort: POD_HTTP_PORT }], ...f.extra },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'ecmp-1', namespace: 'mg', labels: { 'kubernetes.io/service-name': 'ecmp' } },
      addressType: `IPv${family}`,
      ports: [{ name: 'http', port: POD_HTTP_PORT, protocol: 'TCP' }],
      endpoints: lab.nodes.flatMap((n) => n.pods.map((p) => ({ addresses: [f.podIP(p)], conditions: { ready: true }, nodeName: n.name }))),
    },
  ];
}

for (const family of [4, 6] as const) {
  test(`a TCP connection opened through node 1 goes on when its packets enter node 2 (Maglev + DSR, IPv${family})`, async (t) => {
    if (!requireRoot(t)) return;
    const { vip: VIP, client: CLIENT_IP, podIP, nodeIP } = FAMILY[family];
    const lab = new Lab({ name: `v6a${family}${process.pid % 10000}`, nodes: 2, podsPerNode: 2 });
    const [n1, n2] = lab.nodes as [LabNode, LabNode];
    const dir = mkdtempSync(join(tmpdir(), 'kpr-maglev-'));
    const script = join(dir, 'client.mjs');
    writeFileSync(script, CLIENT);
    try {
      // IPv6: the Node objects carry IPv4 addresses only, so the nodes learn each other's IPv6 addresses here.
      await lab.up({ manifest: manifest(lab, family), kprArgs: family === 6 ? ['--cluster-node-ips', n1.ip6, n2.ip6] : [] });
      for (const node of lab.nodes) await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`);

      // Source ports chosen with the TS builder so that backends on both nodes are covered.
      const pods = lab.allPods();
      const ids = sortForMaglev(pods.map((p) => ({ addr: podIP(p), port: POD_HTTP_PORT }))).map(backendIdentity);
      const table = buildMaglevTable(ids, M);
      const podOf = (sport: number) => {
        const id = ids[table[flowSlot({ saddr: CLIENT_IP, daddr: VIP, sport, dport: PORT, proto: 6 }, M)] as number] as string;
        return pods.find((p) => hostPort(podIP(p), POD_HTTP_PORT) === id)!;
      };
      const sports: number[] = [];
      const onNode = (n: LabNode, sp: number) => n.pods.some((p) => p.name === podOf(sp).name);
      for (let sp = 40000; sports.filter((s) => onNode(n1, s)).length < 3 || sports.filter((s) => onNode(n2, s)).length < 3; sp++) {
        if (sports.filter((s) => onNode(n1, s)).length < 3 && onNode(n1, sp)) sports.push(sp);
        else if (sports.filter((s) => onNode(n2, s)).length < 3 && onNode(n2, sp)) sports.push(sp);
      }

      const route = (n: LabNode) => ip(['-n', lab.extNs, `-${family}`, 'route', 'replace', `${VIP}/${family === 4 ? 32 : 128}`, 'via', nodeIP(n)]);
      await route(n1);
      const child = spawn('ip', ['netns', 'exec', lab.extNs, process.execPath, script, VIP, String(PORT), CLIENT_IP, ...sports.map(String)], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const lines = async (n: number) => {
        for (let i = 0; i < 300 && out.split('\n').filter(Boolean).length < n && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
        return out.split('\n').filter(Boolean);
      };
      try {
        const [first] = await lines(1);
        assert.ok(first, `client printed nothing: ${err}`);
        const before = JSON.parse(first) as string[];
        // Every answer names the predicted pod and shows the client's own address (DSR / local).
        before.forEach((reply, i) => assert.equal(reply, `${podOf(sports[i] as number).name} ${CLIENT_IP}`, `via node 1, sport ${sports[i]}`));

        // ECMP moves the flows: the client's next packets enter node 2.
        await route(n2);
        child.stdin.write('go\n');
        const [, second] = await lines(2);
        assert.ok(second, `no second answer: ${out} ${err}`);
        const after = JSON.parse(second) as string[];
        assert.deepEqual(after, before, 'the same connections, served by the same pods, after the switch');
      } finally {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit');
          child.kill('SIGKILL');
          await exited;
        }
      }
      // Node 2 really carried them: it holds forward entries for the moved flows.
      const ct = JSON.parse(await lab.kprCli(n2, ['inspect', 'ct', '--pin-path', n2.pinPath, '--json'])) as Array<{ client: string }>;
      for (const sp of sports) assert.ok(ct.some((r) => r.client === hostPort(CLIENT_IP, sp)), `node 2 tracks ${hostPort(CLIENT_IP, sp)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await lab.down();
    }
  });
}
