/**
 * Byte-exact encoders and decoders for the map layouts in bpf/include/maps.h.
 * Addresses are network order; ports and counters are host order, which is
 * little-endian on every architecture kpr supports (checked at load).
 */
import { endianness } from 'node:os';
import ipaddr from 'ipaddr.js';
import { ipv4ToNumber } from '../util/ipv4.js';

if (endianness() !== 'LE') throw new Error('kpr map codecs assume a little-endian host');

export const NAT_FE_KEY_SIZE = 16;
export const NAT_FE_VAL_SIZE = 20;
export const NAT_BE_KEY_SIZE = 8;
export const NAT_BE_VAL_SIZE = 8;
export const SK_NAT_KEY_SIZE = 16;
export const SK_NAT_VAL_SIZE = 8;
export const SVC_META_NAME_LEN = 192;
export const SOCK_DESTROY_KEY_SIZE = 12;
export const SOCK_DESTROY_REC_SIZE = 24;

/** Bits of the LPM key that always match exactly: address, port, protocol. */
export const NAT_FE_PREFIX_BASE = 56;

export interface NatFeKey {
  addr: string;
  port: number;
  proto: number;
  srcAddr: string;
  srcLen: number;
}

export interface NatFeVal {
  id: number;
  count: number;
  local: number;
  affinityTimeout: number;
  flags: number;
}

export interface NatBeKey {
  id: number;
  ordinal: number;
}

export interface NatBeVal {
  addr: string;
  port: number;
  /** NAT_BE_F_* (NAT_BE_F_LOCAL: the endpoint runs on this node); 0 when omitted. */
  flags?: number;
}

export interface SkNatKey {
  cookie: bigint;
  addr: string;
  port: number;
}

/**
 * Dotted quad into 4 bytes. Hand-rolled because it runs for every key and
 * value of a full sync (hundreds of thousands of times at 10k Services);
 * anything that is not a plain dotted quad still goes through ipaddr.js.
 */
function writeIPv4(buf: Buffer, off: number, addr: string): void {
  let part = 0;
  let octet = 0;
  let digits = 0;
  for (let i = 0; i <= addr.length; i++) {
    const c = i < addr.length ? addr.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || octet > 255 || part > 3) return writeIPv4Slow(buf, off, addr);
      buf[off + part++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      octet = octet * 10 + (c - 48);
      digits++;
    } else return writeIPv4Slow(buf, off, addr);
  }
  if (part !== 4) writeIPv4Slow(buf, off, addr);
}

function writeIPv4Slow(buf: Buffer, off: number, addr: string): void {
  const bytes = ipaddr.IPv4.parse(addr).toByteArray();
  for (let i = 0; i < 4; i++) buf[off + i] = bytes[i] ?? 0;
}

function readIPv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

function checkSize(buf: Buffer, size: number, what: string): void {
  if (buf.length !== size) throw new RangeError(`${what}: expected ${size} bytes, got ${buf.length}`);
}

export function encodeNatFeKey(k: NatFeKey, out: Buffer = Buffer.alloc(NAT_FE_KEY_SIZE), off = 0): Buffer {
  if (k.srcLen < 0 || k.srcLen > 32) throw new RangeError(`source prefix length ${k.srcLen} out of range`);
  out.writeUInt32LE(NAT_FE_PREFIX_BASE + k.srcLen, off);
  writeIPv4(out, off + 4, k.addr);
  out.writeUInt16LE(k.port, off + 8);
  out.writeUInt8(k.proto, off + 10);
  writeIPv4(out, off + 11, k.srcAddr);
  out.writeUInt8(0, off + 15);
  return out;
}

export function decodeNatFeKey(b: Buffer): NatFeKey {
  checkSize(b, NAT_FE_KEY_SIZE, 'nat_fe_key');
  return {
    addr: readIPv4(b, 4),
    port: b.readUInt16LE(8),
    proto: b.readUInt8(10),
    srcAddr: readIPv4(b, 11),
    srcLen: b.readUInt32LE(0) - NAT_FE_PREFIX_BASE,
  };
}

export function encodeNatFeVal(v: NatFeVal, out: Buffer = Buffer.alloc(NAT_FE_VAL_SIZE), off = 0): Buffer {
  out.writeUInt32LE(v.id, off);
  out.writeUInt32LE(v.count >>> 0, off + 4);
  out.writeUInt32LE(v.local, off + 8);
  out.writeUInt32LE(v.affinityTimeout, off + 12);
  out.writeUInt32LE(v.flags, off + 16);
  return out;
}

