import assert from 'node:assert/strict';
import { test } from 'node:test';
import { placeBackends, Reconciler, type NatMaps } from '../../src/controller/reconciler.js';
import {
  decodeNatBeKey,
  decodeNatBeVal,
  decodeNatFeKey,
  decodeNatFeVal,
  decodeSvcMeta,
  encodeNatBeKey,
  encodeNatBeVal,
  encodeNatFeVal,
} from '../../src/datapath/codec.js';
import type { KVMap } from '../../src/datapath/kvmap.js';
import { NAT_BE_LOCAL_BASE, parseServicePortName, type Backend, type DesiredServicePort, type Protocol } from '../../src/model/types.js';
import { memoryNatMaps } from '../helpers/memmaps.js';

function port(name: string, vip: string, backends: string[], local = 0, localSet?: string[]): DesiredServicePort {
  const bes = backends.map((a, i) => ({ addr: a, port: 8080, local: i < local }));
  return {
    name,
    ...(parseServicePortName(name) as { service: string; proto: Protocol }),
    frontends: [{ addr: vip, port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags: 0, blackhole: false }],
    backends: bes,
    localBackends: localSet ? localSet.map((a) => ({ addr: a, port: 8080, local: true })) : bes.filter((b) => b.local),
    affinityTimeout: 0,
  };
}

/** What the maps say, decoded: VIP -> {id, count, backends by ordinal}. */
function view(m: NatMaps) {
  const names = new Map(m.meta.dump().map(([k, v]) => [k.readUInt32LE(0), decodeSvcMeta(v)]));
  const bes = new Map<number, string[]>();
  for (const [k, v] of m.be.dump()) {
    const key = decodeNatBeKey(k);
    const arr = bes.get(key.id) ?? [];
    // local set shown after the cluster set, as "L<i>:addr"
    if (key.ordinal >= NAT_BE_LOCAL_BASE) arr[1000 + key.ordinal - NAT_BE_LOCAL_BASE] = `L${key.ordinal - NAT_BE_LOCAL_BASE}:${decodeNatBeVal(v).addr}`;
    else arr[key.ordinal] = decodeNatBeVal(v).addr;
    bes.set(key.id, arr);
  }
  return m.fe.dump().map(([k, v]) => {
    const key = decodeNatFeKey(k);
    const val = decodeNatFeVal(v);
    return { vip: key.addr, name: names.get(val.id), id: val.id, count: val.count, local: val.local, backends: (bes.get(val.id) ?? []).filter(Boolean) };
  });
}

/** Records every map operation in order, to check make-before-break. */
function tracing(m: NatMaps, log: string[]): NatMaps {
  const wrap = (map: KVMap, tag: string): KVMap => ({
    name: map.name,
    keySize: map.keySize,
    valueSize: map.valueSize,
    maxEntries: map.maxEntries,
    lookup: (k) => map.lookup(k),
    dump: () => map.dump(),
    update: (k, v) => {
      log.push(`${tag}+${describe(tag, k, v)}`);
      map.update(k, v);
    },
    delete: (k) => {
      log.push(`${tag}-${describe(tag, k)}`);
      return map.delete(k);
    },
    updateBatch(keys, values) {
      keys.forEach((k, i) => this.update(k, values[i] as Buffer));
    },
    deleteBatch(keys) {
      keys.forEach((k) => this.delete(k));
    },
  });
  return { fe: wrap(m.fe, 'fe'), be: wrap(m.be, 'be'), fe6: wrap(m.fe6, 'fe6'), be6: wrap(m.be6, 'be6'), meta: wrap(m.meta, 'meta') };
}

function describe(tag: string, k: Buffer, v?: Buffer): string {
  if (tag === 'be' || tag === 'be6') return `${decodeNatBeKey(k).ordinal}`;
  if (tag === 'fe' || tag === 'fe6') return v ? `count=${decodeNatFeVal(v).count}` : decodeNatFeKey(k).addr;
  return '';
}

