// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Per-packet Service NAT in tc, for everything the connect-time hooks do not
 * see: traffic from outside the node (NodePort, externalIPs, LoadBalancer
 * IPs, ClusterIP routed to us) and traffic from pods whose sockets are not
 * under kpr's cgroup hooks.
 *
 * Four programs, one per attachment point:
 *   kpr_from_pod   ingress of a pod's host-side veth (packets from the pod)
 *   kpr_to_pod     egress of that veth
 *   kpr_from_host  ingress of a host-facing device (--devices)
 *   kpr_to_host    egress of that device
 *
 * Every hook first looks the packet up in conntrack and applies the NAT of a
 * known flow in the right direction. New flows are only created at ingress,
 * where a frontend lookup decides the backend, SNAT and traffic policy.
 *
 * Both families go through the same code: the conntrack logic, the NAT
 * decision and the backend choice take the family as a constant argument
 * (`fam`), and only parsing, the rewrite, the checksums and the map of each
 * family differ (parse6.h, nat_rewrite.h, conntrack.h's accessors), as in
 * Cilium's bpf/lib. DSR carries the Service address in an IPv4 option or
 * an IPv6 destination option (dsr.h); Maglev reads one table map per
 * family (maglev.h).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "parse.h"
#include "parse6.h"
#include "csum.h"
#include "nat_lookup.h"
#include "nat_lookup6.h"
#include "nat_rewrite.h"
#include "conntrack.h"
#include "snat.h"
#include "tcp_ts.h"
#include "forward.h"
#include "icmp.h"
#include "reject.h"
#include "dsr.h"
#include "maglev.h"

enum hook {
	HOOK_FROM_POD,
	HOOK_TO_POD,
	HOOK_FROM_HOST,
	HOOK_TO_HOST,
};

static __always_inline bool hook_is_ingress(enum hook h)
{
	return h == HOOK_FROM_POD || h == HOOK_FROM_HOST;
}

static __always_inline struct kpr_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kpr_config, &zero);
}

static __always_inline bool in_cluster_cidr(const struct kpr_config *cfg, __be32 addr)
{
	__u32 mask;

	if (!cfg || cfg->cluster_cidr_len == 0 || cfg->cluster_cidr_len > 32)
		return false;
	mask = cfg->cluster_cidr_len == 32 ? 0xffffffff : ~(0xffffffffu >> cfg->cluster_cidr_len);
	return (bpf_ntohl(addr) & mask) == (bpf_ntohl(cfg->cluster_cidr) & mask);
}

static __always_inline struct kpr_config6 *config6(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kpr_v6_config, &zero);
}

static __always_inline bool in_cluster_cidr6(const struct kpr_config6 *c6, const __be32 *addr)
{
	__u32 len;

	if (!c6 || c6->cluster_cidr_len == 0 || c6->cluster_cidr_len > 128)
		return false;
	len = c6->cluster_cidr_len;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = len > 32 ? 32 : len;
		__u32 mask = bits == 0 ? 0 : bits == 32 ? 0xffffffff : ~(0xffffffffu >> bits);

		if ((bpf_ntohl(addr[i]) & mask) != (bpf_ntohl(c6->cluster_cidr[i]) & mask))
			return false;
		len -= bits;
	}
	return true;
}

static __always_inline bool is_node_ip(__be32 addr)
{
	return bpf_map_lookup_elem(&kpr_v4_node_ips, &addr) != NULL;
}

static __always_inline bool is_node_ip_fam(__u8 fam, const __be32 *addr)
{
	if (fam == AF_INET6)
		return bpf_map_lookup_elem(&kpr_v6_node_ips, addr) != NULL;
	return is_node_ip(addr[0]);
}

union frag_any_key {
	struct frag_key k4;
	struct frag6_key k6;
};

/* frag_ports' key and new value, off the stack (the verifier's 512 bytes
 * along kpr_tc -> nat_new_flow -> ct_create -> snat_try are all taken). */
struct frag_scratch {
	union frag_any_key key;
	struct frag_val val;
};

/* Later fragments carry no ports: take them from the first fragment, kept
 * per family by (source, destination, fragment id, protocol). */
static __always_inline bool frag_ports(struct pkt *p, struct frag_scratch *fs, const __u8 fam)
{
	void *map = fam == AF_INET6 ? (void *)&kpr_v6_frag : (void *)&kpr_v4_frag;
	union frag_any_key *fk = &fs->key;
	struct frag_val *fv;

	if (p->frag == FRAG_NONE)
		return true;
	__builtin_memset(fk, 0, sizeof(*fk));
	if (fam == AF_INET6) {
		ipv6_addr_copy(fk->k6.saddr, p->saddr6);
		ipv6_addr_copy(fk->k6.daddr, p->daddr6);
		fk->k6.id = p->frag_id;
		fk->k6.proto = p->proto;
	} else {
		fk->k4.saddr = p->saddr;
		fk->k4.daddr = p->daddr;
		fk->k4.id = (__u16)p->frag_id;
		fk->k4.proto = p->proto;
	}
	if (p->frag == FRAG_FIRST) {
		fs->val.sport = p->sport;
		fs->val.dport = p->dport;
		bpf_map_update_elem(map, fk, &fs->val, BPF_ANY);
		return true;
	}
	fv = bpf_map_lookup_elem(map, fk);
	if (!fv) {
		stat_inc(STAT_TC_FRAG_MISS);
		return false;
	}
	p->sport = fv->sport;
	p->dport = fv->dport;
	return true;
}

