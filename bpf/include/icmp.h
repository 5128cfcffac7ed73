/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * ICMP errors about NATed flows: icmp_error_xlate() rewrites the outer and
 * the quoted headers, so port-unreachable and frag-needed reach the client
 * as if the Service address had sent them.
 */
#ifndef KPR_ICMP_H
#define KPR_ICMP_H

#include "conntrack.h"
#include "csum.h"
#include "forward.h"

/* Rewrite one 4-byte address inside the quoted header of an ICMP error,
 * keeping the quoted IP checksum and the ICMP checksum right. */
static __always_inline int icmp_inner_set_addr(struct __sk_buff *skb, __u32 icmp_csum_off,
					       __u32 inner_l3, __u32 field_off, __be32 from, __be32 to)
{
	__u32 inner_csum_off = inner_l3 + offsetof(struct iphdr, check);
	__u16 old_csum, new_csum;

	if (from == to)
		return 0;
	if (bpf_skb_load_bytes(skb, inner_csum_off, &old_csum, sizeof(old_csum)))
		return -1;
	if (bpf_l3_csum_replace(skb, inner_csum_off, from, to, sizeof(to)))
		return -1;
	if (bpf_skb_store_bytes(skb, inner_l3 + field_off, &to, sizeof(to), 0))
		return -1;
	if (bpf_skb_load_bytes(skb, inner_csum_off, &new_csum, sizeof(new_csum)))
		return -1;
	if (bpf_l4_csum_replace(skb, icmp_csum_off, from, to, sizeof(to)))
		return -1;
	return bpf_l4_csum_replace(skb, icmp_csum_off, old_csum, new_csum, sizeof(new_csum)) ? -1 : 0;
}

static __always_inline int icmp_inner_set_port(struct __sk_buff *skb, __u32 icmp_csum_off,
					       __u32 off, __u16 from_host, __u16 to_host)
{
	__be16 from = bpf_htons(from_host), to = bpf_htons(to_host);

	if (from == to)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0))
		return -1;
	return bpf_l4_csum_replace(skb, icmp_csum_off, from, to, sizeof(to)) ? -1 : 0;
}

/*
 * An ICMP error quoting a packet the client' sent to a backend (after NAT):
 * make it look like the error was about client -> Service, sent to the
 * client. Returns a TC action, or -1 when the error is not about a NATed
 * flow (the caller passes it on).
 */
static __noinline int icmp_error_xlate(struct __sk_buff *skb, struct pkt *p, bool ingress)
{
	__u32 inner_l3 = p->l4_off + sizeof(struct icmphdr);
	__u32 icmp_csum_off = p->l4_off + offsetof(struct icmphdr, checksum);
	struct iphdr inner;
	__u32 inner_l4;
	__u16 ports[2];
	__u16 isport, idport;
	struct ct_key key;
	struct ct_val *ct;
	bool src_is_a;
	__be32 isaddr, idaddr;

	if (p->frag != FRAG_NONE)
		return -1;
	/* Copies, not packet pointers: the quoted header sits at an offset
	 * the verifier cannot bound, and the helper checks it for us. */
	if (bpf_skb_load_bytes(skb, inner_l3, &inner, sizeof(inner)))
		return -1;
	if (inner.version != 4 || inner.ihl < 5)
		return -1;
	if (inner.protocol != IPPROTO_TCP && inner.protocol != IPPROTO_UDP)
		return -1;
	inner_l4 = inner_l3 + inner.ihl * 4;
	if (bpf_skb_load_bytes(skb, inner_l4, ports, sizeof(ports)))
		return -1;
	isaddr = inner.saddr;
	idaddr = inner.daddr;
	isport = bpf_ntohs(ports[0]);
	idport = bpf_ntohs(ports[1]);

	src_is_a = ct_key_make(&key, inner.protocol, isaddr, isport, idaddr, idport);
	ct = bpf_map_lookup_elem(&kpr_v4_ct, &key);
	/* Only errors about the client's own packets (client' -> backend). */
	if (!ct || ct->type != CT_REV || !ct_from_client(ct, src_is_a))
		return -1;

	/* Quoted packet: client' -> backend  becomes  client -> VIP. */
	if (icmp_inner_set_addr(skb, icmp_csum_off, inner_l3, offsetof(struct iphdr, daddr), idaddr, ct->nat_addr) ||
	    icmp_inner_set_addr(skb, icmp_csum_off, inner_l3, offsetof(struct iphdr, saddr), isaddr, ct->nat_saddr) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4 + 2, idport, ct->nat_port) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4, isport, ct->nat_sport))
		return TC_ACT_SHOT;

	/* Outer header: to the real client; from the VIP if the backend sent it. */
	if (nat_set_addr(skb, p, false, ct->nat_saddr))
		return TC_ACT_SHOT;
	if (p->saddr == idaddr && nat_set_addr(skb, p, true, ct->nat_addr))
		return TC_ACT_SHOT;
	stat_inc(STAT_TC_ICMP_ERR);
	return ingress ? nat_forward(skb, p) : TC_ACT_OK;
}

#endif /* KPR_ICMP_H */
