/**
 * BpfMap: a kernel map behind the KVMap interface. Sizes come from the
 * kernel (mapInfo), so a Buffer of the wrong size is refused before any
 * syscall, with the map's name in the message.
 */
import { bpf, BPF_ANY, mapLookupBatchStep } from './addon.js';
import type { KVMap } from './kvmap.js';

/** Large batches are split so one call never builds a huge Buffer. */
const BATCH_CHUNK = 16384;

export class BpfMap implements KVMap {
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly type: number;

  /**
   * fd: a map of a loaded object (the object owns the fd and closes it), or
   * one this map opened itself (ownsFd: closed by close()).
   */
  constructor(
    readonly name: string,
    readonly fd: number,
    private readonly ownsFd = false,
  ) {
    const info = bpf.mapInfo(fd);
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.type = info.type;
  }

  /** Open a pinned map by path (for inspect and cleanup: no program load). */
  static openPinned(path: string, name: string): BpfMap {
    return new BpfMap(name, bpf.objGet(path), true);
  }

  private check(buf: Buffer, size: number, what: string): void {
    if (buf.length !== size) throw new RangeError(`${this.name}: ${what} must be ${size} bytes, got ${buf.length}`);
  }

  lookup(key: Buffer): Buffer | null {
    this.check(key, this.keySize, 'key');
    return bpf.mapLookup(this.fd, key);
  }

  update(key: Buffer, value: Buffer): void {
    this.check(key, this.keySize, 'key');
    this.check(value, this.valueSize, 'value');
    bpf.mapUpdate(this.fd, key, value, BPF_ANY);
  }

  delete(key: Buffer): boolean {
    this.check(key, this.keySize, 'key');
    return bpf.mapDelete(this.fd, key);
  }

  dump(): Array<[Buffer, Buffer]> {
    return bpf.mapDump(this.fd);
  }

  dumpPacked(): { keys: Buffer; values: Buffer; count: number } {
    return bpf.mapLookupBatch(this.fd);
  }

  *chunks(max: number): Iterable<Array<[Buffer, Buffer]>> {
    let cursor: Buffer | null = null;
    do {
      const r = mapLookupBatchStep(this.fd, cursor, max);
      const out: Array<[Buffer, Buffer]> = [];
      for (let i = 0; i < r.count; i++) {
        out.push([r.keys.subarray(i * this.keySize, (i + 1) * this.keySize), r.values.subarray(i * this.valueSize, (i + 1) * this.valueSize)]);
      }
      if (out.length) yield out;
      cursor = r.cursor;
    } while (cursor);
  }

  updateBatch(keys: Buffer[], values: Buffer[]): void {
    if (keys.length !== values.length) throw new RangeError(`${this.name}: ${keys.length} keys but ${values.length} values`);
    for (let i = 0; i < keys.length; i += BATCH_CHUNK) {
      const k = keys.slice(i, i + BATCH_CHUNK);
      const v = values.slice(i, i + BATCH_CHUNK);
      k.forEach((b) => this.check(b, this.keySize, 'key'));
      v.forEach((b) => this.check(b, this.valueSize, 'value'));
      bpf.mapUpdateBatch(this.fd, Buffer.concat(k), Buffer.concat(v), k.length, BPF_ANY);
    }
  }

  updatePacked(keys: Buffer, values: Buffer, count: number): void {
    this.check(keys, count * this.keySize, 'packed keys');
    this.check(values, count * this.valueSize, 'packed values');
    for (let i = 0; i < count; i += BATCH_CHUNK) {
      const n = Math.min(BATCH_CHUNK, count - i);
      const k = keys.subarray(i * this.keySize, (i + n) * this.keySize);
      bpf.mapUpdateBatch(this.fd, k, values.subarray(i * this.valueSize, (i + n) * this.valueSize), n, BPF_ANY);
    }
  }

  deleteBatch(keys: Buffer[]): void {
    for (let i = 0; i < keys.length; i += BATCH_CHUNK) {
      const k = keys.slice(i, i + BATCH_CHUNK);
      k.forEach((b) => this.check(b, this.keySize, 'key'));
      bpf.mapDeleteBatch(this.fd, Buffer.concat(k), k.length);
    }
  }

  /** Number of entries, counted by iteration (the kernel keeps no count). */
  count(): number {
    return bpf.mapDump(this.fd).length;
  }

  /** Closes the fd if this map opened it; an object's map is closed with the object. */
  close(): void {
    if (this.ownsFd) bpf.closeFd(this.fd);
  }
}
