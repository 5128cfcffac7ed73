/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Map definitions shared by every kpr BPF object.
 *
 * The layout follows Calico's NAT maps (nat_fe / nat_be) with a "kpr_" prefix
 * so kpr never collides with a Calico install on the same host. Every map is
 * pinned by name: the controller's pin root (default /sys/fs/bpf/kpr) keeps
 * the data path alive while the controller restarts, and separate objects
 * (connect-time, tc) share one set of maps through those pins.
 *
 * Byte order convention, chosen so `bpftool map dump` is readable:
 *   addresses are network order (__be32), ports are HOST order (__u16).
 *
 * Every struct here has a byte-exact twin in src/datapath/codec.ts.
 */
#ifndef KPR_MAPS_H
#define KPR_MAPS_H

#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

/* Default sizes hold 10k Services x 10 endpoints with headroom; the controller
 * overrides max_entries from its flags before load. */
#define KPR_NAT_FE_ENTRIES	65536
#define KPR_NAT_BE_ENTRIES	262144
#define KPR_SK_NAT_ENTRIES	65536
#define KPR_SVC_META_ENTRIES	65536

/*
 * Frontend key. An LPM trie so that loadBalancerSourceRanges can live in the
 * key: address, port and protocol (56 bits) must always match exactly, the
 * source prefix matches on its CIDR length. prefixlen = 56 + source prefix.
 * A Service without source ranges is stored with saddr 0.0.0.0/0.
 */
struct nat_fe_key {
	__u32 prefixlen;
	__be32 addr;	/* VIP, node IP, external or LB IP */
	__u16 port;
	__u8 proto;	/* IPPROTO_TCP / IPPROTO_UDP */
	__be32 saddr;	/* client source prefix */
	__u8 pad;
} __attribute__((packed));

#define NAT_FE_PREFIX_BASE	56	/* addr + port + proto */
#define NAT_FE_PREFIX_FULL	(NAT_FE_PREFIX_BASE + 32)

/* nat_fe_val.flags */
#define NAT_FLG_EXTERNAL_LOCAL	0x1	/* externalTrafficPolicy: Local */
#define NAT_FLG_INTERNAL_LOCAL	0x2	/* internalTrafficPolicy: Local */

/* count value that marks a source-range blackhole: matched, never served. */
#define NAT_FE_BLACKHOLE	0xffffffffu

struct nat_fe_val {
	__u32 id;		/* service port id, stable across restarts */
	__u32 count;		/* backends at ordinals 0..count-1 */
	__u32 local;		/* node-local backends, at ordinals 0..local-1 */
	__u32 affinity_timeout;	/* sessionAffinity ClientIP, seconds; 0 = off */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nat_fe_key);
	__type(value, struct nat_fe_val);
	__uint(max_entries, KPR_NAT_FE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_nat_fe SEC(".maps");

struct nat_be_key {
	__u32 id;
	__u32 ordinal;
};

struct nat_be_val {
	__be32 addr;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_be_key);
	__type(value, struct nat_be_val);
	__uint(max_entries, KPR_NAT_BE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_nat_be SEC(".maps");

/*
 * Socket-level reverse NAT for connect-time load balancing: which Service
 * address a socket originally asked for, keyed by the socket and the backend
 * it was sent to. recvmsg4 and getpeername4 use it so the application only
 * ever sees the VIP. LRU, because sockets close without telling us.
 */
struct sk_nat_key {
	__u64 cookie;	/* bpf_get_socket_cookie() */
	__be32 addr;	/* backend address */
	__u16 port;	/* backend port */
	__u16 pad;
};

struct sk_nat_val {
	__be32 addr;	/* Service address the socket asked for */
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sk_nat_key);
	__type(value, struct sk_nat_val);
	__uint(max_entries, KPR_SK_NAT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_sk_nat SEC(".maps");

/*
 * Userspace-only: the name ("namespace/name:port/PROTO") behind each service
 * id. It lets a restarted controller adopt the ids already in the maps, and
 * lets `kpr inspect` and bpftool print names. The data path never reads it.
 */
#define SVC_META_NAME_LEN	192

struct svc_meta {
	char name[SVC_META_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct svc_meta);
	__uint(max_entries, KPR_SVC_META_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_svc_meta SEC(".maps");

/*
 * Data-path counters, per CPU so the hot path never contends. The controller
 * sums them for /metrics; tests read them to prove which path a packet took.
 */
enum kpr_stat {
	STAT_SOCK_XLATE = 0,	/* socket sent to a backend */
	STAT_SOCK_REJECT,	/* Service without ready endpoints */
	STAT_SOCK_BLACKHOLE,	/* source outside loadBalancerSourceRanges */
	STAT_SOCK_BE_MISSING,	/* ordinal < count but no backend entry */
	STAT_SOCK_REVNAT,	/* recvmsg/getpeername reported the VIP */
	STAT_MAX = 32,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&kpr_stats, &idx);

	if (v)
		*v += 1;
}

#endif /* KPR_MAPS_H */
