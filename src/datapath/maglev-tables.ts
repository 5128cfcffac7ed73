/**
 * The Maglev tables in the kernel: kpr_v4_maglev and its IPv6 twin
 * kpr_v6_maglev, each a HASH_OF_MAPS from service id to an inner ARRAY
 * (layout in bpf/include/maglev.h).
 *
 * It is written through the KVMap interface, so the reconciler's phases,
 * retries and "map is full" reports cover it like any other map: the key is
 * the service id, the value the whole encoded table. An update builds a new
 * inner map, fills it completely, and only then swaps it into the outer map
 * (one atomic update), so the data path sees the old table or the new one,
 * never a mix.
 */
import { bpf, BPF_ANY, BPF_F_INNER_MAP, BPF_MAP_TYPE_ARRAY } from './addon.js';
import { MAGLEV_CHUNK, STRUCTS } from './abi.js';
import type { KVMap } from './kvmap.js';

const CHUNK_BYTES = STRUCTS.maglev_chunk.size;
const INNER_NAME = 'kpr_maglev_tbl';

/** Words of a table of size m: M, M slots, the digest. */
function tableChunks(m: number): number {
  return Math.ceil((m + 2) / MAGLEV_CHUNK);
}

/** Bytes of one encoded table: the kernel's memory for it, less the map header. */
export function maglevTableBytes(m: number): number {
  return tableChunks(m) * CHUNK_BYTES;
}

/**
 * Encode a table (slot -> backend ordinal) as the inner map's bytes, in host
 * order as the kernel keeps them. `digest` names what the table was built
 * from (see planMaglevTable), so a restarted controller can tell a table is
 * already right without building it again.
 */
export function encodeMaglevTable(ordinals: Uint32Array, digest: number): Buffer {
  const m = ordinals.length;
  const words = new Uint32Array(tableChunks(m) * MAGLEV_CHUNK);
  words[0] = m;
  words.set(ordinals, 1);
  words[m + 1] = digest;
  return Buffer.from(words.buffer, words.byteOffset, words.byteLength);
}

export interface DecodedMaglevTable {
  m: number;
  ordinals: Uint32Array;
  digest: number;
}

export function decodeMaglevTable(buf: Buffer): DecodedMaglevTable {
  const words = new Uint32Array(buf.length >> 2);
  Buffer.from(words.buffer).set(buf.subarray(0, words.byteLength));
  const m = words[0] as number;
  if (m === 0 || m + 2 > words.length) throw new RangeError(`Maglev table of ${buf.length} bytes cannot hold M=${m}`);
  return { m, ordinals: words.slice(1, m + 1), digest: words[m + 1] as number };
}

/** The table map as the reconciler sees it. */
export interface MaglevMap extends KVMap {
  /** M of the tables this controller writes. */
  readonly tableSize: number;
  /** service id -> digest of the table installed for it (one lookup each, no full read). */
  digests(): Map<number, number>;
  /**
   * Build the kernel's copy of the table for `key` ahead of its write, so
   * the write itself is one outer-map update and the caller need not keep
   * the 64 KiB value: until discardStaged(), update(key, any value)
   * installs the staged table. Lets a caller spread a first sync's work
   * over event-loop turns.
   */
  stage?(key: Buffer, value: Buffer): void;
  /** Forget every staged table (those installed stay in the map). */
  discardStaged?(): void;
}

function idKey(id: number): Buffer {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(id, 0);
  return k;
}

export class BpfMaglevTables implements MaglevMap {
  readonly keySize = 4;
  readonly valueSize: number;
  readonly maxEntries: number;

