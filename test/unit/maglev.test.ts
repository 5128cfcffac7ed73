/**
 * The Maglev table builder and its place in the reconciler: balance, order
 * independence, disruption when a backend goes (against random), and
 * make-before-break writes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { prng } from '../../bench/index.js';
import { Controller } from '../../src/controller/controller.js';
import { planMaglevTable } from '../../src/controller/maglev-plan.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { ObjectStore } from '../../src/controller/store.js';
import { service, slice } from '../../src/lab/objects.js';
import { createLogger } from '../../src/log.js';
import { translateService } from '../../src/model/translate.js';
import { decodeNatFeVal } from '../../src/datapath/codec.js';
import { decodeMaglevTable } from '../../src/datapath/maglev-tables.js';
import { MemoryMap, MemoryMaglevTables } from '../helpers/memmaps.js';
import { ipv6Text } from '../../src/util/ip.js';
import {
  backendIdentity,
  buildMaglevTable,
  flowHash,
  flowSlot,
  isPrime,
  maglevOrdinals,
  sortForMaglev,
  tableSizeProblem,
  type FlowTuple,
} from '../../src/model/maglev.js';
import { NAT_BE_LOCAL_BASE, NAT_FLG_EXTERNAL, NAT_FLG_EXTERNAL_LOCAL, NAT_FLG_MAGLEV, type DesiredServicePort } from '../../src/model/types.js';

function tuples(count: number, seed = 1): FlowTuple[] {
  const r = prng(seed);
  const q = () => Math.floor(r() * 256);
  return Array.from({ length: count }, () => ({
    // synthetic tuples: hashed, never sent
    saddr: `${q()}.${q()}.${q()}.${q()}`,
    daddr: '198.18.1.14',
    sport: 1024 + Math.floor(r() * 64000),
    dport: 80,
    proto: 6,
  }));
}

const backends = (n: number) => Array.from({ length: n }, (_, i) => ({ addr: `192.0.2.${10 + i}`, port: 8080 }));

test('table sizes: primes between 251 and 131071 only', () => {
  assert.equal(tableSizeProblem(16381), undefined);
  assert.equal(tableSizeProblem(251), undefined);
  assert.equal(tableSizeProblem(131071), undefined);
  for (const bad of [250, 16382, 16383, 131072, 1.5, 241]) assert.match(tableSizeProblem(bad) ?? '', /prime between 251 and 131071/);
  assert.equal(isPrime(65521), true);
  assert.equal(isPrime(65535), false);
});

test('every backend owns M/N slots, give or take one', () => {
  for (const [n, m] of [
    [1, 251],
    [3, 251],
    [7, 16381],
    [100, 16381],
  ] as const) {
    const t = buildMaglevTable(sortForMaglev(backends(n)).map(backendIdentity), m);
    const owned = new Array<number>(n).fill(0);
    for (const i of t) owned[i] = (owned[i] as number) + 1;
    assert.ok(Math.max(...owned) - Math.min(...owned) <= 1, `n=${n} m=${m}: ${Math.min(...owned)}..${Math.max(...owned)}`);
  }
});

test('the table depends on the backend set, not on the order or ordinals a node keeps them at', () => {
  const m = 4093;
  const set = backends(9);
  const shuffled = [set[4], set[0], set[8], set[2], set[6], set[1], set[7], set[3], set[5]] as typeof set;
  const a = maglevOrdinals(set, m);
  const b = maglevOrdinals(shuffled, m);
  for (let slot = 0; slot < m; slot++) {
    assert.equal(backendIdentity(set[a[slot] as number]!), backendIdentity(shuffled[b[slot] as number]!));
  }
});

test('removing 1 of N backends moves about 1/N of 10,000 flows; random moves most of them', (t) => {
  const m = 16381;
  const flows = tuples(10_000);
  for (const n of [3, 5, 10, 20, 50]) {
    const before = sortForMaglev(backends(n)).map(backendIdentity);
    const gone = before[Math.floor(n / 2)] as string;
    const after = before.filter((b) => b !== gone);
    const tb = buildMaglevTable(before, m);
    const ta = buildMaglevTable(after, m);
    let moved = 0;
    let movedRandom = 0;
    let movedModulo = 0;
    const r = prng(n);
    for (const f of flows) {
      const slot = flowSlot(f, m);
      const was = before[tb[slot] as number];
      const now = after[ta[slot] as number];
      if (was !== now) moved++;
      // kpr's random choice: a flow that is chosen again lands anywhere
      if (before[Math.floor(r() * n)] !== after[Math.floor(r() * (n - 1))]) movedRandom++;
      // plain hash modulo N, for reference
      if (before[slot % n] !== after[slot % (n - 1)]) movedModulo++;
    }
    const frac = moved / flows.length;
    t.diagnostic(
      `N=${n} M=${m}: maglev moved ${(frac * 100).toFixed(2)}% (bound ${((1 / n + 0.02) * 100).toFixed(2)}%), ` +
        `random ${((movedRandom / flows.length) * 100).toFixed(2)}%, hash mod N ${((movedModulo / flows.length) * 100).toFixed(2)}%`,
    );
    assert.ok(frac <= 1 / n + 0.02, `N=${n}: ${frac}`);
    // Flows of the removed backend must move: at least those.
    assert.ok(frac >= 1 / n - 0.02, `N=${n}: ${frac}`);
    assert.ok(movedRandom / flows.length > 0.5, 'random remaps most flows');
  }
});

test('adding a backend moves about 1/(N+1) of the flows', () => {
  const m = 16381;
  const flows = tuples(10_000, 7);
  const before = sortForMaglev(backends(10)).map(backendIdentity);
  const after = sortForMaglev([...backends(10), { addr: '192.0.2.99', port: 8080 }]).map(backendIdentity);
  const tb = buildMaglevTable(before, m);
  const ta = buildMaglevTable(after, m);
  const moved = flows.filter((f) => before[tb[flowSlot(f, m)] as number] !== after[ta[flowSlot(f, m)] as number]).length;
  assert.ok(moved / flows.length <= 1 / 11 + 0.02, String(moved));
});

function svcPort(flags: number, addrs: string[], local = 0): DesiredServicePort {
  const fe = (addr: string, f: number) => ({ addr, port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags: f, blackhole: false });
  return {
    name: 'ns/web:http/TCP',
    service: 'ns/web',
    proto: 'TCP',
    frontends: [fe('198.18.0.10', 0), fe('198.18.1.10', flags)],
    backends: addrs.map((addr, i) => ({ addr, port: 8080, local: i < local })),
    localBackends: addrs.slice(0, local).map((addr) => ({ addr, port: 8080, local: true })),
    affinityTimeout: 0,
  };
}

function memMaps(m: number, tables = 16) {
  return {
    fe: new MemoryMap('kpr_v4_nat_fe', 16, 20, 1024),
    be: new MemoryMap('kpr_v4_nat_be', 8, 8, 1024),
    fe6: new MemoryMap('kpr_v6_nat_fe', 40, 20, 1024),
    be6: new MemoryMap('kpr_v6_nat_be', 8, 20, 1024),
    meta: new MemoryMap('kpr_svc_meta', 4, 192, 1024),
    maglev: new MemoryMaglevTables(m, tables),
    maglev6: new MemoryMaglevTables(m, tables, 'kpr_v6_maglev'),
  };
}

/** A dual-stack port: a ClusterIP and an external IP per family, backends of both families. */
function dualStackPort(flags: number, v4: string[], v6: string[], v6Flags = flags): DesiredServicePort {
  const fe = (addr: string, f: number, src: string) => ({ addr, port: 80, proto: 6, srcAddr: src, srcLen: 0, flags: f, blackhole: false });
  return {
    name: 'ns/web:http/TCP',
    service: 'ns/web',
    proto: 'TCP',
    frontends: [fe('198.18.0.10', 0, '0.0.0.0'), fe('198.18.1.10', flags, '0.0.0.0'), fe('2001:db8:f::10', 0, '::'), fe('2001:db8:f::1:10', v6Flags, '::')],
    backends: [...v4, ...v6].map((addr) => ({ addr, port: 8080, local: false })),
    localBackends: [],
    affinityTimeout: 0,
  };
}

