import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeNatBeKey, encodeNatBeVal, encodeNatFeKey, encodeNatFeVal, encodeSvcMeta, encodeU32 } from '../../src/datapath/codec.js';
import { MAP_NAT_BE, MAP_NAT_FE } from '../../src/datapath/names.js';
import {
  allVersionPinNames,
  convert,
  mapPinPath,
  natBeV1toV2,
  pinName,
  VERSIONED_MAPS,
  versionedPinPaths,
  type Entries,
  type MigrationContext,
  type VersionedMap,
} from '../../src/datapath/migrate.js';
import { natRows } from '../../src/inspect/nat.js';
import { NAT_BE_F_LOCAL, NAT_BE_LOCAL_BASE, NAT_FE_BLACKHOLE } from '../../src/model/types.js';
import { memoryNatMaps } from '../helpers/memmaps.js';

const fe = (addr: string, id: number, count: number, local: number, srcLen = 0) =>
  [encodeNatFeKey({ addr, port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen }), encodeNatFeVal({ id, count, local, affinityTimeout: 0, flags: 0 })] as [Buffer, Buffer];
const be = (id: number, ordinal: number, addr: string, flags = 0) =>
  [encodeNatBeKey({ id, ordinal }), encodeNatBeVal({ addr, port: 8080, flags })] as [Buffer, Buffer];

/** Maps holding fe and, after the migration, its output as nat_be: what inspect (and the data path) reads. */
function migrated(frontends: Entries, backends: Entries) {
  const maps = memoryNatMaps();
  for (const [k, v] of frontends) maps.fe.update(k, v);
  for (const id of new Set(frontends.map(([, v]) => v.readUInt32LE(0)))) maps.meta.update(encodeU32(id), encodeSvcMeta(`ns/svc${id}:80/TCP`));
  const ctx: MigrationContext = { dump: (name) => (name === MAP_NAT_FE ? maps.fe.dump() : []) };
  const out = natBeV1toV2(backends, ctx);
  for (const [k, v] of out) maps.be.update(k, v);
  return { rows: natRows(maps), out };
}

test('nat_be 1 -> 2: the local prefix of the cluster set becomes the local set, flagged local', () => {
  const { rows } = migrated(
    [fe('198.18.0.1', 1, 3, 2), fe('198.18.0.2', 2, 2, 0), fe('198.18.0.1', 1, NAT_FE_BLACKHOLE, 0, 8)],
    [be(1, 0, '192.0.2.11'), be(1, 1, '192.0.2.12'), be(1, 2, '192.0.2.75'), be(2, 0, '192.0.2.11'), be(2, 1, '192.0.2.75')],
  );
  const svc1 = rows.find((r) => r.id === 1 && !r.blackhole)!;
  assert.deepEqual(svc1.missing, []);
  assert.deepEqual(
    svc1.backends.map((b) => [b.ordinal, b.addr, b.local]),
    [
      [0, '192.0.2.11', true],
      [1, '192.0.2.12', true],
      [2, '192.0.2.75', false],
    ],
  );
  assert.deepEqual(
    svc1.localBackends.map((b) => [b.ordinal, b.addr, b.local]),
    [
      [NAT_BE_LOCAL_BASE, '192.0.2.11', true],
      [NAT_BE_LOCAL_BASE + 1, '192.0.2.12', true],
    ],
  );
  const svc2 = rows.find((r) => r.id === 2)!;
  assert.deepEqual(svc2.localBackends, []);
  assert.deepEqual(svc2.backends.map((b) => b.local), [false, false]);
});

test('nat_be 1 -> 2: a map already in layout 2 under the bare name is copied as it is', () => {
  const input = [be(1, 0, '192.0.2.75'), be(1, NAT_BE_LOCAL_BASE, '192.0.2.11', NAT_BE_F_LOCAL)];
  const { out } = migrated([fe('198.18.0.1', 1, 1, 1)], input);
  assert.deepEqual(out, input);
});

test('a migration runs every step from the old version up, in order; a missing step is an error', () => {
  const step = (tag: string) => (entries: Entries): Entries => entries.map(([k, v]) => [k, Buffer.concat([v, Buffer.from(tag)])]);
  const m: VersionedMap = { name: 'kpr_x', version: 4, migrations: { 1: step('a'), 2: step('b'), 3: step('c') } };
  const ctx: MigrationContext = { dump: () => [] };
  const one: Entries = [[Buffer.from('k'), Buffer.from('v')]];
  assert.equal(convert(m, 1, one, ctx)[0]![1].toString(), 'vabc');
  assert.equal(convert(m, 3, one, ctx)[0]![1].toString(), 'vc');
  assert.throws(() => convert({ ...m, migrations: { 1: step('a'), 3: step('c') } }, 1, one, ctx), /no migration from layout 2 to 3/);
});

test('pin names: version 1 is the bare name, later ones _vN; every version is known to cleanup', () => {
  assert.equal(pinName('kpr_v4_nat_be', 1), 'kpr_v4_nat_be');
  assert.equal(pinName('kpr_v4_nat_be', 2), 'kpr_v4_nat_be_v2');
  assert.deepEqual(VERSIONED_MAPS.map((m) => [m.name, m.version]), [[MAP_NAT_BE, 2]]);
  assert.deepEqual(versionedPinPaths('/p'), { [MAP_NAT_BE]: '/p/kpr_v4_nat_be_v2' });
  assert.equal(mapPinPath('/p', MAP_NAT_BE), '/p/kpr_v4_nat_be_v2');
  assert.equal(mapPinPath('/p', MAP_NAT_FE), '/p/kpr_v4_nat_fe');
  assert.deepEqual(allVersionPinNames(), ['kpr_v4_nat_be', 'kpr_v4_nat_be_v2']);
  // every version below the current one has a step
  for (const m of VERSIONED_MAPS) for (let v = 1; v < m.version; v++) assert.ok(m.migrations[v], `${m.name}: step ${v}`);
});
