/**
 * The TypeScript side of kpr's ABI with the BPF programs (bpf/include/abi.h):
 * the size and field offsets of every struct the controller encodes, and the
 * value of every constant both sides use, by their C names. checkAbi()
 * compares this with the BTF of the compiled objects; bpf/check-abi.ts
 * runs it at build time. The codecs (codec.ts) take every size and offset
 * from these tables, so what the build checked is what they write.
 */
import {
  NAT_BE_F_LOCAL,
  NAT_BE_LOCAL_BASE,
  NAT_FE_BLACKHOLE,
  NAT_FLG_EXTERNAL,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MAGLEV,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
  NODEPORT_ANY,
  NODEPORT_MODES,
} from '../model/types.js';
import { ipv4ToNumber } from '../util/ipv4.js';

export interface StructLayout {
  size: number;
  /** field name -> byte offset */
  fields: Record<string, number>;
}

/** Every struct the controller encodes or decodes, by its C name. */
export const STRUCTS = {
  nat_fe_key: { size: 16, fields: { prefixlen: 0, addr: 4, port: 8, proto: 10, saddr: 11, pad: 15 } },
  nat_fe_val: { size: 20, fields: { id: 0, count: 4, local: 8, affinity_timeout: 12, flags: 16 } },
  nat_be_key: { size: 8, fields: { id: 0, ordinal: 4 } },
  nat_be_val: { size: 8, fields: { addr: 0, port: 4, flags: 6 } },
  sk_nat_key: { size: 16, fields: { cookie: 0, addr: 8, port: 12, pad: 14 } },
  svc_meta: { size: 192, fields: { name: 0 } },
  maglev_chunk: { size: 64, fields: { w: 0 } },
  frag_key: { size: 12, fields: { saddr: 0, daddr: 4, id: 8, proto: 10, pad: 11 } },
  frag_val: { size: 4, fields: { sport: 0, dport: 2 } },
  ct_key: { size: 16, fields: { proto: 0, pad: 1, addr_a: 4, addr_b: 8, port_a: 12, port_b: 14 } },
  ct_val: {
    size: 40,
    fields: {
      type: 0,
      flags: 1,
      tcp_client: 2,
      tcp_server: 3,
      svc_id: 4,
      created: 8,
      last_seen: 16,
      nat_addr: 24,
      nat_saddr: 28,
      nat_port: 32,
      nat_sport: 34,
      be_ordinal: 36,
    },
  },
  kpr_config: {
    size: 20,
    fields: { node_ip: 0, cluster_cidr: 4, cluster_cidr_len: 8, pad: 9, snat_port_min: 12, snat_port_max: 14, flags: 16 },
  },
  kpr_sock_config: { size: 8, fields: { node_netns_cookie: 0 } },
  lpm_v4_key: { size: 8, fields: { prefixlen: 0, addr: 4 } },
  sock_destroy_key: { size: 12, fields: { svc_id: 0, addr: 4, port: 8, pad: 10 } },
  sock_destroy_rec: { size: 24, fields: { cookie: 0, addr: 8, port: 12, proto: 14, pad: 15, err: 16, svc_id: 20 } },
} as const satisfies Record<string, StructLayout>;

/**
 * The IPv6 twin of an IPv4 layout (abi.h): every named address field is 12
 * bytes wider and every field after it moves along by as much. This is the
 * whole design rule of the kpr_v6_* structs; check-abi holds C to it.
 */
function widened<F extends Record<string, number>>(
  v4: { size: number; fields: F },
  addrFields: ReadonlyArray<keyof F>,
): { size: number; fields: { [K in keyof F]: number } } {
  const fields = {} as { [K in keyof F]: number };
  let shift = 0;
  for (const [name, off] of Object.entries(v4.fields).sort((a, b) => a[1] - b[1])) {
    fields[name as keyof F] = off + shift;
    if (addrFields.includes(name)) shift += 12;
  }
  return { size: v4.size + shift, fields };
}

