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
 * The keys, values and constants these maps hold are kpr's ABI with the
 * controller: abi.h.
 */
#ifndef KPR_MAPS_H
#define KPR_MAPS_H

#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

/* Default sizes hold 10k Services x 10 endpoints with headroom; the controller
 * overrides max_entries from its flags before load. */
#define KPR_NAT_FE_ENTRIES	65536
#define KPR_NAT_BE_ENTRIES	262144
#define KPR_SK_NAT_ENTRIES	65536
#define KPR_SVC_META_ENTRIES	65536
#define KPR_CT_ENTRIES		524288
#define KPR_FRAG_ENTRIES	8192

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nat_fe_key);
	__type(value, struct nat_fe_val);
	__uint(max_entries, KPR_NAT_FE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_nat_fe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nat_be_key);
	__type(value, struct nat_be_val);
	__uint(max_entries, KPR_NAT_BE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_nat_be SEC(".maps");

/*
 * Per-socket load-balancing state, kept with the socket itself (socket-local
 * storage): it is created on the socket's first translation and freed with
 * the socket, so no load can evict the state of a live socket.
 *
 * Each slot is one conversation: Service address -> backend. recvmsg4 and
 * getpeername4 map the backend back to the VIP; sendmsg4 keeps an unconnected
 * UDP socket on its backend while the conversation is active; the socket
 * iterator (sock_destroy.bpf.c) reads it to find kpr-balanced sockets.
 *
 * SK_LB_SLOTS (abi.h) bounds how many Service ports one socket talks to at
 * once. A connected socket needs one. When an unconnected UDP socket talks to
 * more, the least recently used slot moves to kpr_v4_sk_nat (below): its
 * replies still show the VIP, but its next datagram may pick another backend.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__type(key, int);
	__type(value, struct sk_lb_state);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_sk_lb SEC(".maps");

/*
 * Overflow of the socket-local slots only: (socket cookie, backend) -> VIP
 * for a conversation pushed out of a full sk_lb_state, or for a socket whose
 * storage could not be allocated. LRU, because sockets close without telling
 * us; only these rare entries can be evicted.
 */
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
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_config SEC(".maps");

/* The connect-time hooks' settings: which sockets are the node's own. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_sock_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_sock_config SEC(".maps");

/* Clients in these CIDRs never get DSR (--dsr-optout-cidrs): they fall
 * back to SNAT, e.g. for networks that drop asymmetric traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_dsr_optout SEC(".maps");

/* Trusted cluster nodes (--cluster-node-ips and Node objects' addresses):
 * a DSR option naming any other node is dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpr_v4_dsr_peers SEC(".maps");

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

/* Every object declares the same pinned maps, the IPv6 twins included, so
 * the controller's max_entries overrides apply to each of them. */
#include "maps6.h"

#endif /* KPR_MAPS_H */
