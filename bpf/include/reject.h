/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Rejecting a packet the way kube-proxy's REJECT rule does, from tc: the
 * offending packet is turned into the answer in place and sent back out of
 * the device it arrived on.
 *  - TCP gets a RST (the client's connect() fails with ECONNREFUSED).
 *  - Everything else gets ICMP destination-unreachable (port-unreachable,
 *    or frag-needed with an MTU); over IPv6, ICMPv6 destination-unreachable
 *    (port-unreachable, type 1 code 4).
 *
 * Why a RST for TCP and not ICMP: a SYN from a local pod usually still has
 * its checksum pending (CHECKSUM_PARTIAL, pointing 16 bytes into the TCP
 * header). Truncating it to an ICMP quote leaves that offset past the end
 * of the packet, and the stack drops it. A RST keeps the TCP header where it
 * was, and incremental checksum updates are right in either state.
 */
#ifndef KPR_REJECT_H
#define KPR_REJECT_H

#include "csum.h"
#include "nat_rewrite.h"
#include "parse6.h"

static __always_inline int swap_eth(struct __sk_buff *skb)
{
	struct ethhdr eth;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, eth.h_source, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, eth.h_dest, ETH_ALEN, 0))
		return -1;
	return 0;
}

#define TCP_SEQ_OFF	4
#define TCP_ACK_OFF	8
#define TCP_FLAGS_OFF	12	/* data offset + flags, one 16-bit word */
#define TCP_WIN_OFF	14

/* IPv4 side of a RST: addresses swapped (the checksums do not move),
 * a fresh TTL. */
static __always_inline int tcp_rst_ip4(struct __sk_buff *skb, const struct pkt *p)
{
	__be32 saddr = p->saddr, daddr = p->daddr;
	__u16 old_ttlp, new_ttlp;	/* ttl and protocol: one checksummed word */

	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &old_ttlp, 2))
		return -1;
	if (bpf_skb_store_bytes(skb, IP_SADDR_OFF, &daddr, 4, 0) ||
	    bpf_skb_store_bytes(skb, IP_DADDR_OFF, &saddr, 4, 0))
		return -1;
	new_ttlp = old_ttlp;
	*(__u8 *)&new_ttlp = 64;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttlp, new_ttlp, 2) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &new_ttlp, 2, 0))
		return -1;
	return 0;
}

/* IPv6 side: addresses swapped (both sit in the pseudo header, so the TCP
 * checksum does not move), a fresh hop limit. */
static __always_inline int tcp_rst_ip6(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 hl = 64;

	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), p->daddr6, 16, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), p->saddr6, 16, 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0))
		return -1;
	return 0;
}

static __noinline int tcp_send_rst(struct __sk_buff *skb, const struct pkt *p)
{
	__u32 l4 = p->l4_off;
	__u32 seq, new_ack, zero = 0;
	__u16 old_flags, new_flags, old_win, new_win = 0;
	__be16 sport = bpf_htons(p->sport), dport = bpf_htons(p->dport);
	__be32 old_ack;

	if (p->frag != FRAG_NONE)
		return TC_ACT_SHOT;
	/* IPv6: only without extension headers, which (a routing header) a
	 * reply could not simply carry back. */
	if (p->family == AF_INET6 ? l4 != ETH_HLEN + sizeof(struct ipv6hdr) : l4 > ETH_HLEN + 60)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, l4 + TCP_SEQ_OFF, &seq, sizeof(seq)) ||
	    bpf_skb_load_bytes(skb, l4 + TCP_ACK_OFF, &old_ack, sizeof(old_ack)) ||
	    bpf_skb_load_bytes(skb, l4 + TCP_FLAGS_OFF, &old_flags, sizeof(old_flags)) ||
	    bpf_skb_load_bytes(skb, l4 + TCP_WIN_OFF, &old_win, sizeof(old_win)))
		return TC_ACT_SHOT;

	/* Acknowledge the SYN (and anything it carried) so the client takes
	 * the reset as an answer to its connection attempt. */
	new_ack = bpf_htonl(bpf_ntohl(seq) + 1 + (p->tot_len - (l4 - ETH_HLEN) -
						 ((bpf_ntohs(old_flags) >> 12) * 4)));
	/* keep the data offset; flags become RST+ACK */
	new_flags = bpf_htons((bpf_ntohs(old_flags) & 0xf000) | 0x0014);

	/* Swapping addresses and ports leaves every checksum as it was. */
	if (p->family == AF_INET6 ? tcp_rst_ip6(skb, p) : tcp_rst_ip4(skb, p))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, l4, &dport, 2, 0) ||
	    bpf_skb_store_bytes(skb, l4 + 2, &sport, 2, 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), seq, zero, 4) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_SEQ_OFF, &zero, 4, 0) ||
	    bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), old_ack, new_ack, 4) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_ACK_OFF, &new_ack, 4, 0) ||
	    bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), old_flags, new_flags, 2) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_FLAGS_OFF, &new_flags, 2, 0) ||
	    bpf_l4_csum_replace(skb, l4 + offsetof(struct tcphdr, check), old_win, new_win, 2) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_WIN_OFF, &new_win, 2, 0))
		return TC_ACT_SHOT;
	if (swap_eth(skb))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#define ICMP_ERR_HLEN	(sizeof(struct iphdr) + sizeof(struct icmphdr))

