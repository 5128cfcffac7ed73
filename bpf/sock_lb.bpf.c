// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Connect-time (socket) load balancing for local sockets, on cgroup v2 hooks.
 *
 * A socket that connects or sends to a Service address is pointed straight at
 * a backend, so its packets never need per-packet NAT. The socket's view is
 * kept intact: recvmsg4 and getpeername4 translate the backend back to the
 * Service address, using the backend -> VIP record kept in the socket's own
 * storage (sk_lb.h).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "nat_lookup.h"
#include "sk_lb.h"
#include "nat_lookup6.h"
#include "sk_lb6.h"

#define SYS_REJECT	0
#define SYS_PROCEED	1

#ifndef ECONNREFUSED
#define ECONNREFUSED	111
#endif
#ifndef ETIMEDOUT
#define ETIMEDOUT	110
#endif

static __always_inline bool sock_proto_supported(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/* The node's own sockets are those in kpr's network namespace. */
static __always_inline bool sock_from_node(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct kpr_sock_config *sc = bpf_map_lookup_elem(&kpr_sock_config, &zero);

	return sc && sc->node_netns_cookie && bpf_get_netns_cookie(ctx) == sc->node_netns_cookie;
}

/*
 * loadBalancerSourceRanges for the node's own sockets. Without a bound
 * source, judge the node's primary address, as kube-proxy's allowFromNode
 * does; the controller then also allows the LB IP itself as a source, the
 * address a looped-back packet carries. A bound source is judged as it is.
 */
static __always_inline struct nat_fe_val *sock_node_fe(__be32 vip, __u16 vport, __u8 proto, __be32 saddr)
{
	__u32 zero = 0;
	struct kpr_config *cfg;

	if (saddr)
		return nat_fe_lookup(vip, vport, proto, saddr);
	cfg = bpf_map_lookup_elem(&kpr_config, &zero);
	return nat_fe_lookup(vip, vport, proto, cfg ? cfg->node_ip : 0);
}

/* What a forward hook does with the socket, in either family. */
enum sock_lb_result {
	SOCK_LB_PASS,		/* not a Service, or left to the per-packet path */
	SOCK_LB_XLATE,		/* send to the backend picked */
	SOCK_LB_REJECT,		/* fail the call (errno already set) */
};

/* The socket's answer to a selection verdict: the same in both families. */
static __always_inline enum sock_lb_result sock_lb_verdict(enum nat_verdict v)
{
	switch (v) {
	case NAT_FWD:
		return SOCK_LB_XLATE;
	case NAT_REJECT:
		/* kube-proxy REJECTs with port-unreachable; the caller sees
		 * ECONNREFUSED at once rather than a timeout or EPERM. */
		stat_inc(STAT_SOCK_REJECT);
		bpf_set_retval(-ECONNREFUSED);
		return SOCK_LB_REJECT;
	case NAT_DROP:
		/* kube-proxy DROPs here: no answer, so the caller's connect()
		 * ends in ETIMEDOUT after its SYN retries. Give that errno at
		 * once and send nothing, rather than let an untranslated
		 * packet to the VIP leave the node. */
		stat_inc(STAT_SOCK_DROP_POLICY);
		bpf_set_retval(-ETIMEDOUT);
		return SOCK_LB_REJECT;
	case NAT_BLACKHOLE:
		/* Source ranges need the real source, which connect() does
		 * not know yet: leave the socket alone and let the per-packet
		 * path judge the packets. */
		stat_inc(STAT_SOCK_BLACKHOLE);
		return SOCK_LB_PASS;
	default:
		return SOCK_LB_PASS;
	}
}

/* kube-proxy's firewall DROPs the node's own packets from outside the
 * ranges: ETIMEDOUT at once, and nothing sent to the LB IP. */
static __always_inline enum sock_lb_result sock_node_blackholed(void)
{
	stat_inc(STAT_SOCK_BLACKHOLE);
	bpf_set_retval(-ETIMEDOUT);
	return SOCK_LB_REJECT;
}

/*
 * Forward translation to an IPv4 Service, for connect4 and sendmsg4 and for
 * AF_INET6 sockets that address it as ::ffff:a.b.c.d. `saddr` is the source
 * the kernel already knows (0 for connect before bind), used only for the
 * source-range part of the frontend key.
 */
static __always_inline enum sock_lb_result sock4_lb(struct bpf_sock_addr *ctx, __be32 vip, __u16 vport,
						    __be32 saddr, bool sticky, struct nat_be_val *be)
{
	__u32 proto = ctx->protocol;
	struct nat_fe_val *fe;
	struct aff_key ak = { .kind = AFF_CLIENT_NETNS };
	enum sock_lb_result r;
	__u32 ordinal;

	if (!sock_proto_supported(proto))
		return SOCK_LB_PASS;

	fe = nat_fe_lookup(vip, vport, proto, saddr);
	if (!fe)
		return SOCK_LB_PASS;
	if (fe->count == NAT_FE_BLACKHOLE && sock_from_node(ctx)) {
		fe = sock_node_fe(vip, vport, proto, saddr);
		if (!fe)
			return SOCK_LB_PASS;
		if (fe->count == NAT_FE_BLACKHOLE)
			return sock_node_blackholed();
	}

	if (sticky && sk_lb_udp_sticky(ctx, fe, vip, vport, be)) {
		stat_inc(STAT_SOCK_UDP_STICKY);
		stat_inc(STAT_SOCK_XLATE);
		return SOCK_LB_XLATE;
	}

	ak.svc_id = fe->id;
	ak.client = bpf_get_netns_cookie(ctx);
	r = sock_lb_verdict(nat_select_backend(fe, fe->flags & NAT_FLG_INTERNAL_LOCAL, &ak, be, &ordinal));
	if (r == SOCK_LB_XLATE) {
		sk_lb_remember(ctx, fe->id, be, ordinal, vip, vport);
		stat_inc(STAT_SOCK_XLATE);
	}
	return r;
}

static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __be32 saddr, bool sticky)
{
	struct nat_be_val be;
	enum sock_lb_result r = sock4_lb(ctx, ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port), saddr, sticky, &be);

	if (r == SOCK_LB_XLATE) {
		ctx->user_ip4 = be.addr;
		ctx->user_port = bpf_htons(be.port);
	}
	return r == SOCK_LB_REJECT ? SYS_REJECT : SYS_PROCEED;
}