test('placeBackends keeps surviving backends on their ordinal and fills holes', () => {
  const b = (a: string, local = false): Backend => ({ addr: a, port: 1, local });
  const prev = ['a', 'b', 'c', 'd'].map((a) => ({ addr: a, port: 1 }));
  assert.deepEqual(placeBackends(prev, [b('a'), b('c'), b('d')]).map((x) => x.addr), ['a', 'd', 'c']);
  assert.deepEqual(placeBackends(prev, [b('a'), b('b'), b('c'), b('d'), b('e')]).map((x) => x.addr), ['a', 'b', 'c', 'd', 'e']);
  // a node-local endpoint is flagged in its value (the tc DSR decision reads it)
  assert.deepEqual(placeBackends(prev, [b('c', true), b('a'), b('b')]).map((x) => [x.addr, x.flags]), [['a', 0], ['b', 0], ['c', 1]]);
});

test('writes frontends, backends and names; reads back byte-exact', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const res = r.syncAll(new Map([['default/web:http/TCP', port('default/web:http/TCP', '198.18.0.10', ['192.0.2.1', '192.0.2.2'], 1)]]));
  assert.deepEqual(res.failed, []);
  assert.deepEqual(view(m), [
    { vip: '198.18.0.10', name: 'default/web:http/TCP', id: 1, count: 2, local: 1, backends: ['192.0.2.1', '192.0.2.2', 'L0:192.0.2.1'] },
  ]);
});