  /** ownsFd: as BpfMap's (an object's map is closed with the object). */
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly tableSize: number,
    private readonly ownsFd = false,
  ) {
    this.valueSize = maglevTableBytes(tableSize);
    this.maxEntries = bpf.mapInfo(fd).maxEntries;
  }

  private check(buf: Buffer, size: number, what: string): void {
    if (buf.length !== size) throw new RangeError(`${this.name}: ${what} must be ${size} bytes, got ${buf.length}`);
  }

  /** Run fn on the inner map an entry points at; null when there is none. */
  private withInner<T>(key: Buffer, fn: (fd: number, chunks: number) => T): T | null {
    const idBuf = bpf.mapLookup(this.fd, key);
    if (!idBuf) return null;
    const fd = bpf.mapGetFdById(idBuf.readUInt32LE(0));
    try {
      return fn(fd, bpf.mapInfo(fd).maxEntries);
    } finally {
      bpf.closeFd(fd);
    }
  }

  lookup(key: Buffer): Buffer | null {
    this.check(key, this.keySize, 'key');
    return this.withInner(key, (fd, chunks) => {
      const parts: Buffer[] = [];
      for (let i = 0; i < chunks; i++) parts.push(bpf.mapLookup(fd, idKey(i)) ?? Buffer.alloc(CHUNK_BYTES));
      return Buffer.concat(parts);
    });
  }

  /** A new inner map holding the table; the caller closes its fd. */
  private fill(value: Buffer): number {
    const chunks = value.length / CHUNK_BYTES;
    const inner = bpf.mapCreate(BPF_MAP_TYPE_ARRAY, 4, CHUNK_BYTES, chunks, INNER_NAME, BPF_F_INNER_MAP);
    try {
      const keys = Buffer.alloc(chunks * 4);
      for (let i = 0; i < chunks; i++) keys.writeUInt32LE(i, i * 4);
      bpf.mapUpdateBatch(inner, keys, value, chunks, BPF_ANY);
      return inner;
    } catch (err) {
      bpf.closeFd(inner);
      throw err;
    }
  }

  /** Inner maps filled ahead of their update(), by service id. */
  private readonly staged = new Map<number, number>();

  stage(key: Buffer, value: Buffer): void {
    this.check(key, this.keySize, 'key');
    this.check(value, this.valueSize, 'value');
    const id = key.readUInt32LE(0);
    const fd = this.fill(value);
    const old = this.staged.get(id);
    this.staged.set(id, fd);
    if (old !== undefined) bpf.closeFd(old);
  }

  discardStaged(): void {
    for (const fd of this.staged.values()) bpf.closeFd(fd);
    this.staged.clear();
  }

  update(key: Buffer, value: Buffer): void {
    this.check(key, this.keySize, 'key');
    this.check(value, this.valueSize, 'value');
    // A staged table stays staged until discardStaged(), so a retry of
    // this update (after a failed batch) installs it again.
    const staged = this.staged.get(key.readUInt32LE(0));
    const inner = staged ?? this.fill(value);
    try {
      const fdVal = Buffer.alloc(4);
      fdVal.writeUInt32LE(inner, 0);
      bpf.mapUpdate(this.fd, key, fdVal, BPF_ANY);
    } finally {
      // The outer map holds its own reference; the old table goes once no
      // program uses it any more.
      if (staged === undefined) bpf.closeFd(inner);
    }
  }

  delete(key: Buffer): boolean {
    this.check(key, this.keySize, 'key');
    return bpf.mapDelete(this.fd, key);
  }

  /** Every table, read back in full (inspect and tests; adoption uses digests()). */
  dump(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    for (const [k] of bpf.mapDump(this.fd)) {
      const v = this.lookup(k);
      if (v) out.push([k, v]);
    }
    return out;
  }

  digests(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [k] of bpf.mapDump(this.fd)) {
      const d = this.withInner(k, (fd, chunks) => {
        const head = bpf.mapLookup(fd, idKey(0));
        const m = head?.readUInt32LE(0) ?? 0;
        const word = m + 1;
        const chunk = Math.floor(word / MAGLEV_CHUNK);
        if (m === 0 || chunk >= chunks) return undefined;
        return bpf.mapLookup(fd, idKey(chunk))?.readUInt32LE((word % MAGLEV_CHUNK) * 4);
      });
      if (d !== null && d !== undefined) out.set(k.readUInt32LE(0), d);
    }
    return out;
  }

  updateBatch(keys: Buffer[], values: Buffer[]): void {
    if (keys.length !== values.length) throw new RangeError(`${this.name}: ${keys.length} keys but ${values.length} values`);
    keys.forEach((k, i) => this.update(k, values[i] as Buffer));
  }

  deleteBatch(keys: Buffer[]): void {
    for (const k of keys) this.delete(k);
  }

  close(): void {
    this.discardStaged();
    if (this.ownsFd) bpf.closeFd(this.fd);
  }
}

/**
 * Refuse table settings whose worst case (every table slot in use) would
 * take more kernel memory than allowed: arrays are allocated in full when
 * a table is written, so the ceiling must hold before the first one is.
 * `tables` is one family's map size: kpr_v4_maglev and kpr_v6_maglev each
 * hold that many, and a dual-stack Service port fills one in each.
 */
export function maglevMemoryProblem(tables: number, m: number, limitBytes: number): string | undefined {
  const need = 2 * tables * maglevTableBytes(m);
  if (need <= limitBytes) return undefined;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  return (
    `Maglev tables could take ${mib(need)} of kernel memory (2 families x ${tables} tables (--map-size-maglev) x ${m} slots ` +
    `(--maglev-table-size) x 4 bytes), above --maglev-memory-limit ${mib(limitBytes)}: lower --maglev-table-size or ` +
    `--map-size-maglev, or raise --maglev-memory-limit`
  );
}
