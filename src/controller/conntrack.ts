/**
 * Conntrack expiry: the data path only stamps entries; this scan, run by
 * the controller every few seconds, removes flows that went idle for longer
 * than their state allows (Calico's defaults). The REV entry owns a flow's
 * state; when it expires, its FWD entry goes with it. A FWD entry whose REV
 * entry vanished (LRU eviction) expires on its own idle time.
 */
import {
  CT_F_DSR,
  CT_FWD,
  CT_REV,
  CT_TCP_ACK,
  CT_TCP_FIN,
  CT_TCP_RST,
  CT_TCP_SYN,
  ctKeyFor,
  decodeCtKey,
  decodeCtVal,
  encodeCtKey,
  type CtKey,
  type CtVal,
} from '../datapath/codec.js';
import type { KVMap } from '../datapath/kvmap.js';

export interface CtTimeouts {
  creationGrace: number;
  tcpSynSent: number;
  tcpEstablished: number;
  tcpFinWait: number;
  tcpReset: number;
  udp: number;
  other: number;
}

/** Seconds, as Calico ships them. */
export const DEFAULT_CT_TIMEOUTS: CtTimeouts = {
  creationGrace: 10,
  tcpSynSent: 20,
  tcpEstablished: 3600,
  tcpFinWait: 30,
  tcpReset: 40,
  udp: 60,
  other: 600,
};

export type TcpState = 'syn-sent' | 'established' | 'fin-wait' | 'closed' | 'reset';

export function tcpState(v: Pick<CtVal, 'tcpClient' | 'tcpServer'> & { flags?: number }): TcpState {
  const all = v.tcpClient | v.tcpServer;
  // The DSR ingress node sees only the client: its ACK after the SYN
  // means the handshake completed elsewhere.
  if ((v.flags ?? 0) & CT_F_DSR && v.tcpServer === 0) {
    if (all & CT_TCP_RST) return 'reset';
    if (v.tcpClient & CT_TCP_FIN) return 'fin-wait';
    if (v.tcpClient & CT_TCP_ACK) return 'established';
    return 'syn-sent';
  }
  if (all & CT_TCP_RST) return 'reset';
  if (v.tcpClient & CT_TCP_FIN && v.tcpServer & CT_TCP_FIN) return 'closed';
  if (all & CT_TCP_FIN) return 'fin-wait';
  if (v.tcpServer & CT_TCP_SYN && v.tcpServer & CT_TCP_ACK && v.tcpClient & CT_TCP_ACK) return 'established';
  return 'syn-sent';
}

/** Idle timeout of an entry, in seconds. */
export function ctTimeout(proto: number, v: CtVal, t: CtTimeouts = DEFAULT_CT_TIMEOUTS): number {
  if (proto === 17) return t.udp;
  if (proto !== 6) return t.other;
  switch (tcpState(v)) {
    case 'reset':
      return t.tcpReset;
    case 'closed':
    case 'fin-wait':
      return t.tcpFinWait;
    case 'established':
      return t.tcpEstablished;
    default:
      return t.tcpSynSent;
  }
}

export function ctExpired(proto: number, v: CtVal, nowNs: bigint, t: CtTimeouts = DEFAULT_CT_TIMEOUTS): boolean {
  const age = Number(nowNs - v.created) / 1e9;
  if (age < t.creationGrace) return false;
  const idle = Number(nowNs - v.lastSeen) / 1e9;
  return idle > ctTimeout(proto, v, t);
}

/** The FWD key that belongs to a REV entry: original client <-> frontend. */
export function fwdKeyOf(revKey: CtKey, rev: CtVal): CtKey {
  return ctKeyFor(revKey.proto, rev.natSaddr, rev.natSport, rev.natAddr, rev.natPort);
}

export interface ScanResult {
  scanned: number;
  expired: number;
  fwd: number;
  rev: number;
}

export class ConntrackScanner {
  constructor(
    private readonly ct: KVMap,
    private readonly timeouts: CtTimeouts = DEFAULT_CT_TIMEOUTS,
    /** Monotonic clock in ns, the one bpf_ktime_get_ns() reads. */
    private readonly now: () => bigint = () => process.hrtime.bigint(),
  ) {}

  scan(): ScanResult {
    const now = this.now();
    const entries = this.ct.dump().map(([k, v]) => ({ key: decodeCtKey(k), val: decodeCtVal(v), raw: k }));
    const doomed: Buffer[] = [];
    const keep = new Set<string>();
    let fwd = 0;
    let rev = 0;
    for (const e of entries) {
      if (e.val.type !== CT_REV) continue;
      if (ctExpired(e.key.proto, e.val, now, this.timeouts)) {
        doomed.push(e.raw, encodeCtKey(fwdKeyOf(e.key, e.val)));
      } else {
        rev++;
        keep.add(encodeCtKey(fwdKeyOf(e.key, e.val)).toString('hex'));
      }
    }
    const doomedHex = new Set(doomed.map((b) => b.toString('hex')));
    for (const e of entries) {
      if (e.val.type !== CT_FWD) continue;
      const hex = e.raw.toString('hex');
      if (doomedHex.has(hex)) continue;
      // A FWD whose REV is gone lives by its own clock.
      if (!keep.has(hex) && ctExpired(e.key.proto, { ...e.val, tcpClient: 0, tcpServer: 0 }, now, this.timeouts)) doomed.push(e.raw);
      else fwd++;
    }
    if (doomed.length) this.ct.deleteBatch(doomed);
    return { scanned: entries.length, expired: doomed.length, fwd, rev };
  }
}
