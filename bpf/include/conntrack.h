/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Conntrack for per-packet NAT (see struct ct_key in maps.h). The data path
 * only creates, finds and touches entries; expiry is the controller's
 * periodic scan, which reads the timestamps and TCP flags kept here.
 */
#ifndef KPR_CONNTRACK_H
#define KPR_CONNTRACK_H

#include "maps.h"
#include "parse.h"

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

/*
 * The REV key a FWD entry leads to: client' <-> backend, where client' is
 * the SNAT source if the flow is masqueraded, else the client (saddr:sport).
 */
static __always_inline bool ct_fwd_rev_key(struct ct_key *k, __u8 proto, const struct ct_val *fwd,
					   __be32 saddr, __u16 sport)
{
	if (fwd->nat_saddr) {
		saddr = fwd->nat_saddr;
		sport = fwd->nat_sport;
	}
	return ct_key_make(k, proto, saddr, sport, fwd->nat_addr, fwd->nat_port);
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

/* A TCP flow that was reset, or closed from both sides, may be reused by a
 * new SYN with the same ports (TIME_WAIT recycling). */
static __always_inline bool ct_tcp_closed(const struct ct_val *rev)
{
	__u8 all = rev->tcp_client | rev->tcp_server;

	if (all & CT_TCP_RST)
		return true;
	return (rev->tcp_client & CT_TCP_FIN) && (rev->tcp_server & CT_TCP_FIN);
}

#endif /* KPR_CONNTRACK_H */
