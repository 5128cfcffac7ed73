/**
 * The reconciler: makes the pinned NAT maps match the desired Service ports.
 *
 * It keeps a mirror of what it has written, adopted from the maps at start,
 * so a restart keeps every service id and rewrites nothing that is already
 * right. Writes are make-before-break, in global phases so one batch call
 * covers many Services:
 *
 *   1. service names for new ids      (so inspect can always name an id)
 *   2. delete frontends another Service port takes over in this round
 *   3. write backends                 (before any count grows)
 *   3b. write Maglev tables           (each complete before a frontend is flagged)
 *   4. write frontends that serve     (new keys and new counts)
 *   5. write blackhole frontends      (after the ranges they guard exist)
 *   6. delete frontends that went away (after their replacements exist)
 *   7. delete trailing backends       (after the count shrank)
 *   7b. delete Maglev tables no frontend uses any more
 *   8. delete names of removed ids
 *
 * So a key change (loadBalancerSourceRanges edited, for one) never leaves a
 * client allowed before and after without a key: the new range is written,
 * then the /0 blackhole, and only then is the old range deleted.
 *
 * Each Service port has two backend sets (bpf/include/abi.h): the cluster
 * set at ordinals 0..count-1 and the node-local set from NAT_BE_LOCAL_BASE.
 * They are placed and trimmed independently, so a change to one never
 * moves an entry of the other.
 *
 * A Service port whose write fails skips its later phases, stays as it was
 * in the mirror, and is handed back for retry (phase.ts runs one phase).
 *
 * Dual-stack: a Service port keeps one id and one name for both families.
 * Its IPv4 frontends and backends go to kpr_v4_nat_fe/be, its IPv6 ones to
 * kpr_v6_nat_fe/be, each family with its own ordinals, so a frontend's
 * count and local are those of its own family's sets. Every phase runs for
 * both families at the same point in the order. A port flagged for Maglev
 * has a table per family, built over that family's backends, in
 * kpr_v4_maglev or kpr_v6_maglev under the same id.
 *
 * Longer than 400 lines on purpose: plan() plans every phase above for all
 * ports and execute() then runs them in order (apply() is both). The order
 * is the make-before-break guarantee, so it is kept in one class rather
 * than spread over files.
 */
import { performance } from 'node:perf_hooks';
import {
  backendKey,
  frontendKey,
  NAT_BE_F_LOCAL,
  NAT_BE_LOCAL_BASE,
  NAT_FE_BLACKHOLE,
  parseServicePortName,
  type Backend,
  type DesiredServicePort,
  type Frontend,
} from '../model/types.js';
import {
  decodeNatBeVal,
  decodeNatFeKey,
  decodeNatFeVal,
  decodeSvcMeta,
  encodeNatBeKey,
  encodeNatBeVal,
  encodeNatFeKey,
  encodeNatFeVal,
  encodeSvcMeta,
  encodeU32,
  isNatBeVal4,
  natBeKeyId,
  natBeKeyOrdinal,
  NAT_BE6_VAL_SIZE,
  NAT_BE_KEY_SIZE,
  NAT_BE_VAL_SIZE,
  NAT_FE6_KEY_SIZE,
  NAT_FE_KEY_SIZE,
  NAT_FE_VAL_SIZE,
  SVC_META_NAME_LEN,
  type NatBeVal,
  type NatFeKey,
  type NatFeVal,
} from '../datapath/codec.js';
import { isMapFull, type KVMap } from '../datapath/kvmap.js';
import { addrFamily, IP_FAMILIES, type IPFamily } from '../util/ip.js';
import type { MaglevMap } from '../datapath/maglev-tables.js';
import { planMaglevTable } from './maglev-plan.js';
import { Packed, PackedOp, runPhase, type PhaseOp } from './phase.js';

export interface NatMaps {
  fe: KVMap;
  be: KVMap;
  /** kpr_v6_nat_fe / kpr_v6_nat_be */
  fe6: KVMap;
  be6: KVMap;
  meta: KVMap;
  /** Maglev tables (kpr_v4_maglev, kpr_v6_maglev); without one, that family's
   *  tables are not written and its flagged frontends stay on random. */
  maglev?: MaglevMap | undefined;
  maglev6?: MaglevMap | undefined;
}

