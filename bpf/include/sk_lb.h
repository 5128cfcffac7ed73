/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Per-socket conversation state for the connect-time hooks: which backend a
 * socket was sent to for which Service port (struct sk_lb_state, socket-local
 * storage), with the LRU kpr_v4_sk_nat as the overflow for reverse NAT.
 */
#ifndef KPR_SK_LB_H
#define KPR_SK_LB_H

#include "maps.h"

/*
 * kube-proxy leaves a UDP "conversation" to nf_conntrack: 30 s without a
 * reply (nf_conntrack_udp_timeout), 120 s once the backend has answered
 * (nf_conntrack_udp_timeout_stream). A socket's slot keeps its backend for
 * the same times since its last datagram either way.
 */
#define SK_LB_UDP_TIMEOUT_NS		(30ULL * 1000000000ULL)
#define SK_LB_UDP_STREAM_TIMEOUT_NS	(120ULL * 1000000000ULL)

/* Above this many backends, a backend that changed ordinal is not searched
 * for: the conversation moves, as if the backend had gone. */
#define SK_LB_SCAN_MAX			1024

/* Is an unconnected UDP conversation still on (either family's slot)? */
static __always_inline bool sk_lb_conv_active(__u8 flags, __u64 last_used, __u64 now)
{
	__u64 timeout = (flags & SK_LB_F_REPLIED) ? SK_LB_UDP_STREAM_TIMEOUT_NS : SK_LB_UDP_TIMEOUT_NS;

	return now - last_used <= timeout;
}

/* The backend set a socket's traffic uses: internalTrafficPolicy decides. */
static __always_inline void sk_lb_internal_set(const struct nat_fe_val *fe, __u32 *base, __u32 *n)
{
	if (fe->flags & NAT_FLG_INTERNAL_LOCAL) {
		*base = NAT_BE_LOCAL_BASE;
		*n = fe->local;
	} else {
		*base = 0;
		*n = fe->count;
	}
}

static __always_inline struct sk_lb_state *sk_lb_get(struct bpf_sock_addr *ctx, bool create)
{
	return bpf_sk_storage_get(&kpr_v4_sk_lb, ctx->sk, 0,
				  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

static __always_inline struct sk_lb_slot *
sk_lb_find_vip(struct sk_lb_state *st, __be32 vip, __u16 vport)
{
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb_slot *s = &st->slot[i];

		if (s->vip == vip && s->vport == vport)
			return s;
	}
	return NULL;
}

static __always_inline struct sk_lb_slot *
sk_lb_find_backend(struct sk_lb_state *st, __be32 addr, __u16 port)
{
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb_slot *s = &st->slot[i];

		if (s->vip && s->be_addr == addr && s->be_port == port)
			return s;
	}
	return NULL;
}

static __always_inline void sk_nat_overflow_put(__u64 cookie, __be32 be_addr, __u16 be_port,
						__be32 vip, __u16 vport)
{
	struct sk_nat_key key = { .cookie = cookie, .addr = be_addr, .port = be_port };
	struct sk_nat_val val = { .addr = vip, .port = vport };

	bpf_map_update_elem(&kpr_v4_sk_nat, &key, &val, BPF_ANY);
}

/*
 * Slot for (vip, vport): the one it already has, else a free one, else the
 * least recently used, whose reverse NAT is handed to the overflow map.
 */
static __always_inline struct sk_lb_slot *
sk_lb_claim(struct sk_lb_state *st, __u64 cookie, __be32 vip, __u16 vport)
{
	struct sk_lb_slot *s = sk_lb_find_vip(st, vip, vport);
	struct sk_lb_slot *oldest = &st->slot[0];

	if (s)
		return s;
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		s = &st->slot[i];
		if (!s->vip)
			return s;
		if (s->last_used < oldest->last_used)
			oldest = s;
	}
	stat_inc(STAT_SOCK_SLOT_OVERFLOW);
	sk_nat_overflow_put(cookie, oldest->be_addr, oldest->be_port, oldest->vip, oldest->vport);
	return oldest;
}