export function decodeNatFeVal(b: Buffer): NatFeVal {
  checkSize(b, NAT_FE_VAL_SIZE, 'nat_fe_val');
  return {
    id: b.readUInt32LE(0),
    count: b.readUInt32LE(4),
    local: b.readUInt32LE(8),
    affinityTimeout: b.readUInt32LE(12),
    flags: b.readUInt32LE(16),
  };
}

export function encodeNatBeKey(k: NatBeKey, out: Buffer = Buffer.alloc(NAT_BE_KEY_SIZE), off = 0): Buffer {
  out.writeUInt32LE(k.id, off);
  out.writeUInt32LE(k.ordinal, off + 4);
  return out;
}

export function decodeNatBeKey(b: Buffer): NatBeKey {
  checkSize(b, NAT_BE_KEY_SIZE, 'nat_be_key');
  return { id: b.readUInt32LE(0), ordinal: b.readUInt32LE(4) };
}

export function encodeNatBeVal(v: NatBeVal, out: Buffer = Buffer.alloc(NAT_BE_VAL_SIZE), off = 0): Buffer {
  writeIPv4(out, off, v.addr);
  out.writeUInt16LE(v.port, off + 4);
  out.writeUInt16LE(v.flags ?? 0, off + 6);
  return out;
}

export function decodeNatBeVal(b: Buffer): NatBeVal {
  checkSize(b, NAT_BE_VAL_SIZE, 'nat_be_val');
  return { addr: readIPv4(b, 0), port: b.readUInt16LE(4), flags: b.readUInt16LE(6) };
}

export function encodeSkNatKey(k: SkNatKey): Buffer {
  const out = Buffer.alloc(SK_NAT_KEY_SIZE);
  out.writeBigUInt64LE(k.cookie, 0);
  writeIPv4(out, 8, k.addr);
  out.writeUInt16LE(k.port, 12);
  return out;
}

export function decodeSkNatKey(b: Buffer): SkNatKey {
  checkSize(b, SK_NAT_KEY_SIZE, 'sk_nat_key');
  return { cookie: b.readBigUInt64LE(0), addr: readIPv4(b, 8), port: b.readUInt16LE(12) };
}

export function decodeSkNatVal(b: Buffer): NatBeVal {
  checkSize(b, SK_NAT_VAL_SIZE, 'sk_nat_val');
  return { addr: readIPv4(b, 0), port: b.readUInt16LE(4) };
}

/** A backend that left a Service port (struct sock_destroy_key, sock_destroy.bpf.c). */
export interface SockDestroyKey {
  svcId: number;
  addr: string;
  port: number;
}

export function encodeSockDestroyKey(k: SockDestroyKey): Buffer {
  const out = Buffer.alloc(SOCK_DESTROY_KEY_SIZE);
  out.writeUInt32LE(k.svcId, 0);
  writeIPv4(out, 4, k.addr);
  out.writeUInt16LE(k.port, 8);
  return out;
}

/** One socket the iterator aborted (struct sock_destroy_rec). */
export interface SockDestroyRec {
  cookie: bigint;
  addr: string;
  port: number;
  proto: number;
  /** bpf_sock_destroy() result: 0, or a negative errno. */
  err: number;
  svcId: number;
}

/** The iterator's output: whole records back to back. */
export function decodeSockDestroyRecs(b: Buffer): SockDestroyRec[] {
  if (b.length % SOCK_DESTROY_REC_SIZE !== 0) throw new Error(`sock_destroy_rec stream of ${b.length} bytes is not whole records`);
  const out: SockDestroyRec[] = [];
  for (let off = 0; off < b.length; off += SOCK_DESTROY_REC_SIZE) {
    out.push({
      cookie: b.readBigUInt64LE(off),
      addr: readIPv4(b, off + 8),
      port: b.readUInt16LE(off + 12),
      proto: b.readUInt8(off + 14),
      err: b.readInt32LE(off + 16),
      svcId: b.readUInt32LE(off + 20),
    });
  }
  return out;
}

export function encodeU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function encodeSvcMeta(name: string): Buffer {
  const out = Buffer.alloc(SVC_META_NAME_LEN);
  const bytes = Buffer.from(name, 'utf8');
  // Keep a terminating NUL so bpftool prints it as a C string.
  if (bytes.length >= SVC_META_NAME_LEN) throw new RangeError(`service name too long for svc_meta: ${name}`);
  bytes.copy(out);
  return out;
}

