/**
 * `kpr inspect ct`: conntrack as flows. Each NATed flow is its REV entry
 * (client' <-> backend, with the state) joined with its FWD entry
 * (client <-> frontend); entries without a partner are listed too.
 */
import {
  CT_F_CLIENT_IS_A,
  CT_F_DSR,
  CT_F_SNAT,
  CT_FWD,
  CT_REV,
  ctKeyFor,
  decodeCtKey,
  decodeCtVal,
  encodeCtKey,
  type CtKey,
  type CtVal,
} from '../datapath/codec.js';
import type { KVMap } from '../datapath/kvmap.js';
import { ctTimeout, rawCtClock, tcpState } from '../datapath/conntrack.js';
import { hostPort } from '../util/ip.js';

export interface CtRow {
  proto: string;
  client: string;
  frontend: string;
  backend: string;
  /** source the backend sees, when masqueraded */
  snat: string | null;
  state: string;
  dsr: boolean;
  /** DSR flows: 'ingress' (the node the client reached) or 'backend' (answers the client directly) */
  dsrSide: 'ingress' | 'backend' | null;
  serviceId: number;
  ageSeconds: number;
  idleSeconds: number;
  timeoutSeconds: number;
  /** 'flow' = REV+FWD, or which half is alone */
  entries: 'flow' | 'rev-only' | 'fwd-only';
}

const PROTO: Record<number, string> = { 6: 'TCP', 17: 'UDP', 1: 'ICMP' };

function sides(k: CtKey, v: CtVal): { client: string; other: string } {
  const a = hostPort(k.addrA, k.portA);
  const b = hostPort(k.addrB, k.portB);
  return v.flags & CT_F_CLIENT_IS_A ? { client: a, other: b } : { client: b, other: a };
}

/** kpr_v4_ct, and kpr_v6_ct when given: the flows of both families in one list. */
export function ctRows(ct: KVMap, nowNs: bigint = process.hrtime.bigint(), ct6?: KVMap): CtRow[] {
  const entries = [...ct.dump(), ...(ct6?.dump() ?? [])].map(([k, v]) => ({ key: decodeCtKey(k), val: decodeCtVal(v), raw: v, hex: k.toString('hex') }));
  const byHex = new Map(entries.map((e) => [e.hex, e]));
  const used = new Set<string>();
  const rows: CtRow[] = [];
  const secs = (ns: bigint) => Math.max(0, Math.round(Number(nowNs - ns) / 1e8) / 10);
  for (const e of entries) {
    if (e.val.type !== CT_REV) continue;
    // Decoded, not fwdKeyOfRev (the scanner's IPv4-only raw read): rows of both families.
    const fk = encodeCtKey(ctKeyFor(e.key.proto, e.val.natSaddr, e.val.natSport, e.val.natAddr, e.val.natPort)).toString('hex');
    const fwd = byHex.get(fk);
    used.add(e.hex);
    if (fwd) used.add(fk);
    const s = sides(e.key, e.val);
    const proto = PROTO[e.key.proto] ?? String(e.key.proto);
    rows.push({
      proto,
      client: hostPort(e.val.natSaddr, e.val.natSport),
      frontend: hostPort(e.val.natAddr, e.val.natPort),
      backend: s.other,
      snat: e.val.flags & CT_F_SNAT ? s.client : null,
      state: e.key.proto === 6 ? tcpState(e.val) : 'active',
      dsr: Boolean(e.val.flags & CT_F_DSR),
      dsrSide: e.val.flags & CT_F_DSR ? (fwd ? 'ingress' : 'backend') : null,
      serviceId: e.val.svcId,
      ageSeconds: secs(e.val.created),
      idleSeconds: secs(e.val.lastSeen),
      timeoutSeconds: ctTimeout(e.key.proto, rawCtClock(e.raw)),
      entries: fwd ? 'flow' : 'rev-only',
    });
  }
  for (const e of entries) {
    if (used.has(e.hex) || e.val.type !== CT_FWD) continue;
    const s = sides(e.key, e.val);
    rows.push({
      proto: PROTO[e.key.proto] ?? String(e.key.proto),
      client: s.client,
      frontend: s.other,
      backend: hostPort(e.val.natAddr, e.val.natPort),
      snat: e.val.flags & CT_F_SNAT ? hostPort(e.val.natSaddr, e.val.natSport) : null,
      state: 'unknown',
      dsr: Boolean(e.val.flags & CT_F_DSR),
      dsrSide: e.val.flags & CT_F_DSR ? 'ingress' : null,
      serviceId: e.val.svcId,
      ageSeconds: secs(e.val.created),
      idleSeconds: secs(e.val.lastSeen),
      timeoutSeconds: ctTimeout(e.key.proto, rawCtClock(e.raw)),
      entries: 'fwd-only',
    });
  }
  rows.sort((a, b) => a.frontend.localeCompare(b.frontend) || a.client.localeCompare(b.client));
  return rows;
}

export function formatCtRows(rows: CtRow[]): string {
  const header = ['PROTO', 'CLIENT', 'FRONTEND', 'BACKEND', 'SNAT', 'STATE', 'AGE', 'IDLE', 'ENTRIES'];
  const table = rows.map((r) => [
    r.proto,
    r.client,
    r.frontend,
    r.backend,
    r.snat ?? '-',
    r.state + (r.dsrSide ? ` dsr-${r.dsrSide}` : ''),
    `${r.ageSeconds}s`,
    `${r.idleSeconds}s/${r.timeoutSeconds}s`,
    r.entries,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? '').length)));
  const line = (cols: string[]) =>
    cols
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...table.map(line)].join('\n') + '\n';
}
