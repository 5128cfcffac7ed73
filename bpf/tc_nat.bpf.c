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
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "nat_lookup.h"
#include "nat_rewrite.h"
#include "conntrack.h"
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

#define SNAT_PORT_TRIES	8

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

static __always_inline bool is_node_ip(__be32 addr)
{
	return bpf_map_lookup_elem(&kpr_v4_node_ips, &addr) != NULL;
}

/* Later fragments carry no ports: take them from the first fragment. */
static __always_inline bool frag_ports(struct pkt *p)
{
	struct frag_key fk = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.id = p->ip_id,
		.proto = p->proto,
	};

	if (p->frag == FRAG_FIRST) {
		struct frag_val fv = { .sport = p->sport, .dport = p->dport };

		bpf_map_update_elem(&kpr_v4_frag, &fk, &fv, BPF_ANY);
	} else if (p->frag == FRAG_LATER) {
		struct frag_val *fv = bpf_map_lookup_elem(&kpr_v4_frag, &fk);

		if (!fv) {
			stat_inc(STAT_TC_FRAG_MISS);
			return false;
		}
		p->sport = fv->sport;
		p->dport = fv->dport;
	}
	return true;
}

/* Forward direction of a known flow: client -> frontend becomes
 * client' -> backend. */
static __noinline int ct_fwd_xlate(struct __sk_buff *skb, struct pkt *p, struct ct_val *fwd, enum hook h)
{
	__be32 saddr = fwd->nat_saddr ? fwd->nat_saddr : p->saddr;
	__u16 sport = fwd->nat_saddr ? fwd->nat_sport : p->sport;
	struct ct_key rk;
	struct ct_val *rev;
	bool src_is_a;

	src_is_a = ct_key_make(&rk, p->proto, saddr, sport, fwd->nat_addr, fwd->nat_port);
	rev = bpf_map_lookup_elem(&kpr_v4_ct, &rk);
	if (rev)
		ct_touch(rev, ct_from_client(rev, src_is_a), p->tcp_flags);
	fwd->last_seen = bpf_ktime_get_ns();

	{
		__be32 fe_addr = p->daddr;
		__u16 fe_port = p->dport;
		bool dsr_opt = (fwd->flags & CT_F_DSR) && dsr_carries_opt(p);
		int mtu = 0;

		/* Keep the backend's node informed; a datagram with no room goes
		 * without the option, and matches the entry learnt earlier. Room
		 * is checked before NAT so that a frag-needed comes from the
		 * address the client talks to and quotes what the client sent. */
		if (dsr_opt) {
			mtu = dsr_room(skb, p, fwd->nat_addr);
			if (mtu && p->df) {
				stat_inc(STAT_TC_FRAG_NEEDED);
				return icmp_send_unreach(skb, p, ICMP_FRAG_NEEDED, mtu);
			}
		}
		if (nat_rewrite(skb, p, saddr, sport, fwd->nat_addr, fwd->nat_port))
			return TC_ACT_SHOT;
		if (dsr_opt && !mtu) {
			if (dsr_add_opt(skb, p, fe_addr, fe_port))
				return TC_ACT_SHOT;
			stat_inc(STAT_TC_DSR_FWD);
		}
	}
	stat_inc(STAT_TC_FWD);
	return hook_is_ingress(h) ? nat_forward(skb, p) : TC_ACT_OK;
}

/* Reply of a known flow: backend -> client' becomes frontend -> client. */
static __noinline int ct_rev_xlate(struct __sk_buff *skb, struct pkt *p, struct ct_val *rev, enum hook h)
{
	if (nat_rewrite(skb, p, rev->nat_addr, rev->nat_port, rev->nat_saddr, rev->nat_sport))
		return TC_ACT_SHOT;
	stat_inc((rev->flags & CT_F_DSR) ? STAT_TC_DSR_REPLY : STAT_TC_REV);
	return hook_is_ingress(h) ? nat_forward(skb, p) : TC_ACT_OK;
}

