/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * kpr's ABI between the BPF programs and the controller: every struct that
 * is a map key or value, every flag and enum stored in them, and the
 * counter indexes. The map definitions are in maps.h.
 *
 * Constants are enums, not #defines, so they reach the objects' BTF:
 * bpf/check-abi.ts reads the BTF of the compiled objects at build time
 * and fails the build when a size, an offset or a value differs from the
 * TypeScript side (src/datapath/abi.ts, whose tables codec.ts encodes with). The
 * _Static_asserts below pin the layouts here as well.
 *
 * Byte order convention, chosen so `bpftool map dump` is readable:
 *   addresses are network order (__be32), ports are HOST order (__u16).
 *
 * Pinned maps outlive a kpr version. A change to what a pinned map's
 * entries mean (a layout, or where entries live) must bump that map's
 * layout version in src/datapath/migrate.ts and add a migration step, so
 * an upgrade converts the old entries instead of misreading them
 * (docs/deploy.md, "Upgrades"). kpr_v4_nat_be is at layout 2.
 */
#ifndef KPR_ABI_H
#define KPR_ABI_H

#include <linux/types.h>
#include <stddef.h>

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

enum nat_fe_prefix {
	NAT_FE_PREFIX_BASE = 56,	/* addr + port + proto */
	NAT_FE_PREFIX_FULL = 56 + 32,
};

/* nat_fe_val.flags */
enum nat_fe_flag {
	NAT_FLG_EXTERNAL_LOCAL = 0x1,	/* externalTrafficPolicy: Local */
	NAT_FLG_INTERNAL_LOCAL = 0x2,	/* internalTrafficPolicy: Local */
	NAT_FLG_MAGLEV = 0x8,		/* backend by Maglev table (maglev.h), not random */
	NAT_FLG_EXTERNAL = 0x10,	/* NodePort, externalIP or LB IP (not a ClusterIP) */

	/* Per-Service NodePort mode (kpr.io/nodeport-mode annotation): when
	 * NAT_FLG_MODE_SET (bit 5) is on, bits 6-7 override the node's
	 * --nodeport-mode. */
	NAT_FLG_MODE_SET = 0x20,
	NAT_FLG_MODE_SHIFT = 6,
	NAT_FLG_MODE_MASK = 0x3 << 6,
};

/* NodePort modes (kpr_config.flags bits 0-1, and the override above) */
enum nodeport_mode {
	NODEPORT_SNAT = 0,
	NODEPORT_DSR = 1,
	NODEPORT_HYBRID = 2,	/* DSR for TCP, SNAT for UDP */
};

enum nat_fe_special {
	/* nat_fe_key.addr of the NodePort entry that matches every node address. */
	NAT_FE_NODEPORT_ANY = 0xffffffffu,
	/* count value that marks a source-range blackhole: matched, never served. */
	NAT_FE_BLACKHOLE = 0xffffffffu,
};

/*
 * A Service port has two backend sets in nat_be, each falling back to
 * serving-and-terminating endpoints on its own (kube-proxy's
 * CategorizeEndpoints), so neither is a subset of the other:
 *   cluster set (Cluster traffic policy): ordinals 0..count-1
 *   local set   (Local traffic policy):   ordinals NAT_BE_LOCAL_BASE..+local-1
 * The same endpoint may sit in both, once per set.
 */
enum nat_be_ordinal {
	NAT_BE_LOCAL_BASE = 0x80000000u,
};

struct nat_fe_val {
	__u32 id;		/* service port id, stable across restarts */
	__u32 count;		/* cluster set: ordinals 0..count-1 */
	__u32 local;		/* local set: ordinals NAT_BE_LOCAL_BASE..+local-1 */
	__u32 affinity_timeout;	/* sessionAffinity ClientIP, seconds; 0 = off */
	__u32 flags;
};

struct nat_be_key {
	__u32 id;
	__u32 ordinal;
};

/* nat_be_val.flags */
enum nat_be_flag {
	NAT_BE_F_LOCAL = 0x1,	/* the endpoint runs on this node */
};

struct nat_be_val {
	__be32 addr;
	__u16 port;
	__u16 flags;	/* NAT_BE_F_* */
};

/* Per-socket state (kpr_v4_sk_lb): one slot per conversation. */
enum sk_lb_const {
	SK_LB_SLOTS = 4,
	SK_LB_F_REPLIED = 0x1,	/* the backend answered: UDP "stream" timeout */
};

