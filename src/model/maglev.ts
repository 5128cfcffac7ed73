/**
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): the
 * lookup table the data path reads (bpf/include/maglev.h), built here from
 * the backends' identities only, so every node builds the same table from
 * the same endpoints, whatever order it learnt them in.
 *
 * Pure: no BPF, no I/O. The hashes below are part of the contract between
 * nodes: changing them remaps flows across a mixed-version rollout.
 */
import { createHash } from 'node:crypto';
import { addrFamily, compareAddr, hostPort, ipv6Bytes } from '../util/ip.js';
import { ipv4ToNumber } from '../util/ipv4.js';

/** Cilium's default; a prime, so every skip walks the whole table. */
export const DEFAULT_MAGLEV_TABLE_SIZE = 16381;
export const MIN_MAGLEV_TABLE_SIZE = 251;
export const MAX_MAGLEV_TABLE_SIZE = 131071;

export const LB_ALGORITHM_ANNOTATION = 'kpr.io/lb-algorithm';
export const LB_ALGORITHMS = ['random', 'maglev'] as const;
export type LbAlgorithm = (typeof LB_ALGORITHMS)[number];

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** Why `m` is not a usable table size, or undefined when it is. */
export function tableSizeProblem(m: number): string | undefined {
  if (!Number.isInteger(m) || m < MIN_MAGLEV_TABLE_SIZE || m > MAX_MAGLEV_TABLE_SIZE || !isPrime(m)) {
    return `must be a prime between ${MIN_MAGLEV_TABLE_SIZE} and ${MAX_MAGLEV_TABLE_SIZE} (e.g. 251, 1021, 4093, 16381, 65521, 131071), got ${m}`;
  }
  return undefined;
}

/** The permutation of one backend: where it starts and how far it jumps. */
function permutation(identity: string, m: number): { offset: number; skip: number } {
  const d = createHash('sha256').update(identity).digest();
  return { offset: d.readUInt32BE(0) % m, skip: (d.readUInt32BE(4) % (m - 1)) + 1 };
}

/**
 * The lookup table: entry i is the index (into `identities`, sorted by the
 * caller) of the backend that owns slot i. Each backend takes turns claiming
 * the next free slot of its own permutation, so each owns M/N slots, give or
 * take one, and removing one backend frees only its own slots.
 */
export function buildMaglevTable(identities: string[], m: number): Uint32Array {
  const n = identities.length;
  if (n === 0) throw new RangeError('a Maglev table needs at least one backend');
  const entry = new Int32Array(m).fill(-1);
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  identities.forEach((id, i) => {
    const p = permutation(id, m);
    pos[i] = p.offset;
    skip[i] = p.skip;
  });
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = pos[i] as number;
      const s = skip[i] as number;
      while ((entry[c] as number) >= 0) {
        c += s;
        if (c >= m) c -= m;
      }
      entry[c] = i;
      c += s;
      pos[i] = c >= m ? c - m : c;
      if (++filled === m) return new Uint32Array(entry.buffer);
    }
  }
}

/** A backend's identity, the same on every node: "addr:port", "[addr6]:port". */
export function backendIdentity(b: { addr: string; port: number }): string {
  return hostPort(b.addr, b.port);
}

/** Backends in the order every node sorts them: address (numeric, per family), then port. */
export function sortForMaglev<T extends { addr: string; port: number }>(list: T[]): T[] {
  return [...list].sort((x, y) => compareAddr(x.addr, y.addr) || x.port - y.port);
}

const rol32 = (w: number, s: number) => ((w << s) | (w >>> (32 - s))) >>> 0;

export interface FlowTuple {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}

/** The kernel's __jhash_final; returns c. */
function jhashFinal(a: number, b: number, c: number): number {
  c = ((c ^ b) - rol32(b, 14)) >>> 0;
  a = ((a ^ c) - rol32(c, 11)) >>> 0;
  b = ((b ^ a) - rol32(a, 25)) >>> 0;
  c = ((c ^ b) - rol32(b, 16)) >>> 0;
  a = ((a ^ c) - rol32(c, 4)) >>> 0;
  b = ((b ^ a) - rol32(a, 14)) >>> 0;
  c = ((c ^ b) - rol32(b, 24)) >>> 0;
  return c;
}