/*
 * Should a packet that hit a FWD entry start a new flow instead?
 *  - TCP: a bare SYN reusing the ports of a flow that was reset or closed.
 *  - UDP: the backend is gone (or its slot now holds another one); UDP has
 *    no connection to keep, so it moves to a live backend at once.
 * TCP flows to a removed backend are kept, as kube-proxy keeps their
 * conntrack entries: the backend may still be terminating gracefully.
 */
static __always_inline bool ct_fwd_stale(const struct pkt *p, const struct ct_val *fwd)
{
	if (p->proto == IPPROTO_TCP) {
		struct ct_key rk;
		struct ct_val *rev;

		if ((p->tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) != CT_TCP_SYN)
			return false;
		ct_fwd_rev_key(&rk, p->proto, fwd, p->saddr, p->sport);
		rev = bpf_map_lookup_elem(&kpr_v4_ct, &rk);
		return !rev || ct_tcp_closed(rev);
	}
	if (p->proto == IPPROTO_UDP) {
		struct nat_be_key bk = { .id = fwd->svc_id, .ordinal = fwd->be_ordinal };
		struct nat_be_val *be = bpf_map_lookup_elem(&kpr_v4_nat_be, &bk);

		if (!be || be->addr != fwd->nat_addr || be->port != fwd->nat_port) {
			stat_inc(STAT_TC_UDP_RESELECT);
			return true;
		}
	}
	return false;
}

static __always_inline struct nat_fe_val *frontend_for(const struct pkt *p, enum hook h)
{
	struct nat_fe_val *fe = nat_fe_lookup(p->daddr, p->dport, p->proto, p->saddr);

	/* NodePort on any of this node's addresses. */
	if (!fe && h == HOOK_FROM_HOST && is_node_ip(p->daddr))
		fe = nat_fe_lookup(NAT_FE_NODEPORT_ANY, p->dport, p->proto, p->saddr);
	return fe;
}

/* What nat_new_flow decided, handed to ct_create (BPF calls take <= 5 args). */
struct nat_choice {
	__u32 svc_id;
	__u32 ordinal;
	struct nat_be_val be;
	__be32 snat_addr;	/* in: 0 for no SNAT; out: the source used (0: none) */
	__be32 fallback_addr;	/* SNAT source when the client's own tuple is taken */
	__u16 snat_port;	/* out: the client' port chosen */
	__u16 snat_lo;
	__u16 snat_hi;
	__u8 flags;		/* extra CT_F_* for both entries (CT_F_DSR) */
	__u8 replace_fwd;	/* the flow's FWD entry is stale: replace it */
};

enum ct_create_rc {
	CT_CREATE_FAIL = -1,
	CT_CREATE_OK = 0,
	CT_CREATE_LOST = 1,	/* another CPU created this flow first; use its entries */
};

/* Does this REV entry belong to the flow the packet opens (client -> frontend)? */
static __always_inline bool ct_rev_same_flow(const struct ct_val *v, const struct pkt *p)
{
	return v->type == CT_REV && v->nat_addr == p->daddr && v->nat_port == p->dport &&
	       v->nat_saddr == p->saddr && v->nat_sport == p->sport;
}

static __always_inline bool ct_key_eq(const struct ct_key *a, const struct ct_key *b)
{
	return a->proto == b->proto && a->addr_a == b->addr_a && a->addr_b == b->addr_b &&
	       a->port_a == b->port_a && a->port_b == b->port_b;
}

/*
 * An SNAT port held by a TCP flow that is over (reset, or FIN from both
 * sides) is free again, as the kernel's NAT reuses ports of closed
 * connections: otherwise every short connection would hold its port for
 * the whole FIN timeout, and the range would run dry at a few hundred new
 * connections per second per backend. The closed flow's FWD entry goes
 * first, so its client cannot be translated onto the new flow's port.
 */