/* Backend -> Service address, for anything that reports the peer. */
static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx, bool received)
{
	__be32 vip;
	__u16 vport;

	if (!sk_lb_reverse(ctx, ctx->user_ip4, bpf_ntohs((__u16)ctx->user_port), received, &vip, &vport))
		return SYS_PROCEED;

	ctx->user_ip4 = vip;
	ctx->user_port = bpf_htons(vport);
	stat_inc(STAT_SOCK_REVNAT);
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int kpr_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, 0, false);
}

/* Unconnected UDP: a socket's datagrams to one Service port stay on one
 * backend while it serves and the conversation is active, as kube-proxy's
 * conntrack keeps them; a new conversation is balanced afresh. */
SEC("cgroup/sendmsg4")
int kpr_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, ctx->msg_src_ip4, true);
}

SEC("cgroup/recvmsg4")
int kpr_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, true);
}

SEC("cgroup/getpeername4")
int kpr_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, false);
}

/*
 * ---- AF_INET6 sockets --------------------------------------------------
 * The same verdict handling (sock_lb_verdict) and selection (nat_lookup.h)
 * as IPv4; only the addresses differ:
 *  - an IPv6 Service is balanced through the kpr_v6_* maps, with the same
 *    reject/drop errnos, affinity and per-socket reverse NAT as IPv4;
 *  - an IPv4-mapped destination (::ffff:198.18.x.y) is an IPv4 Service:
 *    balanced through the IPv4 maps by sock4_lb, and the socket sees the
 *    VIP back in the mapped form.
 */
/*
 * sock_node_fe() for IPv6. The datapath holds no IPv6 primary address, so
 * an unbound node socket is judged by the entry the controller writes for
 * the LB IP as source, which exists exactly when a range holds the node's
 * primary IPv6 address (translate's per-family allowFromNode): the same
 * verdict as looking the primary address up. A bound source is judged as
 * it is.
 */
static __always_inline struct nat_fe_val *sock6_node_fe(const __be32 *vip, __u16 vport, __u8 proto,
							const __be32 *saddr)
{
	return nat6_fe_lookup(vip, vport, proto, ipv6_addr_is_zero(saddr) ? vip : saddr);
}

