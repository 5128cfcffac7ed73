// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Socket iterators that abort connected sockets kpr sent to a backend that
 * has left its Service.
 *
 * The controller removes the backend from the NAT maps first, fills
 * kpr_sock_destroy_be with (service id, backend) pairs, then reads these
 * iterators once per network namespace that holds sockets of the hooked
 * cgroup (an iterator walks the netns of the process that opens it).
 *
 * A socket is destroyed only when its own socket storage (sk_lb.h, sk_lb6.h) says kpr
 * translated it to that backend for that Service: a socket that talks to the
 * same address and port directly is never touched. bpf_sock_destroy() gives
 * the socket ECONNABORTED and, for UDP, disconnects it, so the application
 * sees an error and its next connect() to the Service is balanced afresh.
 * Each destroyed socket is reported as one struct sock_destroy_rec; both
 * it and struct sock_destroy_key are in abi.h.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "addr6.h"

#define AF_INET		2
#define AF_INET6	10

/* TCP states that are not an established (or establishing) full socket. */
#define TCP_TIME_WAIT	6
#define TCP_CLOSE	7
#define TCP_LISTEN	10
#define TCP_NEW_SYN_RECV 12

/* The few kernel fields read here, relocated against the running kernel's
 * BTF (CO-RE), so no vmlinux.h is needed. */
struct in6_addr___kpr {
	__be32 s6_addr32[4];
};

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	unsigned char skc_state;
	struct in6_addr___kpr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct seq_file;
struct udp_sock;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sock_destroy_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} kpr_sock_destroy_be SEC(".maps");

/* The same for IPv6 backends (slots in kpr_v6_sk_lb). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sock_destroy6_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} kpr_sock_destroy_be6 SEC(".maps");

static __always_inline bool kpr_sent_to_removed(struct sock_common *skc, __u32 *svc_id)
{
	struct sk_lb_state *st = bpf_sk_storage_get(&kpr_v4_sk_lb, skc, 0, 0);
	__be32 daddr = skc->skc_daddr;
	__u16 dport = bpf_ntohs(skc->skc_dport);

	if (!st)
		return false;
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb_slot *s = &st->slot[i];
		struct sock_destroy_key key = { .svc_id = s->svc_id, .addr = s->be_addr, .port = s->be_port };

		if (!s->vip || s->be_addr != daddr || s->be_port != dport)
			continue;
		if (bpf_map_lookup_elem(&kpr_sock_destroy_be, &key)) {
			*svc_id = s->svc_id;
			return true;
		}
	}
	return false;
}

/* kpr_sent_to_removed() for an AF_INET6 socket balanced to an IPv6 Service. */
static __always_inline bool kpr_sent_to_removed6(struct sock_common *skc, const __be32 *daddr, __u32 *svc_id)
{
	struct sk_lb6_state *st = bpf_sk_storage_get(&kpr_v6_sk_lb, skc, 0, 0);
	__u16 dport = bpf_ntohs(skc->skc_dport);

	if (!st)
		return false;
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb6_slot *s = &st->slot[i];
		struct sock_destroy6_key key = { .svc_id = s->svc_id, .port = s->be_port };

		if (ipv6_addr_is_zero(s->vip) || s->be_port != dport || !ipv6_addr_eq(s->be_addr, daddr))
			continue;
		ipv6_addr_copy(key.addr, s->be_addr);
		if (bpf_map_lookup_elem(&kpr_sock_destroy_be6, &key)) {
			*svc_id = s->svc_id;
			return true;
		}
	}
	return false;
}

/*
 * Did kpr send this connected socket to a removed backend? An AF_INET6
 * socket connected to ::ffff:a.b.c.d was balanced as IPv4 (its slots are in
 * kpr_v4_sk_lb, and the kernel keeps the IPv4 peer in skc_daddr too).
 */
static __always_inline bool sent_to_removed(struct sock_common *skc, __u32 *svc_id)
{
	__be32 daddr6[4];

	if (skc->skc_family == AF_INET)
		return skc->skc_daddr && kpr_sent_to_removed(skc, svc_id);
	if (skc->skc_family != AF_INET6)
		return false;
	daddr6[0] = skc->skc_v6_daddr.s6_addr32[0];
	daddr6[1] = skc->skc_v6_daddr.s6_addr32[1];
	daddr6[2] = skc->skc_v6_daddr.s6_addr32[2];
	daddr6[3] = skc->skc_v6_daddr.s6_addr32[3];
	/* Unconnected sockets have no peer: their next datagram moves. */
	if (ipv6_addr_is_zero(daddr6))
		return false;
	if (ipv6_addr_is_v4mapped(daddr6))
		return kpr_sent_to_removed(skc, svc_id);
	return kpr_sent_to_removed6(skc, daddr6, svc_id);
}

static __always_inline void destroy(struct bpf_iter_meta *meta, struct sock_common *skc,
				    __u8 proto, __u32 svc_id)
{
	struct sock_destroy_rec rec = {
		.cookie = bpf_get_socket_cookie(skc),
		.addr = skc->skc_daddr,
		.port = bpf_ntohs(skc->skc_dport),
		.proto = proto,
		.svc_id = svc_id,
	};

	rec.err = bpf_sock_destroy(skc);
	bpf_seq_write(meta->seq, &rec, sizeof(rec));
}

SEC("iter/udp")
int kpr_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock_common *skc = (struct sock_common *)ctx->udp_sk;
	__u32 svc_id;

	/* Unconnected sockets have no peer: their next datagram moves. */
	if (skc && sent_to_removed(skc, &svc_id))
		destroy(ctx->meta, skc, 17, svc_id);
	return 0;
}

SEC("iter/tcp")
int kpr_destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	__u32 svc_id;
	__u8 state;

	if (!skc)
		return 0;
	state = skc->skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_CLOSE || state == TCP_LISTEN || state == TCP_NEW_SYN_RECV)
		return 0;
	if (sent_to_removed(skc, &svc_id))
		destroy(ctx->meta, skc, 6, svc_id);
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