test('the local set has its own ordinals: a terminating local endpoint outside the cluster set', () => {
  const m = memoryNatMaps();
  const log: string[] = [];
  const r = new Reconciler(tracing(m, log));
  r.adopt();
  const name = 'default/web:http/TCP';
  // cluster: two remote ready endpoints; local: a terminating one that is in neither
  r.syncAll(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1', '192.0.2.2'], 0, ['192.0.2.9'])]]));
  assert.deepEqual(view(m), [{ vip: '198.18.0.10', name, id: 1, count: 2, local: 1, backends: ['192.0.2.1', '192.0.2.2', 'L0:192.0.2.9'] }]);
  // the local set grows: written at its own ordinals before the count; the cluster set is untouched
  log.length = 0;
  r.syncAll(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1', '192.0.2.2'], 0, ['192.0.2.8', '192.0.2.9'])]]));
  assert.deepEqual(log, [`be+${NAT_BE_LOCAL_BASE + 1}`, 'fe+count=2']);
  assert.deepEqual(view(m)[0]?.backends, ['192.0.2.1', '192.0.2.2', 'L0:192.0.2.9', 'L1:192.0.2.8']);
  // it empties: count first, then the entries
  log.length = 0;
  r.syncAll(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1', '192.0.2.2'], 0, [])]]));
  assert.deepEqual(log, ['fe+count=2', `be-${NAT_BE_LOCAL_BASE}`, `be-${NAT_BE_LOCAL_BASE + 1}`]);
  assert.equal(view(m)[0]?.local, 0);
  // a restarted reconciler adopts both sets and writes nothing
  const r2 = new Reconciler(tracing(m, log));
  assert.equal(r2.adopt().backends, 2);
  log.length = 0;
  r2.syncAll(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1', '192.0.2.2'], 0, [])]]));
  assert.deepEqual(log, []);
});

test('scale up writes backends before the count grows; scale down shrinks the count before deleting', () => {
  const m = memoryNatMaps();
  const log: string[] = [];
  const r = new Reconciler(tracing(m, log));
  r.adopt();
  const name = 'default/web:http/TCP';
  r.apply(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1'])]]));
  log.length = 0;
  r.apply(new Map([[name, port(name, '198.18.0.10', ['192.0.2.1', '192.0.2.2', '192.0.2.3'])]]));
  assert.deepEqual(log, ['be+1', 'be+2', 'fe+count=3']);
  log.length = 0;
  r.apply(new Map([[name, port(name, '198.18.0.10', ['192.0.2.3'])]]));
  // 192.0.2.3 moves into the hole at ordinal 0, then the count shrinks, then the tail goes.
  assert.deepEqual(log, ['be+0', 'fe+count=1', 'be-1', 'be-2']);
  assert.deepEqual(view(m)[0]?.backends, ['192.0.2.3']);
});

test('an unchanged sync writes nothing', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const desired = new Map([['a/b:/TCP', port('a/b:/TCP', '198.18.0.10', ['192.0.2.1'])]]);
  r.syncAll(desired);
  const res = r.syncAll(desired);
  assert.equal(res.writes, 0);
  assert.equal(res.deletes, 0);
});

test('a restarted reconciler adopts ids and writes nothing for the same state', () => {
  const m = memoryNatMaps();
  const first = new Reconciler(m);
  first.adopt();
  const desired = new Map([
    ['ns/a:http/TCP', port('ns/a:http/TCP', '198.18.0.1', ['192.0.2.1', '192.0.2.2'])],
    ['ns/b:http/TCP', port('ns/b:http/TCP', '198.18.0.2', ['192.0.2.3'])],
  ]);
  first.syncAll(desired);
  const ids = view(m).map((v) => [v.name, v.id]);
  const writesBefore = m.fe.writes + m.be.writes + m.meta.writes;

  const second = new Reconciler(m);
  const report = second.adopt();
  assert.deepEqual(report, { ports: 2, frontends: 2, backends: 3, orphans: 0 });
  const res = second.syncAll(desired);
  assert.equal(res.writes + res.deletes, 0);
  assert.equal(m.fe.writes + m.be.writes + m.meta.writes, writesBefore);
  assert.deepEqual(view(m).map((v) => [v.name, v.id]), ids);
  // a new port after restart gets a fresh id, not a reused one
  second.apply(new Map([['ns/c:http/TCP', port('ns/c:http/TCP', '198.18.0.3', [])]]));
  assert.equal(second.idOf('ns/c:http/TCP'), 3);
});

test('removal deletes frontends, backends and the name; orphans are cleaned by a full sync', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  r.syncAll(new Map([['x/y:/TCP', port('x/y:/TCP', '198.18.0.1', ['192.0.2.1'])]]));
  // an entry nobody owns (no name), as if written by hand
  m.be.update(Buffer.from('6300000000000000', 'hex'), Buffer.alloc(8));
  r.adopt();
  const res = r.syncAll(new Map());
  assert.deepEqual(res.failed, []);
  assert.equal(m.fe.size + m.be.size + m.meta.size, 0);
});

test('drift is repaired after re-adopting: a hand-deleted backend comes back', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const desired = new Map([['x/y:/TCP', port('x/y:/TCP', '198.18.0.1', ['192.0.2.1', '192.0.2.2'])]]);
  r.syncAll(desired);
  m.be.delete(Buffer.from('0100000001000000', 'hex'));
  r.adopt();
  r.syncAll(desired);
  assert.deepEqual(view(m)[0]?.backends, ['192.0.2.1', '192.0.2.2']);
});

test('a full backend map is reported, the failing Service is not half-written, others proceed', () => {
  const m = memoryNatMaps({ be: 3 });
  const r = new Reconciler(m);
  r.adopt();
  const res = r.syncAll(new Map([
    ['a/a:/TCP', port('a/a:/TCP', '198.18.0.1', ['192.0.2.1', '192.0.2.2'])],
    ['a/b:/TCP', port('a/b:/TCP', '198.18.0.2', ['192.0.2.3', '192.0.2.4'])],
  ]));
  assert.equal(res.failed.length, 1);
  assert.equal(res.failed[0]?.full, true);
  assert.equal(res.failed[0]?.map, 'kpr_v4_nat_be');
  const v = view(m);
  // only the Service whose backends all fit has a frontend
  assert.equal(v.length, 1);
  assert.equal(v[0]?.count, 2);
  // once there is room, the retry completes
  r.apply(new Map([['a/a:/TCP', null]]));
  const again = r.apply(new Map([['a/b:/TCP', port('a/b:/TCP', '198.18.0.2', ['192.0.2.3', '192.0.2.4'])]]));
  assert.deepEqual(again.failed, []);
  assert.deepEqual(view(m).map((x) => x.backends), [['192.0.2.3', '192.0.2.4']]);
});

test('a failed write is retried and then succeeds', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  m.fe.failWrites = 'EIO';
  const d = new Map([['a/a:/TCP', port('a/a:/TCP', '198.18.0.1', ['192.0.2.1'])]]);
  assert.equal(r.syncAll(d).failed[0]?.code, 'EIO');
  m.fe.failWrites = undefined;
  assert.deepEqual(r.syncAll(d).failed, []);
  assert.equal(view(m)[0]?.count, 1);
});

test('two Services claiming one VIP:port: the first keeps it, the second is reported', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  r.apply(new Map([['a/one:/TCP', port('a/one:/TCP', '198.18.0.1', ['192.0.2.1'])]]));
  const res = r.apply(new Map([['a/two:/TCP', port('a/two:/TCP', '198.18.0.1', ['192.0.2.2'])]]));
  assert.equal(res.conflicts.length, 1);
  assert.equal(res.conflicts[0]?.owner, 'a/one:/TCP');
  assert.equal(view(m)[0]?.name, 'a/one:/TCP');
  // when the owner goes in the same round, the other takes over
  const res2 = r.apply(new Map([
    ['a/one:/TCP', null],
    ['a/two:/TCP', port('a/two:/TCP', '198.18.0.1', ['192.0.2.2'])],
  ]));
  assert.deepEqual(res2.conflicts, []);
  assert.deepEqual(view(m).map((x) => [x.name, x.backends]), [['a/two:/TCP', ['192.0.2.2']]]);
});