/* Out of line, one per family as nat_new_flow4/6: kept out of kpr_tc's
 * frame, which heads the deepest call chain. */
static __noinline bool frag_ports4(struct pkt *p, struct frag_scratch *fs)
{
	return frag_ports(p, fs, AF_INET);
}

static __noinline bool frag_ports6(struct pkt *p, struct frag_scratch *fs)
{
	return frag_ports(p, fs, AF_INET6);
}

/* What nat_new_flow decided, handed to ct_create (BPF calls take <= 5 args). */
/* Addresses in the packet's family, laid out as in struct pkt. */
struct nat_choice {
	__u32 svc_id;
	__u32 ordinal;
	__be32 be_addr[4];
	__be32 snat_addr[4];	/* in: zero for no SNAT; out: the source used (zero: none) */
	__be32 fallback_addr[4];	/* SNAT source when the client's own tuple is taken */
	__u16 be_port;
	__u16 be_flags;		/* NAT_BE_F_* */
	__u16 snat_port;	/* in: port of the flow this one replaces (0: none); out: the client' port chosen */
	__u16 snat_lo;
	__u16 snat_hi;
	__u8 flags;		/* extra CT_F_* for both entries (CT_F_DSR) */
	__u8 replace_fwd;	/* the flow's FWD entry is stale: replace it */
	__u8 syn_ts;		/* CT_TCP_TS if the TCP SYN carries a timestamp */
	__u32 syn_tsval;	/* its TSval */
};

/*
 * The per-packet path's working memory, per CPU: the parsed packet, keys,
 * the new flow's choice and entries. On the stack, IPv6-sized addresses
 * would overflow the 512 bytes the verifier allows along kpr_tc ->
 * nat_new_flow -> ct_create. tc programs run with bottom halves off
 * (ingress in softirq, egress under rcu_read_lock_bh), so no other tc
 * program runs on this CPU before this one returns, and nothing here
 * outlives the invocation. (A PREEMPT_RT kernel, where softirqs can be
 * preempted, would need a guard; kpr does not target one.)
 */
struct tc_scratch {
	struct pkt pkt;
	union ct_any_key key;		/* kpr_tc's lookup; a lost race's FWD */
	struct frag_scratch frag;
	struct nat_choice choice;
	union ct_any_val rev;		/* ct_create's new entries */
	union ct_any_val fwd;
	union ct_any_key rk, fk, wk;	/* REV, FWD, the winner's REV */
	union ct_any_key ok, owk;	/* ct_snat_port_reclaim: old FWD, its REV */
	struct dsr_scratch dsr;		/* the DSR option learnt or sent */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tc_scratch);
	__uint(max_entries, 1);
} kpr_tc_scratch SEC(".maps");

static __always_inline struct tc_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kpr_tc_scratch, &zero);
}

/* Forward direction of a known flow: client -> frontend becomes
 * client' -> backend. */
static __noinline int ct_fwd_xlate(struct __sk_buff *skb, struct pkt *p, struct ct_val *fwd, enum hook h,
				   const __u8 fam)
{
	bool snat = ct_snat_of(fam, fwd);
	const __be32 *saddr = snat ? ct_nat_saddr(fam, fwd) : p->saddr6;
	__u16 sport = snat ? ct_nat_sport(fam, fwd) : p->sport;
	union ct_any_key rk;
	struct ct_val *rev;
	bool src_is_a;

	src_is_a = ct_key_make_fam(fam, &rk, p->proto, saddr, sport, ct_nat_addr(fam, fwd), ct_nat_port(fam, fwd));
	rev = bpf_map_lookup_elem(ct_map(fam), &rk);
	if (rev) {
		bool from_client = ct_from_client(rev, src_is_a);

		ct_touch(rev, from_client, p->tcp_flags);
		/* Once a masqueraded client closes, keep what the backend's
		 * TIME_WAIT will know of it (ct_snat_port_free). */
		if (from_client && (rev->flags & CT_F_SNAT) && (rev->tcp_client & CT_TCP_FIN) &&
		    p->proto == IPPROTO_TCP) {
			__u32 tsval = 0;
			bool has_ts = tcp_tsval(skb, p->l4_off, &tsval);

			snat_tw_note(&rev->tcp_client, ct_be_ordinal_ptr(fam, rev), rev->tcp_server, has_ts, tsval);
		}
	}
	fwd->last_seen = bpf_ktime_get_ns();

	{
		__be32 fe_addr = p->daddr;
		__u16 fe_port = p->dport;
		bool dsr_opt = (fwd->flags & CT_F_DSR) && dsr_carries_opt(p, fam);
		struct dsr6_hdr *hdr6 = NULL;	/* in the scratch map: IPv6 DSR only */
		int mtu = 0;

		/* Keep the backend's node informed; a datagram with no room goes
		 * without the option, and matches the entry learnt earlier. Room
		 * is checked before NAT so that a frag-needed or Packet Too Big
		 * comes from the address the client talks to and quotes what the
		 * client sent. */
		if (dsr_opt) {
			mtu = dsr_room(skb, p, ct_nat_addr(fam, fwd), fam);
			if (mtu && dsr_tell_client(p, mtu, fam))
				return dsr_send_too_big(skb, p, mtu, fam);
			if (fam == AF_INET6) {
				struct tc_scratch *sc = scratch();

				if (!sc)
					return TC_ACT_SHOT;
				hdr6 = &sc->dsr.hdr6;
				dsr6_hdr_prepare(hdr6, p);
			}
		}
		if (nat_rewrite(skb, p, fam, saddr, sport, ct_nat_addr(fam, fwd), ct_nat_port(fam, fwd)))
			return TC_ACT_SHOT;
		if (dsr_opt && !mtu) {
			if (fam == AF_INET6 ? !hdr6 || dsr6_add_hdr(skb, p, hdr6) : dsr_add_opt(skb, p, fe_addr, fe_port))
				return TC_ACT_SHOT;
			stat_inc(STAT_TC_DSR_FWD);
		}
	}
	stat_inc(STAT_TC_FWD);
	return hook_is_ingress(h) ? nat_forward(skb, p) : TC_ACT_OK;
}

