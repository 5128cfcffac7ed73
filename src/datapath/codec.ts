/**
 * Byte-exact encoders and decoders for the structs in bpf/include/abi.h.
 * Sizes and offsets come from abi.ts, which the build checks against the
 * objects' BTF. Addresses are network order; ports and counters are host
 * order, which is little-endian on every architecture kpr supports (checked
 * at load).
 *
 * Longer than 400 lines on purpose: it is the one byte-level boundary with
 * the data path, every struct's encoder beside its decoder and both
 * families beside each other, so a layout change is read and made in one
 * place.
 */
import { endianness } from 'node:os';
import ipaddr from 'ipaddr.js';
import { addrFamily, compareAddr, ipv6Bytes, ipv6Text, type IPFamily } from '../util/ip.js';
import { KPR_CFG6_F_DSR, NAT_FE_PREFIX_BASE, NAT_FE6_PREFIX_BASE, STRUCTS, STRUCTS6, type StructLayout } from './abi.js';

export {
  CT_F_CLIENT_IS_A,
  CT_F_DSR,
  CT_F_SNAT,
  CT_FWD,
  CT_REV,
  CT_TCP_ACK,
  CT_TCP_FIN,
  CT_TCP_RST,
  CT_TCP_SYN,
  NAT_FE_PREFIX_BASE,
  NAT_FE6_PREFIX_BASE,
} from './abi.js';

if (endianness() !== 'LE') throw new Error('kpr map codecs assume a little-endian host');

/*
 * The IPv6 twins (struct nat_fe6_key, nat_be6_val, ct6_key, ct6_val,
 * sock_destroy6_key) are the IPv4 layouts with every address 16 bytes wide
 * (abi.ts STRUCTS6), so one codec serves both: encoders take the family
 * from the address text, decoders from the buffer's size, and both take
 * the offsets of that family's struct from the checked tables.
 */
type ByFamily<T extends StructLayout> = Record<IPFamily, T>;
const FE_KEY: ByFamily<typeof STRUCTS6.nat_fe6_key> = { 4: STRUCTS.nat_fe_key, 6: STRUCTS6.nat_fe6_key };
const FE_VAL = STRUCTS.nat_fe_val.fields;
const BE_KEY = STRUCTS.nat_be_key.fields;
const BE_VAL: ByFamily<typeof STRUCTS6.nat_be6_val> = { 4: STRUCTS.nat_be_val, 6: STRUCTS6.nat_be6_val };
const SK_NAT_KEY = STRUCTS.sk_nat_key.fields;
const CT_KEY: ByFamily<typeof STRUCTS6.ct6_key> = { 4: STRUCTS.ct_key, 6: STRUCTS6.ct6_key };
const CT_VAL: ByFamily<typeof STRUCTS6.ct6_val> = { 4: STRUCTS.ct_val, 6: STRUCTS6.ct6_val };
const CONFIG = STRUCTS.kpr_config.fields;
const SD_KEY: ByFamily<typeof STRUCTS6.sock_destroy6_key> = { 4: STRUCTS.sock_destroy_key, 6: STRUCTS6.sock_destroy6_key };
const SD_REC = STRUCTS.sock_destroy_rec.fields;

export const NAT_FE_KEY_SIZE = STRUCTS.nat_fe_key.size;
export const NAT_FE_VAL_SIZE = STRUCTS.nat_fe_val.size;
export const NAT_BE_KEY_SIZE = STRUCTS.nat_be_key.size;
export const NAT_BE_VAL_SIZE = STRUCTS.nat_be_val.size;
export const SK_NAT_KEY_SIZE = STRUCTS.sk_nat_key.size;
export const SVC_META_NAME_LEN = STRUCTS.svc_meta.size;
export const SOCK_DESTROY_KEY_SIZE = STRUCTS.sock_destroy_key.size;
export const SOCK_DESTROY_REC_SIZE = STRUCTS.sock_destroy_rec.size;
export const NAT_FE6_KEY_SIZE = STRUCTS6.nat_fe6_key.size;
export const NAT_BE6_VAL_SIZE = STRUCTS6.nat_be6_val.size;
export const CT6_KEY_SIZE = STRUCTS6.ct6_key.size;
export const CT6_VAL_SIZE = STRUCTS6.ct6_val.size;

