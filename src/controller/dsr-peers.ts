/**
 * Which nodes a backend node trusts to send it kpr's DSR option (the map
 * kpr_v4_dsr_peers). The option chooses the source address of a pod's
 * replies, so only cluster nodes may send it: see "DSR trust" in
 * docs/architecture.md.
 *
 * Peer set = the --cluster-node-ips CIDRs ∪ the addresses of known nodes.
 * The node addresses come in through setNodeAddresses(): the daemon gives it
 * this node's own addresses, and the Node objects' addresses when a source
 * provides them.
 */
import ipaddr from 'ipaddr.js';

/** Normalised IPv4 CIDR ("a.b.c.d/len", network address) or undefined for anything else. */
function v4Cidr(v: string): string | undefined {
  try {
    const [addr, len] = v.includes('/') ? ipaddr.parseCIDR(v) : [ipaddr.parse(v), 32];
    if (addr.kind() !== 'ipv4') return undefined;
    return `${ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${len}`).toString()}/${len}`;
  } catch {
    return undefined;
  }
}

/**
 * Pure: the peer entries for flag CIDRs and node addresses. IPv6 and
 * malformed values are left out (the data path's DSR is IPv4); the result is
 * sorted and without duplicates.
 */
export function dsrPeerEntries(cidrs: readonly string[], nodeAddresses: readonly string[]): string[] {
  const out = new Set<string>();
  for (const v of [...cidrs, ...nodeAddresses]) {
    const c = v4Cidr(v);
    if (c) out.add(c);
  }
  return [...out].sort();
}

export class DsrPeers {
  private nodeAddresses: string[] = [];

  constructor(
    private readonly cidrs: readonly string[],
    private readonly apply: (entries: string[]) => void,
  ) {}

  /** Replace the node addresses (all nodes' InternalIP/ExternalIP) and rewrite the map. */
  setNodeAddresses(addrs: readonly string[]): string[] {
    this.nodeAddresses = [...addrs];
    const entries = dsrPeerEntries(this.cidrs, this.nodeAddresses);
    this.apply(entries);
    return entries;
  }
}
