/**
 * The generic migration on real pinned maps (bpffs): a test-only map with a
 * layout 3 whose versions 1 and 2 are both still pinned. The old pins stay
 * until retire(), the new map ends up holding exactly the converted
 * entries (stale keys in it are removed, so a re-run converges), and
 * retire() removes every older version.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { bpf } from '../../src/datapath/addon.js';
import { BpfMap } from '../../src/datapath/bpf-map.js';
import { migrate, pinName, type Entries, type VersionedMap } from '../../src/datapath/migrate.js';
import { requireRoot } from '../helpers/privileged.js';

const BPF_MAP_TYPE_HASH = 1;
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const plus = (n: number) => (entries: Entries): Entries => entries.map(([k, v]) => [k, u32(v.readUInt32LE(0) + n)]);

test('migrate(): old versions stay pinned until retire(); the new map holds exactly the converted entries', async (t) => {
  if (!requireRoot(t)) return;
  const dir = `/sys/fs/bpf/kpr-migrate-test-${process.pid}`;
  const name = 'kpr_test_mig';
  const table: VersionedMap[] = [{ name, version: 3, migrations: { 1: plus(1000), 2: plus(1) } }];
  const pinned = (version: number, entries: Array<[number, number]>) => {
    const fd = bpf.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, 64, name);
    const m = new BpfMap(name, fd);
    for (const [k, v] of entries) m.update(u32(k), u32(v));
    bpf.objPin(fd, join(dir, pinName(name, version)));
    return m;
  };
  const opened: BpfMap[] = [];
  mkdirSync(dir, { recursive: true });
  try {
    opened.push(pinned(1, [[9, 9]])); // a leftover of an older upgrade
    opened.push(pinned(2, [[1, 10], [2, 20]]));
    const target = pinned(3, [[7, 70]]); // a stale key from an earlier, interrupted run
    opened.push(target);

    const plan = migrate(dir, () => target, table);
    assert.deepEqual(plan.migrated, [{ map: name, from: 2, to: 3, read: 2, written: 2 }]);
    const got = target.dump().map(([k, v]) => [k.readUInt32LE(0), v.readUInt32LE(0)]).sort((a, b) => a[0]! - b[0]!);
    assert.deepEqual(got, [[1, 11], [2, 21]], 'from the newest old version, one step (2 -> 3), stale key gone');
    assert.ok(existsSync(join(dir, pinName(name, 1))) && existsSync(join(dir, pinName(name, 2))), 'old versions stay pinned until retire()');

    assert.deepEqual(plan.retire().sort(), [join(dir, name), join(dir, pinName(name, 2))]);
    assert.ok(!existsSync(join(dir, name)) && !existsSync(join(dir, pinName(name, 2))));
    assert.ok(existsSync(join(dir, pinName(name, 3))));
    // nothing older left: a restart migrates nothing and retires nothing
    const again = migrate(dir, () => target, table);
    assert.deepEqual(again.migrated, []);
    assert.deepEqual(again.retire(), []);

    // from layout 1 only: both steps, in order
    opened.push(pinned(1, [[5, 5]]));
    assert.deepEqual(migrate(dir, () => target, table).migrated, [{ map: name, from: 1, to: 3, read: 1, written: 1 }]);
    assert.deepEqual(target.dump().map(([k, v]) => [k.readUInt32LE(0), v.readUInt32LE(0)]), [[5, 1006]]);
  } finally {
    for (const m of opened) m.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
