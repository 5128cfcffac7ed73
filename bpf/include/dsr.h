/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Direct server return for NodePort, externalIP and LoadBalancer traffic.
 *
 * The node that receives the request (ingress node) DNATs it to a backend
 * on another node but keeps the client's address, and tells the backend's
 * node which Service address the client used: over IPv4 in a 12-byte
 * option inserted right after the base header, over IPv6 in a destination
 * option (below, struct dsr6_hdr). The IPv4 option:
 *
 *     type 0x9e (copied, class 0, number 30: RFC 4727 experiment) | len 12 |
 *     service port (network order) | service address | ingress node address
 *
 * The option decides the source address of the backend's replies, so a
 * backend node honours it only from a trusted peer (dsr_from_peer): the
 * named ingress node must be in kpr_v4_dsr_peers (kpr_v6_dsr_peers), and
 * the frame must come from that node's neighbour entry on the device it
 * arrived on. Anything
 * else carrying the option is dropped and counted (tc_dsr_untrusted), and
 * pods may never send it. Threat model: docs/architecture.md.
 *
 * The backend's node strips the option, records a CT_REV|CT_F_DSR entry
 * (client <-> backend, with the Service address), and rewrites the reply's
 * source to that address on its way out, so the reply goes straight to the
 * client. TCP carries the option on the SYN only (later segments match the
 * entry), UDP on every datagram that has room for it.
 */
#ifndef KPR_DSR_H
#define KPR_DSR_H

#include "conntrack.h"
#include "csum.h"
#include "forward.h"
#include "nat_rewrite.h"
#include "parse6.h"
#include "reject.h"

#define IPOPT_KPR_DSR		0x9e
#define DSR_OPT_LEN		12

struct dsr_opt {
	__u8 type;
	__u8 len;
	__be16 port;
	__be32 addr;
	__be32 node;	/* the ingress node, checked against kpr_v4_dsr_peers */
};

/*
 * A UDP GSO packet (a GRO aggregate, or a UDP_SEGMENT send) keeps its
 * segment size when the option goes in or out: it is where one datagram
 * ends, so the kernel refuses to resize such a packet otherwise, and each
 * datagram simply carries the option, as dsr_room counted it.
 */
#define DSR_ADJ_FLAGS	BPF_F_ADJ_ROOM_FIXED_GSO

/* Is the client in --dsr-optout-cidrs (kpr_v4_dsr_optout / kpr_v6_dsr_optout)? */
static __always_inline bool dsr_client_opted_out(const struct pkt *p, const __u8 fam)
{
	if (fam == AF_INET6) {
		struct lpm_v6_key k6 = { .prefixlen = 128 };

		ipv6_addr_copy(k6.addr, p->saddr6);
		return bpf_map_lookup_elem(&kpr_v6_dsr_optout, &k6) != NULL;
	}
	struct lpm_v4_key k = { .prefixlen = 32, .addr = p->saddr };

	return bpf_map_lookup_elem(&kpr_v4_dsr_optout, &k) != NULL;
}

/* Sum of a 16-bit-word change in the IP header, for bpf_l3_csum_replace. */
static __always_inline int ip_hdr_word_replace(struct __sk_buff *skb, __u32 off, __u16 from, __u16 to)
{
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) ? -1 : 0;
}

/* Insert the option; the packet must have no IP options of its own. */
static __noinline int dsr_add_opt(struct __sk_buff *skb, struct pkt *p, __be32 svc_addr, __u16 svc_port)
{
	struct dsr_opt opt = {
		.type = IPOPT_KPR_DSR,
		.len = DSR_OPT_LEN,
		.port = bpf_htons(svc_port),
		.addr = svc_addr,
	};
	__u16 old_vihl, new_vihl, old_len, new_len;
	__u32 zero = 0;
	struct kpr_config *cfg = bpf_map_lookup_elem(&kpr_config, &zero);
	__u64 sum;

	if (!cfg || !cfg->node_ip)
		return -1;
	opt.node = cfg->node_ip;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &old_vihl, 2) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, tot_len), &old_len, 2))
		return -1;
	/* Room right after the 20-byte base header. */
	if (bpf_skb_adjust_room(skb, DSR_OPT_LEN, BPF_ADJ_ROOM_NET, DSR_ADJ_FLAGS))
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &opt, sizeof(opt), 0))
		return -1;
	/* version/ihl/tos word: ihl grows by the option's words */
	new_vihl = bpf_htons(bpf_ntohs(old_vihl) + ((DSR_OPT_LEN / 4) << 8));
	new_len = bpf_htons(bpf_ntohs(old_len) + DSR_OPT_LEN);
	if (ip_hdr_word_replace(skb, ETH_HLEN, old_vihl, new_vihl) ||
	    ip_hdr_word_replace(skb, ETH_HLEN + offsetof(struct iphdr, tot_len), old_len, new_len))
		return -1;
	/* the option's own words join the header checksum */
	sum = csum_add_words(&opt, (void *)(&opt + 1), sizeof(opt), 0);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, 0, (__u32)~csum_fold32(sum) & 0xffff, 2))
		return -1;
	p->l4_off += DSR_OPT_LEN;
	p->tot_len += DSR_OPT_LEN;
	return 0;
}

