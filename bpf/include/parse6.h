/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * IPv6 parsing, and pkt_parse(), which picks the family. The extension
 * header chain is walked with a bounded loop over the headers a host or
 * router may put before L4 (hop-by-hop, routing, destination options,
 * fragment). A packet kpr cannot read to its L4 header (truncated, a chain
 * longer than the bound) is passed untouched and counted, never translated
 * on a guess. Neighbour discovery is passed before anything else looks at
 * it. Headers are read by copy (bpf_skb_load_bytes): their offsets depend
 * on the chain, and the helper does the bounds check.
 */
#ifndef KPR_PARSE6_H
#define KPR_PARSE6_H

#include <linux/ipv6.h>
#include "parse.h"
#include "maps.h"

#define NEXTHDR_HOP		0
#define NEXTHDR_ROUTING		43
#define NEXTHDR_FRAGMENT	44
#define NEXTHDR_ICMP		58
#define NEXTHDR_DEST		60

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6		58
#endif

/* Extension headers walked before giving up. RFC 8200's recommended order
 * has at most five before L4 (hop-by-hop, destination options, routing,
 * fragment, destination options); one more leaves room for a repeat. */
#define IPV6_EXT_MAX		6

#define ICMPV6_DEST_UNREACH	1
#define ICMPV6_PKT_TOOBIG	2
#define ICMPV6_TIME_EXCEED	3
#define ICMPV6_PARAMPROB	4
#define ICMPV6_PORT_UNREACH	4	/* code of ICMPV6_DEST_UNREACH */
#define ICMPV6_ND_FIRST		133	/* router solicitation ... */
#define ICMPV6_ND_LAST		137	/* ... redirect */

/* ICMPv6 types below 128 are errors (RFC 4443 2.1). */
static __always_inline bool icmp6_is_error(__u8 type)
{
	return type < 128;
}

static __always_inline bool ipv6_is_ext(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST || nh == NEXTHDR_FRAGMENT;
}

/* RFC 8200 4.5; linux/ipv6.h has no frag_hdr for BPF. */
struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset in 8-byte units << 3, 2 reserved bits, M */
	__be32 id;
};

#define IPV6_FRAG_OFFSET	0xfff8
#define IPV6_FRAG_MORE		0x0001

/* Out of line: its header copies would otherwise sit in kpr_tc's frame,
 * which heads the deepest call chain (the verifier's 512-byte stack). */
static __noinline enum parse_result parse6(struct __sk_buff *skb, struct pkt *p)
{
	struct ipv6hdr ip6;
	__u32 off = ETH_HLEN + sizeof(ip6);
	__u8 frag = FRAG_NONE;
	__u8 nh;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) || ip6.version != 6)
		goto unparsed;
	nh = ip6.nexthdr;

#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 ext[2];	/* next header, length in 8-byte units past the first 8 */

		if (!ipv6_is_ext(nh))
			break;
		if (nh == NEXTHDR_FRAGMENT) {
			struct ipv6_frag_hdr fh;
			__u16 fo;

			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				goto unparsed;
			off += sizeof(fh);
			nh = fh.nexthdr;
			fo = bpf_ntohs(fh.frag_off);
			/* Offset 0 without M is an atomic fragment: a whole datagram. */
			frag = (fo & IPV6_FRAG_OFFSET) ? FRAG_LATER : (fo & IPV6_FRAG_MORE) ? FRAG_FIRST : FRAG_NONE;
			p->frag_id = fh.id;
			/* Later fragments find their ports by the L4 protocol the
			 * fragment header names: with another header between the
			 * two, first and later fragments could not agree, so none
			 * is translated. */
			if (frag != FRAG_NONE && nh != IPPROTO_TCP && nh != IPPROTO_UDP) {
				stat_inc(STAT_TC_V6_FRAG);
				return PARSE_SKIP;
			}
			if (frag == FRAG_LATER)
				break;	/* no L4 header: ports come from kpr_v6_frag */
			continue;
		}
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
			goto unparsed;
		nh = ext[0];
		off += ((__u32)ext[1] + 1) * 8;
	}
	if (ipv6_is_ext(nh))
		goto unparsed;

	p->family = AF_INET6;
	p->l3_off = ETH_HLEN;
	p->l4_off = off;
	p->proto = nh;
	p->frag = frag;
	/* The header's length, as IPv4's tot_len; 0 for a jumbogram or a
	 * BIG TCP GSO packet, and only used to acknowledge a rejected SYN. */
	p->tot_len = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
	__builtin_memcpy(p->saddr6, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr6, &ip6.daddr, 16);
	if (frag == FRAG_LATER)
		return PARSE_OK;

	switch (nh) {
	case IPPROTO_TCP: {
		struct tcphdr th;

		if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
			goto unparsed;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = tcp_flags_of(&th);
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr uh;

		if (bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)))
			goto unparsed;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		break;
	}
	case IPPROTO_ICMPV6: {
		__u8 type;

		if (bpf_skb_load_bytes(skb, off, &type, sizeof(type)))
			goto unparsed;
		/* Neighbour discovery is the link's, never a Service's. */
		if (type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST)
			return PARSE_SKIP;
		p->icmp_type = type;
		break;
	}
	default:
		break;
	}
	return PARSE_OK;
unparsed:
	stat_inc(STAT_TC_V6_UNPARSED);
	return PARSE_SKIP;
}

static __always_inline enum parse_result pkt_parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data, *data_end;
	struct ethhdr *eth;

	pkt_pull(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_SKIP;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse4(skb, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse6(skb, p);
	return PARSE_SKIP;
}

#endif /* KPR_PARSE6_H */
