/**
 * `kpr inspect nat`: every frontend with its Service port's name and its
 * two backend sets, read straight from the pinned maps (like `calico-node
 * -bpf nat dump`, with names): the cluster set (ordinals 0..count-1) and the
 * node-local set (ordinals NAT_BE_LOCAL_BASE..), printed as "local:".
 */
import {
  decodeNatBeKey,
  decodeNatBeVal,
  decodeNatFeKey,
  decodeNatFeVal,
  decodeSvcMeta,
} from '../datapath/codec.js';
import type { KVMap } from '../datapath/kvmap.js';
import { addrFamily, compareAddr, hostPort, type IPFamily } from '../util/ip.js';
import {
  NAT_BE_F_LOCAL,
  NAT_BE_LOCAL_BASE,
  NAT_FE_BLACKHOLE,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MAGLEV,
  type NatBackendRow,
} from '../model/types.js';

export interface NatRow {
  family: IPFamily;
  frontend: { addr: string; port: number; proto: string; source: string };
  service: string | null;
  id: number;
  count: number;
  local: number;
  blackhole: boolean;
  affinityTimeout: number;
  flags: string[];
  /** The cluster set, ordinals 0..count-1. */
  backends: NatBackendRow[];
  /** The node-local set, ordinals NAT_BE_LOCAL_BASE..+local-1. */
  localBackends: NatBackendRow[];
  /** Ordinals of either set with no backend entry: a broken map. */
  missing: number[];
}

const PROTO_NAMES: Record<number, string> = { 6: 'TCP', 17: 'UDP', 132: 'SCTP' };

/**
 * Both families when the IPv6 maps are given: a dual-stack Service port
 * has rows in each, with the same id and name, each listing its own
 * family's backends (kpr_v6_nat_be ordinals are separate from IPv4's).
 */
export function natRows(maps: { fe: KVMap; be: KVMap; meta: KVMap; fe6?: KVMap; be6?: KVMap }): NatRow[] {
  const names = new Map<number, string>();
  for (const [k, v] of maps.meta.dump()) names.set(k.readUInt32LE(0), decodeSvcMeta(v));
  const rows: NatRow[] = [];
  const families: Array<[KVMap, KVMap]> = [[maps.fe, maps.be]];
  if (maps.fe6 && maps.be6) families.push([maps.fe6, maps.be6]);
  for (const [feMap, beMap] of families) rows.push(...familyRows(feMap, beMap, names));
  rows.sort(
    (a, b) =>
      compareAddr(a.frontend.addr, b.frontend.addr) ||
      a.frontend.port - b.frontend.port ||
      a.frontend.proto.localeCompare(b.frontend.proto) ||
      a.frontend.source.localeCompare(b.frontend.source),
  );
  return rows;
}

function familyRows(feMap: KVMap, beMap: KVMap, names: Map<number, string>): NatRow[] {
  const backends = new Map<number, Map<number, { addr: string; port: number; flags?: number }>>();
  for (const [k, v] of beMap.dump()) {
    const key = decodeNatBeKey(k);
    let m = backends.get(key.id);
    if (!m) backends.set(key.id, (m = new Map()));
    m.set(key.ordinal, decodeNatBeVal(v));
  }
  const rows: NatRow[] = [];
  for (const [k, v] of feMap.dump()) {
    const key = decodeNatFeKey(k);
    const val = decodeNatFeVal(v);
    const blackhole = val.count === NAT_FE_BLACKHOLE;
    const bes = backends.get(val.id) ?? new Map();
    const count = blackhole ? 0 : val.count;
    const row: NatRow = {
      family: addrFamily(key.addr),
      frontend: { addr: key.addr, port: key.port, proto: PROTO_NAMES[key.proto] ?? String(key.proto), source: `${key.srcAddr}/${key.srcLen}` },
      service: names.get(val.id) ?? null,
      id: val.id,
      count,
      local: val.local,
      blackhole,
      affinityTimeout: val.affinityTimeout,
      flags: [
        ...(val.flags & NAT_FLG_EXTERNAL_LOCAL ? ['external-local'] : []),
        ...(val.flags & NAT_FLG_INTERNAL_LOCAL ? ['internal-local'] : []),
        ...(val.flags & NAT_FLG_MAGLEV ? ['maglev'] : []),
        ...(val.flags & 0x20 ? [`nodeport-mode ${['snat', 'dsr', 'hybrid', '?'][(val.flags >> 6) & 3]}`] : []),
      ],
      backends: [],
      localBackends: [],
      missing: [],
    };
    const collect = (base: number, n: number, into: NatBackendRow[]) => {
      for (let i = base; i < base + n; i++) {
        const b = bes.get(i);
        if (b) into.push({ ordinal: i, addr: b.addr, port: b.port, local: ((b.flags ?? 0) & NAT_BE_F_LOCAL) !== 0 });
        else row.missing.push(i);
      }
    };
    collect(0, count, row.backends);
    collect(NAT_BE_LOCAL_BASE, blackhole ? 0 : val.local, row.localBackends);
    rows.push(row);
  }
  return rows;
}

export function formatNatRows(rows: NatRow[]): string {
  const header = ['FRONTEND', 'PROTO', 'SOURCE', 'SERVICE', 'ID', 'BACKENDS'];
  const table = rows.map((r) => {
    let bes: string;
    if (r.blackhole) bes = 'drop (source not allowed)';
    else if (r.count === 0 && r.local === 0) bes = 'none: reject';
    else {
      const list = (l: NatBackendRow[]) => l.map((b) => `${hostPort(b.addr, b.port)}${b.local ? '*' : ''}`).join(' ') || 'none';
      bes = list(r.backends);
      // The local set matters only where a Local policy reads it.
      if (r.flags.some((f) => f.endsWith('-local'))) bes += ` | local: ${r.local === 0 ? 'none: drop' : list(r.localBackends)}`;
      if (r.missing.length) bes += ` MISSING ordinals ${r.missing.join(',')}`;
    }
    const extra = [...r.flags, ...(r.affinityTimeout ? [`affinity ${r.affinityTimeout}s`] : [])];
    return [
      hostPort(r.frontend.addr, r.frontend.port),
      r.frontend.proto,
      r.frontend.source,
      r.service ?? '(unnamed)',
      String(r.id),
      bes + (extra.length ? ` [${extra.join(', ')}]` : ''),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? '').length)));
  const line = (cols: string[]) =>
    cols
      .map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const out = [line(header), ...table.map(line)];
  if (rows.some((r) => r.backends.some((b) => b.local))) out.push('(* = node-local backend; "local:" = the set Local traffic policy uses)');
  return out.join('\n') + '\n';
}