/** The kernel's __jhash_mix, in place on [a, b, c]. */
function jhashMix(s: [number, number, number]): void {
  let [a, b, c] = s;
  a = (((a - c) >>> 0) ^ rol32(c, 4)) >>> 0;
  c = (c + b) >>> 0;
  b = (((b - a) >>> 0) ^ rol32(a, 6)) >>> 0;
  a = (a + c) >>> 0;
  c = (((c - b) >>> 0) ^ rol32(b, 8)) >>> 0;
  b = (b + a) >>> 0;
  a = (((a - c) >>> 0) ^ rol32(c, 16)) >>> 0;
  c = (c + b) >>> 0;
  b = (((b - a) >>> 0) ^ rol32(a, 19)) >>> 0;
  a = (a + c) >>> 0;
  c = (((c - b) >>> 0) ^ rol32(b, 4)) >>> 0;
  b = (b + a) >>> 0;
  s[0] = a;
  s[1] = b;
  s[2] = c;
}

/** The addresses as big-endian 32-bit words (IPv6: 4 words). */
function words6(addr: string): number[] {
  const x = ipv6Bytes(addr);
  return [0, 4, 8, 12].map((i) => (((x[i] as number) << 24) | ((x[i + 1] as number) << 16) | ((x[i + 2] as number) << 8) | (x[i + 3] as number)) >>> 0);
}

/**
 * Twin of maglev_flow_hash in bpf/include/maglev.h: the kernel's
 * jhash_3words over an IPv4 flow, its jhash2 over the nine words of an
 * IPv6 flow (source, destination, ports), with the protocol as initval.
 */
export function flowHash(t: FlowTuple): number {
  const ports = (((t.sport & 0xffff) << 16) | (t.dport & 0xffff)) >>> 0;
  if (addrFamily(t.saddr) === 6) {
    const [s0, s1, s2, s3] = words6(t.saddr) as [number, number, number, number];
    const [d0, d1, d2, d3] = words6(t.daddr) as [number, number, number, number];
    const init = (0xdeadbeef + (9 << 2) + t.proto) >>> 0;
    const s: [number, number, number] = [(init + s0) >>> 0, (init + s1) >>> 0, (init + s2) >>> 0];
    jhashMix(s);
    s[0] = (s[0] + s3) >>> 0;
    s[1] = (s[1] + d0) >>> 0;
    s[2] = (s[2] + d1) >>> 0;
    jhashMix(s);
    return jhashFinal((s[0] + d2) >>> 0, (s[1] + d3) >>> 0, (s[2] + ports) >>> 0);
  }
  const init = (0xdeadbeef + (3 << 2) + t.proto) >>> 0;
  return jhashFinal((ipv4ToNumber(t.saddr) + init) >>> 0, (ipv4ToNumber(t.daddr) + init) >>> 0, (ports + init) >>> 0);
}

/** The slot of a flow in a table of size m, as the data path computes it. */
export function flowSlot(t: FlowTuple, m: number): number {
  return flowHash(t) % m;
}

/**
 * The table as this node stores it: slot -> ordinal, where `atOrdinal[i]`
 * is the backend this node keeps at ordinal i. Ordinals differ between
 * nodes (local backends come first); the backend of each slot does not.
 */
export function maglevOrdinals(atOrdinal: Array<{ addr: string; port: number }>, m: number): Uint32Array {
  const sorted = sortForMaglev(atOrdinal.map((b, ordinal) => ({ addr: b.addr, port: b.port, ordinal })));
  const table = buildMaglevTable(sorted.map(backendIdentity), m);
  // In place, through a typed array: M is 16381 slots per table, and a
  // first sync at 10k Maglev Services maps 160M of them.
  const ordinal = Uint32Array.from(sorted, (b) => b.ordinal);
  for (let i = 0; i < m; i++) table[i] = ordinal[table[i] as number] as number;
  return table;
}