/* Remember that this socket's traffic to vip:vport goes to be. */
static __always_inline void sk_lb_remember(struct bpf_sock_addr *ctx, __u32 svc_id,
					   const struct nat_be_val *be, __u32 ordinal,
					   __be32 vip, __u16 vport)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct sk_lb_state *st = sk_lb_get(ctx, true);
	struct sk_lb_slot *s;

	if (!st) {
		/* No memory for socket storage: keep reverse NAT working. */
		sk_nat_overflow_put(cookie, be->addr, be->port, vip, vport);
		return;
	}
	s = sk_lb_claim(st, cookie, vip, vport);
	s->vip = vip;
	s->vport = vport;
	s->flags = 0;
	s->be_addr = be->addr;
	s->be_port = be->port;
	s->svc_id = svc_id;
	s->ordinal = ordinal;
	s->last_used = bpf_ktime_get_ns();
}

struct be_scan_ctx {
	__u32 id;
	__u32 base;		/* first ordinal of the set searched */
	__u32 found;		/* ordinal + 1, 0 = not found */
	__be32 addr;
	__u16 port;
};

static long be_scan_cb(__u64 i, void *data)
{
	struct be_scan_ctx *c = data;
	struct nat_be_key key = { .id = c->id, .ordinal = c->base + (__u32)i };
	struct nat_be_val *v = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);

	if (v && v->addr == c->addr && v->port == c->port) {
		c->found = key.ordinal + 1;
		return 1;
	}
	return 0;
}

/*
 * Is the slot's backend still in the set the Service uses (ordinals
 * base..base+n-1)? Usually it sits where it was; removing another backend
 * may have moved it into the hole (see placeBackends in the reconciler), so
 * look for it then.
 */
static __always_inline bool sk_lb_backend_alive(struct sk_lb_slot *s, __u32 base, __u32 n,
						struct nat_be_val *be)
{
	struct nat_be_key key = { .id = s->svc_id, .ordinal = s->ordinal };
	struct nat_be_val *cur;
	struct be_scan_ctx c = { .id = s->svc_id, .base = base, .addr = s->be_addr, .port = s->be_port };

	if (s->ordinal >= base && s->ordinal - base < n) {
		cur = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);
		if (cur && cur->addr == s->be_addr && cur->port == s->be_port) {
			*be = *cur;
			return true;
		}
	}
	if (n > SK_LB_SCAN_MAX)
		return false;
	bpf_loop(n, be_scan_cb, &c, 0);
	if (!c.found)
		return false;
	s->ordinal = c.found - 1;
	key.ordinal = s->ordinal;
	cur = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);
	if (!cur)
		return false;
	*be = *cur;
	return true;
}

/*
 * Unconnected UDP: the backend this socket's conversation with vip:vport
 * already has, if the conversation is active and the backend still serves
 * the Service. Refreshes the conversation.
 */
static __always_inline bool sk_lb_udp_sticky(struct bpf_sock_addr *ctx, const struct nat_fe_val *fe,
					     __be32 vip, __u16 vport, struct nat_be_val *be)
{
	struct sk_lb_state *st = sk_lb_get(ctx, false);
	struct sk_lb_slot *s;
	__u64 now = bpf_ktime_get_ns();
	__u32 base, n;

	if (!st || fe->count == NAT_FE_BLACKHOLE)
		return false;
	s = sk_lb_find_vip(st, vip, vport);
	if (!s || s->svc_id != fe->id || !sk_lb_conv_active(s->flags, s->last_used, now))
		return false;
	sk_lb_internal_set(fe, &base, &n);
	if (!sk_lb_backend_alive(s, base, n, be))
		return false;
	s->last_used = now;
	return true;
}

/*
 * Backend -> Service address for this socket, from its slots or else the
 * overflow map. A datagram received (recvmsg) refreshes the conversation and
 * marks it answered.
 */
static __always_inline bool sk_lb_reverse(struct bpf_sock_addr *ctx, __be32 addr, __u16 port,
					  bool received, __be32 *vip, __u16 *vport)
{
	struct sk_lb_state *st = sk_lb_get(ctx, false);
	struct sk_nat_key key = { .addr = addr, .port = port };
	struct sk_nat_val *orig;
	struct sk_lb_slot *s;

	if (st) {
		s = sk_lb_find_backend(st, addr, port);
		if (s) {
			if (received) {
				s->flags |= SK_LB_F_REPLIED;
				s->last_used = bpf_ktime_get_ns();
			}
			*vip = s->vip;
			*vport = s->vport;
			return true;
		}
	}
	key.cookie = bpf_get_socket_cookie(ctx);
	orig = bpf_map_lookup_elem(&kpr_v4_sk_nat, &key);
	if (!orig)
		return false;
	*vip = orig->addr;
	*vport = orig->port;
	return true;
}

#endif /* KPR_SK_LB_H */