/** The IPv6 structs the controller encodes or decodes (kpr_v6_* maps). */
export const STRUCTS6 = {
  nat_fe6_key: widened(STRUCTS.nat_fe_key, ['addr', 'saddr']),
  nat_be6_val: widened(STRUCTS.nat_be_val, ['addr']),
  ct6_key: widened(STRUCTS.ct_key, ['addr_a', 'addr_b']),
  ct6_val: widened(STRUCTS.ct_val, ['nat_addr', 'nat_saddr']),
  sock_destroy6_key: widened(STRUCTS.sock_destroy_key, ['addr']),
  /** kpr_v6_config: the IPv6 side of kpr_config (SNAT ports and mode stay there). */
  kpr_config6: { size: 36, fields: { node_ip: 0, cluster_cidr: 16, cluster_cidr_len: 32, flags: 33, pad: 34 } },
  node_ip6_key: { size: 16, fields: { addr: 0 } },
  /** kpr_v6_dsr_peers */
  lpm_v6_key: widened(STRUCTS.lpm_v4_key, ['addr']),
  /** kpr_v6_frag: not a widened frag_key, the IPv6 fragment id is 32 bits. */
  frag6_key: { size: 40, fields: { saddr: 0, daddr: 16, id: 32, proto: 36, pad: 37 } },
} as const satisfies Record<string, StructLayout>;

export const ABI_STRUCTS: Record<string, StructLayout> = { ...STRUCTS, ...STRUCTS6 };

/** Bits of the LPM key that always match exactly: address, port, protocol. */
export const NAT_FE_PREFIX_BASE = 56;
/** The same for nat_fe6_key: 128 + 16 + 8. */
export const NAT_FE6_PREFIX_BASE = 152;

/** Maglev table words per inner-map value (struct maglev_chunk), both families' tables. */
export const MAGLEV_CHUNK = 16;

/** kpr_config6.flags: IPv6 DSR peers are known (bpf/include/abi.h) */
export const KPR_CFG6_F_DSR = 0x01;

/** ct_val.type */
export const CT_FWD = 1;
export const CT_REV = 2;
/** ct_val.flags */
export const CT_F_CLIENT_IS_A = 0x01;
export const CT_F_SNAT = 0x02;
export const CT_F_DSR = 0x04;
/** ct_val.tcp_client / tcp_server */
export const CT_TCP_SYN = 0x01;
export const CT_TCP_ACK = 0x02;
export const CT_TCP_FIN = 0x04;
export const CT_TCP_RST = 0x08;
/** REV, client side: be_ordinal holds the client's newest TSval (bpf/include/snat.h) */
export const CT_TCP_TS = 0x10;

/** Index names of the kpr_stats counters (enum kpr_stat), STAT_<NAME> in C. */
export const STAT_NAMES = [
  'sock_xlate',
  'sock_reject',
  'sock_blackhole',
  'sock_be_missing',
  'sock_revnat',
  'tc_fwd_new',
  'tc_fwd',
  'tc_rev',
  'tc_reject',
  'tc_drop_policy',
  'tc_icmp_err',
  'tc_frag_miss',
  'tc_udp_reselect',
  'tc_redirect_fail',
  'tc_snat_no_port',
  'tc_dsr_fwd',
  'tc_dsr_learn',
  'tc_dsr_reply',
  'tc_frag_needed',
  'tc_dsr_fallback',
  'tc_ct_collision',
  'tc_ct_race',
  'tc_dsr_untrusted',
  'sock_udp_sticky',
  'sock_slot_overflow',
  'sock_drop_policy',
  'tc_v6_unparsed',
  'tc_v6_frag',
  'tc_ct_rev_closed',
  'tc_snat_no_addr',
] as const;

export type StatName = (typeof STAT_NAMES)[number];