test('10k Services x 10 endpoints sync through batches', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const desired = new Map<string, DesiredServicePort>();
  for (let i = 0; i < 10_000; i++) {
    const name = `ns/s${i}:http/TCP`;
    const vip = `198.18.${i >> 8}.${i & 255}`;
    desired.set(name, port(name, vip, Array.from({ length: 10 }, (_, j) => `192.0.2.${j + 1}`)));
  }
  const res = r.syncAll(desired);
  assert.deepEqual(res.failed, []);
  assert.equal(m.fe.size, 10_000);
  assert.equal(m.be.size, 100_000);
  assert.equal(m.meta.size, 10_000);
});

test('removed backends are reported once written, with their service id; a moved or failed one is not', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const a = 'a/a:dns/UDP';
  r.syncAll(new Map([[a, port(a, '198.18.0.1', ['192.0.2.1', '192.0.2.2', '192.0.2.3'])]]));
  const id = r.idOf(a);
  // 192.0.2.3 moves into the hole 192.0.2.1 leaves: only .1 is removed.
  const res = r.apply(new Map([[a, port(a, '198.18.0.1', ['192.0.2.2', '192.0.2.3'])]]));
  assert.deepEqual(res.removedBackends, [{ svcId: id, name: a, proto: 'UDP', addr: '192.0.2.1', port: 8080 }]);
  assert.deepEqual(r.apply(new Map([[a, port(a, '198.18.0.1', ['192.0.2.2', '192.0.2.3'])]])).removedBackends, []);
  // A write that fails leaves the backend in the maps: nothing to abort yet.
  m.be.failWrites = 'EIO';
  const failed = r.apply(new Map([[a, port(a, '198.18.0.1', ['192.0.2.2'])]]));
  assert.equal(failed.failed.length, 1);
  assert.deepEqual(failed.removedBackends, []);
  m.be.failWrites = undefined;
  // Deleting the Service port removes every backend.
  const gone = r.apply(new Map([[a, null]]));
  assert.deepEqual(gone.removedBackends.map((b) => b.addr).sort(), ['192.0.2.2', '192.0.2.3']);
});

/** The data path's frontend lookup over a map's current contents: longest source prefix wins. */
function lpmLookup(m: NatMaps, vip: string, client: string): { count: number } | undefined {
  const toInt = (a: string) => a.split('.').reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
  let best: { len: number; count: number } | undefined;
  for (const [k, v] of m.fe.dump()) {
    const key = decodeNatFeKey(k);
    if (key.addr !== vip || key.port !== 80) continue;
    const mask = key.srcLen === 0 ? 0 : (0xffffffff << (32 - key.srcLen)) >>> 0;
    if ((toInt(client) & mask) >>> 0 !== (toInt(key.srcAddr) & mask) >>> 0) continue;
    if (!best || key.srcLen > best.len) best = { len: key.srcLen, count: decodeNatFeVal(v).count };
  }
  return best;
}

function ranged(name: string, vip: string, ranges: Array<[string, number]>): DesiredServicePort {
  const p = port(name, vip, ['192.0.2.1', '192.0.2.2']);
  if (ranges.length === 0) return p;
  const fe = p.frontends[0]!;
  return {
    ...p,
    frontends: [
      ...ranges.map(([srcAddr, srcLen]) => ({ ...fe, srcAddr, srcLen })),
      { ...fe, blackhole: true },
    ],
  };
}