static __always_inline bool ct_snat_port_reclaim(const struct ct_key *rk, const struct ct_val *rev)
{
	struct ct_val *old = bpf_map_lookup_elem(&kpr_v4_ct, rk);
	struct ct_val *fwd;
	struct ct_key ok, wk;

	if (!old || old->type != CT_REV || rk->proto != IPPROTO_TCP || !ct_tcp_closed(old))
		return false;
	ct_key_make(&ok, rk->proto, old->nat_saddr, old->nat_sport, old->nat_addr, old->nat_port);
	fwd = bpf_map_lookup_elem(&kpr_v4_ct, &ok);
	/* Only if it still points here: its client may have opened a new flow
	 * from the same port since, with a FWD entry of its own. */
	if (fwd && fwd->type == CT_FWD && fwd->nat_saddr) {
		ct_fwd_rev_key(&wk, rk->proto, fwd, old->nat_saddr, old->nat_sport);
		if (ct_key_eq(&wk, rk))
			bpf_map_delete_elem(&kpr_v4_ct, &ok);
	}
	return bpf_map_update_elem(&kpr_v4_ct, rk, rev, BPF_ANY) == 0;
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
 * With SNAT the client' port makes the REV key unique: try the client's own
 * port first, then random ones from the configured range, taking over the
 * port of a closed TCP flow (ct_snat_port_reclaim).
 */
static __noinline int ct_create(const struct pkt *p, struct nat_choice *c)
{
	__u64 now = bpf_ktime_get_ns();
	struct ct_val rev = {
		.type = CT_REV,
		.svc_id = c->svc_id,
		.created = now,
		.last_seen = now,
		.nat_addr = p->daddr,
		.nat_port = p->dport,
		.nat_saddr = p->saddr,
		.nat_sport = p->sport,
		.tcp_client = p->tcp_flags,
	};
	struct ct_val fwd = {
		.type = CT_FWD,
		.svc_id = c->svc_id,
		.created = now,
		.last_seen = now,
		.nat_addr = c->be.addr,
		.nat_port = c->be.port,
		.be_ordinal = c->ordinal,
	};
	struct ct_key rk, fk, wk;
	struct ct_val *old;
	__u16 port = p->sport;
	__u16 lo = c->snat_lo, hi = c->snat_hi;
	int i;

	if (!c->snat_addr) {
		if (ct_key_make(&rk, p->proto, p->saddr, p->sport, c->be.addr, c->be.port))
			rev.flags = CT_F_CLIENT_IS_A;
		rev.flags |= c->flags;
		if (bpf_map_update_elem(&kpr_v4_ct, &rk, &rev, BPF_NOEXIST)) {
			old = bpf_map_lookup_elem(&kpr_v4_ct, &rk);
			if (!old || ct_rev_same_flow(old, p) || (old->type == CT_REV && ct_tcp_closed(old))) {
				if (bpf_map_update_elem(&kpr_v4_ct, &rk, &rev, BPF_ANY))
					return CT_CREATE_FAIL;
			} else {
				stat_inc(STAT_TC_CT_COLLISION);
				if (!c->fallback_addr)
					return CT_CREATE_FAIL;
				c->snat_addr = c->fallback_addr;
				c->flags &= ~CT_F_DSR;
			}
		}
	}
	if (c->snat_addr) {
		rev.flags = c->flags | CT_F_SNAT;
		/* Default above the kernel's ephemeral range, so SNAT never
		 * takes a port the node's own sockets might use. */
		if (lo == 0 || hi < lo) {
			lo = 61000;
			hi = 65535;
		}
		if (port < lo || port > hi)
			port = lo + bpf_get_prandom_u32() % (hi - lo + 1);
		for (i = 0; i < SNAT_PORT_TRIES; i++) {
			if (ct_key_make(&rk, p->proto, c->snat_addr, port, c->be.addr, c->be.port))
				rev.flags |= CT_F_CLIENT_IS_A;
			else
				rev.flags &= ~CT_F_CLIENT_IS_A;
			if (bpf_map_update_elem(&kpr_v4_ct, &rk, &rev, BPF_NOEXIST) == 0)
				break;
			if (ct_snat_port_reclaim(&rk, &rev))
				break;
			port = lo + bpf_get_prandom_u32() % (hi - lo + 1);
		}
		if (i == SNAT_PORT_TRIES) {
			stat_inc(STAT_TC_SNAT_NO_PORT);
			return CT_CREATE_FAIL;
		}
		fwd.flags = c->flags | CT_F_SNAT;
		fwd.nat_saddr = c->snat_addr;
		fwd.nat_sport = port;
	} else {
		fwd.flags = c->flags;
	}
	if (ct_key_make(&fk, p->proto, p->saddr, p->sport, p->daddr, p->dport))
		fwd.flags |= CT_F_CLIENT_IS_A;
	if (c->replace_fwd)
		bpf_map_delete_elem(&kpr_v4_ct, &fk);
	if (bpf_map_update_elem(&kpr_v4_ct, &fk, &fwd, BPF_NOEXIST)) {
		old = bpf_map_lookup_elem(&kpr_v4_ct, &fk);
		if (old && old->type == CT_FWD) {
			ct_fwd_rev_key(&wk, p->proto, old, p->saddr, p->sport);
			if (!ct_key_eq(&wk, &rk))
				bpf_map_delete_elem(&kpr_v4_ct, &rk);
			stat_inc(STAT_TC_CT_RACE);
			return CT_CREATE_LOST;
		}
		bpf_map_delete_elem(&kpr_v4_ct, &rk);
		return CT_CREATE_FAIL;
	}
	c->snat_port = port;
	return CT_CREATE_OK;
}

/* The NodePort mode for this frontend: the Service's annotation, else the node's flag. */
static __always_inline __u32 nodeport_mode(const struct nat_fe_val *fe, const struct kpr_config *cfg)
{
	if (fe->flags & NAT_FLG_MODE_SET)
		return (fe->flags & NAT_FLG_MODE_MASK) >> NAT_FLG_MODE_SHIFT;
	return cfg ? cfg->flags & 0x3 : NODEPORT_SNAT;
}

/* A new flow to a frontend: choose a backend, apply policy, NAT. */
static __noinline int nat_new_flow(struct __sk_buff *skb, struct pkt *p, enum hook h, bool replace_fwd)
{
	struct kpr_config *cfg = config();
	struct nat_choice c = {};
	struct nat_fe_val *fe;
	bool external, internal_client, local_only, snat, maglev, midstream = false;
	__be32 fe_addr = p->daddr;
	__u16 fe_port = p->dport;
	__u32 n;
	int rc;

	/* A reset never opens a flow; NATing it to a random backend would
	 * only reset somebody else's connection. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & CT_TCP_RST))
		return TC_ACT_OK;
	fe = frontend_for(p, h);
	if (!fe)
		return TC_ACT_OK;
	if (fe->count == NAT_FE_BLACKHOLE) {
		stat_inc(STAT_TC_DROP_POLICY);
		return TC_ACT_SHOT;
	}

	external = fe->flags & NAT_FLG_EXTERNAL;
	/* Pods, and the node itself, are inside the cluster. */
	internal_client = h == HOOK_FROM_POD || in_cluster_cidr(cfg, p->saddr) || is_node_ip(p->saddr);

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
			return nat_reject(skb, p);
		}
		/* Endpoints exist, none local: traffic policy Local drops. */
		stat_inc(STAT_TC_DROP_POLICY);
		return TC_ACT_SHOT;
	}

	{
		struct aff_key ak = { .svc_id = fe->id, .kind = AFF_CLIENT_ADDR, .client = p->saddr };

		maglev = maglev_select_backend(fe, local_only, p, n, &c.be, &c.ordinal);
		if (!maglev && nat_select_backend(fe, local_only, &ak, &c.be, &c.ordinal) != NAT_FWD)
			return TC_ACT_SHOT;
		c.svc_id = fe->id;
	}

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
	 * carry the option (fragments, IP options, a mid-stream TCP segment,
	 * no room under a non-DF MTU) falls back to SNAT.
	 */
	if (snat && external && !internal_client) {
		__u32 mode = nodeport_mode(fe, cfg);
		bool want = mode == NODEPORT_DSR || (mode == NODEPORT_HYBRID && p->proto == IPPROTO_TCP);

		if (want && !dsr_client_opted_out(p->saddr)) {
			if (c.be.flags & NAT_BE_F_LOCAL) {
				snat = false;	/* local backend: served here, address kept */
			} else if (dsr_carries_opt(p)) {
				int mtu = dsr_room(skb, p, c.be.addr);

				if (mtu && p->df) {
					stat_inc(STAT_TC_FRAG_NEEDED);
					return icmp_send_unreach(skb, p, ICMP_FRAG_NEEDED, mtu);
				}
				if (!mtu) {
					snat = false;
					c.flags = CT_F_DSR;
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
				c.flags = CT_F_DSR;
			} else {
				stat_inc(STAT_TC_DSR_FALLBACK);
			}
		}
	}
	if (c.be.addr == p->saddr)
		snat = true;
	if (snat && (!cfg || !cfg->node_ip))
		return TC_ACT_SHOT;
	if (cfg) {
		c.fallback_addr = cfg->node_ip;
		c.snat_lo = cfg->snat_port_min;
		c.snat_hi = cfg->snat_port_max;
	}
	if (snat)
		c.snat_addr = cfg->node_ip;
	c.replace_fwd = replace_fwd;

	rc = ct_create(p, &c);
	if (rc == CT_CREATE_LOST) {
		struct ct_key fk;
		struct ct_val *fwd;

		ct_key_make(&fk, p->proto, p->saddr, p->sport, p->daddr, p->dport);
		fwd = bpf_map_lookup_elem(&kpr_v4_ct, &fk);
		return fwd ? ct_fwd_xlate(skb, p, fwd, h) : TC_ACT_SHOT;
	}
	if (rc != CT_CREATE_OK)
		return TC_ACT_SHOT;
	if (nat_rewrite(skb, p, c.snat_addr ? c.snat_addr : p->saddr, c.snat_addr ? c.snat_port : p->sport, c.be.addr, c.be.port))
		return TC_ACT_SHOT;
	if ((c.flags & CT_F_DSR) && !midstream) {
		/* frontend address as the client used it (NodePort: this node) */
		if (dsr_add_opt(skb, p, fe_addr, fe_port))
			return TC_ACT_SHOT;
		stat_inc(STAT_TC_DSR_FWD);
	}
	stat_inc(STAT_TC_FWD_NEW);
	return nat_forward(skb, p);
}

