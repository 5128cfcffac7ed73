/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The IPv6 maps: kpr_v6_* twins of the IPv4 maps in maps.h, as Calico has
 * cali_v6_*. Same types, sizes (the controller overrides them with the
 * IPv4 map's size) and pinning; keys and values from abi.h. kpr_svc_meta,
 * kpr_config and kpr_stats are shared by both families; kpr_v6_config
 * holds only the IPv6 side of the node.
 */
#ifndef KPR_MAPS6_H
#define KPR_MAPS6_H

#include "maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nat_fe6_key);
	__type(value, struct nat_fe_val);
	__uint(max_entries, KPR_NAT_FE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_nat_fe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_be_key);
	__type(value, struct nat_be6_val);
	__uint(max_entries, KPR_NAT_BE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_nat_be SEC(".maps");

/* AF_INET6 sockets balanced to an IPv6 Service; a socket that reached an
 * IPv4 Service through a v4-mapped address uses kpr_v4_sk_lb. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__type(key, int);
	__type(value, struct sk_lb6_state);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_sk_lb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sk_nat6_key);
	__type(value, struct sk_nat6_val);
	__uint(max_entries, KPR_SK_NAT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_sk_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct aff6_key);
	__type(value, struct aff6_val);
	__uint(max_entries, KPR_SK_NAT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_aff SEC(".maps");

/* Conntrack for per-packet IPv6 NAT: the same FWD/REV design as kpr_v4_ct,
 * written by the same code (conntrack.h's family-neutral part). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct ct6_val);
	__uint(max_entries, KPR_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_ct SEC(".maps");

/* The IPv6 side of kpr_config: written by the controller before it
 * attaches tc programs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_config6);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_config SEC(".maps");

/* This node's IPv6 addresses: NodePort's wildcard frontend applies to them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct node_ip6_key);
	__type(value, __u32);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_node_ips SEC(".maps");

/* kpr_v4_dsr_peers' twin: the cluster nodes' IPv6 addresses, trusted to
 * send the IPv6 DSR header (dsr6.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_dsr_peers SEC(".maps");

/* kpr_v4_dsr_optout's twin: IPv6 clients that always get SNAT. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_dsr_optout SEC(".maps");

/* kpr_v4_frag's twin: the ports of a fragmented IPv6 datagram's first
 * fragment, for its later fragments, by the fragment header's 32-bit id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag6_key);
	__type(value, struct frag_val);
	__uint(max_entries, KPR_FRAG_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v6_frag SEC(".maps");

#endif /* KPR_MAPS6_H */
