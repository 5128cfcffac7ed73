/**
 * Crafting and checking IPv4 packets for BPF_PROG_TEST_RUN tests: Ethernet +
 * IPv4 (optionally with options and fragment fields) + TCP, UDP or ICMP, with
 * correct checksums, and a parser that verifies every checksum it can.
 */
import ipaddr from 'ipaddr.js';

export const TCP = 6;
export const UDP = 17;
export const ICMP = 1;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

function ip4(a: string): Buffer {
  return Buffer.from(ipaddr.IPv4.parse(a).toByteArray());
}

function ipStr(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

export function csum(buf: Buffer, init = 0): number {
  let sum = init;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += (buf[buf.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudo(src: Buffer, dst: Buffer, proto: number, len: number): number {
  const ph = Buffer.alloc(12);
  src.copy(ph, 0);
  dst.copy(ph, 4);
  ph[9] = proto;
  ph.writeUInt16BE(len, 10);
  let sum = 0;
  for (let i = 0; i < 12; i += 2) sum += ph.readUInt16BE(i);
  return sum;
}

export interface PacketSpec {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  /** TCP options, a multiple of 4 bytes (see tcpTimestamp) */
  tcpOptions?: Buffer;
  payload?: Buffer;
  ipOptions?: Buffer; // multiple of 4
  fragOffset?: number; // in 8-byte units
  moreFragments?: boolean;
  id?: number;
  ttl?: number;
  udpNoChecksum?: boolean;
  /** raw L4 bytes (for fragments and ICMP) instead of a built header */
  l4?: Buffer;
}

/**
 * TCP or UDP header + payload with its checksum; `pseudoSum` is the
 * family's pseudo-header sum for (protocol, L4 length). Shared by the IPv4
 * and IPv6 builders (packet6.ts).
 */
export function l4Segment(
  spec: Pick<PacketSpec, 'proto' | 'sport' | 'dport' | 'tcpFlags' | 'tcpOptions' | 'payload' | 'udpNoChecksum'>,
  pseudoSum: (proto: number, len: number) => number,
): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  if (spec.proto === TCP) {
    const opts = spec.tcpOptions ?? Buffer.alloc(0);
    const h = Buffer.alloc(20 + opts.length);
    opts.copy(h, 20);
    h.writeUInt16BE(spec.sport ?? 0, 0);
    h.writeUInt16BE(spec.dport ?? 0, 2);
    h.writeUInt32BE(1000, 4);
    h.writeUInt32BE(spec.tcpFlags && spec.tcpFlags & TCP_ACK ? 2000 : 0, 8);
    h[12] = (h.length / 4) << 4;
    h[13] = spec.tcpFlags ?? TCP_SYN;
    h.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([h, payload]);
    seg.writeUInt16BE(csum(seg, pseudoSum(TCP, seg.length)), 16);
    return seg;
  }
  if (spec.proto === UDP) {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(spec.sport ?? 0, 0);
    h.writeUInt16BE(spec.dport ?? 0, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    const seg = Buffer.concat([h, payload]);
    if (!spec.udpNoChecksum) seg.writeUInt16BE(csum(seg, pseudoSum(UDP, seg.length)) || 0xffff, 6);
    return seg;
  }
  throw new Error('l4Segment: TCP or UDP only');
}

export function l4Header(spec: PacketSpec): Buffer {
  const src = ip4(spec.src);
  const dst = ip4(spec.dst);
  return l4Segment(spec, (proto, len) => pseudo(src, dst, proto, len));
}

/** The TCP timestamp option as Linux sends it: NOP, NOP, TS (RFC 7323). */
export function tcpTimestamp(tsval: number, tsecr = 0): Buffer {
  const o = Buffer.from([1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
  o.writeUInt32BE(tsval >>> 0, 4);
  o.writeUInt32BE(tsecr >>> 0, 8);
  return o;
}

export function packet(spec: PacketSpec): Buffer {
  const l4 = spec.l4 ?? l4Header(spec);
  const opts = spec.ipOptions ?? Buffer.alloc(0);
  const ihl = 20 + opts.length;
  const ip = Buffer.alloc(20);
  ip[0] = 0x40 | (ihl / 4);
  ip.writeUInt16BE(ihl + l4.length, 2);
  ip.writeUInt16BE(spec.id ?? 0x1234, 4);
  ip.writeUInt16BE(((spec.moreFragments ? 1 : 0) << 13) | (spec.fragOffset ?? 0), 6);
  ip[8] = spec.ttl ?? 64;
  ip[9] = spec.proto;
  ip4(spec.src).copy(ip, 12);
  ip4(spec.dst).copy(ip, 16);
  const hdr = Buffer.concat([ip, opts]);
  hdr.writeUInt16BE(csum(hdr), 10);
  const eth = Buffer.alloc(14);
  Buffer.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]).copy(eth);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, hdr, l4]);
}

export interface Parsed {
  src: string;
  dst: string;
  proto: number;
  ihl: number;
  ttl: number;
  sport: number;
  dport: number;
  tcpFlags: number;
  ipCsumOk: boolean;
  /** undefined for later fragments and when the UDP checksum is 0 */
  l4CsumOk: boolean | undefined;
  fragOffset: number;
  moreFragments: boolean;
  icmp?: { type: number; code: number; mtu: number; csumOk: boolean; inner: Parsed };
  raw: Buffer;
}

export function parse(buf: Buffer, offset = 14, quoted = false): Parsed {
  const ip = buf.subarray(offset);
  const ihl = (ip[0]! & 0x0f) * 4;
  const totLen = ip.readUInt16BE(2);
  const frag = ip.readUInt16BE(6);
  const proto = ip[9]!;
  const hdr = ip.subarray(0, ihl);
  const l4 = quoted ? ip.subarray(ihl) : ip.subarray(ihl, totLen);
  const src = ipStr(ip, 12);
  const dst = ipStr(ip, 16);
  const fragOffset = frag & 0x1fff;
  const p: Parsed = {
    src,
    dst,
    proto,
    ihl,
    ttl: ip[8]!,
    sport: 0,
    dport: 0,
    tcpFlags: 0,
    ipCsumOk: csum(hdr) === 0,
    l4CsumOk: undefined,
    fragOffset,
    moreFragments: Boolean(frag & 0x2000),
    raw: buf,
  };
  if (fragOffset > 0) return p;
  if (proto === TCP || proto === UDP) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    if (proto === TCP && l4.length >= 14) p.tcpFlags = l4[13]!;
    const fragmented = p.moreFragments;
    if (!quoted && !fragmented) {
      if (proto === UDP && l4.readUInt16BE(6) === 0) p.l4CsumOk = undefined;
      else p.l4CsumOk = csum(l4, pseudo(ip.subarray(12, 16), ip.subarray(16, 20), proto, l4.length)) === 0;
    }
  } else if (proto === ICMP) {
    p.icmp = {
      type: l4[0]!,
      code: l4[1]!,
      mtu: l4.readUInt16BE(6),
      csumOk: csum(l4) === 0,
      inner: l4.length >= 28 ? parse(l4, 8, true) : (undefined as unknown as Parsed),
    };
  }
  return p;
}

/** For fragment tests: a UDP datagram's checksum over the whole datagram. */
export function udpDatagram(spec: PacketSpec): Buffer {
  return l4Header(spec);
}

/** An ICMP message (type, code, next-hop MTU for frag-needed) quoting `quoted`, checksum set. */
export function icmpMessage(type: number, code: number, mtu: number, quoted: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([type, code, 0, 0, 0, 0, 0, 0]), quoted]);
  m.writeUInt16BE(mtu, 6);
  m.writeUInt16BE(csum(m), 2);
  return m;
}