struct sk_lb_slot {
	__be32 vip;		/* 0 = free slot */
	__u16 vport;
	__u8 flags;		/* SK_LB_F_* */
	__u8 pad;
	__be32 be_addr;
	__u16 be_port;
	__u16 pad2;
	__u32 svc_id;
	__u32 ordinal;		/* where be was last seen in kpr_v4_nat_be */
	__u64 last_used;	/* bpf_ktime_get_ns() of the last datagram either way */
};

struct sk_lb_state {
	struct sk_lb_slot slot[SK_LB_SLOTS];
};

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

#define SVC_META_NAME_LEN	192

struct svc_meta {
	char name[SVC_META_NAME_LEN];
};

/*
 * One value of a Maglev table's inner ARRAY (maglev.h), in kpr_v4_maglev
 * and kpr_v6_maglev alike: MAGLEV_CHUNK words of the table (word 0 M,
 * words 1..M the slots' backend ordinals, word M+1 the digest). An ARRAY
 * rounds each value up to 8 bytes, so one u32 per value would double the
 * memory.
 */
enum maglev_const {
	MAGLEV_CHUNK = 16,	/* a power of two: word & (MAGLEV_CHUNK - 1) */
};

struct maglev_chunk {
	__u32 w[MAGLEV_CHUNK];
};

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
enum ct_flag {
	CT_F_CLIENT_IS_A = 0x01,	/* the client is the (addr_a, port_a) side */
	CT_F_SNAT = 0x02,		/* source rewritten to the node address */
	CT_F_DSR = 0x04,		/* reply leaves from the backend's node */
};

/* ct_val.tcp_client / tcp_server: TCP flags seen from each side */
enum ct_tcp_flag {
	CT_TCP_SYN = 0x01,
	CT_TCP_ACK = 0x02,
	CT_TCP_FIN = 0x04,
	CT_TCP_RST = 0x08,
	CT_TCP_TS = 0x10,	/* REV, client: be_ordinal holds its TIME_WAIT mark (snat.h) */
};

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
	__u32 be_ordinal;	/* FWD: ordinal the backend was picked at;
				 * REV, TCP: the client's newest TSval (snat_tw_note) */
};

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

struct kpr_config {
	__be32 node_ip;		/* SNAT source and this node's NodePort address */
	__be32 cluster_cidr;	/* pod network: sources inside it are "internal" */
	__u8 cluster_cidr_len;
	__u8 pad[3];
	__u16 snat_port_min;	/* SNAT source ports are picked from this range */
	__u16 snat_port_max;
	__u32 flags;
};

/*
 * Settings of the connect-time hooks (kpr_sock_config, one entry). The
 * node's own sockets are those in kpr's network namespace: its cookie
 * (SO_NETNS_COOKIE, as bpf_get_netns_cookie() reports it), 0 until kpr
 * has written it, which matches no socket.
 */
struct kpr_sock_config {
	__u64 node_netns_cookie;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

/* kpr_sock_destroy_be key (sock_destroy.bpf.c): a backend that left a
 * Service, written by the controller for one iterator run. */
struct sock_destroy_key {
	__u32 svc_id;
	__be32 addr;
	__u16 port;
	__u16 pad;
};

/* What the socket iterators print: one record per socket they aborted. */
struct sock_destroy_rec {
	__u64 cookie;
	__be32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
	__s32 err;	/* bpf_sock_destroy() result, 0 = destroyed */
	__u32 svc_id;
};

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
	STAT_TC_FRAG_NEEDED,	/* frag-needed or ICMPv6 Packet Too Big sent: no room for the DSR option */
	STAT_TC_DSR_FALLBACK,	/* DSR flow sent via SNAT (fragment, options, too big) */
	STAT_TC_CT_COLLISION,	/* new flow's own tuple held by another flow: masqueraded */
	STAT_TC_CT_RACE,	/* another CPU created the flow first; its entries used */
	STAT_TC_DSR_UNTRUSTED,	/* DSR option from a non-node source: dropped */
	STAT_SOCK_UDP_STICKY,	/* unconnected UDP datagram kept on its conversation's backend */
	STAT_SOCK_SLOT_OVERFLOW,	/* socket slots full: a conversation moved to kpr_v4_sk_nat */
	STAT_SOCK_DROP_POLICY,	/* connect-time: traffic policy Local, no local endpoint */
	STAT_TC_V6_UNPARSED,	/* tc: IPv6 packet not parsed (truncated, ext-header chain too long): passed */
	STAT_TC_V6_FRAG,	/* tc: IPv6 fragment passed untranslated (not TCP/UDP right after the fragment header) */
	STAT_TC_CT_REV_CLOSED,	/* tc: a closed flow's REV entry dropped for a new direct connection on its tuple */
	STAT_TC_SNAT_NO_ADDR,	/* tc: a flow needing SNAT dropped: the node has no address of its family */
	STAT_MAX = 32,
};

