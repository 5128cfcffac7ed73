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
 * in the mirror, and is handed back for retry.
 */
import {
  backendKey,
  frontendKey,
  NAT_BE_F_LOCAL,
  NAT_BE_LOCAL_BASE,
  NAT_FE_BLACKHOLE,
  type Backend,
  type DesiredServicePort,
  type Frontend,
} from '../model/types.js';
import {
  decodeNatBeKey,
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
  type NatBeVal,
  type NatFeKey,
  type NatFeVal,
} from '../datapath/codec.js';
import { isMapFull, type KVMap } from '../datapath/kvmap.js';
import type { MaglevMap } from '../datapath/maglev-tables.js';
import { planMaglevTable } from './maglev-plan.js';

export interface NatMaps {
  fe: KVMap;
  be: KVMap;
  meta: KVMap;
  /** Maglev tables; without it no table is written and flagged frontends stay on random. */
  maglev?: MaglevMap | undefined;
}

interface FeEntry {
  key: NatFeKey;
  val: NatFeVal;
}

interface PortState {
  name: string;
  id: number;
  frontends: Map<string, FeEntry>;
  /** Cluster-set backend at each ordinal, as written. */
  backends: Array<NatBeVal | undefined>;
  /** Local-set backend at each ordinal - NAT_BE_LOCAL_BASE, as written. */
  localBackends: Array<NatBeVal | undefined>;
  metaWritten: boolean;
  /** Digest of the Maglev table installed for this id. */
  tableDigest?: number | undefined;
}

export interface ApplyError {
  name: string;
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
  conflicts: Array<{ name: string; frontend: string; owner: string }>;
  writes: number;
  deletes: number;
}

export interface AdoptReport {
  ports: number;
  frontends: number;
  backends: number;
  orphans: number;
}

interface Op {
  port: PortState;
  /** frontendKey() of a frontend op */
  fk?: string;
  key: Buffer;
  value?: Buffer;
  commit(): void;
}

const ORPHAN_PREFIX = 'orphan:';
const MAX_ID = 0xfffffffe;

function sameBackend(a: NatBeVal | undefined, b: NatBeVal | undefined): boolean {
  return a !== undefined && b !== undefined && a.addr === b.addr && a.port === b.port && (a.flags ?? 0) === (b.flags ?? 0);
}

type Group = 'backends' | 'localBackends';
const GROUP_BASE: Record<Group, number> = { backends: 0, localBackends: NAT_BE_LOCAL_BASE };

function newState(name: string, id: number, metaWritten: boolean): PortState {
  return { name, id, frontends: new Map(), backends: [], localBackends: [], metaWritten };
}

