/**
 * The TypeScript side of kpr's ABI with the BPF programs (bpf/include/abi.h):
 * the size and field offsets of every struct the controller encodes, and the
 * value of every constant both sides use, by their C names. checkAbi()
 * compares this with the BTF of the compiled objects; scripts/check-abi.ts
 * runs it at build time, and the unit test checks that the codecs write each
 * field at the offset given here.
 */
import {
  CT_F_CLIENT_IS_A,
  CT_F_DSR,
  CT_F_SNAT,
  CT_FWD,
  CT_KEY_SIZE,
  CT_REV,
  CT_TCP_ACK,
  CT_TCP_FIN,
  CT_TCP_RST,
  CT_TCP_SYN,
  CT_VAL_SIZE,
  KPR_CONFIG_SIZE,
  NAT_BE_KEY_SIZE,
  NAT_BE_VAL_SIZE,
  NAT_FE_KEY_SIZE,
  NAT_FE_PREFIX_BASE,
  NAT_FE_VAL_SIZE,
  SVC_META_NAME_LEN,
} from './codec.js';
import { NODEPORT_MODES, STAT_NAMES } from './layout.js';
import {
  NAT_BE_F_LOCAL,
  NAT_BE_LOCAL_BASE,
  NAT_FE_BLACKHOLE,
  NAT_FLG_EXTERNAL,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
} from '../model/types.js';
import { ipv4ToNumber } from '../util/ipv4.js';
import { NODEPORT_ANY } from '../model/types.js';

export interface StructLayout {
  size: number;
  /** field name -> byte offset */
  fields: Record<string, number>;
}

export const ABI_STRUCTS: Record<string, StructLayout> = {
  nat_fe_key: { size: NAT_FE_KEY_SIZE, fields: { prefixlen: 0, addr: 4, port: 8, proto: 10, saddr: 11, pad: 15 } },
  nat_fe_val: { size: NAT_FE_VAL_SIZE, fields: { id: 0, count: 4, local: 8, affinity_timeout: 12, flags: 16 } },
  nat_be_key: { size: NAT_BE_KEY_SIZE, fields: { id: 0, ordinal: 4 } },
  nat_be_val: { size: NAT_BE_VAL_SIZE, fields: { addr: 0, port: 4, flags: 6 } },
  svc_meta: { size: SVC_META_NAME_LEN, fields: { name: 0 } },
  ct_key: { size: CT_KEY_SIZE, fields: { proto: 0, pad: 1, addr_a: 4, addr_b: 8, port_a: 12, port_b: 14 } },
  ct_val: {
    size: CT_VAL_SIZE,
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
    size: KPR_CONFIG_SIZE,
    fields: { node_ip: 0, cluster_cidr: 4, cluster_cidr_len: 8, pad: 9, snat_port_min: 12, snat_port_max: 14, flags: 16 },
  },
  lpm_v4_key: { size: 8, fields: { prefixlen: 0, addr: 4 } },
};

/** C constant name -> the value TypeScript uses for it. */
export const ABI_CONSTANTS: Record<string, number> = {
  NAT_FE_PREFIX_BASE,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_EXTERNAL,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
  NODEPORT_SNAT: NODEPORT_MODES.snat,
  NODEPORT_DSR: NODEPORT_MODES.dsr,
  NODEPORT_HYBRID: NODEPORT_MODES.hybrid,
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