test('reconciler: a dual-stack port has one table per family, each over its own backends, under the one service id', () => {
  const maps = memMaps(251);
  const log = logWrites(maps.fe6, 'fe6', maps.maglev6, 'tbl6');
  const r = new Reconciler(maps);
  const flags = NAT_FLG_EXTERNAL | NAT_FLG_MAGLEV;
  const v6 = ['2001:db8:0:2::20', '2001:db8:0:2::3', '2001:db8:0:2::100'];
  r.apply(new Map([['ns/web:http/TCP', dualStackPort(flags, ['192.0.2.10', '192.0.2.11'], v6)]]));
  assert.deepEqual(log, ['tbl6+', 'fe6+random', 'fe6+maglev'], 'the IPv6 table is in place before an IPv6 frontend is flagged');
  const id = r.idOf('ns/web:http/TCP') as number;
  const [[k4, v4b]] = maps.maglev.dump() as [[Buffer, Buffer]];
  const [[k6, v6b]] = maps.maglev6.dump() as [[Buffer, Buffer]];
  assert.equal(k4.readUInt32LE(0), id);
  assert.equal(k6.readUInt32LE(0), id, 'the same id in both families');
  assert.deepEqual(new Set(decodeMaglevTable(v4b).ordinals), new Set([0, 1]), 'IPv4 table: IPv4 ordinals');
  // The IPv6 table names kpr_v6_nat_be's ordinals, the backends the builder puts in each slot.
  const atOrdinal = new Map(maps.be6.dump().map(([k, v]) => [k.readUInt32LE(4), ipv6Text(v.subarray(0, 16))]));
  const t6 = decodeMaglevTable(v6b);
  const ids = sortForMaglev(v6.map((addr) => ({ addr, port: 8080 }))).map(backendIdentity);
  const built = buildMaglevTable(ids, 251);
  for (let slot = 0; slot < 251; slot++) {
    assert.equal(`[${atOrdinal.get(t6.ordinals[slot] as number)}]:8080`, ids[built[slot] as number], `slot ${slot}`);
  }
  assert.deepEqual(r.counts().tables + r.counts().tables6, 2);

  // A restart adopts both tables: nothing rewritten.
  const writes = [maps.maglev.writes, maps.maglev6.writes];
  const r2 = new Reconciler(maps);
  r2.adopt();
  r2.syncAll(new Map([['ns/web:http/TCP', dualStackPort(flags, ['192.0.2.10', '192.0.2.11'], v6)]]));
  assert.deepEqual([maps.maglev.writes, maps.maglev6.writes], writes);

  // IPv6 back to random: its flag goes first, then its table; the IPv4 table stays.
  log.length = 0;
  r2.syncAll(new Map([['ns/web:http/TCP', dualStackPort(flags, ['192.0.2.10', '192.0.2.11'], v6, NAT_FLG_EXTERNAL)]]));
  assert.deepEqual(log, ['fe6+random', 'tbl6-']);
  assert.equal(maps.maglev6.size, 0);
  assert.equal(maps.maglev.size, 1);
  r2.syncAll(new Map());
  assert.equal(maps.maglev.size, 0);
});

