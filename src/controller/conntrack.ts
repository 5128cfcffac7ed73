/**
 * Conntrack expiry: the data path only stamps entries; this scan, run by
 * the controller every few seconds, removes flows that went idle for longer
 * than their state allows (Calico's defaults). The REV entry owns a flow's
 * state; when it expires, its FWD entry goes with it. A FWD entry whose REV
 * entry vanished (LRU eviction) expires on its own idle time.
 *
 * The map holds up to 524k entries: it is read in batches of `chunk` and
 * the scan yields to the event loop after each batch (reads and deletes), so
 * health probes and syncs are not held up behind it.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
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

  /**
   * The scan reads the raw entries (offsets of struct ct_key / ct_value,
   * codec.ts): decoding 500k entries into objects with strings and BigInts
   * would cost seconds of CPU. It yields whenever it has run for sliceMs.
   */
  async scan(chunk = 1024, sliceMs = 4): Promise<ScanResult> {
    const nowN = Number(this.now());
    const t = this.timeouts;
    const doomed: Buffer[] = [];
    const doomedHex = new Set<string>();
    /** FWD keys whose REV entry is alive */
    const keep = new Set<string>();
    /** FWD entries past their own idle time: they go unless their REV is alive */
    const orphanCandidates: Array<{ hex: string; raw: Buffer }> = [];
    const fwdSeen = new Set<string>();
    let scanned = 0;
    let rev = 0;
    let sliceStart = performance.now();
    const pieces = this.ct.chunks ? this.ct.chunks(chunk) : [this.ct.dump()];
    for (const piece of pieces) {
      for (const [k, v] of piece) {
        scanned++;
        const proto = k[0] as number;
        const type = v[0];
        if (type === CT_REV) {
          const fwdKey = fwdKeyOfRaw(proto, v);
          if (rawExpired(proto, v, nowN, t, false)) {
            doomed.push(Buffer.from(k), fwdKey);
            doomedHex.add(fwdKey.toString('hex'));
          } else {
            rev++;
            keep.add(fwdKey.toString('hex'));
          }
        } else if (type === CT_FWD) {
          const hex = k.toString('hex');
          fwdSeen.add(hex);
          if (rawExpired(proto, v, nowN, t, true)) orphanCandidates.push({ hex, raw: Buffer.from(k) });
        }
      }
      if (performance.now() - sliceStart >= sliceMs) {
        await yieldToLoop();
        sliceStart = performance.now();
      }
    }
    let fwd = 0;
    for (const hex of fwdSeen) if (!doomedHex.has(hex)) fwd++;
    for (const c of orphanCandidates) {
      if (doomedHex.has(c.hex) || keep.has(c.hex)) continue;
      doomed.push(c.raw);
      fwd--;
    }
    for (let i = 0; i < doomed.length; i += chunk) {
      this.ct.deleteBatch(doomed.slice(i, i + chunk));
      if (performance.now() - sliceStart >= sliceMs) {
        await yieldToLoop();
        sliceStart = performance.now();
      }
    }
    return { scanned, expired: doomed.length, fwd, rev };
  }
}

/** A u64 ns field as a Number: exact enough for timeouts in seconds. */
const u64 = (b: Buffer, off: number) => b.readUInt32LE(off + 4) * 4294967296 + b.readUInt32LE(off);

/** ctExpired on a raw ct_value; ownClock ignores the TCP flags (a FWD entry alone). */
function rawExpired(proto: number, v: Buffer, nowN: number, t: CtTimeouts, ownClock: boolean): boolean {
  if ((nowN - u64(v, 8)) / 1e9 < t.creationGrace) return false;
  const idle = (nowN - u64(v, 16)) / 1e9;
  let timeout: number;
  if (proto === 17) timeout = t.udp;
  else if (proto !== 6) timeout = t.other;
  else {
    const state = tcpState({ flags: v[1] as number, tcpClient: ownClock ? 0 : (v[2] as number), tcpServer: ownClock ? 0 : (v[3] as number) });
    timeout = state === 'reset' ? t.tcpReset : state === 'closed' || state === 'fin-wait' ? t.tcpFinWait : state === 'established' ? t.tcpEstablished : t.tcpSynSent;
  }
  return idle > timeout;
}

/** fwdKeyOf on a raw REV ct_value: client (nat_saddr:nat_sport) <-> frontend (nat_addr:nat_port), ordered as ctKeyFor. */
function fwdKeyOfRaw(proto: number, v: Buffer): Buffer {
  const n1 = v.readUInt32BE(28);
  const p1 = v.readUInt16LE(34);
  const n2 = v.readUInt32BE(24);
  const p2 = v.readUInt16LE(32);
  const firstIsA = n1 < n2 || (n1 === n2 && p1 <= p2);
  const b = Buffer.alloc(16);
  b[0] = proto;
  b.writeUInt32BE(firstIsA ? n1 : n2, 4);
  b.writeUInt32BE(firstIsA ? n2 : n1, 8);
  b.writeUInt16LE(firstIsA ? p1 : p2, 12);
  b.writeUInt16LE(firstIsA ? p2 : p1, 14);
  return b;
}