/* Reply of a known flow: backend -> client' becomes frontend -> client. */
static __noinline int ct_rev_xlate(struct __sk_buff *skb, struct pkt *p, struct ct_val *rev, enum hook h,
				   const __u8 fam)
{
	if (nat_rewrite(skb, p, fam, ct_nat_addr(fam, rev), ct_nat_port(fam, rev), ct_nat_saddr(fam, rev),
			ct_nat_sport(fam, rev)))
		return TC_ACT_SHOT;
	stat_inc((rev->flags & CT_F_DSR) ? STAT_TC_DSR_REPLY : STAT_TC_REV);
	return hook_is_ingress(h) ? nat_forward(skb, p) : TC_ACT_OK;
}

/*
 * Should a packet that hit a FWD entry start a new flow instead?
 *  - TCP: a bare SYN reusing the ports of a flow that was reset or closed
 *    (for DSR, closed by its client: the backend's side is not seen).
 *  - UDP: the backend is gone (or its slot now holds another one); UDP has
 *    no connection to keep, so it moves to a live backend at once.
 * TCP flows to a removed backend are kept, as kube-proxy keeps their
 * conntrack entries: the backend may still be terminating gracefully.
 */
static __always_inline bool ct_fwd_stale(const struct pkt *p, const struct ct_val *fwd, const __u8 fam)
{
	if (p->proto == IPPROTO_TCP) {
		union ct_any_key rk;
		struct ct_val *rev;

		if (!pkt_is_bare_syn(p))
			return false;
		ct_fwd_rev_key(fam, &rk, p->proto, fwd, p->saddr6, p->sport);
		rev = bpf_map_lookup_elem(ct_map(fam), &rk);
		/* A DSR flow's replies bypass this node, so its backend's FIN
		 * is never seen here: once its client has sent a FIN, a SYN
		 * on the same ports can only open a new connection. */
		return !rev || ct_tcp_closed(rev) || ((fwd->flags & CT_F_DSR) && (rev->tcp_client & CT_TCP_FIN));
	}
	if (p->proto == IPPROTO_UDP) {
		struct nat_be_key bk = { .id = fwd->svc_id, .ordinal = ct_be_ordinal(fam, fwd) };
		void *be = bpf_map_lookup_elem(nat_be_map(fam), &bk);

		if (!be || !addr_eq(fam, nat_be_addr(fam, be), ct_nat_addr(fam, fwd)) ||
		    nat_be_port(fam, be) != ct_nat_port(fam, fwd)) {
			stat_inc(STAT_TC_UDP_RESELECT);
			return true;
		}
	}
	return false;
}

static __always_inline struct nat_fe_val *frontend_for(const struct pkt *p, enum hook h, const __u8 fam)
{
	struct nat_fe_val *fe;

	if (fam == AF_INET6) {
		static const __be32 any6[4] = { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff };

		fe = nat6_fe_lookup(p->daddr6, p->dport, p->proto, p->saddr6);
		if (!fe && h == HOOK_FROM_HOST && is_node_ip_fam(fam, p->daddr6))
			fe = nat6_fe_lookup(any6, p->dport, p->proto, p->saddr6);
		return fe;
	}
	fe = nat_fe_lookup(p->daddr, p->dport, p->proto, p->saddr);

	/* NodePort on any of this node's addresses. */
	if (!fe && h == HOOK_FROM_HOST && is_node_ip(p->daddr))
		fe = nat_fe_lookup(NAT_FE_NODEPORT_ANY, p->dport, p->proto, p->saddr);
	return fe;
}

enum ct_create_rc {
	CT_CREATE_FAIL = -1,
	CT_CREATE_OK = 0,
	CT_CREATE_LOST = 1,	/* another CPU created this flow first; use its entries */
};