#define KPR_ABI_SIZE(t, n)		_Static_assert(sizeof(struct t) == (n), "size of struct " #t)
#define KPR_ABI_OFF(t, f, n)	_Static_assert(offsetof(struct t, f) == (n), "offset of " #t "." #f)

KPR_ABI_SIZE(nat_fe_key, 16);
KPR_ABI_OFF(nat_fe_key, addr, 4);
KPR_ABI_OFF(nat_fe_key, port, 8);
KPR_ABI_OFF(nat_fe_key, proto, 10);
KPR_ABI_OFF(nat_fe_key, saddr, 11);
KPR_ABI_SIZE(nat_fe_val, 20);
KPR_ABI_OFF(nat_fe_val, flags, 16);
KPR_ABI_SIZE(nat_be_key, 8);
KPR_ABI_SIZE(nat_be_val, 8);
KPR_ABI_OFF(nat_be_val, flags, 6);
KPR_ABI_SIZE(sk_lb_slot, 32);
KPR_ABI_OFF(sk_lb_slot, last_used, 24);
KPR_ABI_SIZE(sk_nat_key, 16);
KPR_ABI_SIZE(sk_nat_val, 8);
KPR_ABI_SIZE(aff_key, 16);
KPR_ABI_SIZE(aff_val, 24);
KPR_ABI_SIZE(ct_key, 16);
KPR_ABI_OFF(ct_key, addr_a, 4);
KPR_ABI_OFF(ct_key, port_a, 12);
KPR_ABI_SIZE(ct_val, 40);
KPR_ABI_OFF(ct_val, svc_id, 4);
KPR_ABI_OFF(ct_val, created, 8);
KPR_ABI_OFF(ct_val, nat_addr, 24);
KPR_ABI_OFF(ct_val, nat_port, 32);
KPR_ABI_OFF(ct_val, be_ordinal, 36);
KPR_ABI_SIZE(frag_key, 12);
KPR_ABI_SIZE(kpr_config, 20);
KPR_ABI_OFF(kpr_config, snat_port_min, 12);
KPR_ABI_OFF(kpr_config, flags, 16);
KPR_ABI_SIZE(kpr_sock_config, 8);
KPR_ABI_SIZE(lpm_v4_key, 8);
KPR_ABI_SIZE(sock_destroy_key, 12);
KPR_ABI_SIZE(sock_destroy_rec, 24);
KPR_ABI_OFF(sock_destroy_rec, err, 16);
_Static_assert(STAT_TC_SNAT_NO_ADDR < STAT_MAX, "kpr_stats has room for every counter");


/*
 * IPv6 twins (kpr_v6_* maps, maps6.h), laid out like Calico's cali_v6_*:
 * the IPv4 struct with each address widened to 16 bytes. What does not
 * hold an address is shared: nat_fe_val, nat_be_key, svc_meta, the flags
 * and the counters. A Service port has one id in both families; each
 * family has its own backend ordinals in its own nat_be map.
 */
struct nat_fe6_key {
	__u32 prefixlen;
	__be32 addr[4];
	__u16 port;
	__u8 proto;
	__be32 saddr[4];
	__u8 pad;
} __attribute__((packed));

enum nat_fe6_prefix {
	NAT_FE6_PREFIX_BASE = 152,	/* addr + port + proto */
	NAT_FE6_PREFIX_FULL = 152 + 128,
};

struct nat_be6_val {
	__be32 addr[4];
	__u16 port;
	__u16 flags;	/* NAT_BE_F_* */
};

struct sk_lb6_slot {
	__be32 vip[4];		/* all zero = free slot */
	__be32 be_addr[4];
	__u16 vport;
	__u16 be_port;
	__u8 flags;		/* SK_LB_F_* */
	__u8 pad[3];
	__u32 svc_id;
	__u32 ordinal;		/* where be was last seen in kpr_v6_nat_be */
	__u64 last_used;
};

struct sk_lb6_state {
	struct sk_lb6_slot slot[SK_LB_SLOTS];
};

