/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Per-socket conversation state for AF_INET6 sockets balanced to an IPv6
 * Service: sk_lb.h's design (slots in socket-local storage, LRU overflow,
 * UDP conversations with nf_conntrack's timeouts) on kpr_v6_sk_lb and
 * kpr_v6_sk_nat. The timeouts and the set choice are sk_lb.h's. A socket
 * that reached an IPv4 Service through a v4-mapped address is kept in
 * kpr_v4_sk_lb by sk_lb.h itself.
 */
#ifndef KPR_SK_LB6_H
#define KPR_SK_LB6_H

#include "sk_lb.h"
#include "addr6.h"

static __always_inline struct sk_lb6_state *sk_lb6_get(struct bpf_sock_addr *ctx, bool create)
{
	return bpf_sk_storage_get(&kpr_v6_sk_lb, ctx->sk, 0,
				  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

static __always_inline struct sk_lb6_slot *
sk_lb6_find_vip(struct sk_lb6_state *st, const __be32 *vip, __u16 vport)
{
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb6_slot *s = &st->slot[i];

		if (s->vport == vport && ipv6_addr_eq(s->vip, vip))
			return s;
	}
	return NULL;
}

static __always_inline struct sk_lb6_slot *
sk_lb6_find_backend(struct sk_lb6_state *st, const __be32 *addr, __u16 port)
{
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		struct sk_lb6_slot *s = &st->slot[i];

		if (!ipv6_addr_is_zero(s->vip) && s->be_port == port && ipv6_addr_eq(s->be_addr, addr))
			return s;
	}
	return NULL;
}

static __always_inline void sk_nat6_overflow_put(__u64 cookie, const __be32 *be_addr, __u16 be_port,
						 const __be32 *vip, __u16 vport)
{
	struct sk_nat6_key key = { .cookie = cookie, .port = be_port };
	struct sk_nat6_val val = { .port = vport };

	ipv6_addr_copy(key.addr, be_addr);
	ipv6_addr_copy(val.addr, vip);
	bpf_map_update_elem(&kpr_v6_sk_nat, &key, &val, BPF_ANY);
}

/* sk_lb_claim(): the slot it has, a free one, else the least recently used. */
static __always_inline struct sk_lb6_slot *
sk_lb6_claim(struct sk_lb6_state *st, __u64 cookie, const __be32 *vip, __u16 vport)
{
	struct sk_lb6_slot *s = sk_lb6_find_vip(st, vip, vport);
	struct sk_lb6_slot *oldest = &st->slot[0];

	if (s)
		return s;
#pragma unroll
	for (int i = 0; i < SK_LB_SLOTS; i++) {
		s = &st->slot[i];
		if (ipv6_addr_is_zero(s->vip))
			return s;
		if (s->last_used < oldest->last_used)
			oldest = s;
	}
	stat_inc(STAT_SOCK_SLOT_OVERFLOW);
	sk_nat6_overflow_put(cookie, oldest->be_addr, oldest->be_port, oldest->vip, oldest->vport);
	return oldest;
}

static __always_inline void sk_lb6_remember(struct bpf_sock_addr *ctx, __u32 svc_id,
					    const struct nat_be6_val *be, __u32 ordinal,
					    const __be32 *vip, __u16 vport)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct sk_lb6_state *st = sk_lb6_get(ctx, true);
	struct sk_lb6_slot *s;

	if (!st) {
		sk_nat6_overflow_put(cookie, be->addr, be->port, vip, vport);
		return;
	}
	s = sk_lb6_claim(st, cookie, vip, vport);
	ipv6_addr_copy(s->vip, vip);
	s->vport = vport;
	s->flags = 0;
	ipv6_addr_copy(s->be_addr, be->addr);
	s->be_port = be->port;
	s->svc_id = svc_id;
	s->ordinal = ordinal;
	s->last_used = bpf_ktime_get_ns();
}

