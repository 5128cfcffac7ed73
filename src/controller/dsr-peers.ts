/**
 * Which nodes a backend node trusts to send it kpr's DSR option (the maps
 * kpr_v4_dsr_peers and kpr_v6_dsr_peers, one per family). The option
 * chooses the source address of a pod's replies, so only cluster nodes may
 * send it: see "DSR trust" in docs/architecture.md.
 *
 * Peer set = the --cluster-node-ips CIDRs ∪ the addresses of known nodes.
 * The daemon gives it this node's own addresses at start (setOwnAddresses,
 * which keeps what is pinned), and the Node objects' addresses when a
 * source provides them (setNodeAddresses).
 */
import { canonicalAddr, parseCidr, type IpCidr } from '../util/ip.js';

const cidrText = (c: IpCidr) => `${c.addr}/${c.len}`;

/**
 * Pure: the peer entries for the flag CIDRs (parsed once, by the CLI) and
 * node addresses (as Node objects give them), of both families. Malformed
 * addresses are left out; the result is sorted (IPv4 first) and without
 * duplicates.
 */
export function dsrPeerEntries(cidrs: readonly IpCidr[], nodeAddresses: readonly string[]): IpCidr[] {
  const out = new Map<string, IpCidr>();
  for (const c of [...cidrs, ...nodeAddresses.map((a) => parseCidr(a, true))]) if (c) out.set(cidrText(c), c);
  return [...out.values()].sort((a, b) => a.family - b.family || (cidrText(a) < cidrText(b) ? -1 : cidrText(a) > cidrText(b) ? 1 : 0));
}

export class DsrPeers {
  /**
   * pinned: what the peer maps held when this kpr started. A restart
   * keeps it until a source has listed the Node objects: cutting the other
   * nodes out before then would drop every DSR request they send (a source
   * that has not read a valid state must not cause deletes).
   */
  constructor(
    private readonly cidrs: readonly IpCidr[],
    private readonly apply: (entries: IpCidr[]) => void,
    private pinned: readonly IpCidr[] = [],
  ) {}

  /** This node's own addresses, at start: added to what is pinned, nothing removed. */
  setOwnAddresses(addrs: readonly string[]): IpCidr[] {
    return this.write(addrs);
  }

  /** Replace the node addresses (this node's, and every Node's InternalIP) and rewrite the map. */
  setNodeAddresses(addrs: readonly string[]): IpCidr[] {
    this.pinned = [];
    return this.write(addrs);
  }

  private write(addrs: readonly string[]): IpCidr[] {
    const entries = dsrPeerEntries([...this.cidrs, ...this.pinned], addrs);
    this.apply(entries);
    return entries;
  }
}

/**
 * Pure: may this node send the IPv6 DSR header? Only once its peers hold an
 * IPv6 entry other than its own addresses: peers come from the same Node
 * objects and flags on every node, so a node that knows none is in a
 * cluster whose backend nodes would refuse the header (fail closed), and
 * keeps masquerading its IPv6 NodePorts as before.
 */
export function dsr6Allowed(entries: readonly IpCidr[], own: readonly string[]): boolean {
  const mine = new Set(own.map(canonicalAddr));
  return entries.some((c) => c.family === 6 && !(c.len === 128 && mine.has(c.addr)));
}

/**
 * Pure: the IPv6 peers that are single nodes (a /128), other than this
 * node's own addresses. The neighbour entry of each one's next hop is the
 * backend node's proof of the sender (dsr_from_peer), and IPv6 does not
 * give it for free: an ingress node (or a router) solicits us from its
 * link-local address when the packet it forwards is not its own, so our
 * kernel learns that address, not the one our route to the peer names.
 * Managed neighbour entries fill the gap.
 */
export function neighbourPeers(entries: readonly IpCidr[], own: readonly string[]): string[] {
  const mine = new Set(own.map(canonicalAddr));
  return entries.filter((c) => c.family === 6 && c.len === 128 && !mine.has(c.addr)).map((c) => c.addr);
}

export interface NeighbourOps {
  /** The route this node takes to addr: its device, and its gateway when the peer is not on the link. */
  routeTo(addr: string): Promise<{ dev: string; gateway?: string } | undefined>;
  set(addr: string, dev: string): Promise<void>;
  del(addr: string, dev: string): Promise<void>;
  /** The entries kpr made (its protocol mark) in place now, whoever made them. */
  list(): Promise<Array<{ addr: string; dev: string }>>;
}