static __always_inline enum sock_lb_result sock6_lb(struct bpf_sock_addr *ctx, const __be32 *vip, __u16 vport,
						    const __be32 *saddr, bool sticky, struct nat_be6_val *be)
{
	__u32 proto = ctx->protocol;
	struct nat_fe_val *fe;
	struct aff6_key ak = { .kind = AFF_CLIENT_NETNS };
	enum sock_lb_result r;
	__u64 netns;
	__u32 ordinal;

	if (!sock_proto_supported(proto))
		return SOCK_LB_PASS;

	fe = nat6_fe_lookup(vip, vport, proto, saddr);
	if (!fe)
		return SOCK_LB_PASS;
	if (fe->count == NAT_FE_BLACKHOLE && sock_from_node(ctx)) {
		fe = sock6_node_fe(vip, vport, proto, saddr);
		if (!fe)
			return SOCK_LB_PASS;
		if (fe->count == NAT_FE_BLACKHOLE)
			return sock_node_blackholed();
	}

	if (sticky && sk_lb6_udp_sticky(ctx, fe, vip, vport, be)) {
		stat_inc(STAT_SOCK_UDP_STICKY);
		stat_inc(STAT_SOCK_XLATE);
		return SOCK_LB_XLATE;
	}

	ak.svc_id = fe->id;
	netns = bpf_get_netns_cookie(ctx);
	__builtin_memcpy(ak.client, &netns, sizeof(netns));
	r = sock_lb_verdict(nat6_select_backend(fe, fe->flags & NAT_FLG_INTERNAL_LOCAL, &ak, be, &ordinal));
	if (r == SOCK_LB_XLATE) {
		sk_lb6_remember(ctx, fe->id, be, ordinal, vip, vport);
		stat_inc(STAT_SOCK_XLATE);
	}
	return r;
}

static __always_inline int sock6_xlate_fwd(struct bpf_sock_addr *ctx, const __be32 *saddr, bool sticky)
{
	__be32 daddr[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	enum sock_lb_result r;

	if (ipv6_addr_is_v4mapped(daddr)) {
		struct nat_be_val be4;

		r = sock4_lb(ctx, daddr[3], dport, ipv6_addr_is_v4mapped(saddr) ? saddr[3] : 0, sticky, &be4);
		if (r == SOCK_LB_XLATE) {
			ctx->user_ip6[3] = be4.addr;
			ctx->user_port = bpf_htons(be4.port);
		}
	} else {
		struct nat_be6_val be6;

		r = sock6_lb(ctx, daddr, dport, saddr, sticky, &be6);
		if (r == SOCK_LB_XLATE) {
			ctx->user_ip6[0] = be6.addr[0];
			ctx->user_ip6[1] = be6.addr[1];
			ctx->user_ip6[2] = be6.addr[2];
			ctx->user_ip6[3] = be6.addr[3];
			ctx->user_port = bpf_htons(be6.port);
		}
	}
	return r == SOCK_LB_REJECT ? SYS_REJECT : SYS_PROCEED;
}

static __always_inline int sock6_xlate_rev(struct bpf_sock_addr *ctx, bool received)
{
	__be32 addr[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u16 vport;

	if (ipv6_addr_is_v4mapped(addr)) {
		__be32 vip4;

		if (!sk_lb_reverse(ctx, addr[3], port, received, &vip4, &vport))
			return SYS_PROCEED;
		ctx->user_ip6[3] = vip4;
	} else {
		__be32 vip[4];

		if (!sk_lb6_reverse(ctx, addr, port, received, vip, &vport))
			return SYS_PROCEED;
		ctx->user_ip6[0] = vip[0];
		ctx->user_ip6[1] = vip[1];
		ctx->user_ip6[2] = vip[2];
		ctx->user_ip6[3] = vip[3];
	}
	ctx->user_port = bpf_htons(vport);
	stat_inc(STAT_SOCK_REVNAT);
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int kpr_connect6(struct bpf_sock_addr *ctx)
{
	__be32 unknown[4] = {};

	return sock6_xlate_fwd(ctx, unknown, false);
}

SEC("cgroup/sendmsg6")
int kpr_sendmsg6(struct bpf_sock_addr *ctx)
{
	__be32 src[4] = { ctx->msg_src_ip6[0], ctx->msg_src_ip6[1], ctx->msg_src_ip6[2], ctx->msg_src_ip6[3] };

	return sock6_xlate_fwd(ctx, src, true);
}

SEC("cgroup/recvmsg6")
int kpr_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate_rev(ctx, true);
}

SEC("cgroup/getpeername6")
int kpr_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate_rev(ctx, false);
}

char _license[] SEC("license") = "Dual BSD/GPL";
