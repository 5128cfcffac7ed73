/**
 * Pinned maps across kpr versions: versioned pin names and migration.
 *
 * A pinned map outlives the kpr that created it, and the programs of the
 * running version read it. When a release changes what a map's entries mean
 * (its key or value layout, or where entries live), the map gets the next
 * layout version here. Its pin name then changes (version 1 is the bare
 * name, later ones `<name>_v<N>`, as Calico's `cali_v4_nat_fe3` and
 * Cilium's `cilium_lb4_services_v2`), so the new objects create a new map
 * beside the old one instead of reusing it. Start-up then:
 *
 *   1. loads the new objects: the new map is created, every other map reused;
 *   2. migrate(): reads the newest older version still pinned, converts its
 *      entries through each step of `migrations` in turn, and makes the new
 *      map hold exactly the result (old programs still read the old map);
 *   3. swaps the new programs in (bpf_link_update, tc filter replace);
 *   4. retire(), once the start has gone through (its source started):
 *      unpins the old map. Programs still holding it keep it alive until
 *      they are replaced; nothing reads its name any more. A start that
 *      fails before this leaves the old pin as it was, for a downgrade,
 *      puts the old programs back in the hooks (Datapath's journal), and
 *      unpins the new map it created.
 *
 * The controller writes nothing until its sources have synced, which is
 * after step 3, so the new programs start on a complete, converted copy
 * and the old ones never see a write meant for the new layout.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { NAT_BE_F_LOCAL, NAT_BE_LOCAL_BASE, NAT_FE_BLACKHOLE } from '../model/types.js';
import { decodeNatBeKey, decodeNatBeVal, decodeNatFeVal, encodeNatBeKey, encodeNatBeVal } from './codec.js';
import type { KVMap } from './kvmap.js';
import { MAP_NAT_BE, MAP_NAT_FE } from './names.js';
import { BpfMap } from './bpf-map.js';

export type Entries = Array<[Buffer, Buffer]>;

/** What a migration step may read besides the entries it converts: other maps, current layout. */
export interface MigrationContext {
  /** Entries of another of kpr's maps, as pinned now (maps without a version change). */
  dump(name: string): Entries;
}

/** Turns the entries of layout v into entries of layout v+1. Pure: no writes. */
export type Migration = (entries: Entries, ctx: MigrationContext) => Entries;

export interface VersionedMap {
  /** The map's name in the BPF objects; also its pin name at version 1. */
  name: string;
  /** The layout the programs of this build read. */
  version: number;
  /** migrations[v]: layout v -> v+1, for every v below version. */
  migrations: Record<number, Migration>;
}

/**
 * kpr_v4_nat_be, layout 1 -> 2. Layout 1 kept a Service port's node-local
 * backends as the prefix 0..local-1 of its cluster set; layout 2 gives the
 * local set its own ordinals from NAT_BE_LOCAL_BASE and marks local
 * backends with NAT_BE_F_LOCAL (the old `pad`, always 0). `local` comes from
 * the frontends (kpr_v4_nat_fe is unchanged: its `local` counts the set
 * either way). A Service port that already has entries at NAT_BE_LOCAL_BASE
 * was written by a build with layout 2 under the bare name (the builds
 * between that change and versioned names): copied as it is.
 */
export const natBeV1toV2: Migration = (entries, ctx) => {
  const local = new Map<number, number>();
  for (const [, v] of ctx.dump(MAP_NAT_FE)) {
    const fe = decodeNatFeVal(v);
    if (fe.count === NAT_FE_BLACKHOLE) continue; // a source-range blackhole
    local.set(fe.id, Math.max(local.get(fe.id) ?? 0, fe.local));
  }
  const already = new Set<number>();
  for (const [k] of entries) {
    const key = decodeNatBeKey(k);
    if (key.ordinal >= NAT_BE_LOCAL_BASE) already.add(key.id);
  }
  const out: Entries = [];
  for (const [k, v] of entries) {
    const key = decodeNatBeKey(k);
    const be = decodeNatBeVal(v);
    const n = already.has(key.id) ? 0 : (local.get(key.id) ?? 0);
    if (key.ordinal < n) {
      out.push([k, encodeNatBeVal({ ...be, flags: (be.flags ?? 0) | NAT_BE_F_LOCAL })]);
      out.push([encodeNatBeKey({ id: key.id, ordinal: NAT_BE_LOCAL_BASE + key.ordinal }), encodeNatBeVal({ ...be, flags: (be.flags ?? 0) | NAT_BE_F_LOCAL })]);
    } else {
      out.push([k, v]);
    }
  }
  return out;
};

