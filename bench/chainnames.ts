/**
 * Chain names the way kube-proxy derives them, so the baselines have the
 * same shape (and the same name lengths) as a real node's ruleset:
 * base32 (RFC 4648 alphabet, padded) of sha256 over
 * servicePortName + lower-case protocol [+ "ip:port"], truncated.
 * iptables mode keeps 16 characters; nftables mode keeps 8 and appends a
 * readable suffix. Checked against iptables-save output from real clusters
 * in bench/test/renderers.test.ts.
 */
import { createHash } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32(buf: Uint8Array): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const byte of buf) {
    acc = ((acc << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31];
  while (out.length % 8 !== 0) out += '=';
  return out;
}

function hashPrefix(text: string, len: number): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, len);
}

export function svcChain(servicePortName: string, protocol: string): string {
  return `KUBE-SVC-${hashPrefix(servicePortName + protocol.toLowerCase(), 16)}`;
}

export function sepChain(servicePortName: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${hashPrefix(servicePortName + protocol.toLowerCase() + endpoint, 16)}`;
}

/** nftables-mode names: a short hash for uniqueness plus the readable name (ns/name/proto/port). */
export function nftServiceChain(ns: string, name: string, portName: string, protocol: string): string {
  const spn = `${ns}/${name}:${portName}`;
  const proto = protocol.toLowerCase();
  return `service-${hashPrefix(spn + proto, 8)}-${ns}/${name}/${proto}/${portName}`;
}

/** The chain NodePort (and external IP) traffic enters before the service chain: masquerade, then the service. */
export function nftExternalChain(ns: string, name: string, portName: string, protocol: string): string {
  const spn = `${ns}/${name}:${portName}`;
  const proto = protocol.toLowerCase();
  return `external-${hashPrefix(spn + proto, 8)}-${ns}/${name}/${proto}/${portName}`;
}

/**
 * The hash covers the endpoint as kube-proxy prints it ("[ip]:port" for
 * IPv6); nft identifiers take no ':', so an IPv6 address in the readable
 * part has its colons written as dots.
 */
export function nftEndpointChain(ns: string, name: string, portName: string, protocol: string, ip: string, port: number): string {
  const spn = `${ns}/${name}:${portName}`;
  const proto = protocol.toLowerCase();
  const v6 = ip.includes(':');
  const endpoint = v6 ? `[${ip}]:${port}` : `${ip}:${port}`;
  return `endpoint-${hashPrefix(spn + proto + endpoint, 8)}-${ns}/${name}/${proto}/${portName}__${v6 ? ip.replaceAll(':', '.') : ip}/${port}`;
}
