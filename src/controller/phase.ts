/**
 * One phase of the reconciler's make-before-break sequence: a set of writes
 * (or deletes) to one map, each on behalf of one Service port.
 */
import type { KVMap } from '../datapath/kvmap.js';

export interface PhaseOp<P> {
  port: P;
  /** frontendKey() of a frontend op */
  fk?: string;
  /** One entry's key, or `count` keys packed end to end (value likewise). */
  key: Buffer;
  value?: Buffer;
  /** Entries packed in key and value; 1 when unset. */
  count?: number;
  /**
   * Record the op in the mirror; called only once the kernel took it. With
   * `done`, only that many of its entries, the first ones, were taken.
   */
  commit(done?: number): void;
}

const entries = <P>(op: PhaseOp<P>): number => op.count ?? 1;

/**
 * The entries of one phase for one map, packed end to end as the kernel's
 * batch call takes them. Ops point into it (PackedOp) instead of holding
 * two Buffers each: a full sync at 100k Service ports made 600k small
 * Buffers, every one alive until the phase ran.
 */
export class Packed {
  keys: Buffer;
  values: Buffer;
  /** Entries reserved so far. */
  count = 0;

  constructor(
    readonly keySize: number,
    readonly valueSize: number,
  ) {
    this.keys = Buffer.alloc(16 * keySize);
    this.values = Buffer.alloc(16 * valueSize);
  }

  /** Room for n more (zeroed) entries; returns the index of the first. */
  reserve(n: number): number {
    const need = this.count + n;
    let cap = this.keys.length / this.keySize;
    if (need > cap) {
      while (cap < need) cap *= 2;
      this.keys = grown(this.keys, cap * this.keySize);
      this.values = grown(this.values, cap * this.valueSize);
    }
    const at = this.count;
    this.count = need;
    return at;
  }
}

function grown(buf: Buffer, size: number): Buffer {
  const out = Buffer.alloc(size);
  buf.copy(out);
  return out;
}

/** An op whose `count` entries are entries at..at+count-1 of a Packed. */
export abstract class PackedOp<P> implements PhaseOp<P> {
  constructor(
    readonly port: P,
    readonly packed: Packed,
    readonly at: number,
    readonly count: number,
  ) {}

  /** Its entries' keys (a view: read only when the phase cannot send the Packed whole). */
  get key(): Buffer {
    const { keys, keySize } = this.packed;
    return keys.subarray(this.at * keySize, (this.at + this.count) * keySize);
  }

  get value(): Buffer {
    const { values, valueSize } = this.packed;
    return values.subarray(this.at * valueSize, (this.at + this.count) * valueSize);
  }

  abstract commit(done?: number): void;
}

/** The Packed that `todo` covers entirely and in order, if it does: it goes to the kernel as it is. */
function wholePacked<P>(todo: PhaseOp<P>[]): Packed | undefined {
  const first = todo[0];
  if (!(first instanceof PackedOp)) return undefined;
  const packed = first.packed;
  let next = 0;
  for (const op of todo) {
    if (!(op instanceof PackedOp) || op.packed !== packed || op.at !== next) return undefined;
    next += op.count;
  }
  return next === packed.count ? packed : undefined;
}

/** Entry i of a packed op's key or value. */
function entry(buf: Buffer, i: number, n: number, size: number): Buffer {
  return n === 1 ? buf : buf.subarray(i * size, (i + 1) * size);
}

/** All of `todo` in one batch call (split by the map into chunks). */
function batch<P>(todo: PhaseOp<P>[], map: KVMap, del: boolean): void {
  if (!del && map.updatePacked) {
    const p = wholePacked(todo);
    if (p) {
      map.updatePacked(p.keys.subarray(0, p.count * p.keySize), p.values.subarray(0, p.count * p.valueSize), p.count);
      return;
    }
    const count = todo.reduce((a, op) => a + entries(op), 0);
    map.updatePacked(Buffer.concat(todo.map((o) => o.key)), Buffer.concat(todo.map((o) => o.value as Buffer)), count);
    return;
  }
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  for (const op of todo) {
    const n = entries(op);
    for (let i = 0; i < n; i++) {
      keys.push(entry(op.key, i, n, map.keySize));
      if (!del) values.push(entry(op.value as Buffer, i, n, map.valueSize));
    }
  }
  if (del) map.deleteBatch(keys);
  else map.updateBatch(keys, values);
}

/**
 * Run one phase as one batch call. If the batch fails, run it again one
 * entry at a time to learn which ports failed: onError is called once per
 * such port, which is then in `failed` and skipped by every later phase.
 * Returns the number of entries attempted.
 */
export function runPhase<P>(ops: PhaseOp<P>[], map: KVMap, del: boolean, failed: Map<P, unknown>, onError: (port: P, err: unknown) => void): number {
  const todo = ops.filter((op) => !failed.has(op.port));
  if (todo.length === 0) return 0;
  try {
    batch(todo, map, del);
    for (const op of todo) op.commit();
  } catch {
    for (const op of todo) {
      if (failed.has(op.port)) continue;
      const n = entries(op);
      let done = 0;
      try {
        for (; done < n; done++) {
          const key = entry(op.key, done, n, map.keySize);
          if (del) map.delete(key);
          else map.update(key, entry(op.value as Buffer, done, n, map.valueSize));
        }
        op.commit();
      } catch (err) {
        if (done > 0) op.commit(done);
        onError(op.port, err);
      }
    }
  }
  return todo.reduce((a, op) => a + entries(op), 0);
}
