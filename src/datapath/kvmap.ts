/**
 * The narrow map interface the reconciler writes through. BpfMap (maps.ts)
 * backs it with the kernel; MemoryMap backs it in unit tests, with the same
 * size checks and the same "map is full" errors.
 */

export interface KVMap {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  lookup(key: Buffer): Buffer | null;
  update(key: Buffer, value: Buffer): void;
  /** false when the key was not there. */
  delete(key: Buffer): boolean;
  dump(): Array<[Buffer, Buffer]>;
  /**
   * The entries in pieces of at most max, read piece by piece, so a caller
   * can yield between them. Entries changed during the walk may be missed.
   */
  chunks?(max: number): Iterable<Array<[Buffer, Buffer]>>;
  /** All or nothing is not promised: on error, some entries may be written. */
  updateBatch(keys: Buffer[], values: Buffer[]): void;
  /** Keys that are already gone are not an error. */
  deleteBatch(keys: Buffer[]): void;
}

/** An error from a map operation, with the errno the kernel gave. */
export class MapError extends Error {
  constructor(
    message: string,
    readonly map: string,
    readonly code: string,
    readonly errno: number,
  ) {
    super(message);
    this.name = 'MapError';
  }
}

/** True when the error means the map has no room left (hash: E2BIG, LPM trie: ENOSPC). */
export function isMapFull(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === 'E2BIG' || code === 'ENOSPC';
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
