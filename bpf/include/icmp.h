/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * ICMP errors about NATed flows: icmp_error_xlate() rewrites the outer and
 * the quoted headers, so port-unreachable and frag-needed reach the client
 * as if the Service address had sent them. icmp6_error_xlate() does the same
 * for ICMPv6 (Packet Too Big above all: without it PMTU discovery breaks).
 *
 * Both directions of a flow, as nf_nat does for kube-proxy:
 * - about the client's packet after NAT (client' -> backend; a hop towards
 *   the backend): quote client -> Service, sent to the client;
 * - about the reply after reverse NAT (Service -> client; a hop towards
 *   the client, which sends the error to the Service address, i.e. here):
 *   quote backend -> client', sent to the backend.
 * Either way the error goes to the quoted packet's new source, and if the
 * quoted packet's destination sent it, it now comes from the new one.
 */
#ifndef KPR_ICMP_H
#define KPR_ICMP_H

#include "conntrack.h"
#include "csum.h"
#include "forward.h"
#include "parse6.h"

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
 * An ICMP error about a NATed flow, in either direction (see above).
 * Returns a TC action, or -1 when the error is not about a NATed flow (the
 * caller passes it on).
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
	__be32 isaddr, idaddr, to_saddr, to_daddr;
	__u16 to_sport, to_dport;

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
	if (!ct)
		return -1;
	if (ct->type == CT_REV && ct_from_client(ct, src_is_a)) {
		/* client' -> backend  becomes  client -> VIP */
		to_saddr = ct->nat_saddr;
		to_sport = ct->nat_sport;
		to_daddr = ct->nat_addr;
		to_dport = ct->nat_port;
	} else if (ct->type == CT_FWD && !ct_from_client(ct, src_is_a) && !(ct->flags & CT_F_DSR)) {
		/* VIP -> client  becomes  backend -> client' (the client
		 * itself when not masqueraded). A DSR reply never passed here. */
		to_saddr = ct->nat_addr;
		to_sport = ct->nat_port;
		to_daddr = ct->nat_saddr ? ct->nat_saddr : idaddr;
		to_dport = ct->nat_saddr ? ct->nat_sport : idport;
	} else {
		return -1;
	}

	if (icmp_inner_set_addr(skb, icmp_csum_off, inner_l3, offsetof(struct iphdr, daddr), idaddr, to_daddr) ||
	    icmp_inner_set_addr(skb, icmp_csum_off, inner_l3, offsetof(struct iphdr, saddr), isaddr, to_saddr) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4 + 2, idport, to_dport) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4, isport, to_sport))
		return TC_ACT_SHOT;

	/* Outer header: to the quoted packet's sender; from its new
	 * destination if its old one sent the error. */
	if (nat_set_addr(skb, p, false, to_saddr))
		return TC_ACT_SHOT;
	if (p->saddr == idaddr && nat_set_addr(skb, p, true, to_daddr))
		return TC_ACT_SHOT;
	stat_inc(STAT_TC_ICMP_ERR);
	return ingress ? nat_forward(skb, p) : TC_ACT_OK;
}

/* One 16-byte address inside an ICMPv6 error's quote: the ICMPv6 checksum
 * covers it as message data (no pseudo header), and IPv6 has no header
 * checksum of its own. */
static __always_inline int icmp6_inner_set_addr(struct __sk_buff *skb, __u32 icmp_csum_off, __u32 off,
						const __be32 *from, const __be32 *to_ptr)
{
	__be32 to[4];

	ipv6_addr_copy(to, to_ptr);
	if (ipv6_addr_eq(from, to))
		return 0;
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (bpf_l4_csum_replace(skb, icmp_csum_off, from[i], to[i], sizeof(to[i])))
			return -1;
	return bpf_skb_store_bytes(skb, off, to, sizeof(to), 0) ? -1 : 0;
}

/*
 * icmp_error_xlate for ICMPv6, in both directions alike. The quote is read
 * by copy; one whose IPv6 header is followed by extension headers is not
 * translated.
 */
static __noinline int icmp6_error_xlate(struct __sk_buff *skb, struct pkt *p, bool ingress)
{
	__u32 inner_l3 = p->l4_off + 8;
	__u32 inner_l4 = inner_l3 + sizeof(struct ipv6hdr);
	__u32 icmp_csum_off = p->l4_off + 2;
	struct ipv6hdr inner;
	__be32 isaddr[4], idaddr[4];
	__u16 ports[2], isport, idport;
	union ct_any_key key;
	struct ct6_val *ct;
	const __be32 *to_saddr, *to_daddr;
	__u16 to_sport, to_dport;
	bool src_is_a, snat;

	if (bpf_skb_load_bytes(skb, inner_l3, &inner, sizeof(inner)))
		return -1;
	if (inner.version != 6 || (inner.nexthdr != IPPROTO_TCP && inner.nexthdr != IPPROTO_UDP))
		return -1;
	if (bpf_skb_load_bytes(skb, inner_l4, ports, sizeof(ports)))
		return -1;
	__builtin_memcpy(isaddr, &inner.saddr, 16);
	__builtin_memcpy(idaddr, &inner.daddr, 16);
	isport = bpf_ntohs(ports[0]);
	idport = bpf_ntohs(ports[1]);

	src_is_a = ct_key_make_fam(AF_INET6, &key, inner.nexthdr, isaddr, isport, idaddr, idport);
	ct = bpf_map_lookup_elem(&kpr_v6_ct, &key);
	if (!ct)
		return -1;
	if (ct->type == CT_REV && ct_from_client((struct ct_val *)ct, src_is_a)) {
		/* client' -> backend  becomes  client -> VIP */
		to_saddr = ct->nat_saddr;
		to_sport = ct->nat_sport;
		to_daddr = ct->nat_addr;
		to_dport = ct->nat_port;
	} else if (ct->type == CT_FWD && !ct_from_client((struct ct_val *)ct, src_is_a) && !(ct->flags & CT_F_DSR)) {
		/* VIP -> client  becomes  backend -> client' */
		snat = !ipv6_addr_is_zero(ct->nat_saddr);
		to_saddr = ct->nat_addr;
		to_sport = ct->nat_port;
		to_daddr = snat ? ct->nat_saddr : idaddr;
		to_dport = snat ? ct->nat_sport : idport;
	} else {
		return -1;
	}

	if (icmp6_inner_set_addr(skb, icmp_csum_off, inner_l3 + offsetof(struct ipv6hdr, daddr), idaddr, to_daddr) ||
	    icmp6_inner_set_addr(skb, icmp_csum_off, inner_l3 + offsetof(struct ipv6hdr, saddr), isaddr, to_saddr) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4 + 2, idport, to_dport) ||
	    icmp_inner_set_port(skb, icmp_csum_off, inner_l4, isport, to_sport))
		return TC_ACT_SHOT;

	/* Outer header: to the quoted packet's sender; from its new
	 * destination if its old one sent the error. */
	if (nat6_set_addr(skb, p, false, to_saddr))
		return TC_ACT_SHOT;
	if (ipv6_addr_eq(p->saddr6, idaddr) && nat6_set_addr(skb, p, true, to_daddr))
		return TC_ACT_SHOT;
	stat_inc(STAT_TC_ICMP_ERR);
	return ingress ? nat_forward(skb, p) : TC_ACT_OK;
}

#endif /* KPR_ICMP_H */
