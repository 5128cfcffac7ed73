/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Sending a NATed packet on. After NAT at ingress the packet may carry this
 * node's own address as its source (SNAT) or a VIP nobody routes (reverse
 * NAT); the stack's input checks would call it martian. So kpr does the
 * route lookup itself and redirects to the egress device, as Calico and
 * Cilium do, and leaves local delivery to the stack.
 */
#ifndef KPR_FORWARD_H
#define KPR_FORWARD_H

#include <linux/pkt_cls.h>
#include "nat_rewrite.h"


static __always_inline int ip_decrease_ttl(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__u16 old, new;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->ttl <= 1)
		return -1;
	old = *(__u16 *)&ip->ttl;	/* ttl and protocol share one 16-bit word */
	ip->ttl--;
	new = *(__u16 *)&ip->ttl;
	return bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new));
}

/* IPv6: the hop limit, which no checksum covers. */
static __always_inline int ip6_decrease_hop_limit(struct __sk_buff *skb)
{
	__u32 off = ETH_HLEN + offsetof(struct ipv6hdr, hop_limit);
	__u8 hl;

	if (bpf_skb_load_bytes(skb, off, &hl, 1) || hl <= 1)
		return -1;
	hl--;
	return bpf_skb_store_bytes(skb, off, &hl, 1, 0);
}

/*
 * IP length of the largest packet this skb becomes on the wire. A GSO skb
 * (from a local TCP/UDP socket, or aggregated by GRO) is cut into gso_size
 * payloads, each with its own IP and L4 headers; anything else is sent as is.
 */
static __always_inline __u32 pkt_wire_len(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 doff;
	__u32 l4hdr = sizeof(struct udphdr);

	if (!skb->gso_size)
		return p->tot_len;
	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, p->l4_off + 12, &doff, 1))
			return p->tot_len;
		l4hdr = (doff >> 4) * 4;
	}
	return p->l4_off - p->l3_off + l4hdr + skb->gso_size;
}

static __noinline int nat_forward(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = p->proto,
		.sport = bpf_htons(p->sport),
		.dport = bpf_htons(p->dport),
		/* 0: no MTU check on the IP length. The header's length of a
		 * GSO/GRO packet is the aggregate (up to 64 KB) and would fail
		 * it; with 0 the kernel checks the skb against the egress MTU
		 * itself, and passes GSO skbs (they are segmented on egress). */
		.tot_len = 0,
		.ifindex = skb->ingress_ifindex,
	};
	long rc;

	if (p->family == AF_INET6) {
		fib.family = AF_INET6;
		ipv6_addr_copy(fib.ipv6_src, p->saddr6);
		ipv6_addr_copy(fib.ipv6_dst, p->daddr6);
	} else {
		fib.ipv4_src = p->saddr;
		fib.ipv4_dst = p->daddr;
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* Local delivery, or something only the stack knows how to do. */
		if (rc != BPF_FIB_LKUP_RET_NOT_FWDED)
			stat_inc(STAT_TC_REDIRECT_FAIL);
		return TC_ACT_OK;
	}
	/* TTL expiring: let the stack send time-exceeded. */
	if (p->family == AF_INET6 ? ip6_decrease_hop_limit(skb) : ip_decrease_ttl(skb))
		return TC_ACT_OK;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

#endif /* KPR_FORWARD_H */