/* Does the packet's first IP option claim to be kpr's DSR option? */
static __always_inline bool dsr_opt_present(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 type;

	if (p->l4_off <= ETH_HLEN + sizeof(struct iphdr))
		return false;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &type, 1))
		return false;
	return type == IPOPT_KPR_DSR;
}

/*
 * IPv6: the same three facts (service address, service port, ingress node)
 * travel in a Destination Options header inserted right after the fixed
 * header, as Cilium does, with one option of an RFC 4727 experimental type:
 *
 *     next header | hdr len 4 | type 0x1e | len 36 |
 *     service address (16) | ingress node (16) | service port | 2 zero bytes
 *
 * 40 bytes in all, a whole number of 8-byte units with no padding option.
 * The type's top bits (00) tell a host that does not know it to skip it,
 * and its change bit (0) that it is not rewritten in flight. A packet that
 * already has extension headers gets no header (Hop-by-Hop must stay
 * first) and falls back to SNAT, as an IPv4 packet with options does.
 */
#define IPV6_OPT_KPR_DSR	0x1e
#define DSR6_HDR_LEN		40

struct dsr6_hdr {
	__u8 nexthdr;
	__u8 hdrlen;	/* in 8-byte units, not counting the first */
	__u8 opt_type;
	__u8 opt_len;	/* the option's data */
	__be32 addr[4];
	__be32 node[4];	/* the ingress node, checked against kpr_v6_dsr_peers */
	__be16 port;
	__u16 zero;
};

_Static_assert(sizeof(struct dsr6_hdr) == DSR6_HDR_LEN, "one Destination Options header, no padding option");

/* The DSR path's working memory, in kpr_tc_scratch: IPv6 keys and entries
 * do not fit the tc path's stack. */
struct dsr_scratch {
	struct dsr6_hdr hdr6;
	union ct_any_key key;
	union ct_any_val val;
};

#define IPV6_MIN_MTU	1280

static __always_inline __u32 dsr_hdr_len(const __u8 fam)
{
	return fam == AF_INET6 ? DSR6_HDR_LEN : DSR_OPT_LEN;
}

/* Fill the IPv6 header's Service fields: the frontend as the client used
 * it, read before NAT rewrites the destination. */
static __always_inline void dsr6_hdr_prepare(struct dsr6_hdr *h, const struct pkt *p)
{
	h->hdrlen = DSR6_HDR_LEN / 8 - 1;
	h->opt_type = IPV6_OPT_KPR_DSR;
	h->opt_len = DSR6_HDR_LEN - 4;
	ipv6_addr_copy(h->addr, p->daddr6);
	h->port = bpf_htons(p->dport);
	h->zero = 0;
}

/* Insert the prepared header; the packet must have no extension headers. */
static __noinline int dsr6_add_hdr(struct __sk_buff *skb, struct pkt *p, struct dsr6_hdr *h)
{
	__u32 zero = 0;
	struct kpr_config6 *cfg6 = bpf_map_lookup_elem(&kpr_v6_config, &zero);
	__be16 plen;
	__u8 nh = NEXTHDR_DEST;

	if (!cfg6 || ipv6_addr_is_zero(cfg6->node_ip))
		return -1;
	ipv6_addr_copy(h->node, cfg6->node_ip);
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &plen, sizeof(plen)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &h->nexthdr, 1))
		return -1;
	/* Room right after the 40-byte fixed header. No checksum covers the
	 * header; L4's pseudo header counts only L4's own length. */
	if (bpf_skb_adjust_room(skb, DSR6_HDR_LEN, BPF_ADJ_ROOM_NET, DSR_ADJ_FLAGS))
		return -1;
	plen = bpf_htons(bpf_ntohs(plen) + DSR6_HDR_LEN);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), h, sizeof(*h), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &plen, sizeof(plen), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &nh, 1, 0))
		return -1;
	p->l4_off += DSR6_HDR_LEN;
	p->tot_len += DSR6_HDR_LEN;
	return 0;
}

/* Is the packet's first extension header kpr's? */
static __always_inline bool dsr6_hdr_present(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 nh, opt[3];

	if (p->l4_off < ETH_HLEN + sizeof(struct ipv6hdr) + 8)
		return false;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &nh, 1) || nh != NEXTHDR_DEST)
		return false;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), opt, sizeof(opt)))
		return false;
	return opt[2] == IPV6_OPT_KPR_DSR;
}

