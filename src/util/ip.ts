/**
 * Address helpers that work for both families without a full parse: the
 * translation and the reconciler run them for every entry of a full sync.
 * Inputs are addresses the model already validated.
 */
import ipaddr from 'ipaddr.js';
import { ipv4ToNumber } from './ipv4.js';

export type IPFamily = 4 | 6;

export const IP_FAMILIES: readonly IPFamily[] = [4, 6];

/** The family of a validated address: IPv6 text always has a colon, IPv4 never. */
export function addrFamily(addr: string): IPFamily {
  return addr.includes(':') ? 6 : 4;
}

/** The 16 bytes of an IPv6 address (network order). */
export function ipv6Bytes(addr: string): number[] {
  return ipaddr.IPv6.parse(addr).toByteArray();
}

/** Canonical (RFC 5952) text of an IPv6 address, so equal addresses compare equal as strings. */
export function ipv6Text(bytes: ArrayLike<number>): string {
  return ipaddr.fromByteArray(Array.from(bytes)).toString();
}

/**
 * One text per address: IPv6 in RFC 5952 form (what the codecs read back),
 * so a frontend written from a Service and read back from the map compare
 * equal. IPv4 is left as it is.
 */
export function canonicalAddr(addr: string): string {
  return addrFamily(addr) === 6 ? ipaddr.IPv6.parse(addr).toString() : addr;
}

/** Numeric order within a family; IPv4 sorts before IPv6. */
export function compareAddr(a: string, b: string): number {
  const fa = addrFamily(a);
  const fb = addrFamily(b);
  if (fa !== fb) return fa - fb;
  if (fa === 4) return ipv4ToNumber(a) - ipv4ToNumber(b);
  const x = ipv6Bytes(a);
  const y = ipv6Bytes(b);
  for (let i = 0; i < 16; i++) if (x[i] !== y[i]) return (x[i] as number) - (y[i] as number);
  return 0;
}

/** The unspecified address of a family: the source of an unrestricted frontend. */
export function anyAddr(f: IPFamily): string {
  return f === 4 ? '0.0.0.0' : '::';
}

/** "addr:port", with IPv6 addresses in brackets. */
export function hostPort(addr: string, port: number): string {
  return addrFamily(addr) === 6 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** A prefix of either family: its network address (host bits cleared, canonical text) and length. */
export interface IpCidr {
  family: IPFamily;
  addr: string;
  len: number;
}

/**
 * "addr/len" of either family, or with bareAddress an address alone as its
 * host prefix, with host bits cleared; undefined for anything else. The one
 * CIDR parser: parseIpv4Cidr (ipv4.ts) is this restricted to IPv4.
 */
export function parseCidr(v: string, bareAddress = false): IpCidr | undefined {
  try {
    if (!v.includes('/') && !bareAddress) return undefined;
    const a = v.includes('/') ? ipaddr.parseCIDR(v) : ([ipaddr.parse(v), ipaddr.parse(v).kind() === 'ipv4' ? 32 : 128] as const);
    const [addr, len] = a;
    if (addr.kind() === 'ipv4') {
      return { family: 4, addr: ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${len}`).toString(), len };
    }
    return { family: 6, addr: ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${len}`).toString(), len };
  } catch {
    return undefined;
  }
}
