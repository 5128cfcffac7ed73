import { parseCidr } from './ip.js';

/** A dotted quad as a number, for ordering and normalising keys without a full parse. */
export function ipv4ToNumber(addr: string): number {
  // Digits and dots read in place (a full sync orders a million endpoints
  // with this); anything else, an empty or a very long part, as Number() reads it.
  let n = 0;
  let part = 0;
  let digits = 0;
  for (let i = 0; i < addr.length; i++) {
    const c = addr.charCodeAt(i);
    if (c >= 48 && c <= 57 && digits < 15) {
      part = part * 10 + (c - 48);
      digits++;
    } else if (c === 46 && digits > 0) {
      n = n * 256 + part;
      part = 0;
      digits = 0;
    } else return byParts(addr);
  }
  return digits > 0 ? n * 256 + part : byParts(addr);
}

function byParts(addr: string): number {
  let n = 0;
  for (const part of addr.split('.')) n = n * 256 + Number(part);
  return n;
}

/** An IPv4 prefix: its network address (host bits cleared) and length. */
export interface Ipv4Cidr {
  addr: string;
  len: number;
}

/**
 * "a.b.c.d/len", or a bare address as /32, with host bits cleared;
 * undefined for anything else, IPv6 included.
 */
export function parseIpv4Cidr(v: string): Ipv4Cidr | undefined {
  const c = parseCidr(v, true);
  return c?.family === 4 ? { addr: c.addr, len: c.len } : undefined;
}

export function formatIpv4Cidr(c: Ipv4Cidr): string {
  return `${c.addr}/${c.len}`;
}