/* Either family: does the packet claim to carry kpr's DSR option? */
static __always_inline bool dsr_present(struct __sk_buff *skb, const struct pkt *p, const __u8 fam)
{
	return fam == AF_INET6 ? dsr6_hdr_present(skb, p) : dsr_opt_present(skb, p);
}

/*
 * Did the option come from the cluster node it names? That node must be a
 * trusted peer (kpr_v4_dsr_peers or kpr_v6_dsr_peers), and the frame's
 * source MAC must be the next hop this node itself would use to reach it,
 * on the device the frame came in by. The kernel keeps a neighbour entry
 * for a peer that has resolved us (ARP, or IPv6 neighbour solicitation),
 * which the ingress node does before its first DSR packet to us.
 */
static __always_inline bool dsr_from_peer(struct __sk_buff *skb, const __be32 *node, const __u8 fam)
{
	struct bpf_fib_lookup fib = {
		.family = fam,
		.ifindex = skb->ingress_ifindex,
	};
	__u8 smac[ETH_ALEN];
	int i;

	if (fam == AF_INET6) {
		struct lpm_v6_key k = { .prefixlen = 128 };

		ipv6_addr_copy(k.addr, node);
		if (!bpf_map_lookup_elem(&kpr_v6_dsr_peers, &k))
			return false;
		ipv6_addr_copy(fib.ipv6_dst, node);
	} else {
		struct lpm_v4_key k = { .prefixlen = 32, .addr = node[0] };

		if (!bpf_map_lookup_elem(&kpr_v4_dsr_peers, &k))
			return false;
		fib.ipv4_dst = node[0];
	}
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return false;
	if (fib.ifindex != skb->ingress_ifindex)
		return false;
	if (bpf_skb_load_bytes(skb, ETH_ALEN, smac, ETH_ALEN))
		return false;
	for (i = 0; i < ETH_ALEN; i++)
		if (smac[i] != fib.dmac[i])
			return false;
	return true;
}

/* The backend node's entry for a flow an ingress node sent on: CT_REV|CT_F_DSR
 * (client <-> backend), with the Service address as the client used it. A
 * SYN or a datagram carrying the option restates the flow. */
static __always_inline void dsr_record(const struct pkt *p, struct dsr_scratch *ds, const __be32 *svc_addr,
				       __u16 svc_port, const __u8 fam)
{
	struct ct_val *v = &ds->val.v4;	/* the header both families share */
	__u64 now = bpf_ktime_get_ns();

	__builtin_memset(&ds->val, 0, sizeof(ds->val));
	v->type = CT_REV;
	v->flags = CT_F_DSR;
	v->created = now;
	v->last_seen = now;
	v->tcp_client = p->tcp_flags;
	ct_set_nat(fam, &ds->val, svc_addr, svc_port, p->saddr6, p->sport, 0);
	if (ct_key_make_fam(fam, &ds->key, p->proto, p->saddr6, p->sport, p->daddr6, p->dport))
		v->flags |= CT_F_CLIENT_IS_A;
	bpf_map_update_elem(ct_map(fam), &ds->key, &ds->val, BPF_ANY);
	stat_inc(STAT_TC_DSR_LEARN);
}

/*
 * Backend node: if the packet carries kpr's option, take it out and
 * remember the flow. Returns 1 when the option was found and handled, 0
 * when there was none, -1 to drop the packet (an untrusted option, or an
 * error).
 */
static __noinline int dsr_learn(struct __sk_buff *skb, struct pkt *p, struct dsr_scratch *ds)
{
	struct dsr_opt opt;
	__u16 old_vihl, new_vihl, old_len, new_len;
	__u64 sum;

	if (!dsr_opt_present(skb, p))
		return 0;
	if (p->l4_off != ETH_HLEN + sizeof(struct iphdr) + DSR_OPT_LEN ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &opt, sizeof(opt)) ||
	    opt.len != DSR_OPT_LEN || !dsr_from_peer(skb, &opt.node, AF_INET)) {
		stat_inc(STAT_TC_DSR_UNTRUSTED);
		return -1;
	}

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &old_vihl, 2) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, tot_len), &old_len, 2))
		return -1;
	new_vihl = bpf_htons(bpf_ntohs(old_vihl) - ((DSR_OPT_LEN / 4) << 8));
	new_len = bpf_htons(bpf_ntohs(old_len) - DSR_OPT_LEN);
	if (ip_hdr_word_replace(skb, ETH_HLEN, old_vihl, new_vihl) ||
	    ip_hdr_word_replace(skb, ETH_HLEN + offsetof(struct iphdr, tot_len), old_len, new_len))
		return -1;
	sum = csum_add_words(&opt, (void *)(&opt + 1), sizeof(opt), 0);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, (__u32)~csum_fold32(sum) & 0xffff, 0, 2))
		return -1;
	if (bpf_skb_adjust_room(skb, -DSR_OPT_LEN, BPF_ADJ_ROOM_NET, DSR_ADJ_FLAGS))
		return -1;
	p->l4_off -= DSR_OPT_LEN;
	p->tot_len -= DSR_OPT_LEN;
	dsr_record(p, ds, &opt.addr, bpf_ntohs(opt.port), AF_INET);
	return 1;
}