test('source-range edits: a client allowed before and after is served in every intermediate map state', () => {
  const m = memoryNatMaps();
  const name = 'default/lb:http/TCP';
  const vip = '198.18.1.15';
  const inside = '203.0.113.10';
  const states: string[] = [];
  const check = (what: string) => {
    const hit = lpmLookup(m, vip, inside);
    states.push(`${what}: ${hit ? (hit.count === 0xffffffff ? 'blackhole' : `served by ${hit.count}`) : 'no frontend'}`);
  };
  const log: string[] = [];
  const traced = tracing(m, log);
  const observed: NatMaps = {
    ...traced,
    fe: {
      ...traced.fe,
      update: (k, v) => {
        traced.fe.update(k, v);
        check(log[log.length - 1]!);
      },
      delete: (k) => {
        const r = traced.fe.delete(k);
        check(log[log.length - 1]!);
        return r;
      },
      updateBatch(keys, values) {
        keys.forEach((k, i) => this.update(k, values[i] as Buffer));
      },
      deleteBatch(keys) {
        keys.forEach((k) => this.delete(k));
      },
    },
  };
  const r = new Reconciler(observed);
  r.adopt();
  // Every step keeps `inside` allowed: none -> /24 -> /16 -> /24 + another -> /25 -> none.
  const steps: Array<Array<[string, number]>> = [
    [],
    [['203.0.113.0', 24]],
    [['203.0.0.0', 16]],
    [['203.0.113.0', 24], ['198.51.100.0', 24]],
    [['203.0.113.0', 25]],
    [],
  ];
  for (const ranges of steps) {
    const res = r.apply(new Map([[name, ranged(name, vip, ranges)]]));
    assert.deepEqual(res.failed, []);
  }
  assert.ok(states.length >= 10, `every fe operation was observed: ${states.join('; ')}`);
  for (const s of states) assert.match(s, /served by 2$/, `after each single map operation the client is served:\n${states.join('\n')}`);
  // and a client outside every range is refused once ranges exist
  r.apply(new Map([[name, ranged(name, vip, [['203.0.113.0', 24]])]]));
  assert.equal(lpmLookup(m, vip, '192.0.2.200')?.count, 0xffffffff);
});

test('a frontend another Service takes over in the same round is deleted before it is written', () => {
  const m = memoryNatMaps();
  const log: string[] = [];
  const r = new Reconciler(tracing(m, log));
  r.adopt();
  r.apply(new Map([['a', port('a', '198.18.0.10', ['192.0.2.1'])]]));
  log.length = 0;
  r.apply(
    new Map<string, DesiredServicePort | null>([
      ['a', null],
      ['b', port('b', '198.18.0.10', ['192.0.2.2', '192.0.2.3'])],
    ]),
  );
  assert.deepEqual(log.filter((l) => l.startsWith('fe')), ['fe-198.18.0.10', 'fe+count=2']);
  assert.equal(view(m)[0]?.name, 'b');
});

