/**
 * Maglev in the tc data path, under BPF_PROG_TEST_RUN, with two kpr data
 * paths (two pin paths) standing for two nodes. Each has its own local
 * backends, so each keeps the backends at different ordinals; the backend a
 * flow gets must still be the same on both, and the one the TS builder
 * predicts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { bpf } from '../../src/datapath/addon.js';
import { CT_F_DSR, CT_F_SNAT, CT_FWD, decodeCtVal } from '../../src/datapath/codec.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { cleanup } from '../../src/datapath/pinned.js';
import { decodeMaglevTable } from '../../src/datapath/maglev-tables.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { backendIdentity, buildMaglevTable, flowSlot, sortForMaglev } from '../../src/model/maglev.js';
import { parseEndpointSlice, parseService } from '../../src/model/objects.js';
import { translateService } from '../../src/model/translate.js';
import type { DesiredServicePort } from '../../src/model/types.js';
import { service, slice } from '../../src/lab/objects.js';
import { packet, parse, TCP, TCP_ACK, TCP_SYN } from '../helpers/packet.js';
import { requireRoot } from '../helpers/privileged.js';

const M = 251;
const NODES = [
  { name: 'n1', ip: '198.51.100.11' },
  { name: 'n2', ip: '198.51.100.12' },
] as const;
const EXT_VIP = '198.18.1.14';
const RND_VIP = '198.18.1.15';
const LOCAL_VIP = '198.18.1.16';
const STICKY_VIP = '198.18.1.17';
const ENDPOINTS = [
  { ip: '192.0.2.11', node: 'n1' },
  { ip: '192.0.2.12', node: 'n1' },
  { ip: '192.0.2.75', node: 'n2' },
  { ip: '192.0.2.76', node: 'n2' },
  { ip: '192.0.2.139', node: 'n3' },
  { ip: '192.0.2.140', node: 'n3' },
];

function desired(nodeName: string, nodeIP: string): Map<string, DesiredServicePort> {
  const objs: Array<[Record<string, unknown>, string]> = [
    [service('ext', { clusterIP: '198.18.0.14', extra: { externalIPs: [EXT_VIP] } }), 'ext'],
    [service('local', { clusterIP: '198.18.0.16', extra: { externalIPs: [LOCAL_VIP], externalTrafficPolicy: 'Local' } }), 'local'],
    [service('sticky', { clusterIP: '198.18.0.17', extra: { externalIPs: [STICKY_VIP], sessionAffinity: 'ClientIP' } }), 'sticky'],
  ];
  const rnd = service('rnd', { clusterIP: '198.18.0.15', extra: { externalIPs: [RND_VIP] } });
  (rnd.metadata as Record<string, unknown>).annotations = { 'kpr.io/lb-algorithm': 'random' };
  objs.push([rnd, 'rnd']);
  const out = new Map<string, DesiredServicePort>();
  for (const [s, name] of objs) {
    const svc = parseService(s);
    const sl = parseEndpointSlice(slice(`${name}-1`, name, ENDPOINTS));
    assert.ok(svc.ok && sl.ok);
    for (const p of translateService(svc.value, [sl.value], { nodeName, nodeIPs: [nodeIP], lbAlgorithm: 'maglev' }).ports) out.set(p.name, p);
  }
  return out;
}

const dps: Datapath[] = [];
const pins = NODES.map((n) => `/sys/fs/bpf/kpr-test-maglev-${n.name}-${process.pid}`);
let skipped = false;

function send(node: number, spec: { src: string; dst: string; sport: number; flags: number }) {
  const dp = dps[node] as Datapath;
  const r = bpf.progTestRun(dp.tcProgFd('kpr_from_host'), packet({ src: spec.src, dst: spec.dst, proto: TCP, sport: spec.sport, dport: 80, tcpFlags: spec.flags }));
  return { retval: r.retval, out: parse(r.data) };
}

function clearCt(): void {
  for (const dp of dps) for (const [k] of dp.maps.ct.dump()) dp.maps.ct.delete(k);
}

/** Synthetic clients (TEST-NET addresses; the packets only go through PROG_TEST_RUN). */
function clients(count: number): Array<{ src: string; sport: number }> {
  return Array.from({ length: count }, (_, i) => ({ src: `203.0.113.${1 + (i % 200)}`, sport: 20000 + i * 37 }));
}

