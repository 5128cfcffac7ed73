/**
 * The narrow map interface the reconciler writes through. BpfMap
 * (bpf-map.ts) backs it with the kernel; the tests' MemoryMap
 * (test/helpers/memmaps.ts) backs it in memory, with the same size checks
 * and the same "map is full" errors.
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
   * dump() as two Buffers, entries end to end (keySize and valueSize bytes
   * each): re-reading a million entries costs no Buffer pair per entry.
   */
  dumpPacked?(): { keys: Buffer; values: Buffer; count: number };
  /**
   * The entries in pieces of at most max, read piece by piece, so a caller
   * can yield between them. Entries changed during the walk may be missed.
   */
  chunks?(max: number): Iterable<Array<[Buffer, Buffer]>>;
  /** All or nothing is not promised: on error, some entries may be written. */
  updateBatch(keys: Buffer[], values: Buffer[]): void;
  /**
   * updateBatch for `count` entries packed end to end in two Buffers
   * (keySize and valueSize bytes each), as the kernel's batch call takes
   * them: a full sync writes a million backends without a Buffer each.
   */
  updatePacked?(keys: Buffer, values: Buffer, count: number): void;
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
