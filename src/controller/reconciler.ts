/**
 * The reconciler: makes the pinned NAT maps match the desired Service ports.
 *
 * It keeps a mirror of what it has written, adopted from the maps at start,
 * so a restart keeps every service id and rewrites nothing that is already
 * right. Writes are make-before-break, in global phases so one batch call
 * covers many Services:
 *
 *   1. service names for new ids      (so inspect can always name an id)
 *   2. delete frontends that went away
 *   3. write backends                 (before any count grows)
 *   3b. write Maglev tables           (each complete before a frontend is flagged)
 *   4. write frontends with new counts
 *   5. delete trailing backends       (after the count shrank)
 *   5b. delete Maglev tables no frontend uses any more
 *   6. delete names of removed ids
 *
 * A Service port whose write fails skips its later phases, stays as it was
 * in the mirror, and is handed back for retry.
 */
import {
  backendKey,
  frontendKey,
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
  /** Backend at each ordinal, as written. */
  backends: Array<NatBeVal | undefined>;
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

export interface ApplyResult {
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
  key: Buffer;
  value?: Buffer;
  commit(): void;
}

const ORPHAN_PREFIX = 'orphan:';
const MAX_ID = 0xfffffffe;

function sameBackend(a: NatBeVal | undefined, b: NatBeVal | undefined): boolean {
  return a !== undefined && b !== undefined && a.addr === b.addr && a.port === b.port;
}

function sameFeVal(a: NatFeVal, b: NatFeVal): boolean {
  return (
    a.id === b.id && a.count === b.count && a.local === b.local && a.affinityTimeout === b.affinityTimeout && a.flags === b.flags
  );
}

/**
 * Ordinals for the new backend list. Backends that stay keep their ordinal
 * when it is still inside their group (local first, then remote); new ones
 * fill the holes. Removing one backend thus rewrites one slot, not the list.
 */
export function placeBackends(prev: Array<NatBeVal | undefined>, desired: Backend[]): NatBeVal[] {
  const local = desired.filter((b) => b.local);
  const remote = desired.filter((b) => !b.local);
  const out: Array<NatBeVal | undefined> = new Array(desired.length);
  const place = (group: Backend[], base: number) => {
    const want = new Set(group.map(backendKey));
    const placed = new Set<string>();
    for (let i = base; i < base + group.length; i++) {
      const p = prev[i];
      if (p && want.has(backendKey(p)) && !placed.has(backendKey(p))) {
        out[i] = p;
        placed.add(backendKey(p));
      }
    }
    const rest = group.filter((b) => !placed.has(backendKey(b)));
    for (let i = base; i < base + group.length; i++) {
      if (!out[i]) {
        const b = rest.shift() as Backend;
        out[i] = { addr: b.addr, port: b.port };
      }
    }
  };
  place(local, 0);
  place(remote, local.length);
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
        st = { name: n, id, frontends: new Map(), backends: [], metaWritten: n === name };
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
      stateFor(key.id).backends[key.ordinal] = decodeNatBeVal(v);
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
    const result: ApplyResult = { failed: [], conflicts: [], writes: 0, deletes: 0 };
    const metaWrites: Op[] = [];
    const feDeletes: Op[] = [];
    const beWrites: Op[] = [];
    const tableWrites: Op[] = [];
    const feWrites: Op[] = [];
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
      if (want === null) {
        if (!st) continue;
        removed.push(st);
        this.planFrontendDeletes(st, new Set(), feDeletes);
        this.planBackendDeletes(st, 0, beDeletes);
        this.planTable(st, [], [], 0, tableWrites, tableDeletes);
        const s = st;
        metaDeletes.push({ port: s, key: encodeU32(s.id), commit: () => (s.metaWritten = false) });
        continue;
      }
      if (!st) {
        st = { name, id: this.allocId(), frontends: new Map(), backends: [], metaWritten: false };
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

      const next = placeBackends(s.backends, want.backends);
      next.forEach((b, ordinal) => {
        if (sameBackend(s.backends[ordinal], b)) return;
        beWrites.push({
          port: s,
          key: encodeNatBeKey({ id: s.id, ordinal }),
          value: encodeNatBeVal(b),
          commit: () => (s.backends[ordinal] = b),
        });
      });
      this.planBackendDeletes(s, next.length, beDeletes);

      const local = want.backends.filter((b) => b.local).length;
      this.planTable(s, [...wanted.values()], next, local, tableWrites, tableDeletes);
      for (const [fk, f] of wanted) {
        const val: NatFeVal = {
          id: s.id,
          count: f.blackhole ? NAT_FE_BLACKHOLE : next.length,
          local: f.blackhole ? 0 : local,
          affinityTimeout: want.affinityTimeout,
          flags: f.flags,
        };
        const cur = s.frontends.get(fk);
        if (cur && sameFeVal(cur.val, val)) continue;
        const key: NatFeKey = { addr: f.addr, port: f.port, proto: f.proto, srcAddr: f.srcAddr, srcLen: f.srcLen };
        feWrites.push({
          port: s,
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

    run(metaWrites, this.maps.meta, false);
    run(feDeletes, this.maps.fe, true);
    run(beWrites, this.maps.be, false);
    if (this.maps.maglev) run(tableWrites, this.maps.maglev, false);
    run(feWrites, this.maps.fe, false);
    run(beDeletes, this.maps.be, true);
    if (this.maps.maglev) run(tableDeletes, this.maps.maglev, true);
    run(metaDeletes, this.maps.meta, true);

    for (const st of removed) {
      if (failed.has(st) || st.frontends.size > 0 || st.backends.some(Boolean) || st.tableDigest !== undefined) continue;
      this.byName.delete(st.name);
      this.byId.delete(st.id);
    }
    // A brand-new port that wrote nothing keeps no id, so a retry starts clean.
    for (const st of fresh) {
      if (failed.has(st) && !st.metaWritten && st.frontends.size === 0 && !st.backends.some(Boolean) && st.tableDigest === undefined) {
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
        key: encodeNatFeKey(fe.key),
        commit: () => {
          st.frontends.delete(fk);
          if (this.feOwner.get(fk) === st.id) this.feOwner.delete(fk);
        },
      });
    }
  }

  /** Write the port's Maglev table when it changed; delete it when no frontend needs one. */
  private planTable(st: PortState, frontends: Frontend[], next: NatBeVal[], local: number, writes: Op[], deletes: Op[]): void {
    const maglev = this.maps.maglev;
    if (!maglev) return;
    const plan = planMaglevTable(frontends, next, local, maglev.tableSize);
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

  private planBackendDeletes(st: PortState, from: number, out: Op[]): void {
    for (let ordinal = from; ordinal < st.backends.length; ordinal++) {
      if (!st.backends[ordinal]) continue;
      out.push({
        port: st,
        key: encodeNatBeKey({ id: st.id, ordinal }),
        commit: () => {
          st.backends[ordinal] = undefined;
          while (st.backends.length > 0 && st.backends[st.backends.length - 1] === undefined) st.backends.pop();
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
      backends += st.backends.filter(Boolean).length;
      if (st.tableDigest !== undefined) tables++;
    }
    return { frontends, backends, ports: this.byName.size, tables };
  }
}