test('IPv6 backends sort by address value, identities are [addr]:port; the IPv6 flow hash covers every word of the tuple', () => {
  const sorted = sortForMaglev([
    { addr: '2001:db8::a', port: 80 },
    { addr: '2001:db8::9', port: 81 },
    { addr: '2001:db8::9', port: 80 },
    { addr: '2001:db8:1::', port: 80 },
  ]).map(backendIdentity);
  assert.deepEqual(sorted, ['[2001:db8::9]:80', '[2001:db8::9]:81', '[2001:db8::a]:80', '[2001:db8:1::]:80']);
  const base: FlowTuple = { saddr: '2001:db8:0:3::100', daddr: '2001:db8:f::10', sport: 40000, dport: 80, proto: 6 };
  const h = flowHash(base);
  assert.equal(flowHash({ ...base }), h, 'deterministic');
  const variants: FlowTuple[] = [
    { ...base, saddr: '2001:db8:0:3::101' },
    { ...base, saddr: '2001:db9:0:3::100' },
    { ...base, daddr: '2001:db8:f::11' },
    { ...base, daddr: '2001:db8:e::10' },
    { ...base, sport: 40001 },
    { ...base, dport: 81 },
    { ...base, proto: 17 },
  ];
  for (const v of variants) assert.notEqual(flowHash(v), h, JSON.stringify(v));
  // Spread: 10k synthetic IPv6 flows over 7 backends stay near 1/7 each.
  const r = prng(3);
  const counts = new Array(7).fill(0);
  const table = buildMaglevTable(backends(7).map(backendIdentity), 16381);
  for (let i = 0; i < 10_000; i++) {
    const t = { ...base, saddr: `2001:db8:0:3::${Math.floor(r() * 0xffff).toString(16)}`, sport: 1024 + Math.floor(r() * 64000) };
    counts[table[flowSlot(t, 16381)] as number]++;
  }
  for (const c of counts) assert.ok(Math.abs(c / 10_000 - 1 / 7) < 0.02, String(counts));
});

