/**
 * The DSR option across the 8 -> 12 byte change, under BPF_PROG_TEST_RUN,
 * on the backend node's program (kpr_from_host) of both versions:
 * version A (LAYOUT1_REV, 8-byte option without the ingress node) and this
 * build (12 bytes, honoured only from a trusted peer). Each handles its own
 * option; each mishandles the other's. This is the evidence behind
 * docs/deploy.md's rule to run NodePort in SNAT mode while a rolling
 * upgrade crosses this change; the second test runs that procedure in the
 * lab.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { bpf, type BpfObject } from '../../src/datapath/addon.js';
import { CT_F_DSR, CT_REV, decodeCtVal } from '../../src/datapath/codec.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { BpfMap } from '../../src/datapath/bpf-map.js';
import { versionedPinPaths } from '../../src/datapath/migrate.js';
import { Lab, LAB_EXT_IP, POD_PORT, type LabNode, type LabProbe } from '../../src/lab/cluster.js';
import { labNode } from '../../src/lab/manifest.js';
import { repoRoot } from '../../src/util/paths.js';
import { type CtRow } from '../../src/inspect/ct.js';
import { Client } from '../helpers/client-proc.js';
import { LAYOUT1_REV, requireRevision } from '../helpers/old-build.js';
import { packet, parse, TCP, TCP_SYN } from '../helpers/packet.js';
import { requireRoot } from '../helpers/privileged.js';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const CLIENT = '198.51.100.100';
const POD = '192.0.2.75';
const SVC = '198.51.100.11';
const INGRESS = '198.51.100.11';
const ip4 = (a: string) => Buffer.from(a.split('.').map(Number));

/** kpr's DSR option as version A (8 bytes) or this build (12 bytes, + ingress node) writes it. */
function dsrOption(len: 8 | 12): Buffer {
  const o = Buffer.alloc(len);
  o[0] = 0x9e;
  o[1] = len;
  o.writeUInt16BE(30080, 2);
  ip4(SVC).copy(o, 4);
  if (len === 12) ip4(INGRESS).copy(o, 8);
  return o;
}

const syn = (len: 8 | 12) => packet({ src: CLIENT, dst: POD, proto: TCP, sport: 40000, dport: 8080, tcpFlags: TCP_SYN, ipOptions: dsrOption(len) });