/* Does this REV entry belong to the flow the packet opens (client -> frontend)? */
static __always_inline bool ct_rev_same_flow(const struct ct_val *v, const struct pkt *p, const __u8 fam)
{
	return v->type == CT_REV && addr_eq(fam, ct_nat_addr(fam, v), p->daddr6) && ct_nat_port(fam, v) == p->dport &&
	       addr_eq(fam, ct_nat_saddr(fam, v), p->saddr6) && ct_nat_sport(fam, v) == p->sport;
}

/*
 * Take over an SNAT port whose TCP flow is over, when ct_snat_port_free
 * allows it: otherwise every short connection would hold its port for the
 * whole FIN timeout. The old flow's FWD entry goes first, so its client
 * cannot be translated onto the new flow's port.
 */
static __always_inline bool ct_snat_port_reclaim(struct tc_scratch *sc, __u8 proto, const __u8 fam)
{
	const union ct_any_key *rk = &sc->rk;
	struct ct_val *old = bpf_map_lookup_elem(ct_map(fam), rk);
	struct ct_val *fwd;

	if (!old || old->type != CT_REV || proto != IPPROTO_TCP || !ct_snat_port_free(fam, old, &sc->rev))
		return false;
	ct_key_make_fam(fam, &sc->ok, proto, ct_nat_saddr(fam, old), ct_nat_sport(fam, old), ct_nat_addr(fam, old),
			ct_nat_port(fam, old));
	fwd = bpf_map_lookup_elem(ct_map(fam), &sc->ok);
	/* Only if it still points here: its client may have opened a new flow
	 * from the same port since, with a FWD entry of its own. */
	if (fwd && fwd->type == CT_FWD && ct_snat_of(fam, fwd)) {
		ct_fwd_rev_key(fam, &sc->owk, proto, fwd, ct_nat_saddr(fam, old), ct_nat_sport(fam, old));
		if (ct_key_eq(fam, &sc->owk, rk))
			bpf_map_delete_elem(ct_map(fam), &sc->ok);
	}
	return bpf_map_update_elem(ct_map(fam), rk, &sc->rev, BPF_ANY) == 0;
}

/*
 * snat_port_walk's probe: claim the walk's i-th port if the tuple
 * (SNAT source:port, backend) is free, or its flow is over and may be
 * taken. The new REV entry and its key are ct_create's, in the scratch
 * map; the context is the walk and the family. One callback per family,
 * so each is verified with its family constant.
 */
struct snat_probe {
	struct snat_walk w;
	__u8 proto;
};

static __always_inline long snat_try(__u32 i, struct snat_probe *x, const __u8 fam)
{
	struct tc_scratch *sc = scratch();
	struct nat_choice *c;
	struct ct_val *rh;
	__u16 port = snat_walk_port(&x->w, i);

	if (!sc)
		return 1;
	c = &sc->choice;
	rh = &sc->rev.v4;
	if (ct_key_make_fam(fam, &sc->rk, x->proto, c->snat_addr, port, c->be_addr, c->be_port))
		rh->flags |= CT_F_CLIENT_IS_A;
	else
		rh->flags &= ~CT_F_CLIENT_IS_A;
	if (bpf_map_update_elem(ct_map(fam), &sc->rk, &sc->rev, BPF_NOEXIST) &&
	    !ct_snat_port_reclaim(sc, x->proto, fam))
		return 0;
	x->w.port = port;
	x->w.found = 1;
	return 1;
}

static long snat_try4(__u32 i, void *x)
{
	return snat_try(i, x, AF_INET);
}

static long snat_try6(__u32 i, void *x)
{
	return snat_try(i, x, AF_INET6);
}

/*
 * Create the FWD and REV entries of a new flow, never overwriting an entry
 * of another flow:
 *  - REV (client' <-> backend) is inserted with BPF_NOEXIST. Without SNAT
 *    the tuple is the client's own; if it is taken by another live flow
 *    (the same client address and port reaching another frontend that
 *    picked the same backend), the new flow is masqueraded to the node
 *    address with a fresh port instead, so each reply still comes from the
 *    frontend it answers. An entry of this same flow (another CPU a step
 *    ahead, or an earlier incarnation) or of a closed TCP flow is taken over.
 *  - FWD (client <-> frontend) is the flow's identity and decides races:
 *    inserted with BPF_NOEXIST, the first CPU wins; a loser removes the REV
 *    entry it added (unless it is the winner's too) and NATs the packet with
 *    the winner's choice.
 * With SNAT the client' port makes the REV key unique: walk the configured
 * range (snat_port_walk) from the client's own port (or, for a client
 * reopening a closed flow, that flow's SNAT port), taking over the port of
 * a TCP flow that is over only where the backend would take the new SYN
 * even if it holds that tuple in TIME_WAIT (ct_snat_port_reclaim).
 */