/** Address length in bytes. */
const alen = (f: IPFamily): number => (f === 4 ? 4 : 16);

function familyBySize(b: Buffer, byFamily: ByFamily<StructLayout>, what: string): IPFamily {
  if (b.length === byFamily[4].size) return 4;
  if (b.length === byFamily[6].size) return 6;
  throw new RangeError(`${what}: expected ${byFamily[4].size} or ${byFamily[6].size} bytes, got ${b.length}`);
}

function writeAddr(buf: Buffer, off: number, addr: string, f: IPFamily): void {
  if (f === 4) return writeIPv4(buf, off, addr);
  const bytes = ipv6Bytes(addr);
  for (let i = 0; i < 16; i++) buf[off + i] = bytes[i] ?? 0;
}

function readAddr(buf: Buffer, off: number, f: IPFamily): string {
  return f === 4 ? readIPv4(buf, off) : ipv6Text(buf.subarray(off, off + 16));
}

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

/**
 * A zero-filled buffer carved from Node's shared pool. A full sync encodes
 * a key and a value per entry (2M at 1M backends): Buffer.alloc gives each
 * one its own ArrayBuffer and malloc'd store, which cost more than the
 * encoding and kept the controller's RSS far above its heap.
 */
function zeroed(size: number): Buffer {
  return Buffer.allocUnsafe(size).fill(0);
}

export function encodeNatFeKey(k: NatFeKey, out?: Buffer, off = 0): Buffer {
  const f = addrFamily(k.addr);
  const { size, fields: L } = FE_KEY[f];
  if (k.srcLen < 0 || k.srcLen > alen(f) * 8) throw new RangeError(`source prefix length ${k.srcLen} out of range`);
  const b = out ?? zeroed(size);
  b.writeUInt32LE((f === 4 ? NAT_FE_PREFIX_BASE : NAT_FE6_PREFIX_BASE) + k.srcLen, off + L.prefixlen);
  writeAddr(b, off + L.addr, k.addr, f);
  b.writeUInt16LE(k.port, off + L.port);
  b.writeUInt8(k.proto, off + L.proto);
  writeAddr(b, off + L.saddr, k.srcAddr, f);
  b.writeUInt8(0, off + L.pad);
  return b;
}

export function decodeNatFeKey(b: Buffer): NatFeKey {
  const f = familyBySize(b, FE_KEY, 'nat_fe_key');
  const L = FE_KEY[f].fields;
  return {
    addr: readAddr(b, L.addr, f),
    port: b.readUInt16LE(L.port),
    proto: b.readUInt8(L.proto),
    srcAddr: readAddr(b, L.saddr, f),
    srcLen: b.readUInt32LE(L.prefixlen) - (f === 4 ? NAT_FE_PREFIX_BASE : NAT_FE6_PREFIX_BASE),
  };
}

export function encodeNatFeVal(v: NatFeVal, out: Buffer = zeroed(NAT_FE_VAL_SIZE), off = 0): Buffer {
  out.writeUInt32LE(v.id, off + FE_VAL.id);
  out.writeUInt32LE(v.count >>> 0, off + FE_VAL.count);
  out.writeUInt32LE(v.local, off + FE_VAL.local);
  out.writeUInt32LE(v.affinityTimeout, off + FE_VAL.affinity_timeout);
  out.writeUInt32LE(v.flags, off + FE_VAL.flags);
  return out;
}

export function decodeNatFeVal(b: Buffer): NatFeVal {
  checkSize(b, NAT_FE_VAL_SIZE, 'nat_fe_val');
  return {
    id: b.readUInt32LE(FE_VAL.id),
    count: b.readUInt32LE(FE_VAL.count),
    local: b.readUInt32LE(FE_VAL.local),
    affinityTimeout: b.readUInt32LE(FE_VAL.affinity_timeout),
    flags: b.readUInt32LE(FE_VAL.flags),
  };
}