/** Record the order of frontend writes (with their Maglev flag) and table writes: "fe+maglev", "tbl+", "tbl-". */
function logWrites(fe: MemoryMap, feTag: string, tables: MemoryMap, tblTag: string): string[] {
  const log: string[] = [];
  for (const [tag, map] of [
    [feTag, fe],
    [tblTag, tables],
  ] as const) {
    const update = map.update.bind(map);
    const del = map.delete.bind(map);
    map.update = (k, v) => {
      log.push(tag === feTag ? `${feTag}+${decodeNatFeVal(v).flags & NAT_FLG_MAGLEV ? 'maglev' : 'random'}` : `${tblTag}+`);
      update(k, v);
    };
    map.delete = (k) => {
      log.push(`${tag}-`);
      return del(k);
    };
  }
  return log;
}

test('reconciler: the table is written before the frontend is flagged, and removed after', () => {
  const maps = memMaps(251);
  const log = logWrites(maps.fe, 'fe', maps.maglev, 'tbl');
  const r = new Reconciler(maps);
  const flags = NAT_FLG_EXTERNAL | NAT_FLG_MAGLEV;
  r.apply(new Map([['ns/web:http/TCP', svcPort(flags, ['192.0.2.10', '192.0.2.11'])]]));
  assert.deepEqual(log, ['tbl+', 'fe+random', 'fe+maglev']);
  const [[, v]] = maps.maglev.dump() as [[Buffer, Buffer]];
  const table = decodeMaglevTable(v);
  assert.equal(table.m, 251);
  assert.deepEqual(new Set(table.ordinals), new Set([0, 1]));

  // Unchanged: nothing written. A backend change: a new table, then frontends.
  log.length = 0;
  r.apply(new Map([['ns/web:http/TCP', svcPort(flags, ['192.0.2.10', '192.0.2.11'])]]));
  assert.deepEqual(log, []);
  r.apply(new Map([['ns/web:http/TCP', svcPort(flags, ['192.0.2.10', '192.0.2.11', '192.0.2.12'])]]));
  assert.deepEqual(log, ['tbl+', 'fe+random', 'fe+maglev']);

  // Back to random: the flag goes first, then the table.
  log.length = 0;
  r.apply(new Map([['ns/web:http/TCP', svcPort(NAT_FLG_EXTERNAL, ['192.0.2.10', '192.0.2.11', '192.0.2.12'])]]));
  assert.deepEqual(log, ['fe+random', 'tbl-']);
  assert.equal(maps.maglev.size, 0);
});

test('reconciler: eTP=Local tables cover the local backends only; a restart adopts tables without rewriting them', () => {
  const maps = memMaps(251);
  const r = new Reconciler(maps);
  const flags = NAT_FLG_EXTERNAL | NAT_FLG_MAGLEV | NAT_FLG_EXTERNAL_LOCAL;
  r.apply(new Map([['ns/web:http/TCP', svcPort(flags, ['192.0.2.10', '192.0.2.11', '192.0.2.66'], 2)]]));
  const [[, v]] = maps.maglev.dump() as [[Buffer, Buffer]];
  assert.deepEqual(
    new Set(decodeMaglevTable(v).ordinals),
    new Set([NAT_BE_LOCAL_BASE, NAT_BE_LOCAL_BASE + 1]),
    'only the local set (ordinals from NAT_BE_LOCAL_BASE)',
  );

  const writes = maps.maglev.writes;
  const r2 = new Reconciler(maps);
  r2.adopt();
  r2.syncAll(new Map([['ns/web:http/TCP', svcPort(flags, ['192.0.2.10', '192.0.2.11', '192.0.2.66'], 2)]]));
  assert.equal(maps.maglev.writes, writes, 'the adopted table was already right');
  // Removing the Service port removes its table.
  r2.syncAll(new Map());
  assert.equal(maps.maglev.size, 0);
});

test('reconciler: a full table map is reported, and the port is not flagged', () => {
  const maps = memMaps(251, 1);
  const r = new Reconciler(maps);
  const flags = NAT_FLG_EXTERNAL | NAT_FLG_MAGLEV;
  const a = svcPort(flags, ['192.0.2.10']);
  const b = { ...svcPort(flags, ['192.0.2.11']), name: 'ns/other:http/TCP', frontends: svcPort(flags, []).frontends.map((f) => ({ ...f, port: 81 })) };
  const res = r.apply(new Map([[a.name, a], [b.name, b]]));
  assert.equal(res.failed.length, 1);
  assert.equal(res.failed[0]?.map, 'kpr_v4_maglev');
  assert.equal(res.failed[0]?.full, true);
  const flagged = maps.fe.dump().filter(([, v]) => decodeNatFeVal(v).flags & NAT_FLG_MAGLEV);
  assert.equal(flagged.length, 1, 'only the port whose table was written points at one');
});

