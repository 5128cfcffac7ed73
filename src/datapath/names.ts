/**
 * Names of what kpr loads and pins: maps, objects, programs, the pin path's
 * sub-directories, its tc filter identity, and the map sizes. One place, so
 * Datapath, inspect and cleanup agree.
 */
export const MAP_NAT_FE = 'kpr_v4_nat_fe';
export const MAP_NAT_BE = 'kpr_v4_nat_be';
/** Overflow of kpr_v4_sk_lb's per-socket slots (LRU). */
export const MAP_SK_NAT = 'kpr_v4_sk_nat';
/** Per-socket load-balancing state (socket-local storage). */
export const MAP_SK_LB = 'kpr_v4_sk_lb';
export const MAP_SVC_META = 'kpr_svc_meta';
export const MAP_STATS = 'kpr_stats';
export const MAP_CT = 'kpr_v4_ct';
export const MAP_FRAG = 'kpr_v4_frag';
export const MAP_CONFIG = 'kpr_config';
/** The connect-time hooks' settings (struct kpr_sock_config). */
export const MAP_SOCK_CONFIG = 'kpr_sock_config';
export const MAP_NODE_IPS = 'kpr_v4_node_ips';
export const MAP_DSR_OPTOUT = 'kpr_v4_dsr_optout';
export const MAP_DSR_PEERS = 'kpr_v4_dsr_peers';
export const MAP_AFFINITY = 'kpr_v4_aff';
/** Maglev tables (bpf/include/maglev.h): declared by the tc object only. */
export const MAP_MAGLEV = 'kpr_v4_maglev';
/** kpr_v4_maglev's IPv6 twin: the tables of the IPv6 backend sets, by the same service id. */
export const MAP_V6_MAGLEV = 'kpr_v6_maglev';

/* IPv6 twins (bpf/include/maps6.h); kpr_svc_meta, kpr_config and kpr_stats are shared. */
export const MAP_V6_NAT_FE = 'kpr_v6_nat_fe';
export const MAP_V6_NAT_BE = 'kpr_v6_nat_be';
export const MAP_V6_SK_LB = 'kpr_v6_sk_lb';
export const MAP_V6_SK_NAT = 'kpr_v6_sk_nat';
export const MAP_V6_AFFINITY = 'kpr_v6_aff';
export const MAP_V6_CT = 'kpr_v6_ct';
/** The IPv6 side of the node for the tc programs (struct kpr_config6). */
export const MAP_V6_CONFIG = 'kpr_v6_config';
export const MAP_V6_NODE_IPS = 'kpr_v6_node_ips';
export const MAP_V6_DSR_PEERS = 'kpr_v6_dsr_peers';
export const MAP_V6_DSR_OPTOUT = 'kpr_v6_dsr_optout';
/** Ports of fragmented IPv6 datagrams: kpr_v4_frag's twin. */
export const MAP_V6_FRAG = 'kpr_v6_frag';

export const ALL_MAPS = [
  MAP_NAT_FE,
  MAP_NAT_BE,
  MAP_SK_NAT,
  MAP_SK_LB,
  MAP_SVC_META,
  MAP_STATS,
  MAP_CT,
  MAP_FRAG,
  MAP_CONFIG,
  MAP_SOCK_CONFIG,
  MAP_NODE_IPS,
  MAP_DSR_OPTOUT,
  MAP_DSR_PEERS,
  MAP_AFFINITY,
  MAP_MAGLEV,
  MAP_V6_NAT_FE,
  MAP_V6_NAT_BE,
  MAP_V6_SK_LB,
  MAP_V6_SK_NAT,
  MAP_V6_AFFINITY,
  MAP_V6_CT,
  MAP_V6_CONFIG,
  MAP_V6_NODE_IPS,
  MAP_V6_DSR_PEERS,
  MAP_V6_DSR_OPTOUT,
  MAP_V6_FRAG,
  MAP_V6_MAGLEV,
] as const;

/** Sub-directory for pinned program links. */
export const LINKS_DIR = 'links';

/** Sub-directory for pinned tc programs (marks a pin path that owns tc filters). */
export const PROGS_DIR = 'progs';

export const SOCK_LB_OBJECT = 'sock_lb.bpf.o';
export const TC_NAT_OBJECT = 'tc_nat.bpf.o';
export const SOCK_DESTROY_OBJECT = 'sock_destroy.bpf.o';

/** Socket iterators of the sock-destroy object, by protocol. */
export const SOCK_DESTROY_PROGRAMS = { udp: 'kpr_destroy_udp', tcp: 'kpr_destroy_tcp' } as const;

/** tc programs by the role of the device they sit on. */
export const TC_PROGRAMS = {
  host: { ingress: 'kpr_from_host', egress: 'kpr_to_host' },
  pod: { ingress: 'kpr_from_pod', egress: 'kpr_to_pod' },
} as const;

export type TcRole = keyof typeof TC_PROGRAMS;

/** kpr's tc filters are recognised by this handle and priority. */
export const TC_HANDLE = 0x6b70;
export const TC_PRIORITY = 1;

/** Cgroup hooks of the connect-time object: attach type -> program name. */
export const SOCK_HOOKS = {
  connect4: 'kpr_connect4',
  sendmsg4: 'kpr_sendmsg4',
  recvmsg4: 'kpr_recvmsg4',
  getpeername4: 'kpr_getpeername4',
  // AF_INET6 sockets: IPv6 Services, and IPv4 ones reached as ::ffff:a.b.c.d
  connect6: 'kpr_connect6',
  sendmsg6: 'kpr_sendmsg6',
  recvmsg6: 'kpr_recvmsg6',
  getpeername6: 'kpr_getpeername6',
} as const;

export type SockHook = keyof typeof SOCK_HOOKS;

export interface MapSizes {
  natFe: number;
  natBe: number;
  skNat: number;
  svcMeta: number;
  /** conntrack entries (kpr_v4_ct, LRU) */
  ct?: number;
  /** Maglev tables per family, one per Service port with Maglev frontends of that family (kpr_v4_maglev, kpr_v6_maglev) */
  maglev?: number;
}

/** Defaults hold 10k Services x 10 endpoints with room to spare. */
export const DEFAULT_MAP_SIZES: MapSizes = { natFe: 65536, natBe: 262144, skNat: 65536, svcMeta: 65536, ct: 524288, maglev: 8192 };