export function encodeNatBeKey(k: NatBeKey, out: Buffer = zeroed(NAT_BE_KEY_SIZE), off = 0): Buffer {
  out.writeUInt32LE(k.id, off + BE_KEY.id);
  out.writeUInt32LE(k.ordinal, off + BE_KEY.ordinal);
  return out;
}

export function decodeNatBeKey(b: Buffer): NatBeKey {
  checkSize(b, NAT_BE_KEY_SIZE, 'nat_be_key');
  return { id: b.readUInt32LE(BE_KEY.id), ordinal: b.readUInt32LE(BE_KEY.ordinal) };
}

export function encodeNatBeVal(v: NatBeVal, out?: Buffer, off = 0): Buffer {
  const f = addrFamily(v.addr);
  const { size, fields: L } = BE_VAL[f];
  const b = out ?? zeroed(size);
  writeAddr(b, off + L.addr, v.addr, f);
  b.writeUInt16LE(v.port, off + L.port);
  b.writeUInt16LE(v.flags ?? 0, off + L.flags);
  return b;
}

export function decodeNatBeVal(b: Buffer): NatBeVal {
  const f = familyBySize(b, BE_VAL, 'nat_be_val');
  const L = BE_VAL[f].fields;
  return { addr: readAddr(b, L.addr, f), port: b.readUInt16LE(L.port), flags: b.readUInt16LE(L.flags) };
}

/** nat_be_key.id of the key at `off` of a packed read, with no key object made. */
export function natBeKeyId(b: Buffer, off: number): number {
  return b.readUInt32LE(off + BE_KEY.id);
}

/** nat_be_key.ordinal of the key at `off` of a packed read. */
export function natBeKeyOrdinal(b: Buffer, off: number): number {
  return b.readUInt32LE(off + BE_KEY.ordinal);
}

/**
 * Is `v` exactly what decodeNatBeVal() makes of the IPv4 nat_be_val at
 * `off`, its address text included? Allocates nothing: re-adopting the
 * maps keeps the mirror's own value where the kernel holds the same, so a
 * periodic resync does not build a second copy of 100k backends.
 */
export function isNatBeVal4(v: NatBeVal, b: Buffer, off: number): boolean {
  const L = BE_VAL[4].fields;
  return v.port === b.readUInt16LE(off + L.port) && v.flags === b.readUInt16LE(off + L.flags) && isIPv4Text(v.addr, b, off + L.addr);
}

/** addr === readIPv4(b, off), without building the text. */
function isIPv4Text(addr: string, b: Buffer, off: number): boolean {
  let i = 0;
  for (let part = 0; part < 4; part++) {
    if (part > 0 && addr.charCodeAt(i++) !== 46) return false;
    const o = b[off + part] as number;
    if (o >= 100 && addr.charCodeAt(i++) !== 48 + Math.floor(o / 100)) return false;
    if (o >= 10 && addr.charCodeAt(i++) !== 48 + (Math.floor(o / 10) % 10)) return false;
    if (addr.charCodeAt(i++) !== 48 + (o % 10)) return false;
  }
  return i === addr.length;
}

export function encodeSkNatKey(k: SkNatKey): Buffer {
  const out = Buffer.alloc(SK_NAT_KEY_SIZE);
  out.writeBigUInt64LE(k.cookie, SK_NAT_KEY.cookie);
  writeIPv4(out, SK_NAT_KEY.addr, k.addr);
  out.writeUInt16LE(k.port, SK_NAT_KEY.port);
  return out;
}

export function decodeSkNatKey(b: Buffer): SkNatKey {
  checkSize(b, SK_NAT_KEY_SIZE, 'sk_nat_key');
  return { cookie: b.readBigUInt64LE(SK_NAT_KEY.cookie), addr: readIPv4(b, SK_NAT_KEY.addr), port: b.readUInt16LE(SK_NAT_KEY.port) };
}