interface FeEntry {
  key: NatFeKey;
  val: NatFeVal;
}

interface PortState {
  name: string;
  /** serviceKey() of the owning Service; undefined for an orphan id. */
  service: string | undefined;
  proto: string | undefined;
  id: number;
  frontends: Map<string, FeEntry>;
  /**
   * Per family, the backend at each ordinal as written: the cluster set
   * (backends) and the local set (localBackends, ordinal - NAT_BE_LOCAL_BASE).
   */
  be: Record<IPFamily, Record<Group, Array<NatBeVal | undefined>>>;
  metaWritten: boolean;
  /** Per family, the digest of the Maglev table installed for this id. */
  tableDigest: Record<IPFamily, number | undefined>;
}

export interface ApplyError {
  name: string;
  /** The Service to sync again (undefined: an orphan entry, not a Service's). */
  service: string | undefined;
  map: string;
  code: string;
  message: string;
  full: boolean;
}

/** A backend that no longer serves a Service port, once the maps say so. */
export interface RemovedBackend {
  /** Service port id (nat_be_key.id). */
  svcId: number;
  /** "namespace/name:port/PROTO" */
  name: string;
  proto: string;
  addr: string;
  port: number;
}

export interface ApplyResult {
  /** Backends that left a Service port in this apply: no longer in the maps. */
  removedBackends: RemovedBackend[];
  /** Service ports whose writes failed; retry them. */
  failed: ApplyError[];
  /** Frontends another Service port already owns, skipped. */
  conflicts: Array<{ name: string; service: string; frontend: string; owner: string }>;
  writes: number;
  deletes: number;
}

export interface AdoptReport {
  ports: number;
  frontends: number;
  backends: number;
  orphans: number;
}

/** A phase op, and which family's map it goes to (kpr_svc_meta: 4). */
type Op = PhaseOp<PortState> & { family: IPFamily };

/** A Maglev table write: its value is built by prepare() or execute(), not when planned. */
type TableOp = Op & { build(): Buffer };

type PhaseOps = Record<'metaWrites' | 'feDeletes' | 'beWrites' | 'feWrites' | 'blackholeWrites' | 'beDeletes' | 'tableDeletes' | 'metaDeletes', Op[]> & { tableWrites: TableOp[] };

/** A planned round, as execute() takes it. */
interface Planned {
  result: ApplyResult;
  ops: PhaseOps;
  /** Backends of each known port before the round, to report what left. */
  before: Map<PortState, Array<NatBeVal | undefined>>;
  removed: PortState[];
  fresh: PortState[];
}

/** What plan() returns: run prepare() (optional), then execute() once. */
export interface SyncPlan {
  /** Maglev tables to write. */
  readonly tables: number;
  /**
   * Build (and stage in the kernel, where the map can) the Maglev tables,
   * yielding to the event loop every PREPARE_SLICE_MS.
   */
  prepare(): Promise<void>;
  execute(): ApplyResult;
}

/** The value an op carries once its table is staged: never read (see MaglevMap.stage). */
let staged: Buffer | undefined;
function stagedValue(size: number): Buffer {
  if (staged?.length !== size) staged = Buffer.alloc(size);
  return staged;
}

/** How long prepare() works before it lets the event loop turn. */
const PREPARE_SLICE_MS = 20;

const ORPHAN_PREFIX = 'orphan:';
const MAX_ID = 0xfffffffe;

function sameBackend(a: NatBeVal | undefined, b: NatBeVal | undefined): boolean {
  return a !== undefined && b !== undefined && a.addr === b.addr && a.port === b.port && (a.flags ?? 0) === (b.flags ?? 0);
}

type Group = 'backends' | 'localBackends';
const GROUP_BASE: Record<Group, number> = { backends: 0, localBackends: NAT_BE_LOCAL_BASE };

const emptySets = (): Record<Group, Array<NatBeVal | undefined>> => ({ backends: [], localBackends: [] });

function newState(name: string, id: number, metaWritten: boolean, owner?: { service: string; proto: string }): PortState {
  return {
    name,
    service: owner?.service,
    proto: owner?.proto,
    id,
    frontends: new Map(),
    be: { 4: emptySets(), 6: emptySets() },
    metaWritten,
    tableDigest: { 4: undefined, 6: undefined },
  };
}