static __always_inline int kpr_tc(struct __sk_buff *skb, enum hook h)
{
	struct pkt p = {};
	struct ct_key key;
	struct ct_val *ct;
	bool src_is_a;

	if (pkt_parse(skb, &p) != PARSE_OK)
		return TC_ACT_OK;

	if (p.proto == IPPROTO_ICMP) {
		int rc;

		if (p.frag == FRAG_LATER || !icmp_is_error(p.icmp_type))
			return TC_ACT_OK;
		rc = icmp_error_xlate(skb, &p, hook_is_ingress(h));
		return rc < 0 ? TC_ACT_OK : rc;
	}
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return TC_ACT_OK;
	if (!frag_ports(&p))
		return TC_ACT_OK;
	/* A backend node: requests another node sent on with the DSR option. */
	if (h == HOOK_FROM_HOST && p.l4_off > ETH_HLEN + sizeof(struct iphdr) && dsr_learn(skb, &p) < 0)
		return TC_ACT_SHOT;
	/* A pod never speaks for a node: its packets leave by this node's MAC,
	 * which the next node trusts. */
	if (h == HOOK_FROM_POD && dsr_opt_present(skb, &p)) {
		stat_inc(STAT_TC_DSR_UNTRUSTED);
		return TC_ACT_SHOT;
	}

	src_is_a = ct_key_make(&key, p.proto, p.saddr, p.sport, p.daddr, p.dport);
	ct = bpf_map_lookup_elem(&kpr_v4_ct, &key);
	if (ct) {
		bool from_client = ct_from_client(ct, src_is_a);

		if (ct->type == CT_REV) {
			ct_touch(ct, from_client, p.tcp_flags);
			/* From the client this leg is already translated. */
			return from_client ? TC_ACT_OK : ct_rev_xlate(skb, &p, ct, h);
		}
		if (ct->type == CT_FWD && from_client) {
			if (!hook_is_ingress(h) || !ct_fwd_stale(&p, ct))
				return ct_fwd_xlate(skb, &p, ct, h);
		} else {
			return TC_ACT_OK;
		}
	}
	if (!hook_is_ingress(h))
		return TC_ACT_OK;
	return nat_new_flow(skb, &p, h, ct != NULL);
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