static __always_inline int ct_create(const struct pkt *p, struct nat_choice *c, const __u8 fam)
{
	void *ct = ct_map(fam);
	__u64 now = bpf_ktime_get_ns();
	struct tc_scratch *sc = scratch();
	union ct_any_val *rev, *fwd;
	/* the header both families' values share */
	struct ct_val *rh, *fh;
	union ct_any_key *rk, *fk, *wk;
	struct ct_val *old;
	__u16 port = c->snat_port ? c->snat_port : p->sport;

	if (!sc)
		return CT_CREATE_FAIL;
	__builtin_memset(&sc->rev, 0, sizeof(sc->rev));
	__builtin_memset(&sc->fwd, 0, sizeof(sc->fwd));
	rev = &sc->rev;
	fwd = &sc->fwd;
	rh = &rev->v4;
	fh = &fwd->v4;
	rk = &sc->rk;
	fk = &sc->fk;
	wk = &sc->wk;

	rh->type = CT_REV;
	rh->svc_id = c->svc_id;
	rh->created = now;
	rh->last_seen = now;
	rh->tcp_client = p->tcp_flags;
	ct_set_nat(fam, rev, p->daddr6, p->dport, p->saddr6, p->sport, 0);
	fh->type = CT_FWD;
	fh->svc_id = c->svc_id;
	fh->created = now;
	fh->last_seen = now;
	ct_set_nat(fam, fwd, c->be_addr, c->be_port, NULL, 0, c->ordinal);

	if (addr_is_zero(fam, c->snat_addr)) {
		if (ct_key_make_fam(fam, rk, p->proto, p->saddr6, p->sport, c->be_addr, c->be_port))
			rh->flags = CT_F_CLIENT_IS_A;
		rh->flags |= c->flags;
		if (bpf_map_update_elem(ct, rk, rev, BPF_NOEXIST)) {
			old = bpf_map_lookup_elem(ct, rk);
			if (!old || ct_rev_same_flow(old, p, fam) || (old->type == CT_REV && ct_tcp_closed(old))) {
				if (bpf_map_update_elem(ct, rk, rev, BPF_ANY))
					return CT_CREATE_FAIL;
			} else {
				stat_inc(STAT_TC_CT_COLLISION);
				if (addr_is_zero(fam, c->fallback_addr)) {
					stat_inc(STAT_TC_SNAT_NO_ADDR);
					return CT_CREATE_FAIL;
				}
				addr_copy(fam, c->snat_addr, c->fallback_addr);
				c->flags &= ~CT_F_DSR;
			}
		}
	}
	if (!addr_is_zero(fam, c->snat_addr)) {
		struct snat_probe x = { .proto = p->proto };

		rh->flags = c->flags | CT_F_SNAT;
		/* The SYN's timestamp: what a backend's TIME_WAIT on the
		 * chosen tuple will be asked to accept (snat_tw_accepts). */
		rh->tcp_client |= c->syn_ts;
		*ct_be_ordinal_ptr(fam, rev) = c->syn_tsval;
		/* The default range lies above the kernel's ephemeral one, so
		 * SNAT never takes a port the node's own sockets might use. */
		if (!snat_port_walk(&x.w, c->snat_lo, c->snat_hi, port, fam == AF_INET6 ? snat_try6 : snat_try4, &x)) {
			stat_inc(STAT_TC_SNAT_NO_PORT);
			return CT_CREATE_FAIL;
		}
		port = x.w.port;
		fh->flags = c->flags | CT_F_SNAT;
		ct_set_nat(fam, fwd, c->be_addr, c->be_port, c->snat_addr, port, c->ordinal);
	} else {
		fh->flags = c->flags;
	}
	if (ct_key_make_fam(fam, fk, p->proto, p->saddr6, p->sport, p->daddr6, p->dport))
		fh->flags |= CT_F_CLIENT_IS_A;
	if (c->replace_fwd)
		bpf_map_delete_elem(ct, fk);
	if (bpf_map_update_elem(ct, fk, fwd, BPF_NOEXIST)) {
		old = bpf_map_lookup_elem(ct, fk);
		if (old && old->type == CT_FWD) {
			ct_fwd_rev_key(fam, wk, p->proto, old, p->saddr6, p->sport);
			if (!ct_key_eq(fam, wk, rk))
				bpf_map_delete_elem(ct, rk);
			stat_inc(STAT_TC_CT_RACE);
			return CT_CREATE_LOST;
		}
		bpf_map_delete_elem(ct, rk);
		return CT_CREATE_FAIL;
	}
	c->snat_port = port;
	return CT_CREATE_OK;
}

/* One ct_create per family, so neither carries the other's spills. */
static __noinline int ct_create4(const struct pkt *p, struct nat_choice *c)
{
	return ct_create(p, c, AF_INET);
}

static __noinline int ct_create6(const struct pkt *p, struct nat_choice *c)
{
	return ct_create(p, c, AF_INET6);
}

/* The NodePort mode for this frontend: the Service's annotation, else the node's flag. */
static __always_inline __u32 nodeport_mode(const struct nat_fe_val *fe, const struct kpr_config *cfg)
{
	if (fe->flags & NAT_FLG_MODE_SET)
		return (fe->flags & NAT_FLG_MODE_MASK) >> NAT_FLG_MODE_SHIFT;
	return cfg ? cfg->flags & 0x3 : NODEPORT_SNAT;
}