/** The port has a Maglev table of either family. */
function hasTable(st: PortState): boolean {
  return IP_FAMILIES.some((f) => st.tableDigest[f] !== undefined);
}

/** Every backend written for the port, both sets, both families. */
function allBackends(st: PortState): Array<NatBeVal | undefined> {
  return IP_FAMILIES.flatMap((f) => [...st.be[f].backends, ...st.be[f].localBackends]);
}

function hasBackends(st: PortState): boolean {
  return allBackends(st).some(Boolean);
}

/**
 * A map's entries, as views into one packed read when the map offers it: the
 * periodic resync re-reads every map, and a Buffer pair per entry was most
 * of its memory peak (kpr run at 10k Services rose by ~300 MB).
 */
function* entriesOf(map: KVMap): Iterable<[Buffer, Buffer]> {
  if (!map.dumpPacked) {
    yield* map.dump();
    return;
  }
  const { keys, values, count } = map.dumpPacked();
  const ks = map.keySize;
  const vs = map.valueSize;
  for (let i = 0; i < count; i++) yield [keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs)];
}

/**
 * Every entry of a map as (keys, offset, values, offset): of one packed
 * read when the map offers it, with no Buffer view per entry either.
 */
function forEachPacked(map: KVMap, fn: (keys: Buffer, keyOff: number, values: Buffer, valueOff: number) => void): void {
  if (!map.dumpPacked) {
    for (const [k, v] of map.dump()) fn(k, 0, v, 0);
    return;
  }
  const { keys, values, count } = map.dumpPacked();
  for (let i = 0; i < count; i++) fn(keys, i * map.keySize, values, i * map.valueSize);
}

function sameFeVal(a: NatFeVal, b: NatFeVal): boolean {
  return (
    a.id === b.id && a.count === b.count && a.local === b.local && a.affinityTimeout === b.affinityTimeout && a.flags === b.flags
  );
}

/**
 * Ordinals for one backend set. Backends that stay keep their ordinal when
 * it is still inside the set; new ones fill the holes. Removing one backend
 * thus rewrites one slot, not the list.
 */
export function placeBackends(prev: Array<NatBeVal | undefined>, desired: Backend[]): NatBeVal[] {
  const val = (b: Backend): NatBeVal => ({ addr: b.addr, port: b.port, flags: b.local ? NAT_BE_F_LOCAL : 0 });
  // Nothing placed yet (every port of a first sync): the desired order as it is.
  if (prev.length === 0) return desired.map(val);
  const want = new Map(desired.map((b) => [backendKey(b), b]));
  const out: Array<NatBeVal | undefined> = new Array(desired.length);
  const placed = new Set<string>();
  for (let i = 0; i < desired.length; i++) {
    const p = prev[i];
    const b = p && want.get(backendKey(p));
    if (b && !placed.has(backendKey(b))) {
      out[i] = val(b);
      placed.add(backendKey(b));
    }
  }
  const rest = desired.filter((b) => !placed.has(backendKey(b)));
  for (let i = 0; i < desired.length; i++) if (!out[i]) out[i] = val(rest.shift() as Backend);
  return out as NatBeVal[];
}

/**
 * The backends of one set that changed, packed (ordinals `ordinals`, or
 * 0..count-1 when undefined: every one, as in a first sync): a full sync
 * makes one op per Service port, not one per backend.
 */
class BackendWrite extends PackedOp<PortState> {
  constructor(
    st: PortState,
    packed: Packed,
    readonly family: IPFamily,
    private readonly arr: Array<NatBeVal | undefined>,
    private readonly next: NatBeVal[],
    private readonly ordinals: number[] | undefined,
    group: Group,
    count: number,
  ) {
    super(st, packed, packed.reserve(count), count);
    const { keys, values, keySize, valueSize } = packed;
    for (let j = 0; j < count; j++) {
      const i = ordinals ? (ordinals[j] as number) : j;
      encodeNatBeKey({ id: st.id, ordinal: GROUP_BASE[group] + i }, keys, (this.at + j) * keySize);
      encodeNatBeVal(next[i] as NatBeVal, values, (this.at + j) * valueSize);
    }
  }

  commit(done = this.count): void {
    for (let j = 0; j < done; j++) {
      const i = this.ordinals ? (this.ordinals[j] as number) : j;
      this.arr[i] = this.next[i];
    }
  }
}