type Neighbour = { addr: string; dev: string };
const neighbourKey = (n: Neighbour) => `${n.addr} ${n.dev}`;

/**
 * Keeps a managed neighbour entry for the next hop towards each IPv6 peer
 * whose route leaves by one of kpr's devices: the peer itself when it is on
 * the link, the router that route names when it is not (the frame of a DSR
 * request from a peer behind a router comes from that router: see "DSR
 * trust" in docs/architecture.md). Peers behind one router share its
 * entry, removed with the last of them. Calls run one at a time.
 *
 * While a start runs (startJournal), the entries it adds are journaled, so
 * a start that fails takes them back (rollbackJournal); entries an earlier
 * kpr left, which its data path still relies on, stay.
 */
export class PeerNeighbours {
  /** peer -> the neighbour entry it needs */
  private readonly held = new Map<string, Neighbour>();
  private chain: Promise<void> = Promise.resolve();
  /** Entries added since startJournal that were not there before it ("address device" -> entry). */
  private journal: Map<string, Neighbour> | undefined;
  /** kpr's entries ("address device") in place when the journal started. */
  private before = new Set<string>();

  constructor(
    private readonly ops: NeighbourOps,
    private readonly onError: (addr: string, err: unknown) => void,
  ) {}

  /** Bring the entries in line with these peers, on these devices; resolves when done. */
  sync(peers: readonly string[], devices: readonly string[]): Promise<void> {
    this.chain = this.chain.then(() => this.apply(peers, devices));
    return this.chain;
  }

  /** Journal the entries added from now on; the ones in place now are kept by a rollback. */
  startJournal(): void {
    this.journal = new Map();
    this.chain = this.chain.then(async () => {
      try {
        this.before = new Set((await this.ops.list()).map(neighbourKey));
      } catch (err) {
        // Unknown what was there: take nothing back rather than an entry in use.
        this.onError('*', err);
        this.journal = undefined;
      }
    });
  }

  /** The start went through: its entries are kpr's like any other. */
  commitJournal(): void {
    this.journal = undefined;
    this.before.clear();
  }

  /**
   * The start failed: once the syncs queued so far are done, remove the
   * entries it added. Resolves when done; failures go to onError.
   */
  rollbackJournal(): Promise<void> {
    this.chain = this.chain.then(async () => {
      const added = this.journal ?? new Map<string, Neighbour>();
      this.journal = undefined;
      this.before.clear();
      for (const [key, n] of added) {
        for (const [peer, h] of this.held) if (neighbourKey(h) === key) this.held.delete(peer);
        await this.ops.del(n.addr, n.dev).catch((err: unknown) => this.onError(n.addr, err));
      }
    });
    return this.chain;
  }

  /** Resolves once the syncs queued so far are done. */
  idle(): Promise<void> {
    return this.chain;
  }

  /** The neighbour entries this instance holds (address -> device). */
  entries(): Map<string, string> {
    return new Map([...this.held.values()].map((n) => [n.addr, n.dev]));
  }

  private shared(n: Neighbour): boolean {
    for (const h of this.held.values()) if (h.addr === n.addr && h.dev === n.dev) return true;
    return false;
  }

  private async apply(peers: readonly string[], devices: readonly string[]): Promise<void> {
    const want = new Set(peers);
    for (const [peer, n] of this.held) {
      if (want.has(peer)) continue;
      this.held.delete(peer);
      if (this.shared(n)) continue;
      this.journal?.delete(neighbourKey(n));
      await this.ops.del(n.addr, n.dev).catch((err: unknown) => this.onError(n.addr, err));
    }
    for (const peer of peers) {
      if (this.held.has(peer)) continue;
      try {
        const r = await this.ops.routeTo(peer);
        if (!r || !devices.includes(r.dev)) continue;
        const n = { addr: r.gateway ? canonicalAddr(r.gateway) : peer, dev: r.dev };
        if (!this.shared(n)) {
          await this.ops.set(n.addr, n.dev);
          if (this.journal && !this.before.has(neighbourKey(n))) this.journal.set(neighbourKey(n), n);
        }
        this.held.set(peer, n);
      } catch (err) {
        this.onError(peer, err);
      }
    }
  }
}
