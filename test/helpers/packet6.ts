/**
 * Crafting and checking IPv6 packets for BPF_PROG_TEST_RUN tests, beside
 * packet.ts's IPv4: Ethernet + IPv6 + extension headers + TCP, UDP or
 * ICMPv6 with correct checksums, and a parser that verifies every
 * checksum it can (IPv6 has none of its own; L4 covers a pseudo header).
 */
import ipaddr from 'ipaddr.js';
import { csum, l4Segment, TCP, UDP } from './packet.js';

export const ICMPV6 = 58;
export const NH_HOP = 0;
export const NH_ROUTING = 43;
export const NH_FRAGMENT = 44;
export const NH_DEST = 60;

function ip6(a: string): Buffer {
  return Buffer.from(ipaddr.IPv6.parse(a).toByteArray());
}

function ip6Str(b: Buffer, off: number): string {
  return ipaddr.fromByteArray(Array.from(b.subarray(off, off + 16))).toString();
}

/** The sum of the IPv6 pseudo header (RFC 8200 8.1), unfolded. */
function pseudo6(src: Buffer, dst: Buffer, nh: number, len: number): number {
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(len, 32);
  ph[39] = nh;
  let sum = 0;
  for (let i = 0; i < 40; i += 2) sum += ph.readUInt16BE(i);
  return sum;
}

export interface ExtHeader {
  type: number;
  /** length in 8-byte units past the first 8 (hop-by-hop, routing, dest) */
  len?: number;
  /** fragment header fields */
  fragOffset?: number;
  moreFragments?: boolean;
  /** the fragment header's 32-bit identification (default 0x1234) */
  fragId?: number;
}

export interface Packet6Spec {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  payload?: Buffer;
  ext?: ExtHeader[];
  hopLimit?: number;
  /** raw L4 bytes instead of a built header (checksum as given) */
  l4?: Buffer;
}

/** TCP or UDP header + payload, checksummed over the IPv6 pseudo header. */
export function l4Header6(spec: Packet6Spec): Buffer {
  const src = ip6(spec.src);
  const dst = ip6(spec.dst);
  return l4Segment(spec, (proto, len) => pseudo6(src, dst, proto, len));
}

/** An ICMPv6 message (type, code, 4 bytes of info, body) with its checksum. */
export function icmp6Message(src: string, dst: string, type: number, code: number, info: number, body: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([type, code, 0, 0, 0, 0, 0, 0]), body]);
  m.writeUInt32BE(info >>> 0, 4);
  m.writeUInt16BE(csum(m, pseudo6(ip6(src), ip6(dst), ICMPV6, m.length)), 2);
  return m;
}

/** The IPv6 packet without Ethernet (for quoting inside an ICMPv6 error). */
export function ipv6Packet(spec: Packet6Spec): Buffer {
  const l4 = spec.l4 ?? l4Header6(spec);
  const exts = spec.ext ?? [];
  const chain = [...exts.map((e) => e.type), spec.proto];
  const extBufs = exts.map((e, i) => {
    const b = Buffer.alloc(e.type === NH_FRAGMENT ? 8 : ((e.len ?? 0) + 1) * 8);
    b[0] = chain[i + 1]!;
    if (e.type === NH_FRAGMENT) {
      b.writeUInt16BE(((e.fragOffset ?? 0) << 3) | (e.moreFragments ? 1 : 0), 2);
      b.writeUInt32BE((e.fragId ?? 0x1234) >>> 0, 4);
    } else {
      b[1] = e.len ?? 0;
      // PadN filling the options area
      if (b.length > 2) {
        b[2] = 1;
        b[3] = b.length - 4;
      }
    }
    return b;
  });
  const hdr = Buffer.alloc(40);
  hdr.writeUInt32BE(0x60000000, 0);
  const rest = Buffer.concat([...extBufs, l4]);
  hdr.writeUInt16BE(rest.length, 4);
  hdr[6] = chain[0]!;
  hdr[7] = spec.hopLimit ?? 64;
  ip6(spec.src).copy(hdr, 8);
  ip6(spec.dst).copy(hdr, 24);
  return Buffer.concat([hdr, rest]);
}

export function packet6(spec: Packet6Spec): Buffer {
  const eth = Buffer.alloc(14);
  Buffer.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]).copy(eth);
  eth.writeUInt16BE(0x86dd, 12);
  return Buffer.concat([eth, ipv6Packet(spec)]);
}

export interface Parsed6 {
  src: string;
  dst: string;
  /** the upper-layer protocol after the extension headers */
  proto: number;
  hopLimit: number;
  sport: number;
  dport: number;
  tcpFlags: number;
  seq: number;
  ack: number;
  /** undefined for a quote (truncated L4) */
  l4CsumOk: boolean | undefined;
  icmp?: { type: number; code: number; info: number; csumOk: boolean; inner?: Parsed6 };
  raw: Buffer;
}

const EXT = new Set([NH_HOP, NH_ROUTING, NH_DEST, NH_FRAGMENT]);

export function parse6(buf: Buffer, offset = 14, quoted = false): Parsed6 {
  const ip = buf.subarray(offset);
  const payloadLen = ip.readUInt16BE(4);
  let nh = ip[6]!;
  let off = 40;
  while (EXT.has(nh)) {
    const next = ip[off]!;
    off += nh === NH_FRAGMENT ? 8 : (ip[off + 1]! + 1) * 8;
    nh = next;
  }
  const src = ip6Str(ip, 8);
  const dst = ip6Str(ip, 24);
  const l4 = quoted ? ip.subarray(off) : ip.subarray(off, 40 + payloadLen);
  const p: Parsed6 = { src, dst, proto: nh, hopLimit: ip[7]!, sport: 0, dport: 0, tcpFlags: 0, seq: 0, ack: 0, l4CsumOk: undefined, raw: buf };
  const sum = () => csum(l4, pseudo6(ip.subarray(8, 24), ip.subarray(24, 40), nh, l4.length)) === 0;
  if (nh === TCP || nh === UDP) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    if (nh === TCP && l4.length >= 14) {
      p.seq = l4.readUInt32BE(4);
      p.ack = l4.readUInt32BE(8);
      p.tcpFlags = l4[13]!;
    }
    if (!quoted) p.l4CsumOk = sum();
  } else if (nh === ICMPV6) {
    p.icmp = {
      type: l4[0]!,
      code: l4[1]!,
      info: l4.readUInt32BE(4),
      csumOk: sum(),
      ...(l4.length >= 48 ? { inner: parse6(l4, 8, true) } : {}),
    };
  }
  return p;
}
