/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Service lookup: frontend match and backend choice. Shared by the
 * connect-time hooks (sock_lb.bpf.c) and the per-packet tc programs
 * (tc_nat.bpf.c), so both make the same decision for the same flow.
 */
#ifndef KPR_NAT_LOOKUP_H
#define KPR_NAT_LOOKUP_H

#include "maps.h"

/* Outcome of a frontend lookup that matched a Service. */
enum nat_verdict {
	NAT_MISS = 0,		/* not a Service address: leave untouched */
	NAT_FWD,		/* send to the backend in *be */
	NAT_REJECT,		/* Service without usable endpoints */
	NAT_BLACKHOLE,		/* source not allowed by the Service */
	NAT_DROP,		/* traffic policy Local, endpoints only elsewhere */
};

static __always_inline struct nat_fe_val *
nat_fe_lookup(__be32 daddr, __u16 dport, __u8 proto, __be32 saddr)
{
	struct nat_fe_key key = {
		.prefixlen = NAT_FE_PREFIX_FULL,
		.addr = daddr,
		.port = dport,
		.proto = proto,
		.saddr = saddr,
	};

	return bpf_map_lookup_elem(&kpr_v4_nat_fe, &key);
}

/*
 * The family-neutral part of backend selection: which set of the frontend
 * serves (the local set when the traffic policy says so, else the cluster
 * set), or why none does. With no endpoint at all the Service rejects; with
 * endpoints only on other nodes, Local policy drops (kube-proxy: REJECT vs
 * DROP).
 */
static __always_inline enum nat_verdict
nat_pick_set(const struct nat_fe_val *fe, bool local_only, __u32 *base, __u32 *n)
{
	if (fe->count == NAT_FE_BLACKHOLE)
		return NAT_BLACKHOLE;
	*base = local_only ? NAT_BE_LOCAL_BASE : 0;
	*n = local_only ? fe->local : fe->count;
	if (*n == 0)
		return fe->count == 0 && fe->local == 0 ? NAT_REJECT : NAT_DROP;
	return NAT_FWD;
}

/*
 * A backend of the set base..base+n-1 drawn uniformly at random, like
 * kube-proxy's statistic match, from either family's nat_be map (both are
 * keyed by struct nat_be_key). Returns the map value, NULL if none.
 */
static __always_inline void *nat_be_random(void *be_map, __u32 id, __u32 base, __u32 n, __u32 *ordinal)
{
	struct nat_be_key key = { .id = id, .ordinal = base + bpf_get_prandom_u32() % n };
	void *found = bpf_map_lookup_elem(be_map, &key);

	if (!found) {
		/* The controller writes backends before it raises a count, so
		 * a hole means someone edited the map by hand. The set's first
		 * slot is the last to go; prefer it to refusing. */
		stat_inc(STAT_SOCK_BE_MISSING);
		key.ordinal = base;
		found = bpf_map_lookup_elem(be_map, &key);
	}
	*ordinal = key.ordinal;
	return found;
}

/*
 * sessionAffinity, family-neutral part: is the client's last pick (at
 * `ordinal`, last used at `last_used`) still inside the set in use and
 * recent? The caller then checks that the same backend still sits there
 * (an endpoint change, or a switch between the cluster and the local set,
 * voids it).
 */
static __always_inline bool nat_affinity_fresh(const struct nat_fe_val *fe, __u32 ordinal, __u64 last_used,
					       __u32 base, __u32 n)
{
	if (ordinal < base || ordinal - base >= n)
		return false;
	return bpf_ktime_get_ns() - last_used <= (__u64)fe->affinity_timeout * 1000000000ULL;
}

static __always_inline bool nat_affinity_get(const struct nat_fe_val *fe, const struct aff_key *ak,
					     __u32 base, __u32 n, struct nat_be_val *be, __u32 *ordinal)
{
	struct aff_val *a = bpf_map_lookup_elem(&kpr_v4_aff, ak);
	struct nat_be_key key = { .id = fe->id };
	struct nat_be_val *cur;

	if (!a || !nat_affinity_fresh(fe, a->ordinal, a->last_used, base, n))
		return false;
	key.ordinal = a->ordinal;
	cur = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);
	if (!cur || cur->addr != a->be.addr || cur->port != a->be.port)
		return false;
	a->last_used = bpf_ktime_get_ns();
	*be = *cur;
	*ordinal = a->ordinal;
	return true;
}

static __always_inline void nat_affinity_put(const struct aff_key *ak, const struct nat_be_val *be, __u32 ordinal)
{
	struct aff_val a = { .be = *be, .ordinal = ordinal, .last_used = bpf_ktime_get_ns() };

	bpf_map_update_elem(&kpr_v4_aff, ak, &a, BPF_ANY);
}

/*
 * Pick a backend: the client's previous one under sessionAffinity (ak !=
 * NULL), else one at random, from the set nat_pick_set() chose.
 */
static __always_inline enum nat_verdict
nat_select_backend(const struct nat_fe_val *fe, bool local_only,
		   const struct aff_key *ak, struct nat_be_val *be, __u32 *ordinal)
{
	struct nat_be_val *found;
	enum nat_verdict v;
	__u32 base = 0, n = 0;

	v = nat_pick_set(fe, local_only, &base, &n);
	if (v != NAT_FWD)
		return v;
	if (ak && fe->affinity_timeout && nat_affinity_get(fe, ak, base, n, be, ordinal))
		return NAT_FWD;
	found = nat_be_random(&kpr_v4_nat_be, fe->id, base, n, ordinal);
	if (!found)
		return NAT_REJECT;
	*be = *found;
	if (ak && fe->affinity_timeout)
		nat_affinity_put(ak, be, *ordinal);
	return NAT_FWD;
}

#endif /* KPR_NAT_LOOKUP_H */