export function decodeSvcMeta(b: Buffer): string {
  checkSize(b, SVC_META_NAME_LEN, 'svc_meta');
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

// --- conntrack (struct ct_key / ct_val) --------------------------------------

export const CT_KEY_SIZE = 16;
export const CT_VAL_SIZE = 40;
export const CT_FWD = 1;
export const CT_REV = 2;
export const CT_F_CLIENT_IS_A = 0x01;
export const CT_F_SNAT = 0x02;
export const CT_F_DSR = 0x04;
export const CT_TCP_SYN = 0x01;
export const CT_TCP_ACK = 0x02;
export const CT_TCP_FIN = 0x04;
export const CT_TCP_RST = 0x08;

export interface CtKey {
  proto: number;
  addrA: string;
  addrB: string;
  portA: number;
  portB: number;
}

export interface CtVal {
  type: number;
  flags: number;
  tcpClient: number;
  tcpServer: number;
  svcId: number;
  created: bigint;
  lastSeen: bigint;
  natAddr: string;
  natSaddr: string;
  natPort: number;
  natSport: number;
  beOrdinal: number;
}

export function encodeCtKey(k: CtKey): Buffer {
  const b = Buffer.alloc(CT_KEY_SIZE);
  b.writeUInt8(k.proto, 0);
  writeIPv4(b, 4, k.addrA);
  writeIPv4(b, 8, k.addrB);
  b.writeUInt16LE(k.portA, 12);
  b.writeUInt16LE(k.portB, 14);
  return b;
}

export function decodeCtKey(b: Buffer): CtKey {
  checkSize(b, CT_KEY_SIZE, 'ct_key');
  return { proto: b.readUInt8(0), addrA: readIPv4(b, 4), addrB: readIPv4(b, 8), portA: b.readUInt16LE(12), portB: b.readUInt16LE(14) };
}

/** The normalised key for a flow leg, as the data path builds it. */
export function ctKeyFor(proto: number, a1: string, p1: number, a2: string, p2: number): CtKey {
  const n1 = ipv4ToNumber(a1);
  const n2 = ipv4ToNumber(a2);
  const firstIsA = n1 < n2 || (n1 === n2 && p1 <= p2);
  return firstIsA ? { proto, addrA: a1, portA: p1, addrB: a2, portB: p2 } : { proto, addrA: a2, portA: p2, addrB: a1, portB: p1 };
}

export function encodeCtVal(v: CtVal): Buffer {
  const b = Buffer.alloc(CT_VAL_SIZE);
  b.writeUInt8(v.type, 0);
  b.writeUInt8(v.flags, 1);
  b.writeUInt8(v.tcpClient, 2);
  b.writeUInt8(v.tcpServer, 3);
  b.writeUInt32LE(v.svcId, 4);
  b.writeBigUInt64LE(v.created, 8);
  b.writeBigUInt64LE(v.lastSeen, 16);
  writeIPv4(b, 24, v.natAddr);
  writeIPv4(b, 28, v.natSaddr);
  b.writeUInt16LE(v.natPort, 32);
  b.writeUInt16LE(v.natSport, 34);
  b.writeUInt32LE(v.beOrdinal, 36);
  return b;
}

export function decodeCtVal(b: Buffer): CtVal {
  checkSize(b, CT_VAL_SIZE, 'ct_val');
  return {
    type: b.readUInt8(0),
    flags: b.readUInt8(1),
    tcpClient: b.readUInt8(2),
    tcpServer: b.readUInt8(3),
    svcId: b.readUInt32LE(4),
    created: b.readBigUInt64LE(8),
    lastSeen: b.readBigUInt64LE(16),
    natAddr: readIPv4(b, 24),
    natSaddr: readIPv4(b, 28),
    natPort: b.readUInt16LE(32),
    natSport: b.readUInt16LE(34),
    beOrdinal: b.readUInt32LE(36),
  };
}

// --- struct kpr_config --------------------------------------------------------

export const KPR_CONFIG_SIZE = 20;

export interface KprConfig {
  nodeIP: string;
  clusterCidr: string;
  clusterCidrLen: number;
  snatPortMin: number;
  snatPortMax: number;
  flags: number;
}

export function encodeKprConfig(c: KprConfig): Buffer {
  const b = Buffer.alloc(KPR_CONFIG_SIZE);
  writeIPv4(b, 0, c.nodeIP);
  writeIPv4(b, 4, c.clusterCidr);
  b.writeUInt8(c.clusterCidrLen, 8);
  b.writeUInt16LE(c.snatPortMin, 12);
  b.writeUInt16LE(c.snatPortMax, 14);
  b.writeUInt32LE(c.flags, 16);
  return b;
}

export function encodeIPv4(addr: string): Buffer {
  const b = Buffer.alloc(4);
  writeIPv4(b, 0, addr);
  return b;
}