test('dual-stack: one id and name for both families; each family in its own maps with its own ordinals and counts', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const want: DesiredServicePort = {
    name: 'default/d:http/TCP',
    service: 'default/d',
    proto: 'TCP',
    frontends: [
      { addr: '198.18.0.10', port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags: 0, blackhole: false },
      { addr: '2001:db8:f::10', port: 80, proto: 6, srcAddr: '::', srcLen: 0, flags: 0, blackhole: false },
    ],
    backends: [
      { addr: '192.0.2.1', port: 8080, local: true },
      { addr: '2001:db8::1', port: 8080, local: true },
      { addr: '2001:db8::2', port: 8080, local: false },
    ],
    localBackends: [{ addr: '2001:db8::1', port: 8080, local: true }],
    affinityTimeout: 0,
  };
  const res = r.syncAll(new Map([[want.name, want]]));
  assert.deepEqual(res.failed, []);
  assert.equal(m.meta.size, 1, 'one name for both families');
  const [[, fe4]] = m.fe.dump() as [[Buffer, Buffer]];
  const [[k6, fe6]] = m.fe6.dump() as [[Buffer, Buffer]];
  assert.equal(decodeNatFeKey(k6).addr, '2001:db8:f::10');
  const v4 = decodeNatFeVal(fe4);
  const v6 = decodeNatFeVal(fe6);
  assert.equal(v4.id, v6.id, 'one service id across families');
  assert.deepEqual([v4.count, v4.local], [1, 0]);
  assert.deepEqual([v6.count, v6.local], [2, 1]);
  const be6 = m.be6.dump().map(([k, v]) => [decodeNatBeKey(k).ordinal, decodeNatBeVal(v).addr]).sort((a, b) => Number(a[0]) - Number(b[0]));
  assert.deepEqual(be6, [[0, '2001:db8::1'], [1, '2001:db8::2'], [NAT_BE_LOCAL_BASE, '2001:db8::1']]);
  assert.deepEqual(m.be.dump().map(([k, v]) => [decodeNatBeKey(k).ordinal, decodeNatBeVal(v).addr]), [[0, '192.0.2.1']]);

  // A restart adopts both families and rewrites nothing.
  const r2 = new Reconciler(m);
  assert.deepEqual(r2.adopt(), { ports: 1, frontends: 2, backends: 4, orphans: 0 });
  const again = r2.syncAll(new Map([[want.name, want]]));
  assert.deepEqual([again.writes, again.deletes], [0, 0]);

  // Removing an IPv6 backend trims only the IPv6 set, and reports it.
  const less = { ...want, backends: want.backends.filter((b) => b.addr !== '2001:db8::2') };
  const res2 = r2.apply(new Map([[want.name, less]]));
  assert.deepEqual(res2.removedBackends.map((b) => b.addr), ['2001:db8::2']);
  assert.equal(decodeNatFeVal((m.fe6.dump()[0] as [Buffer, Buffer])[1]).count, 1);
  assert.equal(decodeNatFeVal((m.fe.dump()[0] as [Buffer, Buffer])[1]).count, 1);

  // Deleting the Service port empties both families.
  r2.apply(new Map([[want.name, null]]));
  assert.deepEqual([m.fe.size, m.fe6.size, m.be.size, m.be6.size, m.meta.size], [0, 0, 0, 0, 0]);
});

test('a full sync read port by port (a generator) writes what the same round as a map writes, a takeover by an earlier port included', () => {
  // b wants the VIP a holds, and comes before a gives it up: b may only be
  // planned once the whole round is known, and every op keeps its order.
  const round = (): Array<[string, DesiredServicePort]> => [
    ['c', port('c', '198.18.0.30', ['192.0.2.5'])],
    ['b', port('b', '198.18.0.10', ['192.0.2.2', '192.0.2.3'])],
    ['a', port('a', '198.18.0.20', ['192.0.2.1'])],
    ['d', port('d', '198.18.0.40', ['192.0.2.6'])],
  ];
  const run = (feed: (r: Reconciler) => ReturnType<Reconciler['planAll']>) => {
    const m = memoryNatMaps();
    const log: string[] = [];
    const r = new Reconciler(tracing(m, log));
    r.adopt();
    r.apply(new Map([['a', port('a', '198.18.0.10', ['192.0.2.1'])], ['old', port('old', '198.18.0.50', ['192.0.2.9'])]]));
    log.length = 0;
    const res = feed(r).execute();
    return { res, log, view: view(m) };
  };
  const fromMap = run((r) => r.planAll(new Map(round())));
  const byPort = run((r) =>
    r.planAll(
      (function* () {
        yield* round();
      })(),
    ),
  );
  assert.deepEqual(byPort.res.conflicts, []);
  assert.deepEqual(byPort.log, fromMap.log);
  assert.deepEqual(byPort.view, fromMap.view);
  assert.deepEqual(
    byPort.view.map((x) => [x.vip, x.name]).sort(),
    [['198.18.0.10', 'b'], ['198.18.0.20', 'a'], ['198.18.0.30', 'c'], ['198.18.0.40', 'd']],
  );
  // the frontend b takes over is deleted before b writes it, as in any takeover
  assert.ok(byPort.log.indexOf('fe-198.18.0.10') < byPort.log.findIndex((l) => l.startsWith('fe+')));
});