/*
 * Backend choice in the packet's family: Maglev (*maglev says it chose) or
 * nat_select_backend's random pick with sessionAffinity by client address.
 */
static __always_inline bool nat_choose_backend(const struct nat_fe_val *fe, bool local_only, const struct pkt *p,
					       __u32 n, struct nat_choice *c, bool *maglev, const __u8 fam)
{
	const void *mb = maglev_select_backend(fe, local_only, p, n, &c->ordinal, fam);

	*maglev = mb != NULL;
	if (fam == AF_INET6) {
		struct aff6_key ak = { .svc_id = fe->id, .kind = AFF_CLIENT_ADDR };
		struct nat_be6_val be;

		if (mb) {
			be = *(const struct nat_be6_val *)mb;
		} else {
			ipv6_addr_copy(ak.client, p->saddr6);
			if (nat6_select_backend(fe, local_only, &ak, &be, &c->ordinal) != NAT_FWD)
				return false;
		}
		ipv6_addr_copy(c->be_addr, be.addr);
		c->be_port = be.port;
		c->be_flags = be.flags;
	} else {
		struct aff_key ak = { .svc_id = fe->id, .kind = AFF_CLIENT_ADDR, .client = p->saddr };
		struct nat_be_val be;

		if (mb)
			be = *(const struct nat_be_val *)mb;
		else if (nat_select_backend(fe, local_only, &ak, &be, &c->ordinal) != NAT_FWD)
			return false;
		c->be_addr[0] = be.addr;
		c->be_port = be.port;
		c->be_flags = be.flags;
	}
	c->svc_id = fe->id;
	return true;
}

/* nat_new_flow's answer when another CPU created the flow first: the
 * caller translates the packet by the winner's entries (one call level
 * up, which keeps the verifier's stack bound). */
#define NEW_FLOW_LOST	(-1)

/* A new flow to a frontend: choose a backend, apply policy, NAT. Returns a
 * TC action, or NEW_FLOW_LOST. */