/* dsr_learn for IPv6: the header must be the first extension header and
 * exactly kpr's 40 bytes. */
static __noinline int dsr6_learn(struct __sk_buff *skb, struct pkt *p, struct dsr_scratch *ds)
{
	struct dsr6_hdr *h = &ds->hdr6;
	__be16 plen;

	if (!dsr6_hdr_present(skb, p))
		return 0;
	if (p->l4_off < ETH_HLEN + sizeof(struct ipv6hdr) + DSR6_HDR_LEN ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), h, sizeof(*h)) ||
	    h->hdrlen != DSR6_HDR_LEN / 8 - 1 || h->opt_len != DSR6_HDR_LEN - 4 ||
	    !dsr_from_peer(skb, h->node, AF_INET6)) {
		stat_inc(STAT_TC_DSR_UNTRUSTED);
		return -1;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &plen, sizeof(plen)))
		return -1;
	plen = bpf_htons(bpf_ntohs(plen) - DSR6_HDR_LEN);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &plen, sizeof(plen), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &h->nexthdr, 1, 0))
		return -1;
	if (bpf_skb_adjust_room(skb, -DSR6_HDR_LEN, BPF_ADJ_ROOM_NET, DSR_ADJ_FLAGS))
		return -1;
	p->l4_off -= DSR6_HDR_LEN;
	p->tot_len -= DSR6_HDR_LEN;
	dsr_record(p, ds, h->addr, bpf_ntohs(h->port), AF_INET6);
	return 1;
}

/*
 * Room on the path for the DSR option? Returns 0 if it fits, else the
 * MTU to report in frag-needed or Packet Too Big (the path MTU less the
 * option). The option goes into every segment of a GSO packet, so the
 * check is on the segment size (pkt_wire_len), never on the aggregate
 * length.
 */
static __noinline int dsr_room(struct __sk_buff *skb, const struct pkt *p, const __be32 *daddr, const __u8 fam)
{
	struct bpf_fib_lookup fib = {
		.family = fam,
		.l4_protocol = p->proto,
		.tot_len = pkt_wire_len(skb, p) + dsr_hdr_len(fam),
		.ifindex = skb->ingress_ifindex,
	};
	__u32 len = dsr_hdr_len(fam);
	long rc;

	if (fam == AF_INET6) {
		ipv6_addr_copy(fib.ipv6_src, p->saddr6);
		ipv6_addr_copy(fib.ipv6_dst, daddr);
	} else {
		fib.ipv4_src = p->saddr;
		fib.ipv4_dst = daddr[0];
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return fib.mtu_result > len ? fib.mtu_result - len : 68;
	return 0;
}

/*
 * No room: must the client be told (frag-needed, Packet Too Big) rather
 * than served without the option? IPv4 only when it set DF. IPv6 is never
 * fragmented on the way, so always, unless the MTU to report would be
 * below IPv6's minimum, which no client can go under.
 */
static __always_inline bool dsr_tell_client(const struct pkt *p, int mtu, const __u8 fam)
{
	return fam == AF_INET6 ? mtu >= IPV6_MIN_MTU : p->df;
}

static __always_inline int dsr_send_too_big(struct __sk_buff *skb, const struct pkt *p, int mtu, const __u8 fam)
{
	stat_inc(STAT_TC_FRAG_NEEDED);
	if (fam == AF_INET6)
		return icmp6_send_error(skb, p, ICMPV6_PKT_TOOBIG, 0, mtu);
	return icmp_send_unreach(skb, p, ICMP_FRAG_NEEDED, mtu);
}

/* The option goes on a SYN, or on any unfragmented datagram without IP
 * options or extension headers. */
static __always_inline bool dsr_carries_opt(const struct pkt *p, const __u8 fam)
{
	__u32 l3 = fam == AF_INET6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

	if (p->frag != FRAG_NONE || p->l4_off != ETH_HLEN + l3)
		return false;
	if (p->proto == IPPROTO_TCP)
		return pkt_is_bare_syn(p);
	return p->proto == IPPROTO_UDP;
}

#endif /* KPR_DSR_H */