test('tables are the ones the builder made before it worked in place (digest and bytes pinned)', () => {
  const be = (n: number) => Array.from({ length: n }, (_, i) => ({ addr: `10.${i % 3}.${(i * 7) % 256}.${((i * 13) % 250) + 1}`, port: 8000 + (i % 5), flags: 0 }));
  const fe = (flags: number) => [{ addr: '192.0.2.1', port: 30080, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags, blackhole: false }];
  // Taken from the builder as it was before (commit e85ddbc); eTP=Local adds NAT_BE_LOCAL_BASE to every ordinal.
  const pinned = [
    { n: 10, m: 16381, local: false, digest: 2986102301, sha: 'c7446252ca3c687737e302fcc9bba188f6cc2dd1ec19aba6468a4575db0ff095' },
    { n: 7, m: 251, local: true, digest: 2638618745, sha: '58f4563fc0ba4bed91b007425ee56e2bf07013370c04177244121d511e0e0ff9' },
    { n: 100, m: 4093, local: false, digest: 3986668248, sha: 'ee6efa65c38710bd2d7ba765738a8e3de050c1b5dcf40b7f846b6c38b518f4e6' },
  ];
  for (const p of pinned) {
    const flags = NAT_FLG_EXTERNAL | NAT_FLG_MAGLEV | (p.local ? NAT_FLG_EXTERNAL_LOCAL : 0);
    const plan = planMaglevTable(fe(flags), p.local ? [] : be(p.n), p.local ? be(p.n) : [], p.m);
    assert.ok(plan);
    assert.equal(plan.digest, p.digest);
    assert.equal(createHash('sha256').update(plan.build()).digest('hex'), p.sha, `${p.n} backends, M=${p.m}`);
  }
});

test('controller: a first sync of many Maglev Services lets the event loop turn, and writes what a synchronous apply writes', async () => {
  const m = 16381;
  const count = 400;
  const store = new ObjectStore();
  for (let i = 0; i < count; i++) {
    const name = `mg-${i}`;
    const host = `${Math.floor(i / 250)}.${(i % 250) + 1}`;
    // An external IP is a Maglev frontend; two frontends and two endpoints each fit memMaps' 1024 entries.
    store.upsert('Service', service(name, { clusterIP: `198.18.${host}`, extra: { externalIPs: [`198.19.${host}`] } }));
    store.upsert('EndpointSlice', slice(`${name}-1`, name, [0, 1].map((j) => ({ ip: `192.0.2.${((i * 2 + j) % 250) + 1}` }))));
  }
  store.markSynced('Service');
  store.markSynced('EndpointSlice');
  const translate = { lbAlgorithm: 'maglev' as const };
  const maps = memMaps(m, count + 8);
  const controller = new Controller({ store, reconciler: new Reconciler(maps), log: createLogger('fatal'), translate, resyncIntervalMs: 0 });
  let turns = 0;
  const ticker = setInterval(() => turns++, 1);
  try {
    controller.start();
    await controller.whenIdle();
  } finally {
    clearInterval(ticker);
    controller.stop();
  }
  assert.equal(maps.maglev.size, count, 'every Service has its table');
  // 400 tables of 16381 slots take many 20 ms slices to build, even on a fast machine (~0.3 ms each).
  assert.ok(turns >= 3, `the event loop turned while the tables were built (${turns} timer ticks ran)`);

  // The same Services through one synchronous syncAll, into fresh maps.
  const want = memMaps(m, count + 8);
  const desired = new Map<string, DesiredServicePort>();
  for (const key of store.serviceKeys()) {
    for (const p of translateService(store.service(key) as NonNullable<ReturnType<ObjectStore['service']>>, store.slicesFor(key), translate).ports) desired.set(p.name, p);
  }
  assert.deepEqual(new Reconciler(want).syncAll(desired).failed, []);
  for (const k of ['fe', 'be', 'meta', 'maglev'] as const) {
    const dump = (mm: typeof maps) => mm[k].dump().map(([a, b]) => `${a.toString('hex')}=${b.toString('hex')}`).sort();
    assert.deepEqual(dump(maps), dump(want), k);
  }
});