struct sk_nat6_key {
	__u64 cookie;
	__be32 addr[4];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

struct sk_nat6_val {
	__be32 addr[4];
	__u16 port;
	__u16 pad;
};

/* client: the netns cookie in client[0..1] (AFF_CLIENT_NETNS), or the
 * client's address (AFF_CLIENT_ADDR). */
struct aff6_key {
	__u32 svc_id;
	__u32 kind;
	__be32 client[4];
};

struct aff6_val {
	struct nat_be6_val be;
	__u32 ordinal;
	__u64 last_used;
};

struct ct6_key {
	__u8 proto;
	__u8 pad[3];
	__be32 addr_a[4];
	__be32 addr_b[4];
	__u16 port_a;
	__u16 port_b;
};

/* ct_val with 16-byte addresses; the fields mean the same. */
struct ct6_val {
	__u8 type;
	__u8 flags;
	__u8 tcp_client;
	__u8 tcp_server;
	__u32 svc_id;
	__u64 created;
	__u64 last_seen;
	__be32 nat_addr[4];
	__be32 nat_saddr[4];
	__u16 nat_port;
	__u16 nat_sport;
	__u32 be_ordinal;
};

/* kpr_sock_destroy_be6 key (sock_destroy.bpf.c): an IPv6 backend that left
 * a Service. Records stay struct sock_destroy_rec (addr 0 for IPv6). */
struct sock_destroy6_key {
	__u32 svc_id;
	__be32 addr[4];
	__u16 port;
	__u16 pad;
};

/* kpr_v6_config: what the per-packet path needs about this node's IPv6
 * side. SNAT ports and the NodePort mode stay in kpr_config, shared. */
struct kpr_config6 {
	__be32 node_ip[4];	/* SNAT source (all zero: no IPv6 SNAT) */
	__be32 cluster_cidr[4];	/* pod network: sources inside it are "internal" */
	__u8 cluster_cidr_len;
	__u8 flags;		/* KPR_CFG6_F_* */
	__u8 pad[2];
};

enum kpr_config6_flag {
	/* This node knows IPv6 peers besides itself, so the nodes trust
	 * each other's IPv6 DSR header: without, IPv6 NodePorts keep SNAT. */
	KPR_CFG6_F_DSR = 0x01,
};

/* kpr_v6_dsr_peers key: lpm_v4_key's IPv6 twin. */
struct lpm_v6_key {
	__u32 prefixlen;
	__be32 addr[4];
};

/* kpr_v6_node_ips key: one of this node's IPv6 addresses. */
struct node_ip6_key {
	__be32 addr[4];
};

/* kpr_v6_frag key: frag_key with IPv6 addresses and the fragment header's
 * 32-bit identification (network order). The value is struct frag_val. */
struct frag6_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;
	__u8 proto;
	__u8 pad[3];
};

KPR_ABI_SIZE(kpr_config6, 36);
KPR_ABI_OFF(kpr_config6, cluster_cidr, 16);
KPR_ABI_OFF(kpr_config6, cluster_cidr_len, 32);
KPR_ABI_OFF(kpr_config6, flags, 33);
KPR_ABI_SIZE(node_ip6_key, 16);
KPR_ABI_SIZE(lpm_v6_key, 20);
KPR_ABI_SIZE(frag6_key, 40);
KPR_ABI_OFF(frag6_key, id, 32);
KPR_ABI_OFF(frag6_key, proto, 36);
KPR_ABI_SIZE(nat_fe6_key, 40);
KPR_ABI_OFF(nat_fe6_key, addr, 4);
KPR_ABI_OFF(nat_fe6_key, port, 20);
KPR_ABI_OFF(nat_fe6_key, proto, 22);
KPR_ABI_OFF(nat_fe6_key, saddr, 23);
KPR_ABI_SIZE(nat_be6_val, 20);
KPR_ABI_OFF(nat_be6_val, flags, 18);
KPR_ABI_SIZE(sk_lb6_slot, 56);
KPR_ABI_OFF(sk_lb6_slot, last_used, 48);
KPR_ABI_SIZE(sk_nat6_key, 32);
KPR_ABI_SIZE(sk_nat6_val, 20);
KPR_ABI_SIZE(aff6_key, 24);
KPR_ABI_SIZE(aff6_val, 32);
KPR_ABI_OFF(aff6_val, last_used, 24);
KPR_ABI_SIZE(ct6_key, 40);
KPR_ABI_OFF(ct6_key, port_a, 36);
KPR_ABI_SIZE(ct6_val, 64);
KPR_ABI_OFF(ct6_val, nat_addr, 24);
KPR_ABI_OFF(ct6_val, nat_port, 56);
KPR_ABI_OFF(ct6_val, be_ordinal, 60);
KPR_ABI_SIZE(sock_destroy6_key, 24);

#endif /* KPR_ABI_H */