test('DSR option across versions: each backend node takes its own option and mishandles the other version\'s', async (t) => {
  if (!requireRoot(t)) return;
  const oldRoot = requireRevision(t, LAYOUT1_REV);
  if (!oldRoot) return;
  const dirs: string[] = [];
  const objs: BpfObject[] = [];
  const load = (root: string, tag: string) => {
    const dir = `/sys/fs/bpf/kpr-dsr-compat-${process.pid}-${tag}`;
    mkdirSync(dir, { recursive: true });
    dirs.push(dir);
    const obj = bpf.openObject(join(root, 'bpf', 'tc_nat.bpf.o'), { pinRoot: dir, pinPaths: versionedPinPaths(dir) });
    objs.push(obj);
    const ct = new BpfMap('kpr_v4_ct', obj.mapFd('kpr_v4_ct'));
    const stats = new BpfMap('kpr_stats', obj.mapFd('kpr_stats'));
    const run = (pkt: Buffer) => {
      for (const [k] of ct.dump()) ct.delete(k);
      const before = readStats(stats);
      const r = bpf.progTestRun(obj.progFd('kpr_from_host'), pkt);
      const after = readStats(stats);
      const learnt = ct.dump().map(([, v]) => decodeCtVal(v));
      return { retval: r.retval, out: parse(r.data), learnt, learn: after.tc_dsr_learn - before.tc_dsr_learn, untrusted: after.tc_dsr_untrusted - before.tc_dsr_untrusted };
    };
    return run;
  };
  try {
    const runOld = load(oldRoot, 'a');
    const runNew = load(repoRoot(), 'b');

    // Control: version A learns the flow from its own 8-byte option and strips it.
    const own = runOld(syn(8));
    assert.equal(own.retval, TC_ACT_OK);
    assert.equal(own.learn, 1);
    assert.equal(own.out.ihl, 20, 'option stripped');
    assert.ok(own.learnt.some((v) => v.type === CT_REV && (v.flags & CT_F_DSR) !== 0));

    // New ingress -> old backend node: A does not know the 12-byte option, so
    // the SYN reaches the pod with the option still in it and nothing learnt:
    // the pod answers from its own address, and the client drops that reply.
    const newToOld = runOld(syn(12));
    assert.equal(newToOld.retval, TC_ACT_OK);
    assert.equal(newToOld.learn, 0);
    assert.deepEqual(newToOld.learnt, []);
    assert.equal(newToOld.out.ihl, 32, 'the 12-byte option goes on to the pod');

    // Old ingress -> new backend node: the 8-byte option names no ingress
    // node, so it cannot be trusted: dropped and counted.
    const oldToNew = runNew(syn(8));
    assert.equal(oldToNew.retval, TC_ACT_SHOT);
    assert.equal(oldToNew.untrusted, 1);
    assert.deepEqual(oldToNew.learnt, []);
  } finally {
    for (const o of objs) o.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ECHO_PORT = 9000;

/**
 * docs/deploy.md's procedure for a cluster using DSR, with version A and
 * this build: (1) A restarted in SNAT mode, (2) A -> B, (3) B back to DSR,
 * one node at a time. The client reaches node 1; the only backends are on
 * node 2, so every flow crosses. A TCP connection opened by DSR under A
 * must live through all six restarts, and a loop of new connections must
 * not fail once.
 */
test('DSR across the option change: SNAT mode for the upgrade keeps every connection, old DSR flows included', async (t) => {
  if (!requireRoot(t)) return;
  const oldRoot = requireRevision(t, LAYOUT1_REV);
  if (!oldRoot) return;
  const oldCli = join(oldRoot, 'src', 'cli.ts');
  const lab = new Lab({ name: `dc${process.pid % 100000}`, nodes: 2, podsPerNode: 1 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const pod = n2.pods[0]!;
  const stopFile = join(lab.stateDir, 'stop-loops');
  const clients: Client[] = [];
  const svc = (name: string, nodePort: number, port: number) => [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'dc' },
      spec: { type: 'NodePort', clusterIP: `198.18.3.${nodePort % 100}`, ports: [{ name: 'tcp', port: 80, protocol: 'TCP', targetPort: port, nodePort }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: 'dc', labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ name: 'tcp', port, protocol: 'TCP' }],
      endpoints: [{ addresses: [pod.ip], conditions: { ready: true }, nodeName: n2.name }],
    },
  ];
  const starts = new Map<LabNode, number>();
  const start = async (node: LabNode, mode: string, cli?: string) => {
    await lab.startKpr(node, ['--nodeport-mode', mode], cli ? { cli } : {});
    const n = (starts.get(node) ?? 0) + 1;
    starts.set(node, n);
    await lab.waitFor(async () => ((await lab.kprLog(node)).match(/"msg":"kpr running"/g) ?? []).length >= n, `kpr on ${node.name} (start ${n})`, 60_000);
  };
  try {
    await lab.create();
    await lab.startPods();
    // Node objects: this build's DSR peers (version A ignores them).
    await lab.writeManifest([labNode(n1, undefined), labNode(n2, undefined), ...svc('echo', 30300, ECHO_PORT), ...svc('web', 30310, POD_PORT)]);
    const echo = new Client({ netns: pod.netns }, ['echo-server', pod.ip, String(ECHO_PORT), pod.name]);
    clients.push(echo);
    await echo.waitFor((e) => e.some((x) => x.ready), 'echo server ready', 60_000);
    for (const node of lab.nodes) await start(node, 'dsr', oldCli);

    const probe = (args: string[]) => lab.probe({ netns: lab.extNs }, ['tcp', n1.ip, '30310', ...args]);
    const before = await probe(['--count', '5']);
    assert.deepEqual(before.seenAs, { [LAB_EXT_IP]: 5 }, 'version A serves by DSR: the pod sees the client');

    const held = new Client({ netns: lab.extNs }, ['tcp-echo', n1.ip, '30300', '240000', '200']);
    clients.push(held);
    await held.waitFor((e) => e.filter((x) => x.pod).length >= 2, 'replies on the DSR connection', 60_000);

    const loop = probe(['--count', '20000', '--interval', '20', '--timeout', '900', '--duration', '300000', '--stop-file', stopFile, '--trace']);
    await sleep(1000);
    const steps: Array<[string, string, string | undefined]> = [
      ['1. version A, SNAT mode', 'snat', oldCli],
      ['2. version B, SNAT mode', 'snat', undefined],
      ['3. version B, DSR mode', 'dsr', undefined],
    ];
    const phases: Array<[number, string]> = [];
    for (const [what, mode, cli] of steps) {
      for (const node of [n1, n2]) {
        phases.push([Date.now(), `${what}: ${node.name}`]);
        await lab.stopKpr(node);
        await sleep(500);
        await start(node, mode, cli);
        phases.push([Date.now(), `${what}: ${node.name} running`]);
        await sleep(1000);
      }
      if (mode === 'snat') {
        const r = await probe(['--count', '3']);
        // On a miss, say which flow went wrong: n1's recent DSR flows to
        // this NodePort, and the end of its log.
        const why = JSON.stringify(r.seenAs) === JSON.stringify({ [n1.ip]: 3 })
          ? ''
          : JSON.stringify({
              // (this build's inspect reads only this build's pins)
              n1ct: cli
                ? 'version A'
                : (JSON.parse(await lab.kprCli(n1, ['inspect', 'ct', '--pin-path', n1.pinPath, '--json'])) as CtRow[]).filter(
                    (row) => row.dsr && row.frontend.endsWith(':30310') && row.idleSeconds < 30,
                  ),
              n1log: (await lab.kprLog(n1)).split('\n').slice(-8),
            });
        assert.deepEqual(r.seenAs, { [n1.ip]: 3 }, `${what}: new flows by SNAT ${why}`);
      }
    }
    const lastRestart = Date.now();
    await sleep(1500);
    await writeFile(stopFile, '');
    const r: LabProbe = await loop;
    const t0 = phases[0]![0];
    const when = (r.errorTrace ?? []).map(([ts, code]) => `${code} at +${ts - t0} ms, after "${phases.filter(([at]) => at <= ts).pop()?.[1] ?? 'start'}"`);
    // Each node's data-path counters, to attribute a failure (a drop counter
    // names the cause; none moving points elsewhere).
    const stats = Object.fromEntries(
      lab.nodes.map((n) => [n.name, Object.fromEntries(Object.entries(withPinnedMaps(n.pinPath, (m) => readStats(m.stats))).filter(([, v]) => v > 0))]),
    );
    const diag = { ok: r.ok, errors: r.errors, ms: r.elapsedMs, when, phases: phases.map(([at, p]) => `${p} +${at - t0}`), stats };
    t.diagnostic(JSON.stringify(diag));
    const after = await probe(['--count', '5']);
    assert.deepEqual(after.seenAs, { [LAB_EXT_IP]: 5 }, 'this build serves by DSR again');

    const bad = held.events.filter((e) => e.err || e.closed);
    assert.deepEqual(bad, [], 'the connection opened by DSR under version A');
    assert.ok(held.events.some((e) => e.pod && e.t > lastRestart), 'answered after the last restart');
    assert.ok(r.ok > 100, `only ${r.ok} connections`);
    assert.deepEqual(r.errors, {}, JSON.stringify(diag));
  } finally {
    if (!existsSync(stopFile)) await writeFile(stopFile, '').catch(() => undefined);
    for (const c of clients) c.kill();
    await lab.down();
  }
});