function predicted(backends: string[], c: { src: string; sport: number }, vip: string): string {
  const ids = sortForMaglev(backends.map((addr) => ({ addr, port: 8080 }))).map(backendIdentity);
  const table = buildMaglevTable(ids, M);
  return (ids[table[flowSlot({ saddr: c.src, daddr: vip, sport: c.sport, dport: 80, proto: TCP }, M)] as number] as string).split(':')[0] as string;
}

describe('Maglev in tc, on two nodes', () => {
  before(async (t) => {
    if (!requireRoot(t as unknown as import('node:test').TestContext)) {
      skipped = true;
      return;
    }
    for (const [i, node] of NODES.entries()) {
      const dp = await Datapath.open(pins[i] as string, undefined, M);
      dps.push(dp);
      const r = new Reconciler(dp.maps);
      r.adopt();
      // Node 2 takes the controller's path: tables built and staged in the
      // kernel by prepare(), then swapped in by execute(). The tests below
      // compare its tables with node 1's, written by syncAll in one go.
      if (i === 0) assert.deepEqual(r.syncAll(desired(node.name, node.ip)).failed, []);
      else {
        const plan = r.planAll(desired(node.name, node.ip));
        assert.ok(plan.tables > 0);
        await plan.prepare();
        assert.deepEqual(plan.execute().failed, []);
      }
      // node 1 masquerades; node 2 runs DSR, for the mid-stream case
      dp.writeConfig({ nodeIP: node.ip, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: i });
      dp.setNodeIPs([node.ip]);
    }
  });
  after(async () => {
    for (const dp of dps) dp.close();
    for (const pin of pins) await cleanup(pin);
  });

  test('each node keeps its own ordinals, but its table names the same backend per slot', (t) => {
    if (skipped) return t.skip('not root');
    const perNode = dps.map((dp) => {
      const id = new Reconciler(dp.maps);
      id.adopt();
      const svcId = id.idOf('default/ext:http/TCP') as number;
      const key = Buffer.alloc(4);
      key.writeUInt32LE(svcId, 0);
      const table = decodeMaglevTable(dp.maps.maglev.lookup(key) as Buffer);
      const atOrdinal = new Map<number, string>();
      for (const [k, v] of dp.maps.be.dump()) if (k.readUInt32LE(0) === svcId) atOrdinal.set(k.readUInt32LE(4), `${v[0]}.${v[1]}.${v[2]}.${v[3]}`);
      return { table, atOrdinal };
    });
    const [a, b] = perNode as [(typeof perNode)[0], (typeof perNode)[0]];
    assert.equal(a.table.m, M);
    assert.notDeepEqual([...a.atOrdinal.entries()].sort(), [...b.atOrdinal.entries()].sort(), 'local-first ordinals differ per node');
    for (let slot = 0; slot < M; slot++) {
      assert.equal(a.atOrdinal.get(a.table.ordinals[slot] as number), b.atOrdinal.get(b.table.ordinals[slot] as number), `slot ${slot}`);
    }
  });

  test('the same 5-tuple gets the same backend on both nodes, the one the TS builder predicts', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const seen = new Set<string>();
    for (const c of clients(64)) {
      const want = predicted(ENDPOINTS.map((e) => e.ip), c, EXT_VIP);
      for (const node of [0, 1]) {
        const { out } = send(node, { src: c.src, dst: EXT_VIP, sport: c.sport, flags: TCP_SYN });
        assert.equal(out.dst, want, `${c.src}:${c.sport} via ${NODES[node]?.name}`);
        assert.equal(out.dport, 8080);
      }
      seen.add(want);
    }
    assert.ok(seen.size >= 5, `64 flows spread over ${seen.size} of 6 backends`);
  });

  test('a Service annotated random, and the ClusterIP of a Maglev Service, have no table flag', (t) => {
    if (skipped) return t.skip('not root');
    const rows = dps[0]!.maps.fe.dump().map(([k, v]) => ({ addr: `${k[4]}.${k[5]}.${k[6]}.${k[7]}`, flags: v.readUInt32LE(16) }));
    const flags = (addr: string) => rows.find((r) => r.addr === addr)?.flags ?? -1;
    assert.ok(flags(EXT_VIP) & 0x8);
    assert.equal(flags(RND_VIP) & 0x8, 0);
    assert.equal(flags('198.18.0.14') & 0x8, 0, 'connect-time/ClusterIP keeps random');
  });

  test('eTP=Local: the table covers only this node\'s backends', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    for (const [i, node] of NODES.entries()) {
      const local = ENDPOINTS.filter((e) => e.node === node.name).map((e) => e.ip);
      for (const c of clients(32)) {
        const { out } = send(i, { src: c.src, dst: LOCAL_VIP, sport: c.sport, flags: TCP_SYN });
        assert.equal(out.dst, predicted(local, c, LOCAL_VIP));
        assert.equal(out.src, c.src, 'eTP=Local keeps the client address');
      }
    }
  });

  test('a mid-stream segment entering another node goes to the same backend, DNAT only (DSR), with a FWD entry', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    for (const c of clients(16)) {
      // The flow opened through node 1 ...
      const syn = send(0, { src: c.src, dst: EXT_VIP, sport: c.sport, flags: TCP_SYN });
      // ... and ECMP moves it to node 2, which has never seen it.
      const ack = send(1, { src: c.src, dst: EXT_VIP, sport: c.sport, flags: TCP_ACK });
      assert.equal(ack.out.dst, syn.out.dst, `${c.src}:${c.sport}`);
      assert.equal(ack.out.src, c.src, 'the client address is kept: the backend node knows this flow');
      assert.equal(ack.out.ihl, 20, 'no DSR option on a mid-stream segment');
      assert.equal(ack.out.l4CsumOk, true);
    }
    const fwd = dps[1]!.maps.ct.dump().map(([, v]) => decodeCtVal(v)).filter((v) => v.type === CT_FWD);
    assert.equal(fwd.length, 16);
    for (const v of fwd) assert.equal(v.flags & CT_F_SNAT, 0);
    assert.ok(fwd.some((v) => v.flags & CT_F_DSR), 'remote backends are marked DSR');
  });

  test('a restart adopts the tables as they are, and one with another M replaces them', async (t) => {
    if (skipped) return t.skip('not root');
    const tables = (dp: Datapath) => dp.maps.maglev.dump().map(([, v]) => decodeMaglevTable(v).m);
    const same = new Reconciler(dps[0]!.maps);
    same.adopt();
    const r0 = same.syncAll(desired(NODES[0].name, NODES[0].ip));
    assert.equal(r0.writes, 0, 'nothing rewritten: every digest matched');
    const other = await Datapath.open(pins[0] as string, undefined, 1021);
    try {
      const r = new Reconciler(other.maps);
      r.adopt();
      assert.deepEqual(r.syncAll(desired(NODES[0].name, NODES[0].ip)).failed, []);
      assert.deepEqual(tables(other), [1021, 1021], 'both Maglev Service ports now have M = 1021');
    } finally {
      other.close();
    }
  });

  test('sessionAffinity: ClientIP keeps one backend per client, not one per flow', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const got = new Set<string>();
    for (let i = 0; i < 16; i++) got.add(send(0, { src: '203.0.113.9', dst: STICKY_VIP, sport: 30000 + i * 101, flags: TCP_SYN }).out.dst);
    assert.equal(got.size, 1, `one client, one backend: ${[...got].join(', ')}`);
    const key = Buffer.alloc(4);
    const r = new Reconciler(dps[0]!.maps);
    r.adopt();
    key.writeUInt32LE(r.idOf('default/sticky:http/TCP') as number, 0);
    assert.equal(dps[0]!.maps.maglev.lookup(key), null, 'no table for an affinity Service');
  });

  test('without Maglev, the same mid-stream segment falls back to SNAT to a random backend', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const local = new Set(ENDPOINTS.filter((e) => e.node === NODES[1].name).map((e) => e.ip));
    let snat = 0;
    for (const c of clients(16)) {
      const ack = send(1, { src: c.src, dst: RND_VIP, sport: c.sport, flags: TCP_ACK });
      // A local backend is served here with the client's address; a remote one is masqueraded.
      assert.equal(ack.out.src, local.has(ack.out.dst) ? c.src : NODES[1].ip, `${c.src}:${c.sport} -> ${ack.out.dst}`);
      if (ack.out.src === NODES[1].ip) snat++;
    }
    assert.ok(snat > 0);
  });
});