static __always_inline int nat_new_flow(struct __sk_buff *skb, struct pkt *p, enum hook h, bool replace_fwd,
					__u16 prev_snat_port, const __u8 fam)
{
	struct kpr_config *cfg = config();
	struct kpr_config6 *cfg6 = fam == AF_INET6 ? config6() : NULL;
	struct tc_scratch *sc = scratch();
	struct nat_choice *c;
	struct nat_fe_val *fe;
	bool external, internal_client, local_only, snat, maglev, midstream = false;
	__be32 fe_addr = p->daddr;
	__u16 fe_port = p->dport;
	__u32 n;
	int rc;

	if (!sc)
		return TC_ACT_SHOT;
	c = &sc->choice;
	__builtin_memset(c, 0, sizeof(*c));
	/* A reset never opens a flow; NATing it to a random backend would
	 * only reset somebody else's connection. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & CT_TCP_RST))
		return TC_ACT_OK;
	fe = frontend_for(p, h, fam);
	if (!fe)
		return TC_ACT_OK;
	if (fe->count == NAT_FE_BLACKHOLE) {
		stat_inc(STAT_TC_DROP_POLICY);
		return TC_ACT_SHOT;
	}

	external = fe->flags & NAT_FLG_EXTERNAL;
	/* Pods, and the node itself, are inside the cluster. */
	internal_client = h == HOOK_FROM_POD ||
			  (fam == AF_INET6 ? in_cluster_cidr6(cfg6, p->saddr6) : in_cluster_cidr(cfg, p->saddr)) ||
			  is_node_ip_fam(fam, p->saddr6);

	if (external)
		/* eTP=Local only binds clients from outside; pods reaching an
		 * external address are short-circuited to all endpoints. */
		local_only = (fe->flags & NAT_FLG_EXTERNAL_LOCAL) && !internal_client;
	else
		local_only = (fe->flags & NAT_FLG_INTERNAL_LOCAL) && internal_client;

	n = local_only ? fe->local : fe->count;
	if (n == 0) {
		if (fe->count == 0 && fe->local == 0) {
			/* No endpoint at all: REJECT, as kube-proxy does. */
			stat_inc(STAT_TC_REJECT);
			if (p->frag == FRAG_LATER)
				return TC_ACT_SHOT;
			return fam == AF_INET6 ? nat6_reject(skb, p) : nat_reject(skb, p);
		}
		/* Endpoints exist, none local: traffic policy Local drops. */
		stat_inc(STAT_TC_DROP_POLICY);
		return TC_ACT_SHOT;
	}

	if (!nat_choose_backend(fe, local_only, p, n, c, &maglev, fam))
		return TC_ACT_SHOT;

	/*
	 * Masquerade like kube-proxy: external traffic (unless eTP=Local
	 * keeps the client address), off-cluster clients of a ClusterIP, and
	 * hairpin traffic, where a pod reaches itself through the Service and
	 * would otherwise see its own address as the source.
	 */
	if (external)
		snat = !local_only && !(internal_client && h == HOOK_FROM_POD);
	else
		snat = !internal_client;

	/*
	 * DSR: external clients of an external frontend keep their address;
	 * a remote backend's node answers them directly. Whatever cannot
	 * carry the option (fragments, IP options or IPv6 extension headers,
	 * a mid-stream TCP segment, no room under a non-DF MTU) falls back to
	 * SNAT, as do clients in --dsr-optout-cidrs.
	 */
	if (snat && external && !internal_client) {
		__u32 mode = nodeport_mode(fe, cfg);
		bool want = mode == NODEPORT_DSR || (mode == NODEPORT_HYBRID && p->proto == IPPROTO_TCP);

		/* IPv6: only once the nodes know each other as IPv6 peers,
		 * or the backend's node would refuse the header. */
		if (fam == AF_INET6)
			want = want && cfg6 && (cfg6->flags & KPR_CFG6_F_DSR);
		if (want && !dsr_client_opted_out(p, fam)) {
			if (c->be_flags & NAT_BE_F_LOCAL) {
				snat = false;	/* local backend: served here, address kept */
			} else if (dsr_carries_opt(p, fam)) {
				int mtu = dsr_room(skb, p, c->be_addr, fam);

				if (mtu && dsr_tell_client(p, mtu, fam))
					return dsr_send_too_big(skb, p, mtu, fam);
				if (!mtu) {
					snat = false;
					c->flags = CT_F_DSR;
				} else {
					stat_inc(STAT_TC_DSR_FALLBACK);
				}
			} else if (maglev && p->proto == IPPROTO_TCP && !(p->tcp_flags & CT_TCP_SYN) &&
				   p->frag == FRAG_NONE) {
				/* Mid-stream: another node opened this flow and
				 * ECMP moved it here. Maglev chose the same
				 * backend, whose node learnt the flow from the
				 * SYN: DNAT only, keep the client's address,
				 * and add no option (no room was checked). */
				snat = false;
				midstream = true;
				c->flags = CT_F_DSR;
			} else {
				stat_inc(STAT_TC_DSR_FALLBACK);
			}
		}
	}
	if (addr_eq(fam, c->be_addr, p->saddr6))
		snat = true;
	/* The node's address of this family is the SNAT source and the
	 * fallback of a taken tuple. */
	if (fam == AF_INET6) {
		if (cfg6)
			ipv6_addr_copy(c->fallback_addr, cfg6->node_ip);
	} else if (cfg) {
		c->fallback_addr[0] = cfg->node_ip;
	}
	/* A single-stack node has no source of the other family to SNAT to. */
	if (snat && addr_is_zero(fam, c->fallback_addr)) {
		stat_inc(STAT_TC_SNAT_NO_ADDR);
		return TC_ACT_SHOT;
	}
	if (cfg) {
		c->snat_lo = cfg->snat_port_min;
		c->snat_hi = cfg->snat_port_max;
	}
	if (snat)
		addr_copy(fam, c->snat_addr, c->fallback_addr);
	c->replace_fwd = replace_fwd;
	c->snat_port = prev_snat_port;
	/* Only masqueraded flows reuse ports by timestamp: spare the others
	 * the option walk. */
	if (snat && p->proto == IPPROTO_TCP && (p->tcp_flags & CT_TCP_SYN) &&
	    tcp_tsval(skb, p->l4_off, &c->syn_tsval))
		c->syn_ts = CT_TCP_TS;

	rc = fam == AF_INET6 ? ct_create6(p, c) : ct_create4(p, c);
	if (rc == CT_CREATE_LOST)
		return NEW_FLOW_LOST;
	if (rc != CT_CREATE_OK)
		return TC_ACT_SHOT;
	snat = !addr_is_zero(fam, c->snat_addr);
	if (fam == AF_INET6 && (c->flags & CT_F_DSR))
		dsr6_hdr_prepare(&sc->dsr.hdr6, p);
	if (nat_rewrite(skb, p, fam, snat ? c->snat_addr : p->saddr6, snat ? c->snat_port : p->sport, c->be_addr,
			c->be_port))
		return TC_ACT_SHOT;
	if ((c->flags & CT_F_DSR) && !midstream) {
		/* frontend address as the client used it (NodePort: this node) */
		if (fam == AF_INET6 ? dsr6_add_hdr(skb, p, &sc->dsr.hdr6) : dsr_add_opt(skb, p, fe_addr, fe_port))
			return TC_ACT_SHOT;
		stat_inc(STAT_TC_DSR_FWD);
	}
	stat_inc(STAT_TC_FWD_NEW);
	return nat_forward(skb, p);
}

static __noinline int nat_new_flow4(struct __sk_buff *skb, struct pkt *p, enum hook h, bool replace_fwd,
				    __u16 prev_snat_port)
{
	return nat_new_flow(skb, p, h, replace_fwd, prev_snat_port, AF_INET);
}

static __noinline int nat_new_flow6(struct __sk_buff *skb, struct pkt *p, enum hook h, bool replace_fwd,
				    __u16 prev_snat_port)
{
	return nat_new_flow(skb, p, h, replace_fwd, prev_snat_port, AF_INET6);
}