function hasBackends(st: PortState): boolean {
  return st.backends.some(Boolean) || st.localBackends.some(Boolean);
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

export class Reconciler {
  private byName = new Map<string, PortState>();
  private byId = new Map<number, PortState>();
  /** frontend key -> owning id, so two Services never fight over one VIP:port. */
  private feOwner = new Map<string, number>();
  private nextId = 1;

  constructor(private readonly maps: NatMaps) {}

  /** Read the pinned maps and take over what they hold, ids included. */
  adopt(): AdoptReport {
    this.byName.clear();
    this.byId.clear();
    this.feOwner.clear();
    let maxId = 0;
    const stateFor = (id: number, name?: string): PortState => {
      let st = this.byId.get(id);
      if (!st) {
        const n = name && !this.byName.has(name) ? name : `${ORPHAN_PREFIX}${id}`;
        st = newState(n, id, n === name);
        this.byId.set(id, st);
        this.byName.set(n, st);
        maxId = Math.max(maxId, id);
      }
      return st;
    };
    for (const [k, v] of this.maps.meta.dump()) stateFor(k.readUInt32LE(0), decodeSvcMeta(v));
    let frontends = 0;
    let backends = 0;
    for (const [k, v] of this.maps.fe.dump()) {
      const key = decodeNatFeKey(k);
      const val = decodeNatFeVal(v);
      const fk = frontendKey(key);
      stateFor(val.id).frontends.set(fk, { key, val });
      this.feOwner.set(fk, val.id);
      frontends++;
    }
    for (const [k, v] of this.maps.be.dump()) {
      const key = decodeNatBeKey(k);
      const st = stateFor(key.id);
      if (key.ordinal >= NAT_BE_LOCAL_BASE) st.localBackends[key.ordinal - NAT_BE_LOCAL_BASE] = decodeNatBeVal(v);
      else st.backends[key.ordinal] = decodeNatBeVal(v);
      backends++;
    }
    for (const [id, d] of this.maps.maglev?.digests() ?? []) stateFor(id).tableDigest = d;
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
    const changes = new Map<string, DesiredServicePort | null>(desired);
    for (const name of this.byName.keys()) if (!desired.has(name)) changes.set(name, null);
    return this.apply(changes);
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
    const result: ApplyResult = { removedBackends: [], failed: [], conflicts: [], writes: 0, deletes: 0 };
    const before = new Map<PortState, Array<NatBeVal | undefined>>();
    const metaWrites: Op[] = [];
    const feDeletes: Op[] = [];
    const beWrites: Op[] = [];
    const tableWrites: Op[] = [];
    const feWrites: Op[] = [];
    const blackholeWrites: Op[] = [];
    const beDeletes: Op[] = [];
    const tableDeletes: Op[] = [];
    const metaDeletes: Op[] = [];
    const removed: PortState[] = [];
    const fresh: PortState[] = [];

    // Frontends released in this round may be taken over in the same round.
    const released = new Set<string>();
    for (const [name, want] of changes) {
      const st = this.byName.get(name);
      if (!st) continue;
      const keep = new Set((want?.frontends ?? []).map(frontendKey));
      for (const fk of st.frontends.keys()) if (!keep.has(fk)) released.add(fk);
    }

    for (const [name, want] of changes) {
      let st = this.byName.get(name);
      if (st) before.set(st, [...st.backends, ...st.localBackends]);
      if (want === null) {
        if (!st) continue;
        removed.push(st);
        this.planFrontendDeletes(st, new Set(), feDeletes);
        this.planBackendDeletes(st, 'backends', 0, beDeletes);
        this.planBackendDeletes(st, 'localBackends', 0, beDeletes);
        this.planTable(st, [], [], [], tableWrites, tableDeletes);
        const s = st;
        metaDeletes.push({ port: s, key: encodeU32(s.id), commit: () => (s.metaWritten = false) });
        continue;
      }
      if (!st) {
        st = newState(name, this.allocId(), false);
        this.byName.set(name, st);
        this.byId.set(st.id, st);
        fresh.push(st);
      }
      const s = st;
      if (!s.metaWritten) {
        metaWrites.push({ port: s, key: encodeU32(s.id), value: encodeSvcMeta(name), commit: () => (s.metaWritten = true) });
      }

      const wanted = new Map<string, Frontend>();
      for (const f of want.frontends) {
        const fk = frontendKey(f);
        const owner = this.feOwner.get(fk);
        if (owner !== undefined && owner !== s.id && !released.has(fk)) {
          result.conflicts.push({ name, frontend: fk, owner: this.byId.get(owner)?.name ?? String(owner) });
          continue;
        }
        wanted.set(fk, f);
      }
      this.planFrontendDeletes(s, new Set(wanted.keys()), feDeletes);

      const sizes = { backends: 0, localBackends: 0 };
      const placed: Record<Group, NatBeVal[]> = { backends: [], localBackends: [] };
      for (const group of ['backends', 'localBackends'] as const) {
        const next = placeBackends(s[group], want[group]);
        placed[group] = next;
        sizes[group] = next.length;
        next.forEach((b, i) => {
          if (sameBackend(s[group][i], b)) return;
          beWrites.push({
            port: s,
            key: encodeNatBeKey({ id: s.id, ordinal: GROUP_BASE[group] + i }),
            value: encodeNatBeVal(b),
            commit: () => (s[group][i] = b),
          });
        });
        this.planBackendDeletes(s, group, next.length, beDeletes);
      }

      this.planTable(s, [...wanted.values()], placed.backends, placed.localBackends, tableWrites, tableDeletes);
      for (const [fk, f] of wanted) {
        const val: NatFeVal = {
          id: s.id,
          count: f.blackhole ? NAT_FE_BLACKHOLE : sizes.backends,
          local: f.blackhole ? 0 : sizes.localBackends,
          affinityTimeout: want.affinityTimeout,
          flags: f.flags,
        };
        const cur = s.frontends.get(fk);
        if (cur && sameFeVal(cur.val, val)) continue;
        const key: NatFeKey = { addr: f.addr, port: f.port, proto: f.proto, srcAddr: f.srcAddr, srcLen: f.srcLen };
        (f.blackhole ? blackholeWrites : feWrites).push({
          port: s,
          fk,
          key: encodeNatFeKey(key),
          value: encodeNatFeVal(val),
          commit: () => {
            s.frontends.set(fk, { key, val });
            this.feOwner.set(fk, s.id);
          },
        });
      }
    }

    const failed = new Map<PortState, ApplyError>();
    const run = (ops: Op[], map: KVMap, del: boolean) => {
      const todo = ops.filter((op) => !failed.has(op.port));
      if (todo.length === 0) return;
      try {
        if (del) map.deleteBatch(todo.map((o) => o.key));
        else map.updateBatch(todo.map((o) => o.key), todo.map((o) => o.value as Buffer));
        for (const op of todo) op.commit();
      } catch {
        // Find out which Service ports failed: retry one entry at a time.
        for (const op of todo) {
          if (failed.has(op.port)) continue;
          try {
            if (del) map.delete(op.key);
            else map.update(op.key, op.value as Buffer);
            op.commit();
          } catch (err) {
            const e = err as { code?: string; message?: string };
            failed.set(op.port, {
              name: op.port.name,
              map: map.name,
              code: e.code ?? 'EUNKNOWN',
              message: e.message ?? String(err),
              full: isMapFull(err),
            });
          }
        }
      }
      if (del) result.deletes += todo.length;
      else result.writes += todo.length;
    };

    // A key another port writes in this round must go before that write,
    // or the delete would remove the new owner's entry.
    const taken = new Set([...feWrites, ...blackholeWrites].map((o) => o.fk));
    run(metaWrites, this.maps.meta, false);
    run(feDeletes.filter((o) => taken.has(o.fk)), this.maps.fe, true);
    run(beWrites, this.maps.be, false);
    if (this.maps.maglev) run(tableWrites, this.maps.maglev, false);
    run(feWrites, this.maps.fe, false);
    run(blackholeWrites, this.maps.fe, false);
    run(feDeletes.filter((o) => !taken.has(o.fk)), this.maps.fe, true);
    run(beDeletes, this.maps.be, true);
    if (this.maps.maglev) run(tableDeletes, this.maps.maglev, true);
    run(metaDeletes, this.maps.meta, true);

    // The mirror holds only committed writes, so this is what left the maps,
    // even for a port whose later phases failed. A backend still in either
    // set (a terminating local endpoint may be in the local set only) stays.
    for (const [st, prev] of before) {
      const now = new Set(
        [...st.backends, ...st.localBackends].filter((b): b is NatBeVal => b !== undefined).map(backendKey),
      );
      const proto = st.name.slice(st.name.lastIndexOf('/') + 1);
      for (const b of prev) {
        if (b && !now.has(backendKey(b))) {
          now.add(backendKey(b)); // in both sets before: report it once
          result.removedBackends.push({ svcId: st.id, name: st.name, proto, addr: b.addr, port: b.port });
        }
      }
    }
    for (const st of removed) {
      if (failed.has(st) || st.frontends.size > 0 || hasBackends(st) || st.tableDigest !== undefined) continue;
      this.byName.delete(st.name);
      this.byId.delete(st.id);
    }
    // A brand-new port that wrote nothing keeps no id, so a retry starts clean.
    for (const st of fresh) {
      if (failed.has(st) && !st.metaWritten && st.frontends.size === 0 && !hasBackends(st) && st.tableDigest === undefined) {
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
        fk,
        key: encodeNatFeKey(fe.key),
        commit: () => {
          st.frontends.delete(fk);
          if (this.feOwner.get(fk) === st.id) this.feOwner.delete(fk);
        },
      });
    }
  }

  /** Write the port's Maglev table when it changed; delete it when no frontend needs one. */
  private planTable(st: PortState, frontends: Frontend[], cluster: NatBeVal[], local: NatBeVal[], writes: Op[], deletes: Op[]): void {
    const maglev = this.maps.maglev;
    if (!maglev) return;
    const plan = planMaglevTable(frontends, cluster, local, maglev.tableSize);
    if (!plan) {
      if (st.tableDigest !== undefined) {
        deletes.push({ port: st, key: encodeU32(st.id), commit: () => (st.tableDigest = undefined) });
      }
      return;
    }
    if (plan.digest === st.tableDigest) return;
    const digest = plan.digest;
    writes.push({ port: st, key: encodeU32(st.id), value: plan.build(), commit: () => (st.tableDigest = digest) });
  }

  private planBackendDeletes(st: PortState, group: Group, from: number, out: Op[]): void {
    const arr = st[group];
    for (let i = from; i < arr.length; i++) {
      if (!arr[i]) continue;
      out.push({
        port: st,
        key: encodeNatBeKey({ id: st.id, ordinal: GROUP_BASE[group] + i }),
        commit: () => {
          arr[i] = undefined;
          while (arr.length > 0 && arr[arr.length - 1] === undefined) arr.pop();
        },
      });
    }
  }

  /** Entry counts per map, as the mirror knows them. */
  counts(): { frontends: number; backends: number; ports: number; tables: number } {
    let frontends = 0;
    let backends = 0;
    let tables = 0;
    for (const st of this.byName.values()) {
      frontends += st.frontends.size;
      backends += st.backends.filter(Boolean).length + st.localBackends.filter(Boolean).length;
      if (st.tableDigest !== undefined) tables++;
    }
    return { frontends, backends, ports: this.byName.size, tables };
  }
}
