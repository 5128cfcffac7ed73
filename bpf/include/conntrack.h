/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Conntrack for per-packet NAT (see struct ct_key in abi.h). The data path
 * only creates, finds and touches entries; expiry is the controller's
 * periodic scan, which reads the timestamps and TCP flags kept here.
 */
#ifndef KPR_CONNTRACK_H
#define KPR_CONNTRACK_H

#include "maps.h"
#include "parse.h"
#include "addr6.h"
#include "snat.h"

/*
 * Build the normalised key for (a1:p1 <-> a2:p2). Returns true when the
 * first endpoint landed on the "a" side.
 */
static __always_inline bool ct_key_make(struct ct_key *k, __u8 proto,
					__be32 a1, __u16 p1, __be32 a2, __u16 p2)
{
	__u32 h1 = bpf_ntohl(a1), h2 = bpf_ntohl(a2);
	bool first_is_a = h1 < h2 || (h1 == h2 && p1 <= p2);

	k->proto = proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	if (first_is_a) {
		k->addr_a = a1;
		k->port_a = p1;
		k->addr_b = a2;
		k->port_b = p2;
	} else {
		k->addr_a = a2;
		k->port_a = p2;
		k->addr_b = a1;
		k->port_b = p1;
	}
	return first_is_a;
}

/* Was this packet sent by the side that opened the flow? */
static __always_inline bool ct_from_client(const struct ct_val *ct, bool src_is_a)
{
	return src_is_a == !!(ct->flags & CT_F_CLIENT_IS_A);
}

static __always_inline void ct_touch(struct ct_val *ct, bool from_client, __u8 tcp_flags)
{
	ct->last_seen = bpf_ktime_get_ns();
	if (from_client)
		ct->tcp_client |= tcp_flags;
	else
		ct->tcp_server |= tcp_flags;
}

/* A TCP SYN without ACK: the first packet of a connection (or its retransmission). */
static __always_inline bool pkt_is_bare_syn(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN;
}

/* A TCP flow that was reset, or closed from both sides, may be reused by a
 * new SYN with the same ports (TIME_WAIT recycling). */
static __always_inline bool ct_tcp_closed(const struct ct_val *rev)
{
	__u8 all = rev->tcp_client | rev->tcp_server;

	if (all & CT_TCP_RST)
		return true;
	return (rev->tcp_client & CT_TCP_FIN) && (rev->tcp_server & CT_TCP_FIN);
}

/*
 * Both families' conntrack, for the code both per-packet paths share: the
 * key and value of the family's map (kpr_v4_ct or kpr_v6_ct), as Cilium
 * passes (map, tuple) to its ct_lookup4/6. The values share their header
 * (type .. last_seen) at the same offsets, so the header is read and
 * written through struct ct_val for either; the NAT fields go through the
 * accessors below.
 */
union ct_any_key {
	struct ct_key v4;
	struct ct6_key v6;
};

union ct_any_val {
	struct ct_val v4;
	struct ct6_val v6;
};

_Static_assert(offsetof(struct ct6_val, last_seen) == offsetof(struct ct_val, last_seen) &&
	       offsetof(struct ct6_val, svc_id) == offsetof(struct ct_val, svc_id),
	       "ct_val and ct6_val share their header");

static __always_inline void *ct_map(__u8 fam)
{
	return fam == AF_INET6 ? (void *)&kpr_v6_ct : (void *)&kpr_v4_ct;
}

/* FWD: the backend; REV: the frontend. */
static __always_inline __be32 *ct_nat_addr(__u8 fam, const void *v)
{
	return fam == AF_INET6 ? ((struct ct6_val *)v)->nat_addr : &((struct ct_val *)v)->nat_addr;
}

/* FWD: the SNAT source (zero: none); REV: the original client. */
static __always_inline __be32 *ct_nat_saddr(__u8 fam, const void *v)
{
	return fam == AF_INET6 ? ((struct ct6_val *)v)->nat_saddr : &((struct ct_val *)v)->nat_saddr;
}

static __always_inline __u16 ct_nat_port(__u8 fam, const void *v)
{
	return fam == AF_INET6 ? ((const struct ct6_val *)v)->nat_port : ((const struct ct_val *)v)->nat_port;
}

static __always_inline __u16 ct_nat_sport(__u8 fam, const void *v)
{
	return fam == AF_INET6 ? ((const struct ct6_val *)v)->nat_sport : ((const struct ct_val *)v)->nat_sport;
}

/* FWD: the ordinal the backend was picked at. REV of a masqueraded TCP
 * flow: the client's TIME_WAIT mark (snat_tw_note). */
static __always_inline __u32 *ct_be_ordinal_ptr(__u8 fam, const void *v)
{
	return fam == AF_INET6 ? &((struct ct6_val *)v)->be_ordinal : &((struct ct_val *)v)->be_ordinal;
}

static __always_inline __u32 ct_be_ordinal(__u8 fam, const void *v)
{
	return *ct_be_ordinal_ptr(fam, v);
}

