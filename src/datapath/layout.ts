/**
 * Names of the pinned objects kpr owns under its pin path. One place, so the
 * loader, inspect and cleanup agree.
 */
export const MAP_NAT_FE = 'kpr_v4_nat_fe';
export const MAP_NAT_BE = 'kpr_v4_nat_be';
export const MAP_SK_NAT = 'kpr_v4_sk_nat';
export const MAP_SVC_META = 'kpr_svc_meta';
export const MAP_STATS = 'kpr_stats';

export const ALL_MAPS = [MAP_NAT_FE, MAP_NAT_BE, MAP_SK_NAT, MAP_SVC_META, MAP_STATS] as const;

/** Sub-directory for pinned program links. */
export const LINKS_DIR = 'links';

export const SOCK_LB_OBJECT = 'sock_lb.bpf.o';

/** Cgroup hooks of the connect-time object: attach type -> program name. */
export const SOCK_HOOKS = {
  connect4: 'kpr_connect4',
  sendmsg4: 'kpr_sendmsg4',
  recvmsg4: 'kpr_recvmsg4',
  getpeername4: 'kpr_getpeername4',
} as const;

export type SockHook = keyof typeof SOCK_HOOKS;

/** Index names of the kpr_stats counters (enum kpr_stat in maps.h). */
export const STAT_NAMES = ['sock_xlate', 'sock_reject', 'sock_blackhole', 'sock_be_missing', 'sock_revnat'] as const;

export interface MapSizes {
  natFe: number;
  natBe: number;
  skNat: number;
  svcMeta: number;
}

/** Defaults hold 10k Services x 10 endpoints with room to spare. */
export const DEFAULT_MAP_SIZES: MapSizes = { natFe: 65536, natBe: 262144, skNat: 65536, svcMeta: 65536 };