test('re-adopting takes every value the kernel changed, even one a character away from the mirror\'s', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const desired = new Map([
    ['x/a:/TCP', port('x/a:/TCP', '198.18.0.1', ['192.0.2.1', '192.0.2.2', '192.0.2.3'], 1)],
    ['x/b:/TCP', port('x/b:/TCP', '198.18.0.2', ['192.0.2.10', '192.0.2.20'])],
    ['x/c:/TCP', port('x/c:/TCP', '198.18.0.3', ['2001:db8::1', '2001:db8::2'])],
  ]);
  r.syncAll(desired);
  const want = view(m);
  const idA = r.idOf('x/a:/TCP') as number;
  const idB = r.idOf('x/b:/TCP') as number;
  const beKey = (id: number, ordinal: number) => encodeNatBeKey({ id, ordinal });
  // Drift in place: same keys, other values.
  m.be.update(beKey(idA, 0), encodeNatBeVal({ addr: '192.0.2.11', port: 8080, flags: 1 })); // text "192.0.2.1" + one digit
  m.be.update(beKey(idA, 1), encodeNatBeVal({ addr: '192.0.2.2', port: 8081, flags: 0 }));
  m.be.update(beKey(idA, 2), encodeNatBeVal({ addr: '192.0.2.3', port: 8080, flags: 1 }));
  m.be.update(beKey(idB, 0), encodeNatBeVal({ addr: '192.0.2.1', port: 8080, flags: 0 })); // "192.0.2.10" minus one digit
  const [feKey, feVal] = m.fe.dump().find(([k]) => decodeNatFeKey(k).addr === '198.18.0.2') as [Buffer, Buffer];
  m.fe.update(feKey, encodeNatFeVal({ ...decodeNatFeVal(feVal), count: 1 }));
  const [be6Key] = m.be6.dump()[0] as [Buffer, Buffer];
  m.be6.update(be6Key, encodeNatBeVal({ addr: '2001:db8::99', port: 8080, flags: 0 }));
  r.adopt();
  const res = r.syncAll(desired);
  assert.deepEqual(view(m), want);
  // Exactly the drifted entries are rewritten.
  assert.equal(res.writes, 6);
  assert.equal(res.deletes, 0);
  // And the re-adopted mirror now matches the maps: nothing more to write.
  r.adopt();
  assert.equal(r.syncAll(desired).writes, 0);
});

test('adopting from maps read as one packed batch (dumpPacked) takes over the same state as reading them entry by entry', () => {
  const m = memoryNatMaps();
  const r = new Reconciler(m);
  r.adopt();
  const round = new Map<string, DesiredServicePort | null>([
    ['a/one:/TCP', port('a/one:/TCP', '198.18.0.1', ['192.0.2.1', '192.0.2.2'], 1)],
    ['a/two:/TCP', port('a/two:/TCP', '198.18.0.2', ['192.0.2.3'], 0, ['192.0.2.4'])],
  ]);
  r.apply(round);
  // The same maps, one of them read only through dumpPacked.
  const packed = (map: KVMap): KVMap => ({
    name: map.name,
    keySize: map.keySize,
    valueSize: map.valueSize,
    maxEntries: map.maxEntries,
    lookup: (k) => map.lookup(k),
    update: (k, v) => map.update(k, v),
    delete: (k) => map.delete(k),
    dump: () => {
      throw new Error('dump() must not be used when dumpPacked() exists');
    },
    dumpPacked: () => {
      const all = map.dump();
      return { keys: Buffer.concat(all.map(([k]) => k)), values: Buffer.concat(all.map(([, v]) => v)), count: all.length };
    },
    updateBatch: (k, v) => map.updateBatch(k, v),
    deleteBatch: (k) => map.deleteBatch(k),
  });
  const byEntry = new Reconciler(m);
  const byBatch = new Reconciler({ fe: packed(m.fe), be: packed(m.be), fe6: packed(m.fe6), be6: packed(m.be6), meta: packed(m.meta) });
  assert.deepEqual(byBatch.adopt(), byEntry.adopt());
  assert.deepEqual(byBatch.counts(), byEntry.counts());
  for (const name of ['a/one:/TCP', 'a/two:/TCP']) assert.equal(byBatch.idOf(name), byEntry.idOf(name));
  // Nothing to write: the adopted mirror matches what is wanted.
  const res = byBatch.syncAll(new Map([...round].map(([n, p]) => [n, p as DesiredServicePort])));
  assert.equal(res.writes, 0);
  assert.equal(res.deletes, 0);
});
