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
#define KPR_CT_ENTRIES		524288
#define KPR_FRAG_ENTRIES	8192

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
#define NAT_FLG_MAGLEV		0x8	/* backend by Maglev table (maglev.h), not random */
#define NAT_FLG_EXTERNAL	0x10	/* NodePort, externalIP or LB IP (not a ClusterIP) */

/* Per-Service NodePort mode (kpr.io/nodeport-mode annotation): when
 * NAT_FLG_MODE_SET is on, bits 5-6 override the node's --nodeport-mode. */
#define NAT_FLG_MODE_SET	0x20
#define NAT_FLG_MODE_SHIFT	6
#define NAT_FLG_MODE_MASK	(0x3 << NAT_FLG_MODE_SHIFT)

/* NodePort modes (kpr_config.flags bits 0-1, and the override above) */
#define NODEPORT_SNAT		0
#define NODEPORT_DSR		1
#define NODEPORT_HYBRID		2	/* DSR for TCP, SNAT for UDP */

/* nat_fe_key.addr of the NodePort entry that matches every node address. */
#define NAT_FE_NODEPORT_ANY	0xffffffff

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
 * sessionAffinity: ClientIP. The client is its IPv4 address in tc, and its
 * network namespace cookie at connect time (the source address is not
 * known yet; a pod is one netns). LRU: affinity is soft state.
 */
enum aff_client_kind {
	AFF_CLIENT_ADDR = 1,
	AFF_CLIENT_NETNS = 2,
};

struct aff_key {
	__u32 svc_id;
	__u32 kind;	/* enum aff_client_kind */
	__u64 client;
};

struct aff_val {
	struct nat_be_val be;
	__u32 ordinal;
	__u32 pad;
	__u64 last_used;	/* bpf_ktime_get_ns() */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
	__uint(max_entries, KPR_SK_NAT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_aff SEC(".maps");

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
 * Conntrack for per-packet NAT. The key is the 5-tuple normalised so the
 * lower (address, port) comes first; both directions of a leg find the same
 * entry, and CT_F_CLIENT_IS_A says which side opened it.
 *
 * A NATed flow has two entries:
 *   CT_FWD  keyed on client <-> frontend (what the client sends). It holds
 *           the backend, and the SNAT source if the flow is masqueraded.
 *   CT_REV  keyed on client' <-> backend (what is on the wire after NAT).
 *           It holds the frontend and the original client, and owns the
 *           flow's TCP state and timestamps; the controller's expiry scan
 *           reads REV entries and deletes both.
 */
struct ct_key {
	__u8 proto;
	__u8 pad[3];
	__be32 addr_a;
	__be32 addr_b;
	__u16 port_a;
	__u16 port_b;
};

enum ct_type {
	CT_FWD = 1,
	CT_REV = 2,
};

/* ct_val.flags */
#define CT_F_CLIENT_IS_A	0x01	/* the client is the (addr_a, port_a) side */
#define CT_F_SNAT		0x02	/* source rewritten to the node address */
#define CT_F_DSR		0x04	/* reply leaves from the backend's node */

/* ct_val.tcp_client / tcp_server: TCP flags seen from each side */
#define CT_TCP_SYN	0x01
#define CT_TCP_ACK	0x02
#define CT_TCP_FIN	0x04
#define CT_TCP_RST	0x08

struct ct_val {
	__u8 type;		/* enum ct_type */
	__u8 flags;		/* CT_F_* */
	__u8 tcp_client;	/* REV: flags seen from the client */
	__u8 tcp_server;	/* REV: flags seen from the backend */
	__u32 svc_id;
	__u64 created;		/* bpf_ktime_get_ns() */
	__u64 last_seen;
	/* FWD: backend, and the SNAT source (0 = none).
	 * REV: frontend (VIP:port), and the original client. */
	__be32 nat_addr;
	__be32 nat_saddr;
	__u16 nat_port;
	__u16 nat_sport;
	__u32 be_ordinal;	/* FWD: ordinal the backend was picked at */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(max_entries, KPR_CT_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_ct SEC(".maps");

/*
 * Ports of fragmented datagrams: later fragments carry no L4 header, so the
 * ports seen in the first fragment are kept here, keyed by the IP id.
 */
struct frag_key {
	__be32 saddr;
	__be32 daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};

struct frag_val {
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(max_entries, KPR_FRAG_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_frag SEC(".maps");

/*
 * Per-node settings the controller writes before it attaches tc programs:
 * one entry, so the data path needs no reload when they change.
 */
struct kpr_config {
	__be32 node_ip;		/* SNAT source and this node's NodePort address */
	__be32 cluster_cidr;	/* pod network: sources inside it are "internal" */
	__u8 cluster_cidr_len;
	__u8 pad[3];
	__u16 snat_port_min;	/* SNAT source ports are picked from this range */
	__u16 snat_port_max;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_config SEC(".maps");

/* Clients in these CIDRs never get DSR (--dsr-optout-cidrs): they fall
 * back to SNAT, e.g. for networks that drop asymmetric traffic. */
struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_dsr_optout SEC(".maps");

/* Addresses of this node: NodePort's wildcard frontend applies to them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_node_ips SEC(".maps");

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
	STAT_TC_FWD_NEW,	/* tc: new NATed flow */
	STAT_TC_FWD,		/* tc: packet of a known flow, forward NAT */
	STAT_TC_REV,		/* tc: reply reverse-NATed */
	STAT_TC_REJECT,		/* tc: no endpoint, ICMP port-unreachable sent */
	STAT_TC_DROP_POLICY,	/* tc: source range or no local endpoint */
	STAT_TC_ICMP_ERR,	/* tc: ICMP error about a NATed flow translated */
	STAT_TC_FRAG_MISS,	/* tc: later fragment with no first fragment seen */
	STAT_TC_UDP_RESELECT,	/* tc: UDP flow moved off a removed backend */
	STAT_TC_REDIRECT_FAIL,	/* tc: no route for a NATed packet; left to the stack */
	STAT_TC_SNAT_NO_PORT,	/* tc: no free SNAT port */
	STAT_TC_DSR_FWD,	/* DSR, ingress node: request sent on with the service option */
	STAT_TC_DSR_LEARN,	/* DSR, backend node: flow learnt from the option */
	STAT_TC_DSR_REPLY,	/* DSR, backend node: reply sent straight to the client */
	STAT_TC_FRAG_NEEDED,	/* ICMP frag-needed sent: no room for the DSR option */
	STAT_TC_DSR_FALLBACK,	/* DSR flow sent via SNAT (fragment, options, too big) */
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