/** C constant name -> the value TypeScript uses for it. */
export const ABI_CONSTANTS: Record<string, number> = {
  NAT_FE_PREFIX_BASE,
  NAT_FE6_PREFIX_BASE,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MAGLEV,
  NAT_FLG_EXTERNAL,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
  NODEPORT_SNAT: NODEPORT_MODES.snat,
  NODEPORT_DSR: NODEPORT_MODES.dsr,
  NODEPORT_HYBRID: NODEPORT_MODES.hybrid,
  KPR_CFG6_F_DSR,
  MAGLEV_CHUNK,
  // the wildcard NodePort address, as the u32 the key holds
  NAT_FE_NODEPORT_ANY: ipv4ToNumber(NODEPORT_ANY),
  NAT_FE_BLACKHOLE,
  NAT_BE_LOCAL_BASE,
  NAT_BE_F_LOCAL,
  CT_FWD,
  CT_REV,
  CT_F_CLIENT_IS_A,
  CT_F_SNAT,
  CT_F_DSR,
  CT_TCP_SYN,
  CT_TCP_ACK,
  CT_TCP_FIN,
  CT_TCP_RST,
  CT_TCP_TS,
  ...Object.fromEntries(STAT_NAMES.map((n, i) => [`STAT_${n.toUpperCase()}`, i])),
};

/** The few fields of `bpftool -j btf dump` output that are compared. */
export interface BtfType {
  kind: string;
  name?: string;
  size?: number;
  members?: Array<{ name: string; bits_offset: number }>;
  values?: Array<{ name: string; val: number | string }>;
}

/**
 * Parse `bpftool -j btf dump file X` output. bpftool prints unsigned 32-bit
 * enum values above INT_MAX sign-extended to 64 bits, beyond a double's
 * precision: they are read as BigInt and cut to 32 bits.
 */
export function parseBtfJson(text: string): BtfType[] {
  const quoted = text.replace(/"val":\s*(-?\d{10,})/g, '"val": "$1"');
  return (JSON.parse(quoted) as { types: BtfType[] }).types.map((t) => ({
    ...t,
    ...(t.values ? { values: t.values.map((v) => ({ name: v.name, val: Number(BigInt(v.val) & 0xffffffffn) })) } : {}),
  }));
}

/**
 * Every difference between the BTF of one object and the tables above.
 * `complete`: the object must define every struct and constant (the ABI
 * anchor object); otherwise only what it defines is compared.
 */
export function checkAbi(types: BtfType[], complete: boolean): string[] {
  const problems: string[] = [];
  const structs = new Map(types.filter((t) => t.kind === 'STRUCT' && t.name).map((t) => [t.name as string, t]));
  for (const [name, want] of Object.entries(ABI_STRUCTS)) {
    const t = structs.get(name);
    if (!t) {
      if (complete) problems.push(`struct ${name}: not in the BTF`);
      continue;
    }
    if (t.size !== want.size) problems.push(`struct ${name}: size ${t.size} in C, ${want.size} in TypeScript`);
    const members = new Map((t.members ?? []).map((m) => [m.name, m.bits_offset / 8]));
    for (const [field, off] of Object.entries(want.fields)) {
      const got = members.get(field);
      if (got === undefined) problems.push(`struct ${name}: no field ${field} in C`);
      else if (got !== off) problems.push(`struct ${name}.${field}: offset ${got} in C, ${off} in TypeScript`);
    }
    for (const field of members.keys()) {
      if (!(field in want.fields)) problems.push(`struct ${name}.${field}: in C, unknown to TypeScript`);
    }
  }
  const values = new Map<string, number>();
  for (const t of types) if (t.kind === 'ENUM') for (const v of t.values ?? []) values.set(v.name, Number(v.val));
  for (const [name, want] of Object.entries(ABI_CONSTANTS)) {
    const got = values.get(name);
    if (got === undefined) {
      if (complete) problems.push(`${name}: not in the BTF`);
    } else if (got !== want) problems.push(`${name}: ${got} in C, ${want} in TypeScript`);
  }
  // Every counter the programs count must have a name on the TypeScript side.
  for (const [name, val] of values) {
    if (name.startsWith('STAT_') && name !== 'STAT_MAX' && !(name in ABI_CONSTANTS)) {
      problems.push(`${name} (= ${val}): in C, missing from STAT_NAMES`);
    }
  }
  return problems;
}