/** A frontend (or blackhole) entry, packed. */
class FrontendWrite extends PackedOp<PortState> {
  constructor(
    st: PortState,
    packed: Packed,
    readonly family: IPFamily,
    readonly fk: string,
    private readonly entry: FeEntry,
    private readonly owner: Map<string, number>,
  ) {
    super(st, packed, packed.reserve(1), 1);
    encodeNatFeKey(entry.key, packed.keys, this.at * packed.keySize);
    encodeNatFeVal(entry.val, packed.values, this.at * packed.valueSize);
  }

  commit(): void {
    this.port.frontends.set(this.fk, this.entry);
    this.owner.set(this.fk, this.port.id);
  }
}

/** The name of a new service id (kpr_svc_meta), packed. */
class MetaWrite extends PackedOp<PortState> {
  readonly family = 4;

  constructor(st: PortState, packed: Packed) {
    super(st, packed, packed.reserve(1), 1);
    packed.keys.writeUInt32LE(st.id, this.at * packed.keySize);
    encodeSvcMeta(st.name, packed.values, this.at * packed.valueSize);
  }

  commit(): void {
    this.port.metaWritten = true;
  }
}

/** Per family: the Packed a plan's backend or frontend writes of that family go to. */
type PerFamily = Record<IPFamily, Packed>;

export class Reconciler {
  private byName = new Map<string, PortState>();
  private byId = new Map<number, PortState>();
  /** frontend key -> owning id, so two Services never fight over one VIP:port. */
  private feOwner = new Map<string, number>();
  private nextId = 1;

  constructor(private readonly maps: NatMaps) {}

  private feMap(f: IPFamily): KVMap {
    return f === 4 ? this.maps.fe : this.maps.fe6;
  }

  private beMap(f: IPFamily): KVMap {
    return f === 4 ? this.maps.be : this.maps.be6;
  }

  private maglevMap(f: IPFamily): MaglevMap | undefined {
    return f === 4 ? this.maps.maglev : this.maps.maglev6;
  }

  /**
   * Read the pinned maps and take over what they hold, ids included. What
   * the mirror already holds byte for byte is kept as the same objects
   * (reuse() below), so the periodic resync, which re-adopts every map,
   * makes new objects only where the kernel drifted, instead of a second
   * mirror of every backend (tens of MB at 10k Services).
   */
  adopt(): AdoptReport {
    const prev = this.byId;
    this.byName = new Map();
    this.byId = new Map();
    this.feOwner = new Map();
    let maxId = 0;
    const stateFor = (id: number, name?: string): PortState => {
      let st = this.byId.get(id);
      if (!st) {
        const n = name && !this.byName.has(name) ? name : `${ORPHAN_PREFIX}${id}`;
        st = newState(n, id, n === name, n === name ? parseServicePortName(n) : undefined);
        this.byId.set(id, st);
        this.byName.set(n, st);
        maxId = Math.max(maxId, id);
      }
      return st;
    };
    for (const [k, v] of entriesOf(this.maps.meta)) stateFor(k.readUInt32LE(0), decodeSvcMeta(v));
    let frontends = 0;
    let backends = 0;
    for (const f of IP_FAMILIES) {
      for (const [k, v] of entriesOf(this.feMap(f))) {
        const key = decodeNatFeKey(k);
        const val = decodeNatFeVal(v);
        const fk = frontendKey(key);
        // Same key text and same value: the mirror's entry is what decoding made.
        const had = prev.get(val.id)?.frontends.get(fk);
        stateFor(val.id).frontends.set(fk, had && sameFeVal(had.val, val) ? had : { key, val });
        this.feOwner.set(fk, val.id);
        frontends++;
      }
      const be = this.beMap(f);
      forEachPacked(be, (keys, ko, values, vo) => {
        const id = natBeKeyId(keys, ko);
        const ordinal = natBeKeyOrdinal(keys, ko);
        const local = ordinal >= NAT_BE_LOCAL_BASE;
        const group: Group = local ? 'localBackends' : 'backends';
        const i = local ? ordinal - NAT_BE_LOCAL_BASE : ordinal;
        const had = prev.get(id)?.be[f][group][i];
        const val = had && f === 4 && isNatBeVal4(had, values, vo) ? had : decodeNatBeVal(values.subarray(vo, vo + be.valueSize));
        stateFor(id).be[f][group][i] = val;
        backends++;
      });
    }
    for (const f of IP_FAMILIES) for (const [id, d] of this.maglevMap(f)?.digests() ?? []) stateFor(id).tableDigest[f] = d;
    this.nextId = maxId + 1 > MAX_ID ? 1 : maxId + 1;
    const orphans = [...this.byName.keys()].filter((n) => n.startsWith(ORPHAN_PREFIX)).length;
    return { ports: this.byName.size - orphans, frontends, backends, orphans };
  }