/** A backend that left a Service port (struct sock_destroy_key). */
export interface SockDestroyKey {
  svcId: number;
  addr: string;
  port: number;
}

/** struct sock_destroy_key, or sock_destroy6_key for an IPv6 backend (24 bytes). */
export function encodeSockDestroyKey(k: SockDestroyKey): Buffer {
  const f = addrFamily(k.addr);
  const { size, fields: L } = SD_KEY[f];
  const out = Buffer.alloc(size);
  out.writeUInt32LE(k.svcId, L.svc_id);
  writeAddr(out, L.addr, k.addr, f);
  out.writeUInt16LE(k.port, L.port);
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
      cookie: b.readBigUInt64LE(off + SD_REC.cookie),
      addr: readIPv4(b, off + SD_REC.addr),
      port: b.readUInt16LE(off + SD_REC.port),
      proto: b.readUInt8(off + SD_REC.proto),
      err: b.readInt32LE(off + SD_REC.err),
      svcId: b.readUInt32LE(off + SD_REC.svc_id),
    });
  }
  return out;
}

export function encodeU32(n: number): Buffer {
  const b = zeroed(4);
  b.writeUInt32LE(n);
  return b;
}

/** With `out`: written at `off` into zeroed bytes (a packed batch). */
export function encodeSvcMeta(name: string, out: Buffer = zeroed(SVC_META_NAME_LEN), off = 0): Buffer {
  // Keep a terminating NUL so bpftool prints it as a C string.
  if (Buffer.byteLength(name, 'utf8') >= SVC_META_NAME_LEN) throw new RangeError(`service name too long for svc_meta: ${name}`);
  out.write(name, off, 'utf8');
  return out;
}

export function decodeSvcMeta(b: Buffer): string {
  checkSize(b, SVC_META_NAME_LEN, 'svc_meta');
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

// --- conntrack (struct ct_key / ct_val) --------------------------------------

export const CT_KEY_SIZE = STRUCTS.ct_key.size;
export const CT_VAL_SIZE = STRUCTS.ct_val.size;

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
  const f = addrFamily(k.addrA);
  const { size, fields: L } = CT_KEY[f];
  const b = Buffer.alloc(size);
  b.writeUInt8(k.proto, L.proto);
  writeAddr(b, L.addr_a, k.addrA, f);
  writeAddr(b, L.addr_b, k.addrB, f);
  b.writeUInt16LE(k.portA, L.port_a);
  b.writeUInt16LE(k.portB, L.port_b);
  return b;
}

export function decodeCtKey(b: Buffer): CtKey {
  const f = familyBySize(b, CT_KEY, 'ct_key');
  const L = CT_KEY[f].fields;
  return {
    proto: b.readUInt8(L.proto),
    addrA: readAddr(b, L.addr_a, f),
    addrB: readAddr(b, L.addr_b, f),
    portA: b.readUInt16LE(L.port_a),
    portB: b.readUInt16LE(L.port_b),
  };
}

/** The normalised key for a flow leg, as the data path builds it (lower address, then port, first). */
export function ctKeyFor(proto: number, a1: string, p1: number, a2: string, p2: number): CtKey {
  const c = compareAddr(a1, a2);
  const firstIsA = c < 0 || (c === 0 && p1 <= p2);
  return firstIsA ? { proto, addrA: a1, portA: p1, addrB: a2, portB: p2 } : { proto, addrA: a2, portA: p2, addrB: a1, portB: p1 };
}

