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

/*
 * Forward translation for connect4 and sendmsg4. `saddr` is the source the
 * kernel already knows (0 for connect before bind), used only for the
 * source-range part of the frontend key.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx,
					   __be32 saddr, bool sticky)
{
	__u32 proto = ctx->protocol;
	__be32 vip = ctx->user_ip4;
	__u16 vport = bpf_ntohs((__u16)ctx->user_port);
	struct nat_fe_val *fe;
	struct nat_be_val be;
	struct aff_key ak = { .kind = AFF_CLIENT_NETNS };
	__u32 ordinal;

	if (!sock_proto_supported(proto))
		return SYS_PROCEED;

	fe = nat_fe_lookup(vip, vport, proto, saddr);
	if (!fe)
		return SYS_PROCEED;
	/* loadBalancerSourceRanges never bind the node itself (kube-proxy
	 * lets it reach its LB IPs): its sockets, in the initial netns, use
	 * the entry the controller writes for the LB IP as source. */
	if (fe->count == NAT_FE_BLACKHOLE && bpf_get_netns_cookie(ctx) == bpf_get_netns_cookie(NULL)) {
		fe = nat_fe_lookup(vip, vport, proto, vip);
		if (!fe)
			return SYS_PROCEED;
	}

	if (sticky && sk_lb_udp_sticky(ctx, fe, vip, vport, &be)) {
		stat_inc(STAT_SOCK_UDP_STICKY);
		goto xlate;
	}

	ak.svc_id = fe->id;
	ak.client = bpf_get_netns_cookie(ctx);
	switch (nat_select_backend(fe, fe->flags & NAT_FLG_INTERNAL_LOCAL, &ak, &be, &ordinal)) {
	case NAT_FWD:
		break;
	case NAT_REJECT:
		/* kube-proxy REJECTs with port-unreachable; the caller sees
		 * ECONNREFUSED at once rather than a timeout or EPERM. */
		stat_inc(STAT_SOCK_REJECT);
		bpf_set_retval(-ECONNREFUSED);
		return SYS_REJECT;
	case NAT_DROP:
		/* kube-proxy DROPs here: no answer, so the caller's connect()
		 * ends in ETIMEDOUT after its SYN retries. Give that errno at
		 * once and send nothing, rather than let an untranslated
		 * packet to the VIP leave the node. */
		stat_inc(STAT_SOCK_DROP_POLICY);
		bpf_set_retval(-ETIMEDOUT);
		return SYS_REJECT;
	case NAT_BLACKHOLE:
		/* Source ranges need the real source, which connect() does
		 * not know yet: leave the socket alone and let the per-packet
		 * path judge the packets. */
		stat_inc(STAT_SOCK_BLACKHOLE);
		return SYS_PROCEED;
	default:
		return SYS_PROCEED;
	}

	sk_lb_remember(ctx, fe->id, &be, ordinal, vip, vport);
xlate:
	ctx->user_ip4 = be.addr;
	ctx->user_port = bpf_htons(be.port);
	stat_inc(STAT_SOCK_XLATE);
	return SYS_PROCEED;
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

char _license[] SEC("license") = "Dual BSD/GPL";