/* ICMP: errors about NATed flows are translated, the rest passed. */
static __always_inline int kpr_tc_icmp(struct __sk_buff *skb, struct pkt *p, enum hook h, const __u8 fam)
{
	int rc;

	if (fam == AF_INET6) {
		if (!icmp6_is_error(p->icmp_type))
			return TC_ACT_OK;
		rc = icmp6_error_xlate(skb, p, hook_is_ingress(h));
	} else {
		if (p->frag == FRAG_LATER || !icmp_is_error(p->icmp_type))
			return TC_ACT_OK;
		rc = icmp_error_xlate(skb, p, hook_is_ingress(h));
	}
	return rc < 0 ? TC_ACT_OK : rc;
}

static __always_inline int kpr_tc_fam(struct __sk_buff *skb, struct tc_scratch *sc, enum hook h, const __u8 fam)
{
	struct pkt *p = &sc->pkt;
	union ct_any_key *key = &sc->key;
	struct ct_val *ct;
	bool src_is_a;

	if (p->proto == (fam == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
		return kpr_tc_icmp(skb, p, h, fam);
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	if (p->frag != FRAG_NONE && !(fam == AF_INET6 ? frag_ports6(p, &sc->frag) : frag_ports4(p, &sc->frag)))
		return TC_ACT_OK;
	/* A backend node: requests another node sent on with the DSR option. */
	if (h == HOOK_FROM_HOST && p->l4_off > ETH_HLEN + (fam == AF_INET6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) &&
	    (fam == AF_INET6 ? dsr6_learn(skb, p, &sc->dsr) : dsr_learn(skb, p, &sc->dsr)) < 0)
		return TC_ACT_SHOT;
	/* A pod never speaks for a node: its packets leave by this node's MAC,
	 * which the next node trusts. */
	if (h == HOOK_FROM_POD && dsr_present(skb, p, fam)) {
		stat_inc(STAT_TC_DSR_UNTRUSTED);
		return TC_ACT_SHOT;
	}

	src_is_a = ct_key_make_fam(fam, key, p->proto, p->saddr6, p->sport, p->daddr6, p->dport);
	ct = bpf_map_lookup_elem(ct_map(fam), key);
	if (ct) {
		bool from_client = ct_from_client(ct, src_is_a);

		if (ct->type == CT_REV) {
			/* A bare SYN from the client on the translated tuple of a
			 * closed flow is a new connection that did not come through
			 * the frontend: a socket the connect-time hook sent to the
			 * backend, or a direct one that reuses the port. Its replies
			 * must not be reverse-NATed to the old frontend. */
			if (from_client && pkt_is_bare_syn(p) && ct_tcp_closed(ct)) {
				bpf_map_delete_elem(ct_map(fam), key);
				stat_inc(STAT_TC_CT_REV_CLOSED);
				return TC_ACT_OK;
			}
			ct_touch(ct, from_client, p->tcp_flags);
			/* From the client this leg is already translated. */
			return from_client ? TC_ACT_OK : ct_rev_xlate(skb, p, ct, h, fam);
		}
		if (ct->type == CT_FWD && from_client) {
			if (!hook_is_ingress(h) || !ct_fwd_stale(p, ct, fam))
				return ct_fwd_xlate(skb, p, ct, h, fam);
		} else {
			return TC_ACT_OK;
		}
	}
	if (!hook_is_ingress(h))
		return TC_ACT_OK;
	/* A client reopening its own tuple keeps the closed flow's SNAT port:
	 * the backend's TIME_WAIT accepts its next connection on that tuple. */
	{
		bool replace = ct != NULL;
		__u16 prev = ct && ct_snat_of(fam, ct) ? ct_nat_sport(fam, ct) : 0;
		int rc = fam == AF_INET6 ? nat_new_flow6(skb, p, h, replace, prev) : nat_new_flow4(skb, p, h, replace, prev);

		if (rc != NEW_FLOW_LOST)
			return rc;
		ct = bpf_map_lookup_elem(ct_map(fam), key);
		return ct ? ct_fwd_xlate(skb, p, ct, h, fam) : TC_ACT_SHOT;
	}
}

static __always_inline int kpr_tc(struct __sk_buff *skb, enum hook h)
{
	struct tc_scratch *sc = scratch();

	if (!sc)
		return TC_ACT_OK;
	__builtin_memset(&sc->pkt, 0, sizeof(sc->pkt));
	if (pkt_parse(skb, &sc->pkt) != PARSE_OK)
		return TC_ACT_OK;
	if (sc->pkt.family == AF_INET6)
		return kpr_tc_fam(skb, sc, h, AF_INET6);
	return kpr_tc_fam(skb, sc, h, AF_INET);
}

SEC("tc")
int kpr_from_pod(struct __sk_buff *skb)
{
	return kpr_tc(skb, HOOK_FROM_POD);
}

SEC("tc")
int kpr_to_pod(struct __sk_buff *skb)
{
	return kpr_tc(skb, HOOK_TO_POD);
}

SEC("tc")
int kpr_from_host(struct __sk_buff *skb)
{
	return kpr_tc(skb, HOOK_FROM_HOST);
}

SEC("tc")
int kpr_to_host(struct __sk_buff *skb)
{
	return kpr_tc(skb, HOOK_TO_HOST);
}

char _license[] SEC("license") = "Dual BSD/GPL";
