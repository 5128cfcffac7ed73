/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet rewrite for NAT: one address or port at a time, with the IP header
 * checksum and the L4 checksum (pseudo header for addresses) fixed
 * incrementally. `struct pkt` is kept in step with the packet. IPv6 has no
 * header checksum: an address change only moves the L4 checksum (ICMPv6's
 * too, which covers a pseudo header as TCP and UDP do).
 */
#ifndef KPR_NAT_REWRITE_H
#define KPR_NAT_REWRITE_H

#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif
#include <linux/ipv6.h>
#include "parse.h"
#include "addr6.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6	58
#endif

#define IP_CSUM_OFF	(ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SADDR_OFF	(ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF	(ETH_HLEN + offsetof(struct iphdr, daddr))

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return p->l4_off + offsetof(struct tcphdr, check);
	return p->l4_off + offsetof(struct udphdr, check);
}

/* UDP may carry no checksum (0): leave it so, and never produce 0. */
static __always_inline __u64 l4_csum_flags(const struct pkt *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

static __always_inline bool pkt_has_l4(const struct pkt *p)
{
	return p->frag != FRAG_LATER && (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP);
}

static __always_inline int nat_set_addr(struct __sk_buff *skb, struct pkt *p, bool src, __be32 to)
{
	__be32 from = src ? p->saddr : p->daddr;

	if (from == to)
		return 0;
	if (pkt_has_l4(p) &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				BPF_F_PSEUDO_HDR | sizeof(to) | l4_csum_flags(p)))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)))
		return -1;
	if (bpf_skb_store_bytes(skb, src ? IP_SADDR_OFF : IP_DADDR_OFF, &to, sizeof(to), 0))
		return -1;
	if (src)
		p->saddr = to;
	else
		p->daddr = to;
	return 0;
}

static __always_inline int nat_set_port(struct __sk_buff *skb, struct pkt *p, bool src, __u16 to_host)
{
	__be16 from = bpf_htons(src ? p->sport : p->dport);
	__be16 to = bpf_htons(to_host);

	if (from == to)
		return 0;
	/* Later fragments have no ports on the wire: the first one carried them. */
	if (pkt_has_l4(p)) {
		if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, sizeof(to) | l4_csum_flags(p)))
			return -1;
		/* source and dest sit at the same offsets in TCP and UDP */
		if (bpf_skb_store_bytes(skb, p->l4_off + (src ? 0 : 2), &to, sizeof(to), 0))
			return -1;
	}
	if (src)
		p->sport = to_host;
	else
		p->dport = to_host;
	return 0;
}

static __always_inline int nat6_set_addr(struct __sk_buff *skb, struct pkt *p, bool src, const __be32 *to_ptr)
{
	__be32 *from = src ? p->saddr6 : p->daddr6;
	__u32 off = p->l3_off + (src ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
	__u32 csum_off = 0;
	__be32 to[4];

	/* A copy: `to_ptr` may point into a map value, or into *p itself. */
	ipv6_addr_copy(to, to_ptr);
	if (ipv6_addr_eq(from, to))
		return 0;
	if (pkt_has_l4(p))
		csum_off = l4_csum_off(p);
	else if (p->proto == IPPROTO_ICMPV6)
		csum_off = p->l4_off + 2;
	if (csum_off) {
#pragma unroll
		for (int i = 0; i < 4; i++)
			if (bpf_l4_csum_replace(skb, csum_off, from[i], to[i],
						BPF_F_PSEUDO_HDR | sizeof(to[i]) | l4_csum_flags(p)))
				return -1;
	}
	if (bpf_skb_store_bytes(skb, off, to, sizeof(to), 0))
		return -1;
	ipv6_addr_copy(from, to);
	return 0;
}

/* Rewrite source and destination in one go, in the packet's family
 * (addresses as in struct pkt: IPv4 in word 0); any failure leaves a
 * packet that must not be sent, so the caller drops it. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, const __u8 fam,
				       const __be32 *saddr, __u16 sport, const __be32 *daddr, __u16 dport)
{
	if (fam == AF_INET6) {
		if (nat6_set_addr(skb, p, true, saddr) || nat6_set_addr(skb, p, false, daddr))
			return -1;
	} else {
		__be32 s4 = saddr[0], d4 = daddr[0];

		if (nat_set_addr(skb, p, true, s4) || nat_set_addr(skb, p, false, d4))
			return -1;
	}
	if (nat_set_port(skb, p, true, sport) || nat_set_port(skb, p, false, dport))
		return -1;
	return 0;
}

#endif /* KPR_NAT_REWRITE_H */