/** Every pinned map whose layout changed since kpr 1: bump version and add a step when one changes again. */
export const VERSIONED_MAPS: readonly VersionedMap[] = [{ name: MAP_NAT_BE, version: 2, migrations: { 1: natBeV1toV2 } }];

/** Pin name of a map at a layout version. */
export function pinName(name: string, version: number): string {
  return version <= 1 ? name : `${name}_v${version}`;
}

/** Where each versioned map of this build is pinned (openObject's pinPaths). */
export function versionedPinPaths(pinPath: string, table: readonly VersionedMap[] = VERSIONED_MAPS): Record<string, string> {
  return Object.fromEntries(table.map((m) => [m.name, join(pinPath, pinName(m.name, m.version))]));
}

/** Pin path of one of kpr's maps as this build names it. */
export function mapPinPath(pinPath: string, name: string, table: readonly VersionedMap[] = VERSIONED_MAPS): string {
  const m = table.find((v) => v.name === name);
  return join(pinPath, m ? pinName(name, m.version) : name);
}

/** Pin names of every version of the versioned maps, older ones included (cleanup). */
export function allVersionPinNames(table: readonly VersionedMap[] = VERSIONED_MAPS): string[] {
  return table.flatMap((m) => Array.from({ length: m.version }, (_, i) => pinName(m.name, i + 1)));
}

/** Apply migrations[from], migrations[from+1], ... up to the table's version. */
export function convert(m: VersionedMap, from: number, entries: Entries, ctx: MigrationContext): Entries {
  let out = entries;
  for (let v = from; v < m.version; v++) {
    const step = m.migrations[v];
    if (!step) throw new Error(`${m.name}: no migration from layout ${v} to ${v + 1}`);
    out = step(out, ctx);
  }
  return out;
}

/** Make `target` hold exactly `entries`: a re-run after a crash converges. */
function replaceAll(target: KVMap, entries: Entries): void {
  const want = new Set(entries.map(([k]) => k.toString('hex')));
  const stale = target.dump().filter(([k]) => !want.has(k.toString('hex'))).map(([k]) => k);
  if (entries.length) target.updateBatch(entries.map(([k]) => k), entries.map(([, v]) => v));
  if (stale.length) target.deleteBatch(stale);
}

export interface MigrationReport {
  map: string;
  from: number;
  to: number;
  /** entries read from the old map, and written to the new one */
  read: number;
  written: number;
}

export interface MigrationPlan {
  migrated: MigrationReport[];
  /** Unpin the old versions: call only once every program reads the new maps. */
  retire(): string[];
}

/**
 * Copy every versioned map whose older version is still pinned into this
 * build's map (step 2 above). target(name) is this build's map, already
 * created by the loader. Older pins stay until retire().
 */
export function migrate(pinPath: string, target: (name: string) => KVMap, table: readonly VersionedMap[] = VERSIONED_MAPS): MigrationPlan {
  const migrated: MigrationReport[] = [];
  const old: string[] = [];
  const opened: BpfMap[] = [];
  const ctx: MigrationContext = {
    dump: (name) => {
      const path = mapPinPath(pinPath, name, table);
      if (!existsSync(path)) return [];
      const m = BpfMap.openPinned(path, name);
      opened.push(m);
      return m.dump();
    },
  };
  try {
    for (const m of table) {
      const older: Array<[number, string]> = [];
      for (let v = m.version - 1; v >= 1; v--) {
        const path = join(pinPath, pinName(m.name, v));
        if (existsSync(path)) older.push([v, path]);
      }
      const newest = older[0];
      if (!newest) continue;
      const src = BpfMap.openPinned(newest[1], m.name);
      opened.push(src);
      const entries = src.dump();
      const out = convert(m, newest[0], entries, ctx);
      replaceAll(target(m.name), out);
      migrated.push({ map: m.name, from: newest[0], to: m.version, read: entries.length, written: out.length });
      old.push(...older.map(([, p]) => p));
    }
  } finally {
    for (const m of opened) m.close();
  }
  return {
    migrated,
    retire: () => {
      for (const p of old) unlinkSync(p);
      return old;
    },
  };
}
