/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Service lookup: frontend match and backend choice. Shared by the
 * connect-time hooks and (later) the per-packet tc programs, so both make the
 * same decision for the same flow.
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
 * sessionAffinity: the backend this client used last, if it is recent and
 * still sits at the same ordinal of the set in use (an endpoint change, or
 * a switch between the cluster and the local set, voids it).
 */
static __always_inline bool nat_affinity_get(const struct nat_fe_val *fe, const struct aff_key *ak,
					     __u32 base, __u32 n, struct nat_be_val *be, __u32 *ordinal)
{
	struct aff_val *a = bpf_map_lookup_elem(&kpr_v4_aff, ak);
	struct nat_be_key key = { .id = fe->id };
	struct nat_be_val *cur;

	if (!a || a->ordinal < base || a->ordinal - base >= n)
		return false;
	if (bpf_ktime_get_ns() - a->last_used > (__u64)fe->affinity_timeout * 1000000000ULL)
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
 * Pick a backend uniformly at random, like kube-proxy's statistic match, or
 * the client's previous one under sessionAffinity (ak != NULL), from the
 * local set when the traffic policy says so, else from the cluster set.
 * With no endpoint at all the Service rejects; with endpoints only on other
 * nodes, Local policy drops (kube-proxy: REJECT vs DROP).
 */
static __always_inline enum nat_verdict
nat_select_backend(const struct nat_fe_val *fe, bool local_only,
		   const struct aff_key *ak, struct nat_be_val *be, __u32 *ordinal)
{
	struct nat_be_key key = { .id = fe->id };
	struct nat_be_val *found;
	__u32 base = local_only ? NAT_BE_LOCAL_BASE : 0;
	__u32 n;

	if (fe->count == NAT_FE_BLACKHOLE)
		return NAT_BLACKHOLE;

	n = local_only ? fe->local : fe->count;
	if (n == 0)
		return fe->count == 0 && fe->local == 0 ? NAT_REJECT : NAT_DROP;

	if (ak && fe->affinity_timeout && nat_affinity_get(fe, ak, base, n, be, ordinal))
		return NAT_FWD;

	key.ordinal = base + bpf_get_prandom_u32() % n;
	found = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);
	if (!found) {
		/* The controller writes backends before it raises a count, so
		 * a hole means someone edited the map by hand. The set's first
		 * slot is the last to go; prefer it to refusing. */
		stat_inc(STAT_SOCK_BE_MISSING);
		key.ordinal = base;
		found = bpf_map_lookup_elem(&kpr_v4_nat_be, &key);
		if (!found)
			return NAT_REJECT;
	}

	*be = *found;
	*ordinal = key.ordinal;
	if (ak && fe->affinity_timeout)
		nat_affinity_put(ak, be, key.ordinal);
	return NAT_FWD;
}

#endif /* KPR_NAT_LOOKUP_H */