static __noinline int icmp_send_unreach(struct __sk_buff *skb, const struct pkt *p, __u8 code, __u16 mtu)
{
	__u32 ihl = p->l4_off - p->l3_off;
	__u32 quoted = ihl + 8;	/* the offending IP header and 64 bits of its payload */
	struct iphdr ip = {};
	struct icmphdr icmp = {};
	void *data, *data_end;
	__u64 sum;
	__u16 csum;

	if (ihl < 20 || ihl > 60)
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, ICMP_ERR_HLEN, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + ICMP_ERR_HLEN + quoted, 0))
		return TC_ACT_SHOT;

	/* Back to the sender. */
	if (swap_eth(skb))
		return TC_ACT_SHOT;

	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(ICMP_ERR_HLEN + quoted);
	ip.ttl = 64;
	ip.protocol = IPPROTO_ICMP;
	/* From the address the client asked for, as a router or host would. */
	ip.saddr = p->daddr;
	ip.daddr = p->saddr;
	sum = csum_add_words(&ip, (void *)(&ip + 1), sizeof(ip), 0);
	ip.check = csum_fold32(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0))
		return TC_ACT_SHOT;

	icmp.type = ICMP_DEST_UNREACH;
	icmp.code = code;
	icmp.un.frag.mtu = bpf_htons(mtu);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, sizeof(icmp), 0))
		return TC_ACT_SHOT;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + ICMP_ERR_HLEN + quoted > data_end)
		return TC_ACT_SHOT;
	sum = csum_add_words(data + ETH_HLEN + sizeof(ip), data_end, sizeof(icmp) + quoted, 0);
	csum = csum_fold32(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip) + offsetof(struct icmphdr, checksum), &csum, sizeof(csum), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* kube-proxy's REJECT for a Service without endpoints. */
static __always_inline int nat_reject(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return tcp_send_rst(skb, p);
	return icmp_send_unreach(skb, p, ICMP_PORT_UNREACH, 0);
}

#define ICMP6_ERR_HLEN	(sizeof(struct ipv6hdr) + 8)

/* The sum of ICMPv6's pseudo header (RFC 8200 8.1), from its 32-bit words
 * (a word's two halves are congruent to it modulo 0xffff): no 40-byte copy
 * on a stack the tc path has none to spare of. */
static __always_inline __u64 icmp6_pseudo_sum(const struct pkt *p, __u32 len)
{
	__u64 sum = (__u64)bpf_htonl(len) + bpf_htonl(IPPROTO_ICMPV6);

#pragma unroll
	for (int i = 0; i < 4; i++)
		sum += (__u64)p->saddr6[i] + p->daddr6[i];
	return sum;
}

/* RFC 4443 2.4(c): an error carries as much of the offending packet as
 * fits in IPv6's minimum MTU. */
#define ICMP6_QUOTE_MAX	(1280 - ICMP6_ERR_HLEN)

/*
 * ICMPv6 error from the address the client asked for, quoting the offending
 * IPv6 header (and extension headers) plus 8 bytes of L4, as icmp_send_unreach
 * does for IPv4, cut at ICMP6_QUOTE_MAX. `info` is the MTU of a Packet Too
 * Big, else 0.
 */
static __noinline int icmp6_send_error(struct __sk_buff *skb, const struct pkt *p, __u8 type, __u8 code,
				       __u32 info)
{
	__u32 quoted = p->l4_off - p->l3_off + 8;
	struct ipv6hdr ip6 = {};
	struct {
		__u8 type;
		__u8 code;
		__u16 csum;
		__be32 info;
	} icmp = {};
	__s64 msum;
	__u64 sum;
	__u16 csum;

	if (quoted < sizeof(ip6) + 8)
		return TC_ACT_SHOT;
	/* Extension headers are multiples of 8 bytes, and so is the cut: the
	 * message stays a whole number of csum_skb_range's chunks. */
	if (quoted > ICMP6_QUOTE_MAX)
		quoted = ICMP6_QUOTE_MAX;
	if (bpf_skb_adjust_room(skb, ICMP6_ERR_HLEN, BPF_ADJ_ROOM_MAC, 0))
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, ETH_HLEN + ICMP6_ERR_HLEN + quoted, 0))
		return TC_ACT_SHOT;
	if (swap_eth(skb))
		return TC_ACT_SHOT;

	ip6.version = 6;
	ip6.payload_len = bpf_htons(sizeof(icmp) + quoted);
	ip6.nexthdr = IPPROTO_ICMPV6;
	ip6.hop_limit = 64;
	__builtin_memcpy(&ip6.saddr, p->daddr6, 16);
	__builtin_memcpy(&ip6.daddr, p->saddr6, 16);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0))
		return TC_ACT_SHOT;
	icmp.type = type;
	icmp.code = code;
	icmp.info = bpf_htonl(info);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6), &icmp, sizeof(icmp), 0))
		return TC_ACT_SHOT;

	sum = icmp6_pseudo_sum(p, sizeof(icmp) + quoted);
	msum = csum_skb_range(skb, ETH_HLEN + sizeof(ip6), sizeof(icmp) + quoted);
	if (msum < 0)
		return TC_ACT_SHOT;
	csum = csum_fold32(sum + (__u64)msum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6) + offsetof(typeof(icmp), csum), &csum, sizeof(csum), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* kube-proxy's REJECT over IPv6: a RST, or ICMPv6 port-unreachable (also
 * for TCP behind extension headers, which a RST built in place cannot
 * carry back). */
static __always_inline int nat6_reject(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP && p->l4_off == ETH_HLEN + sizeof(struct ipv6hdr))
		return tcp_send_rst(skb, p);
	return icmp6_send_error(skb, p, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, 0);
}

#endif /* KPR_REJECT_H */