static __always_inline bool ct_snat_of(__u8 fam, const void *fwd)
{
	return !addr_is_zero(fam, ct_nat_saddr(fam, fwd));
}

/* Fill a new entry's NAT fields (saddr NULL: none). */
static __always_inline void ct_set_nat(__u8 fam, void *v, const __be32 *addr, __u16 port,
				       const __be32 *saddr, __u16 sport, __u32 ordinal)
{
	if (fam == AF_INET6) {
		struct ct6_val *c = v;

		ipv6_addr_copy(c->nat_addr, addr);
		if (saddr)
			ipv6_addr_copy(c->nat_saddr, saddr);
		c->nat_port = port;
		c->nat_sport = sport;
		c->be_ordinal = ordinal;
	} else {
		struct ct_val *c = v;

		c->nat_addr = addr[0];
		c->nat_saddr = saddr ? saddr[0] : 0;
		c->nat_port = port;
		c->nat_sport = sport;
		c->be_ordinal = ordinal;
	}
}

/* ct_key_make for either family's key. */
static __always_inline bool ct_key_make_fam(__u8 fam, union ct_any_key *k, __u8 proto,
					    const __be32 *a1, __u16 p1, const __be32 *a2, __u16 p2)
{
	struct ct6_key *k6 = &k->v6;
	bool first_is_a;
	int c;

	if (fam != AF_INET6)
		return ct_key_make(&k->v4, proto, a1[0], p1, a2[0], p2);
	c = ipv6_addr_cmp(a1, a2);
	first_is_a = c < 0 || (c == 0 && p1 <= p2);
	k6->proto = proto;
	k6->pad[0] = k6->pad[1] = k6->pad[2] = 0;
	ipv6_addr_copy(k6->addr_a, first_is_a ? a1 : a2);
	ipv6_addr_copy(k6->addr_b, first_is_a ? a2 : a1);
	k6->port_a = first_is_a ? p1 : p2;
	k6->port_b = first_is_a ? p2 : p1;
	return first_is_a;
}

static __always_inline bool ct_key_eq(__u8 fam, const union ct_any_key *a, const union ct_any_key *b)
{
	if (fam != AF_INET6)
		return a->v4.proto == b->v4.proto && a->v4.addr_a == b->v4.addr_a && a->v4.addr_b == b->v4.addr_b &&
		       a->v4.port_a == b->v4.port_a && a->v4.port_b == b->v4.port_b;
	return a->v6.proto == b->v6.proto && ipv6_addr_eq(a->v6.addr_a, b->v6.addr_a) &&
	       ipv6_addr_eq(a->v6.addr_b, b->v6.addr_b) && a->v6.port_a == b->v6.port_a &&
	       a->v6.port_b == b->v6.port_b;
}

/*
 * The REV key a FWD entry leads to: client' <-> backend, where client' is
 * the SNAT source if the flow is masqueraded, else the client (saddr:sport).
 */
static __always_inline bool ct_fwd_rev_key(__u8 fam, union ct_any_key *k, __u8 proto, const void *fwd,
					       const __be32 *saddr, __u16 sport)
{
	if (ct_snat_of(fam, fwd)) {
		saddr = ct_nat_saddr(fam, fwd);
		sport = ct_nat_sport(fam, fwd);
	}
	return ct_key_make_fam(fam, k, proto, saddr, sport, ct_nat_addr(fam, fwd), ct_nat_port(fam, fwd));
}

/*
 * May the flow whose REV entry would be `rev` take the SNAT port `old` holds?
 *  - After a reset, yes: neither end keeps the tuple.
 *  - After FINs, the side that closed first holds the tuple in TIME_WAIT,
 *    which takes a new SYN only if it is past the old connection. That
 *    holds for the same client address and port coming back to the same
 *    frontend (its sequence numbers and timestamps go on: RFC 6528,
 *    RFC 7323), and for any client whose SYN's timestamp is newer than the
 *    old client's last (snat_tw_accepts). Another client's SYN would get a
 *    bare ACK instead of a SYN-ACK and stall, so otherwise the port stays
 *    taken until the controller's scan expires the entry
 *    (CtTimeouts.tcpTimeWait).
 */
static __always_inline bool ct_snat_port_free(__u8 fam, const struct ct_val *old, const void *rev)
{
	if ((old->tcp_client | old->tcp_server) & CT_TCP_RST)
		return true;
	if (!ct_tcp_closed(old))
		return false;
	if (addr_eq(fam, ct_nat_saddr(fam, old), ct_nat_saddr(fam, rev)) &&
	    ct_nat_sport(fam, old) == ct_nat_sport(fam, rev) &&
	    addr_eq(fam, ct_nat_addr(fam, old), ct_nat_addr(fam, rev)) &&
	    ct_nat_port(fam, old) == ct_nat_port(fam, rev))
		return true;
	/* the header both families share holds the TCP flags */
	return snat_tw_accepts(old->tcp_client, ct_be_ordinal(fam, old), ((const struct ct_val *)rev)->tcp_client,
			       ct_be_ordinal(fam, rev));
}

#endif /* KPR_CONNTRACK_H */
