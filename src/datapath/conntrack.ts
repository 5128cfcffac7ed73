/**
 * Conntrack as user space sees it: one module for what an entry's state,
 * timeout and partner are, used by the expiry scan and by `kpr inspect ct`.
 *
 * Expiry: the data path only stamps entries; ConntrackScanner removes flows
 * that went idle for longer than their state allows (Calico's defaults).
 * The REV entry owns a flow's state; when it expires, its FWD entry goes
 * with it. A FWD entry whose REV entry vanished (LRU eviction) expires on
 * its own idle time.
 *
 * The map holds up to 524k entries: it is read in batches of `chunk` and
 * the scan yields to the event loop between batches. The daemon runs it on
 * a worker thread (conntrack-thread.ts), so its CPU time is not the main
 * loop's at all.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { CT6_KEY_SIZE, CT6_VAL_SIZE, CT_F_DSR, CT_F_SNAT, CT_FWD, CT_KEY_SIZE, CT_REV, CT_TCP_ACK, CT_TCP_FIN, CT_TCP_RST, CT_TCP_SYN, type CtVal } from './codec.js';
import { STRUCTS6 } from './abi.js';
import type { KVMap } from './kvmap.js';

export interface CtTimeouts {
  creationGrace: number;
  tcpSynSent: number;
  tcpEstablished: number;
  tcpFinWait: number;
  /**
   * A masqueraded flow closed by FINs: its SNAT port must not go to another
   * client while the backend may still hold the tuple in TIME_WAIT
   * (ct_snat_port_free in conntrack.h).
   */
  tcpTimeWait: number;
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
  // Linux holds TIME_WAIT 60 s (TCP_TIMEWAIT_LEN), counted from the last
  // FIN it received, which is no later than the entry's last_seen.
  tcpTimeWait: 65,
  tcpReset: 40,
  udp: 60,
  other: 600,
};

export type TcpState = 'syn-sent' | 'established' | 'fin-wait' | 'closed' | 'reset';

export function tcpState(v: CtClock): TcpState {
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

/** What decides an entry's timeout: its protocol's TCP flags seen so far. */
export type CtClock = Pick<CtVal, 'tcpClient' | 'tcpServer'> & { flags?: number };

/** Idle timeout of an entry, in seconds. */
export function ctTimeout(proto: number, v: CtClock, t: CtTimeouts = DEFAULT_CT_TIMEOUTS): number {
  if (proto === 17) return t.udp;
  if (proto !== 6) return t.other;
  return tcpTimeout(tcpState(v), ((v.flags ?? 0) & CT_F_SNAT) !== 0, t);
}

function tcpTimeout(state: TcpState, snat: boolean, t: CtTimeouts): number {
  switch (state) {
    case 'reset':
      return t.tcpReset;
    case 'closed':
      return snat ? t.tcpTimeWait : t.tcpFinWait;
    case 'fin-wait':
      return t.tcpFinWait;
    case 'established':
      return t.tcpEstablished;
    default:
      return t.tcpSynSent;
  }
}

/**
 * Past its idle timeout, and past the creation grace (a flow just created
 * may not have been stamped by both directions yet).
 */
export function ctExpired(proto: number, v: CtClock & Pick<CtVal, 'created' | 'lastSeen'>, nowNs: bigint, t: CtTimeouts = DEFAULT_CT_TIMEOUTS): boolean {
  return idleExpired(proto, v, Number(v.created), Number(v.lastSeen), Number(nowNs), t);
}

function idleExpired(proto: number, clock: CtClock, created: number, lastSeen: number, nowN: number, t: CtTimeouts): boolean {
  if ((nowN - created) / 1e9 < t.creationGrace) return false;
  return (nowN - lastSeen) / 1e9 > ctTimeout(proto, clock, t);
}

/**
 * The clock of a raw ct_val (offsets of struct ct_val, abi.ts). A FWD
 * entry carries no TCP flags of its own: alone, it lives by the SYN-sent
 * timeout, as its REV entry would have on a flow that never answered.
 */
export function rawCtClock(v: Buffer): CtClock {
  const fwd = v[0] === CT_FWD;
  return { flags: v[1] as number, tcpClient: fwd ? 0 : (v[2] as number), tcpServer: fwd ? 0 : (v[3] as number) };
}

/**
 * The FWD key of the flow a raw REV ct_val belongs to: original client
 * (nat_saddr:nat_sport) <-> frontend (nat_addr:nat_port), ordered as
 * ctKeyFor orders a key's two ends (lower address, then lower port, first).
 * The family is the value's size: kpr_v6_ct's entries are ct6_val.
 */
export function fwdKeyOfRev(proto: number, rev: Buffer): Buffer {
  if (rev.length === CT6_VAL_SIZE) return fwdKeyOfRev6(proto, rev);
  const n1 = rev.readUInt32BE(28);
  const p1 = rev.readUInt16LE(34);
  const n2 = rev.readUInt32BE(24);
  const p2 = rev.readUInt16LE(32);
  const firstIsA = n1 < n2 || (n1 === n2 && p1 <= p2);
  const b = Buffer.alloc(CT_KEY_SIZE);
  b[0] = proto;
  b.writeUInt32BE(firstIsA ? n1 : n2, 4);
  b.writeUInt32BE(firstIsA ? n2 : n1, 8);
  b.writeUInt16LE(firstIsA ? p1 : p2, 12);
  b.writeUInt16LE(firstIsA ? p2 : p1, 14);
  return b;
}

const V6 = STRUCTS6.ct6_val.fields;
const K6 = STRUCTS6.ct6_key.fields;

function fwdKeyOfRev6(proto: number, rev: Buffer): Buffer {
  const a1 = rev.subarray(V6.nat_saddr, V6.nat_saddr + 16);
  const p1 = rev.readUInt16LE(V6.nat_sport);
  const a2 = rev.subarray(V6.nat_addr, V6.nat_addr + 16);
  const p2 = rev.readUInt16LE(V6.nat_port);
  const c = Buffer.compare(a1, a2); // network order: byte order is numeric order
  const firstIsA = c < 0 || (c === 0 && p1 <= p2);
  const b = Buffer.alloc(CT6_KEY_SIZE);
  b[K6.proto] = proto;
  (firstIsA ? a1 : a2).copy(b, K6.addr_a);
  (firstIsA ? a2 : a1).copy(b, K6.addr_b);
  b.writeUInt16LE(firstIsA ? p1 : p2, K6.port_a);
  b.writeUInt16LE(firstIsA ? p2 : p1, K6.port_b);
  return b;
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
   * The scan reads the raw entries (offsets of struct ct_key / ct_val,
   * abi.ts): decoding 500k entries into objects with strings and BigInts
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
          const fwdKey = fwdKeyOfRev(proto, v);
          if (rawExpired(proto, v, nowN, t)) {
            doomed.push(Buffer.from(k), fwdKey);
            doomedHex.add(fwdKey.toString('hex'));
          } else {
            rev++;
            keep.add(fwdKey.toString('hex'));
          }
        } else if (type === CT_FWD) {
          const hex = k.toString('hex');
          fwdSeen.add(hex);
          if (rawExpired(proto, v, nowN, t)) orphanCandidates.push({ hex, raw: Buffer.from(k) });
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

/** ctExpired on a raw ct_val, without decoding it (created at 8, last_seen at 16). */
function rawExpired(proto: number, v: Buffer, nowN: number, t: CtTimeouts): boolean {
  return idleExpired(proto, rawCtClock(v), u64(v, 8), u64(v, 16), nowN, t);
}