  /** Names of every Service port the maps hold, orphans included. */
  knownNames(): string[] {
    return [...this.byName.keys()];
  }

  idOf(name: string): number | undefined {
    return this.byName.get(name)?.id;
  }

  /** Make the maps hold exactly `desired`: everything else is removed. */
  syncAll(desired: Map<string, DesiredServicePort>): ApplyResult {
    return this.planAll(desired).execute();
  }

  /**
   * syncAll, planned: see plan(). `desired` may be a generator that
   * translates as it is read (the controller's full sync): each port is
   * planned as it comes, so a 100k-Service sync does not hold every
   * translation at once. Its names must be distinct, as a Map's are.
   */
  planAll(desired: Iterable<[string, DesiredServicePort]>): SyncPlan {
    const planner = this.planner();
    const seen = new Set<string>();
    for (const [name, want] of desired) {
      seen.add(name);
      planner.add(name, want);
    }
    // The ports known before this round (fresh ones are all in `seen`), in the mirror's order.
    for (const name of [...this.byName.keys()]) if (!seen.has(name)) planner.add(name, null);
    return planner.finish();
  }

  private allocId(): number {
    for (let i = 0; i < MAX_ID; i++) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.byId.has(id)) return id;
    }
    throw new Error('no free service id');
  }

  /** Apply desired state (null = remove) for the named Service ports. */
  apply(changes: Map<string, DesiredServicePort | null>): ApplyResult {
    return this.plan(changes).execute();
  }

  /**
   * apply() in two steps, so a caller can let the event loop turn while
   * the slow part, Maglev tables, is prepared: plan every phase now,
   * optionally `await plan.prepare()`, then `execute()` writes every phase
   * in order. Before execute() nothing is written to the NAT maps and the
   * mirror only holds the ids reserved for new ports; the caller must not
   * plan or apply anything else in between.
   */
  plan(changes: Map<string, DesiredServicePort | null>): SyncPlan {
    const planner = this.planner();
    for (const [name, want] of changes) planner.add(name, want);
    return planner.finish();
  }

  /**
   * plan() one port at a time: add() each change in order, then finish().
   * Every phase's ops come out in the order of the changes, as if all had
   * been planned together. A port is planned as soon as it is added, so its
   * translation can be dropped at once, unless the round's released
   * frontends could matter to it (it wants a frontend another id holds):
   * that port and every later one wait for finish(), when the round's
   * released set is complete. Names must not repeat.
   */
  private planner(): { add(name: string, want: DesiredServicePort | null): void; finish(): SyncPlan } {
    const result: ApplyResult = { removedBackends: [], failed: [], conflicts: [], writes: 0, deletes: 0 };
    const before = new Map<PortState, Array<NatBeVal | undefined>>();
    const metaWrites: Op[] = [];
    const feDeletes: Op[] = [];
    const beWrites: Op[] = [];
    const tableWrites: TableOp[] = [];
    const feWrites: Op[] = [];
    const blackholeWrites: Op[] = [];
    const beDeletes: Op[] = [];
    const tableDeletes: Op[] = [];
    const metaDeletes: Op[] = [];
    const removed: PortState[] = [];
    const fresh: PortState[] = [];
    const metaPacked = new Packed(4, SVC_META_NAME_LEN);
    const bePacked: PerFamily = { 4: new Packed(NAT_BE_KEY_SIZE, NAT_BE_VAL_SIZE), 6: new Packed(NAT_BE_KEY_SIZE, NAT_BE6_VAL_SIZE) };
    const fePacked = (): PerFamily => ({ 4: new Packed(NAT_FE_KEY_SIZE, NAT_FE_VAL_SIZE), 6: new Packed(NAT_FE6_KEY_SIZE, NAT_FE_VAL_SIZE) });
    const feWritePacked = fePacked();
    const blackholePacked = fePacked();

    // Frontends released in this round may be taken over in the same round.
    const released = new Set<string>();
    /** Changes waiting for finish(), once one needed the complete released set. */
    let waiting: Array<{ name: string; want: DesiredServicePort | null; fks: string[] }> | undefined;

    const planPort = (name: string, want: DesiredServicePort | null, fks: string[]): void => {
      let st = this.byName.get(name);
      if (st) before.set(st, allBackends(st));
      if (want === null) {
        if (!st) return;
        removed.push(st);
        this.planFrontendDeletes(st, new Set(), feDeletes);
        for (const f of IP_FAMILIES) {
          this.planBackendDeletes(st, f, 'backends', 0, beDeletes);
          this.planBackendDeletes(st, f, 'localBackends', 0, beDeletes);
        }
        for (const f of IP_FAMILIES) this.planTable(st, f, [], [], [], tableWrites, tableDeletes);
        const s = st;
        metaDeletes.push({ port: s, family: 4, key: encodeU32(s.id), commit: () => (s.metaWritten = false) });
        return;
      }
      if (!st) {
        st = newState(name, this.allocId(), false, want);
        this.byName.set(name, st);
        this.byId.set(st.id, st);
        fresh.push(st);
      }
      const s = st;
      if (!s.metaWritten) metaWrites.push(new MetaWrite(s, metaPacked));

      const wanted = new Map<string, Frontend>();
      for (const [i, f] of want.frontends.entries()) {
        const fk = fks[i] as string;
        const owner = this.feOwner.get(fk);
        if (owner !== undefined && owner !== s.id && !released.has(fk)) {
          result.conflicts.push({ name, service: want.service, frontend: fk, owner: this.byId.get(owner)?.name ?? String(owner) });
          continue;
        }
        wanted.set(fk, f);
      }
      this.planFrontendDeletes(s, new Set(wanted.keys()), feDeletes);

      const placed: Record<IPFamily, Record<Group, NatBeVal[]>> = { 4: { backends: [], localBackends: [] }, 6: { backends: [], localBackends: [] } };
      for (const fam of IP_FAMILIES) {
        for (const group of ['backends', 'localBackends'] as const) {
          const arr = s.be[fam][group];
          if (arr.length === 0 && want[group].length === 0) {
            placed[fam][group] = [];
            continue;
          }
          const next = placeBackends(arr, want[group].filter((b) => addrFamily(b.addr) === fam));
          placed[fam][group] = next;
          let n = 0;
          for (let i = 0; i < next.length; i++) if (!sameBackend(arr[i], next[i])) n++;
          // Every ordinal (a first sync): no list of them.
          let changed: number[] | undefined;
          if (n > 0 && n < next.length) {
            changed = [];
            for (let i = 0; i < next.length; i++) if (!sameBackend(arr[i], next[i])) changed.push(i);
          }
          if (n > 0) beWrites.push(new BackendWrite(s, bePacked[fam], fam, arr, next, changed, group, n));
          this.planBackendDeletes(s, fam, group, next.length, beDeletes);
        }
      }

      // One table per family, over that family's backends at its ordinals.
      for (const fam of IP_FAMILIES) {
        const ofFamily = [...wanted.values()].filter((f) => addrFamily(f.addr) === fam);
        this.planTable(s, fam, ofFamily, placed[fam].backends, placed[fam].localBackends, tableWrites, tableDeletes);
      }
      for (const [fk, f] of wanted) {
        const fam = addrFamily(f.addr);
        const val: NatFeVal = {
          id: s.id,
          count: f.blackhole ? NAT_FE_BLACKHOLE : placed[fam].backends.length,
          local: f.blackhole ? 0 : placed[fam].localBackends.length,
          affinityTimeout: want.affinityTimeout,
          flags: f.flags,
        };
        const cur = s.frontends.get(fk);
        if (cur && sameFeVal(cur.val, val)) continue;
        const key: NatFeKey = { addr: f.addr, port: f.port, proto: f.proto, srcAddr: f.srcAddr, srcLen: f.srcLen };
        const packed = (f.blackhole ? blackholePacked : feWritePacked)[fam];
        (f.blackhole ? blackholeWrites : feWrites).push(new FrontendWrite(s, packed, fam, fk, { key, val }, this.feOwner));
      }
    };

    const add = (name: string, want: DesiredServicePort | null): void => {
      const fks = want ? want.frontends.map(frontendKey) : [];
      const st = this.byName.get(name);
      if (st) {
        const keep = new Set(fks);
        for (const fk of st.frontends.keys()) if (!keep.has(fk)) released.add(fk);
      }
      // Held by another id (or by any, for a port without one yet): only the
      // complete released set decides whether it is a conflict.
      if (!waiting && fks.some((fk) => { const o = this.feOwner.get(fk); return o !== undefined && (!st || o !== st.id); })) waiting = [];
      if (waiting) waiting.push({ name, want, fks });
      else planPort(name, want, fks);
    };

    const finish = (): SyncPlan => {
      for (const w of waiting ?? []) planPort(w.name, w.want, w.fks);
      const ops = { metaWrites, feDeletes, beWrites, tableWrites, feWrites, blackholeWrites, beDeletes, tableDeletes, metaDeletes };
      return this.finishPlan({ result, ops, before, removed, fresh });
    };
    return { add, finish };
  }

  /** The SyncPlan of planned ops: prepare() its Maglev tables, execute() every phase. */
  private finishPlan(planned: Planned): SyncPlan {
    const { tableWrites } = planned.ops;
    const build = (op: TableOp) => (op.value ??= op.build());
    const discard = () => {
      for (const f of IP_FAMILIES) this.maglevMap(f)?.discardStaged?.();
    };
    const prepare = async (): Promise<void> => {
      let since = performance.now();
      for (const op of tableWrites) {
        const maglev = this.maglevMap(op.family);
        if (maglev?.stage) {
          try {
            maglev.stage(op.key, op.build());
            // The kernel holds it now: 10k tables of 64 KiB need not stay in RSS too.
            op.value = stagedValue(maglev.valueSize);
          } catch {
            // execute() builds it again, writes it unstaged, and reports the error per port.
          }
        } else {
          build(op);
        }
        if (performance.now() - since >= PREPARE_SLICE_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          since = performance.now();
        }
      }
    };
    return {
      tables: tableWrites.length,
      prepare,
      execute: () => {
        try {
          return this.execute(planned, build);
        } finally {
          discard();
        }
      },
    };
  }

  private execute(planned: Planned, build: (op: TableOp) => void): ApplyResult {
    const { result, ops, before, removed, fresh } = planned;
    const { metaWrites, feDeletes, beWrites, tableWrites, feWrites, blackholeWrites, beDeletes, tableDeletes, metaDeletes } = ops;
    const failed = new Map<PortState, ApplyError>();
    const run = (ops: Op[], maps: KVMap | Record<IPFamily, KVMap>, del: boolean) => {
      if ('keySize' in maps) return runOn(ops, maps, del);
      for (const f of IP_FAMILIES) runOn(ops.filter((o) => o.family === f), maps[f], del);
    };
    const runOn = (ops: Op[], map: KVMap, del: boolean) => {
      const n = runPhase(ops, map, del, failed, (port, err) => {
        const e = err as { code?: string; message?: string };
        failed.set(port, {
          name: port.name,
          service: port.service,
          map: map.name,
          code: e.code ?? 'EUNKNOWN',
          message: e.message ?? String(err),
          full: isMapFull(err),
        });
      });
      if (del) result.deletes += n;
      else result.writes += n;
    };

    // A key another port writes in this round must go before that write,
    // or the delete would remove the new owner's entry.
    const taken = new Set([...feWrites, ...blackholeWrites].map((o) => o.fk));
    const fe = { 4: this.maps.fe, 6: this.maps.fe6 };
    const be = { 4: this.maps.be, 6: this.maps.be6 };
    run(metaWrites, this.maps.meta, false);
    run(feDeletes.filter((o) => taken.has(o.fk)), fe, true);
    run(beWrites, be, false);
    // planTable() plans no table op for a family without a table map.
    const maglev = { 4: this.maps.maglev, 6: this.maps.maglev6 } as Record<IPFamily, KVMap>;
    for (const op of tableWrites) if (!failed.has(op.port)) build(op);
    run(tableWrites, maglev, false);
    run(feWrites, fe, false);
    run(blackholeWrites, fe, false);
    run(feDeletes.filter((o) => !taken.has(o.fk)), fe, true);
    run(beDeletes, be, true);
    run(tableDeletes, maglev, true);
    run(metaDeletes, this.maps.meta, true);

    // The mirror holds only committed writes, so this is what left the maps,
    // even for a port whose later phases failed. A backend still in either
    // set (a terminating local endpoint may be in the local set only) stays.
    for (const [st, prev] of before) {
      const now = new Set(allBackends(st).filter((b): b is NatBeVal => b !== undefined).map(backendKey));
      const proto = st.proto ?? '';
      for (const b of prev) {
        if (b && !now.has(backendKey(b))) {
          now.add(backendKey(b)); // in both sets before: report it once
          result.removedBackends.push({ svcId: st.id, name: st.name, proto, addr: b.addr, port: b.port });
        }
      }
    }
    for (const st of removed) {
      if (failed.has(st) || st.frontends.size > 0 || hasBackends(st) || hasTable(st)) continue;
      this.byName.delete(st.name);
      this.byId.delete(st.id);
    }
    // A brand-new port that wrote nothing keeps no id, so a retry starts clean.
    for (const st of fresh) {
      if (failed.has(st) && !st.metaWritten && st.frontends.size === 0 && !hasBackends(st) && !hasTable(st)) {
        this.byName.delete(st.name);
        this.byId.delete(st.id);
      }
    }
    result.failed = [...failed.values()];
    return result;
  }

  private planFrontendDeletes(st: PortState, keep: Set<string>, out: Op[]): void {
    for (const [fk, fe] of st.frontends) {
      if (keep.has(fk)) continue;
      out.push({
        port: st,
        family: addrFamily(fe.key.addr),
        fk,
        key: encodeNatFeKey(fe.key),
        commit: () => {
          st.frontends.delete(fk);
          if (this.feOwner.get(fk) === st.id) this.feOwner.delete(fk);
        },
      });
    }
  }

  /**
   * Write the port's Maglev table of one family when it changed (`frontends`
   * and the backend sets are that family's); delete it when no frontend of
   * the family needs one.
   */
  private planTable(
    st: PortState,
    family: IPFamily,
    frontends: Frontend[],
    cluster: NatBeVal[],
    local: NatBeVal[],
    writes: TableOp[],
    deletes: Op[],
  ): void {
    const maglev = this.maglevMap(family);
    if (!maglev) return;
    const digests = st.tableDigest;
    const plan = planMaglevTable(frontends, cluster, local, maglev.tableSize);
    if (!plan) {
      if (digests[family] !== undefined) {
        deletes.push({ port: st, family, key: encodeU32(st.id), commit: () => (digests[family] = undefined) });
      }
      return;
    }
    if (plan.digest === digests[family]) return;
    const digest = plan.digest;
    writes.push({ port: st, family, key: encodeU32(st.id), build: plan.build, commit: () => (digests[family] = digest) });
  }

  private planBackendDeletes(st: PortState, family: IPFamily, group: Group, from: number, out: Op[]): void {
    const arr = st.be[family][group];
    for (let i = from; i < arr.length; i++) {
      if (!arr[i]) continue;
      out.push({
        port: st,
        family,
        key: encodeNatBeKey({ id: st.id, ordinal: GROUP_BASE[group] + i }),
        commit: () => {
          arr[i] = undefined;
          while (arr.length > 0 && arr[arr.length - 1] === undefined) arr.pop();
        },
      });
    }
  }

  /** Entry counts per map, as the mirror knows them. */
  /** tables: kpr_v4_maglev's; tables6: kpr_v6_maglev's. */
  counts(): { frontends: number; backends: number; ports: number; tables: number; tables6: number } {
    let frontends = 0;
    let backends = 0;
    let tables = 0;
    let tables6 = 0;
    for (const st of this.byName.values()) {
      frontends += st.frontends.size;
      backends += allBackends(st).filter(Boolean).length;
      if (st.tableDigest[4] !== undefined) tables++;
      if (st.tableDigest[6] !== undefined) tables6++;
    }
    return { frontends, backends, ports: this.byName.size, tables, tables6 };
  }
}