export function encodeCtVal(v: CtVal): Buffer {
  const f = addrFamily(v.natAddr);
  const { size, fields: L } = CT_VAL[f];
  const b = Buffer.alloc(size);
  b.writeUInt8(v.type, L.type);
  b.writeUInt8(v.flags, L.flags);
  b.writeUInt8(v.tcpClient, L.tcp_client);
  b.writeUInt8(v.tcpServer, L.tcp_server);
  b.writeUInt32LE(v.svcId, L.svc_id);
  b.writeBigUInt64LE(v.created, L.created);
  b.writeBigUInt64LE(v.lastSeen, L.last_seen);
  writeAddr(b, L.nat_addr, v.natAddr, f);
  writeAddr(b, L.nat_saddr, v.natSaddr, f);
  b.writeUInt16LE(v.natPort, L.nat_port);
  b.writeUInt16LE(v.natSport, L.nat_sport);
  b.writeUInt32LE(v.beOrdinal, L.be_ordinal);
  return b;
}

export function decodeCtVal(b: Buffer): CtVal {
  const f = familyBySize(b, CT_VAL, 'ct_val');
  const L = CT_VAL[f].fields;
  return {
    type: b.readUInt8(L.type),
    flags: b.readUInt8(L.flags),
    tcpClient: b.readUInt8(L.tcp_client),
    tcpServer: b.readUInt8(L.tcp_server),
    svcId: b.readUInt32LE(L.svc_id),
    created: b.readBigUInt64LE(L.created),
    lastSeen: b.readBigUInt64LE(L.last_seen),
    natAddr: readAddr(b, L.nat_addr, f),
    natSaddr: readAddr(b, L.nat_saddr, f),
    natPort: b.readUInt16LE(L.nat_port),
    natSport: b.readUInt16LE(L.nat_sport),
    beOrdinal: b.readUInt32LE(L.be_ordinal),
  };
}

// --- struct kpr_config --------------------------------------------------------

export const KPR_CONFIG_SIZE = STRUCTS.kpr_config.size;

export interface KprConfig {
  nodeIP: string;
  clusterCidr: string;
  clusterCidrLen: number;
  snatPortMin: number;
  snatPortMax: number;
  flags: number;
}

/** The IPv6 side of the node (struct kpr_config6, kpr_v6_config); zero = none. */
export interface KprConfig6 {
  nodeIP: string;
  clusterCidr: string;
  clusterCidrLen: number;
  /** IPv6 DSR may be used: this node has IPv6 peers (dsr6Allowed) */
  dsr?: boolean;
}

export function encodeKprConfig6(c: KprConfig6): Buffer {
  const { size, fields } = STRUCTS6.kpr_config6;
  const b = Buffer.alloc(size);
  encodeIPv6(c.nodeIP).copy(b, fields.node_ip);
  encodeIPv6(c.clusterCidr).copy(b, fields.cluster_cidr);
  b.writeUInt8(c.clusterCidrLen, fields.cluster_cidr_len);
  b.writeUInt8(c.dsr ? KPR_CFG6_F_DSR : 0, fields.flags);
  return b;
}

/** A kpr_v6_node_ips key (struct node_ip6_key). */
export function encodeIPv6(addr: string): Buffer {
  return Buffer.from(ipv6Bytes(addr));
}

export function encodeKprConfig(c: KprConfig): Buffer {
  const b = Buffer.alloc(KPR_CONFIG_SIZE);
  writeIPv4(b, CONFIG.node_ip, c.nodeIP);
  writeIPv4(b, CONFIG.cluster_cidr, c.clusterCidr);
  b.writeUInt8(c.clusterCidrLen, CONFIG.cluster_cidr_len);
  b.writeUInt16LE(c.snatPortMin, CONFIG.snat_port_min);
  b.writeUInt16LE(c.snatPortMax, CONFIG.snat_port_max);
  b.writeUInt32LE(c.flags, CONFIG.flags);
  return b;
}

// --- struct kpr_sock_config -----------------------------------------------------

export function encodeKprSockConfig(c: { nodeNetnsCookie: bigint }): Buffer {
  const b = Buffer.alloc(STRUCTS.kpr_sock_config.size);
  b.writeBigUInt64LE(c.nodeNetnsCookie, STRUCTS.kpr_sock_config.fields.node_netns_cookie);
  return b;
}

export function encodeIPv4(addr: string): Buffer {
  const b = Buffer.alloc(4);
  writeIPv4(b, 0, addr);
  return b;
}
