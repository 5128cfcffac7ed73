/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Direct server return for NodePort, externalIP and LoadBalancer traffic.
 *
 * The node that receives the request (ingress node) DNATs it to a backend
 * on another node but keeps the client's address, and tells the backend's
 * node which Service address the client used, in an 8-byte IPv4 option
 * inserted right after the base header:
 *
 *     type 0x9e (copied, class 0, number 30: RFC 4727 experiment) | len 12 |
 *     service port (network order) | service address | ingress node address
 *
 * The option decides the source address of the backend's replies, so a
 * backend node honours it only from a trusted peer (dsr_from_peer): the
 * named ingress node must be in kpr_v4_dsr_peers, and the frame must come
 * from that node's neighbour entry on the device it arrived on. Anything
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

#define IPOPT_KPR_DSR		0x9e
#define DSR_OPT_LEN		12

struct dsr_opt {
	__u8 type;
	__u8 len;
	__be16 port;
	__be32 addr;
	__be32 node;	/* the ingress node, checked against kpr_v4_dsr_peers */
};

static __always_inline bool dsr_client_opted_out(__be32 saddr)
{
	struct lpm_v4_key k = { .prefixlen = 32, .addr = saddr };

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
	if (bpf_skb_adjust_room(skb, DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
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
 * Did the option come from the cluster node it names? That node must be a
 * trusted peer, and the frame's source MAC must be the next hop this node
 * itself would use to reach it, on the device the frame came in by. The
 * kernel keeps a neighbour entry for a peer that has ARPed for us, which
 * the ingress node does before its first DSR packet to us.
 */
static __always_inline bool dsr_from_peer(struct __sk_buff *skb, __be32 node)
{
	struct lpm_v4_key k = { .prefixlen = 32, .addr = node };
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.ipv4_dst = node,
		.ifindex = skb->ingress_ifindex,
	};
	__u8 smac[ETH_ALEN];
	int i;

	if (!bpf_map_lookup_elem(&kpr_v4_dsr_peers, &k))
		return false;
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

/*
 * Backend node: if the packet carries kpr's option, take it out and
 * remember the flow. Returns 1 when the option was found and handled, 0
 * when there was none, -1 to drop the packet (an untrusted option, or an
 * error).
 */
static __noinline int dsr_learn(struct __sk_buff *skb, struct pkt *p)
{
	struct dsr_opt opt;
	__u16 old_vihl, new_vihl, old_len, new_len;
	struct ct_key k;
	struct ct_val v = {};
	__u64 sum, now;

	if (!dsr_opt_present(skb, p))
		return 0;
	if (p->l4_off != ETH_HLEN + sizeof(struct iphdr) + DSR_OPT_LEN ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct iphdr), &opt, sizeof(opt)) ||
	    opt.len != DSR_OPT_LEN || !dsr_from_peer(skb, opt.node)) {
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
	if (bpf_skb_adjust_room(skb, -DSR_OPT_LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	p->l4_off -= DSR_OPT_LEN;
	p->tot_len -= DSR_OPT_LEN;

	now = bpf_ktime_get_ns();
	v.type = CT_REV;
	v.flags = CT_F_DSR;
	v.created = now;
	v.last_seen = now;
	v.nat_addr = opt.addr;
	v.nat_port = bpf_ntohs(opt.port);
	v.nat_saddr = p->saddr;
	v.nat_sport = p->sport;
	v.tcp_client = p->tcp_flags;
	if (ct_key_make(&k, p->proto, p->saddr, p->sport, p->daddr, p->dport))
		v.flags |= CT_F_CLIENT_IS_A;
	/* A SYN or a datagram with the option restates the flow. */
	bpf_map_update_elem(&kpr_v4_ct, &k, &v, BPF_ANY);
	stat_inc(STAT_TC_DSR_LEARN);
	return 1;
}

/*
 * Room on the path for the DSR option? Returns 0 if it fits, else the
 * MTU to report in frag-needed (the path MTU less the option). The option
 * goes into every segment of a GSO packet, so the check is on the segment
 * size (pkt_wire_len), never on the aggregate length.
 */
static __noinline int dsr_room(struct __sk_buff *skb, const struct pkt *p, __be32 daddr)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = p->proto,
		.tot_len = pkt_wire_len(skb, p) + DSR_OPT_LEN,
		.ipv4_src = p->saddr,
		.ipv4_dst = daddr,
		.ifindex = skb->ingress_ifindex,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return fib.mtu_result > DSR_OPT_LEN ? fib.mtu_result - DSR_OPT_LEN : 68;
	return 0;
}

/* The option goes on a SYN, or on any unfragmented datagram without options. */
static __always_inline bool dsr_carries_opt(const struct pkt *p)
{
	if (p->frag != FRAG_NONE || p->l4_off != ETH_HLEN + sizeof(struct iphdr))
		return false;
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN;
	return p->proto == IPPROTO_UDP;
}

#endif /* KPR_DSR_H */