struct be6_scan_ctx {
	__u32 id;
	__u32 base;
	__u32 found;		/* ordinal + 1, 0 = not found */
	__u16 port;
	__be32 addr[4];
};

static long be6_scan_cb(__u64 i, void *data)
{
	struct be6_scan_ctx *c = data;
	struct nat_be_key key = { .id = c->id, .ordinal = c->base + (__u32)i };
	struct nat_be6_val *v = bpf_map_lookup_elem(&kpr_v6_nat_be, &key);

	if (v && v->port == c->port && ipv6_addr_eq(v->addr, c->addr)) {
		c->found = key.ordinal + 1;
		return 1;
	}
	return 0;
}

/* sk_lb_backend_alive(): at its ordinal, or searched for when it moved. */
static __always_inline bool sk_lb6_backend_alive(struct sk_lb6_slot *s, __u32 base, __u32 n,
						 struct nat_be6_val *be)
{
	struct nat_be_key key = { .id = s->svc_id, .ordinal = s->ordinal };
	struct nat_be6_val *cur;
	struct be6_scan_ctx c = { .id = s->svc_id, .base = base, .port = s->be_port };

	if (s->ordinal >= base && s->ordinal - base < n) {
		cur = bpf_map_lookup_elem(&kpr_v6_nat_be, &key);
		if (cur && cur->port == s->be_port && ipv6_addr_eq(cur->addr, s->be_addr)) {
			*be = *cur;
			return true;
		}
	}
	if (n > SK_LB_SCAN_MAX)
		return false;
	ipv6_addr_copy(c.addr, s->be_addr);
	bpf_loop(n, be6_scan_cb, &c, 0);
	if (!c.found)
		return false;
	s->ordinal = c.found - 1;
	key.ordinal = s->ordinal;
	cur = bpf_map_lookup_elem(&kpr_v6_nat_be, &key);
	if (!cur)
		return false;
	*be = *cur;
	return true;
}

static __always_inline bool sk_lb6_udp_sticky(struct bpf_sock_addr *ctx, const struct nat_fe_val *fe,
					      const __be32 *vip, __u16 vport, struct nat_be6_val *be)
{
	struct sk_lb6_state *st = sk_lb6_get(ctx, false);
	struct sk_lb6_slot *s;
	__u64 now = bpf_ktime_get_ns();
	__u32 base, n;

	if (!st || fe->count == NAT_FE_BLACKHOLE)
		return false;
	s = sk_lb6_find_vip(st, vip, vport);
	if (!s || s->svc_id != fe->id || !sk_lb_conv_active(s->flags, s->last_used, now))
		return false;
	sk_lb_internal_set(fe, &base, &n);
	if (!sk_lb6_backend_alive(s, base, n, be))
		return false;
	s->last_used = now;
	return true;
}

static __always_inline bool sk_lb6_reverse(struct bpf_sock_addr *ctx, const __be32 *addr, __u16 port,
					   bool received, __be32 *vip, __u16 *vport)
{
	struct sk_lb6_state *st = sk_lb6_get(ctx, false);
	struct sk_nat6_key key = { .port = port };
	struct sk_nat6_val *orig;
	struct sk_lb6_slot *s;

	if (st) {
		s = sk_lb6_find_backend(st, addr, port);
		if (s) {
			if (received) {
				s->flags |= SK_LB_F_REPLIED;
				s->last_used = bpf_ktime_get_ns();
			}
			ipv6_addr_copy(vip, s->vip);
			*vport = s->vport;
			return true;
		}
	}
	key.cookie = bpf_get_socket_cookie(ctx);
	ipv6_addr_copy(key.addr, addr);
	orig = bpf_map_lookup_elem(&kpr_v6_sk_nat, &key);
	if (!orig)
		return false;
	ipv6_addr_copy(vip, orig->addr);
	*vport = orig->port;
	return true;
}

#endif /* KPR_SK_LB6_H */
