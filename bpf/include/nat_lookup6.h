/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Service lookup for IPv6: the frontend key and the IPv6 maps. The decision
 * itself (which set, reject or drop, random pick, affinity freshness) is
 * nat_lookup.h's, shared with IPv4; only what touches a 16-byte address
 * lives here.
 */
#ifndef KPR_NAT_LOOKUP6_H
#define KPR_NAT_LOOKUP6_H

#include "nat_lookup.h"
#include "addr6.h"

static __always_inline struct nat_fe_val *
nat6_fe_lookup(const __be32 *daddr, __u16 dport, __u8 proto, const __be32 *saddr)
{
	struct nat_fe6_key key = {
		.prefixlen = NAT_FE6_PREFIX_FULL,
		.port = dport,
		.proto = proto,
	};

	/* The key is packed (saddr sits at offset 23): byte copies, which
	 * the compiler emits for a packed destination, keep every stack
	 * access aligned for the verifier. */
	__builtin_memcpy(key.addr, daddr, 16);
	__builtin_memcpy(key.saddr, saddr, 16);
	return bpf_map_lookup_elem(&kpr_v6_nat_fe, &key);
}

static __always_inline bool nat6_same_backend(const struct nat_be6_val *a, const struct nat_be6_val *b)
{
	return a->port == b->port && ipv6_addr_eq(a->addr, b->addr);
}

static __always_inline bool nat6_affinity_get(const struct nat_fe_val *fe, const struct aff6_key *ak,
					      __u32 base, __u32 n, struct nat_be6_val *be, __u32 *ordinal)
{
	struct aff6_val *a = bpf_map_lookup_elem(&kpr_v6_aff, ak);
	struct nat_be_key key = { .id = fe->id };
	struct nat_be6_val *cur;

	if (!a || !nat_affinity_fresh(fe, a->ordinal, a->last_used, base, n))
		return false;
	key.ordinal = a->ordinal;
	cur = bpf_map_lookup_elem(&kpr_v6_nat_be, &key);
	if (!cur || !nat6_same_backend(cur, &a->be))
		return false;
	a->last_used = bpf_ktime_get_ns();
	*be = *cur;
	*ordinal = a->ordinal;
	return true;
}

static __always_inline void nat6_affinity_put(const struct aff6_key *ak, const struct nat_be6_val *be, __u32 ordinal)
{
	struct aff6_val a = { .be = *be, .ordinal = ordinal, .last_used = bpf_ktime_get_ns() };

	bpf_map_update_elem(&kpr_v6_aff, ak, &a, BPF_ANY);
}

/* nat_select_backend() on the IPv6 maps. */
static __always_inline enum nat_verdict
nat6_select_backend(const struct nat_fe_val *fe, bool local_only,
		    const struct aff6_key *ak, struct nat_be6_val *be, __u32 *ordinal)
{
	struct nat_be6_val *found;
	enum nat_verdict v;
	__u32 base = 0, n = 0;

	v = nat_pick_set(fe, local_only, &base, &n);
	if (v != NAT_FWD)
		return v;
	if (ak && fe->affinity_timeout && nat6_affinity_get(fe, ak, base, n, be, ordinal))
		return NAT_FWD;
	found = nat_be_random(&kpr_v6_nat_be, fe->id, base, n, ordinal);
	if (!found)
		return NAT_REJECT;
	*be = *found;
	if (ak && fe->affinity_timeout)
		nat6_affinity_put(ak, be, *ordinal);
	return NAT_FWD;
}

/* Either family's nat_be map and value, for code both families share. */
static __always_inline void *nat_be_map(__u8 fam)
{
	return fam == AF_INET6 ? (void *)&kpr_v6_nat_be : (void *)&kpr_v4_nat_be;
}

static __always_inline const __be32 *nat_be_addr(__u8 fam, const void *be)
{
	return fam == AF_INET6 ? ((const struct nat_be6_val *)be)->addr : &((const struct nat_be_val *)be)->addr;
}

static __always_inline __u16 nat_be_port(__u8 fam, const void *be)
{
	return fam == AF_INET6 ? ((const struct nat_be6_val *)be)->port : ((const struct nat_be_val *)be)->port;
}

#endif /* KPR_NAT_LOOKUP6_H */
