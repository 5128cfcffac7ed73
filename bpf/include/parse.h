/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet parsing for the tc programs. Every header access is bounds-checked
 * against data_end; anything kpr does not translate (non-IPv4, truncated or
 * malformed headers) is reported as PARSE_SKIP and passed to the stack
 * untouched, which then applies its own checks.
 */
#ifndef KPR_PARSE_H
#define KPR_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* linux/icmp.h drags in libc headers that do not exist for the BPF
 * target; the few ICMP definitions needed are here. */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		struct {
			__be16 unused;
			__be16 mtu;
		} frag;
	} un;
};

#define ICMP_DEST_UNREACH	3
#define ICMP_SOURCE_QUENCH	4
#define ICMP_TIME_EXCEEDED	11
#define ICMP_PARAMETERPROB	12
#define ICMP_PORT_UNREACH	3	/* code */
#define ICMP_FRAG_NEEDED	4	/* code */

#define IP_DF		0x4000
#define IP_MF		0x2000
#define IP_OFFSET	0x1fff

/* Enough linear data for eth + IPv4 with options + an ICMP error that
 * embeds IPv4 with options and 8 bytes of L4. */
#define PARSE_PULL_LEN	(ETH_HLEN + 60 + 8 + 60 + 8)

enum parse_result {
	PARSE_OK = 0,
	PARSE_SKIP,
};

enum pkt_frag {
	FRAG_NONE = 0,
	FRAG_FIRST,	/* MF set, offset 0: has the L4 header */
	FRAG_LATER,	/* offset > 0: no L4 header */
};

/*
 * One parsed packet of either family. The addresses are 16 bytes wide: an
 * IPv4 address sits in word 0 with the rest zero, so family-neutral code
 * handles both as `__be32 *` plus `family` (family.h), while IPv4-only code
 * (the IPv4 DSR option, the IPv4 Maglev hash) keeps reading saddr/daddr.
 */
struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	union {
		__be32 saddr;
		__be32 saddr6[4];
	};
	union {
		__be32 daddr;
		__be32 daddr6[4];
	};
	__u16 sport;	/* host order; ICMP echo: the identifier */
	__u16 dport;
	__u16 tot_len;	/* host order */
	__u8 proto;
	__u8 tcp_flags;	/* CT_TCP_* of this segment */
	__u8 frag;	/* enum pkt_frag */
	__u8 icmp_type;
	__u8 df;	/* don't-fragment set */
	__u8 family;	/* AF_INET or AF_INET6 */
	__be32 frag_id;	/* IPv4's 16-bit id or the IPv6 fragment header's 32-bit one, as on the wire */
};

#ifndef AF_INET
#define AF_INET		2
#endif
#ifndef AF_INET6
#define AF_INET6	10
#endif

static __always_inline __u8 tcp_flags_of(const struct tcphdr *th)
{
	__u8 f = 0;

	if (th->syn)
		f |= 0x01;	/* CT_TCP_SYN */
	if (th->ack)
		f |= 0x02;	/* CT_TCP_ACK */
	if (th->fin)
		f |= 0x04;	/* CT_TCP_FIN */
	if (th->rst)
		f |= 0x08;	/* CT_TCP_RST */
	return f;
}

static __always_inline void pkt_pull(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 want = skb->len < PARSE_PULL_LEN ? skb->len : PARSE_PULL_LEN;

	/* Non-linear skbs: make the headers directly readable. */
	if (data + want > data_end)
		bpf_skb_pull_data(skb, want);
}

/* IPv4 after the Ethernet header; the caller pulled the headers in. */
static __always_inline enum parse_result parse4(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u16 frag_off;
	__u32 ihl;

	if ((void *)(ip + 1) > data_end)
		return PARSE_SKIP;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_SKIP;
	ihl = ip->ihl * 4;
	if ((void *)ip + ihl > data_end)
		return PARSE_SKIP;

	p->family = AF_INET;
	p->l3_off = ETH_HLEN;
	p->l4_off = ETH_HLEN + ihl;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->frag_id = ip->id;
	p->tot_len = bpf_ntohs(ip->tot_len);

	frag_off = bpf_ntohs(ip->frag_off);
	p->df = !!(frag_off & IP_DF);
	if (frag_off & IP_OFFSET) {
		p->frag = FRAG_LATER;
		return PARSE_OK;	/* ports come from the fragment map */
	}
	p->frag = (frag_off & IP_MF) ? FRAG_FIRST : FRAG_NONE;

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = (void *)ip + ihl;

		if ((void *)(th + 1) > data_end)
			return PARSE_SKIP;
		p->sport = bpf_ntohs(th->source);
		p->dport = bpf_ntohs(th->dest);
		p->tcp_flags = tcp_flags_of(th);
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = (void *)ip + ihl;

		if ((void *)(uh + 1) > data_end)
			return PARSE_SKIP;
		p->sport = bpf_ntohs(uh->source);
		p->dport = bpf_ntohs(uh->dest);
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ih = (void *)ip + ihl;

		if ((void *)(ih + 1) > data_end)
			return PARSE_SKIP;
		p->icmp_type = ih->type;
		break;
	}
	default:
		break;
	}
	return PARSE_OK;
}

static __always_inline bool icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB || type == ICMP_SOURCE_QUENCH;
}

#endif /* KPR_PARSE_H */
