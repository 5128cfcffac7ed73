/**
 * In-memory test doubles of kpr's maps: the KVMap interface the reconciler
 * writes through, with the same size checks and "map is full" errors as the
 * kernel's maps.
 */
import { MapError, type KVMap } from '../../src/datapath/kvmap.js';
import { decodeMaglevTable, maglevTableBytes, type MaglevMap } from '../../src/datapath/maglev-tables.js';
import type { NatMaps } from '../../src/controller/reconciler.js';

export function memoryNatMaps(sizes: { fe?: number; be?: number; meta?: number } = {}): NatMaps & {
  fe: MemoryMap;
  be: MemoryMap;
  fe6: MemoryMap;
  be6: MemoryMap;
  meta: MemoryMap;
} {
  return {
    fe: new MemoryMap('kpr_v4_nat_fe', 16, 20, sizes.fe ?? 65536),
    be: new MemoryMap('kpr_v4_nat_be', 8, 8, sizes.be ?? 262144),
    fe6: new MemoryMap('kpr_v6_nat_fe', 40, 20, sizes.fe ?? 65536),
    be6: new MemoryMap('kpr_v6_nat_be', 8, 20, sizes.be ?? 262144),
    meta: new MemoryMap('kpr_svc_meta', 4, 192, sizes.meta ?? 65536),
  };
}

export class MemoryMap implements KVMap {
  private readonly data = new Map<string, Buffer>();
  /** Set to make the next writes fail, to test retries. */
  failWrites: string | undefined;
  writes = 0;

  constructor(
    readonly name: string,
    readonly keySize: number,
    readonly valueSize: number,
    readonly maxEntries: number,
  ) {}

  private check(buf: Buffer, size: number, what: string): void {
    if (buf.length !== size) throw new RangeError(`${this.name}: ${what} must be ${size} bytes, got ${buf.length}`);
  }

  lookup(key: Buffer): Buffer | null {
    this.check(key, this.keySize, 'key');
    const v = this.data.get(key.toString('hex'));
    return v ? Buffer.from(v) : null;
  }

  update(key: Buffer, value: Buffer): void {
    this.check(key, this.keySize, 'key');
    this.check(value, this.valueSize, 'value');
    if (this.failWrites) throw new MapError(`${this.name}: update failed`, this.name, this.failWrites, 1);
    const k = key.toString('hex');
    if (!this.data.has(k) && this.data.size >= this.maxEntries) {
      throw new MapError(`${this.name}: map is full (${this.maxEntries} entries)`, this.name, 'E2BIG', 7);
    }
    this.writes++;
    this.data.set(k, Buffer.from(value));
  }

  delete(key: Buffer): boolean {
    this.check(key, this.keySize, 'key');
    return this.data.delete(key.toString('hex'));
  }

  dump(): Array<[Buffer, Buffer]> {
    return [...this.data].map(([k, v]) => [Buffer.from(k, 'hex'), Buffer.from(v)]);
  }

  *chunks(max: number): Iterable<Array<[Buffer, Buffer]>> {
    const all = this.dump();
    for (let i = 0; i < all.length; i += max) yield all.slice(i, i + max);
  }

  updateBatch(keys: Buffer[], values: Buffer[]): void {
    keys.forEach((k, i) => this.update(k, values[i] as Buffer));
  }

  deleteBatch(keys: Buffer[]): void {
    for (const k of keys) this.delete(k);
  }

  get size(): number {
    return this.data.size;
  }
}

/** In-memory twin for unit tests, with the same sizes and "full" errors. */
export class MemoryMaglevTables extends MemoryMap implements MaglevMap {
  constructor(
    readonly tableSize: number,
    maxEntries: number,
    name = 'kpr_v4_maglev',
  ) {
    super(name, 4, maglevTableBytes(tableSize), maxEntries);
  }

  digests(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [k, v] of this.dump()) out.set(k.readUInt32LE(0), decodeMaglevTable(v).digest);
    return out;
  }
}
