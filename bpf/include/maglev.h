/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Maglev consistent hashing for external frontends (NAT_FLG_MAGLEV).
 *
 * The controller builds one lookup table per Service port (Maglev paper,
 * section 3.4) from the backends' identities (addr:port), so every node
 * computes the same table, and stores it as an inner ARRAY of a
 * HASH_OF_MAPS keyed by the service id. The data path hashes the 5-tuple
 * to a slot; the slot holds the backend's ordinal on this node. The same
 * flow thus picks the same backend whichever node it enters, and a backend
 * change moves only about 1/N of the flows.
 *
 * Table layout, as 32-bit words (src/datapath/maglev-tables.ts writes it):
 *   word 0        M, the table size (a prime)
 *   words 1..M    backend ordinal of each slot
 *   word M+1      digest of the table (userspace only: adoption at restart)
 * The words are grouped MAGLEV_CHUNK to an array value: an ARRAY rounds each
 * value up to 8 bytes, so one u32 per value would double the memory.
 *
 * A frontend whose table is missing or unusable falls back to random: the
 * controller installs a table before it sets the flag, and never depends on
 * the fallback.
 */
#ifndef KPR_MAGLEV_H
#define KPR_MAGLEV_H

#include "maps.h"
#include "parse.h"

#define KPR_MAGLEV_TABLES	8192	/* outer entries; --map-size-maglev */
#define MAGLEV_CHUNK		16	/* table words per inner-map value */

struct maglev_chunk {
	__u32 w[MAGLEV_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);	/* service port id */
	__uint(max_entries, KPR_MAGLEV_TABLES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	/* BPF_F_INNER_MAP: tables of any M fit, so a restart with another
	 * --maglev-table-size replaces tables one by one. */
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(struct maglev_chunk));
		__uint(max_entries, 1);
		__uint(map_flags, BPF_F_INNER_MAP);
	});
} kpr_v4_maglev SEC(".maps");

static __always_inline __u32 maglev_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/*
 * Bob Jenkins' final mix (the kernel's jhash_3words) over the flow as the
 * client sent it. No per-node seed: every node must agree. Twin in
 * src/model/maglev.ts (flowHash), which tests compare against.
 */
static __always_inline __u32 maglev_flow_hash(const struct pkt *p)
{
	__u32 a = bpf_ntohl(p->saddr), b = bpf_ntohl(p->daddr);
	__u32 c = ((__u32)p->sport << 16) | p->dport;
	__u32 init = 0xdeadbeef + (3 << 2) + p->proto;

	a += init;
	b += init;
	c += init;
	c ^= b; c -= maglev_rol32(b, 14);
	a ^= c; a -= maglev_rol32(c, 11);
	b ^= a; b -= maglev_rol32(a, 25);
	c ^= b; c -= maglev_rol32(b, 16);
	a ^= c; a -= maglev_rol32(c, 4);
	b ^= a; b -= maglev_rol32(a, 14);
	c ^= b; c -= maglev_rol32(b, 24);
	return c;
}

/*
 * The backend of this flow by the Service's Maglev table, or false to fall
 * back to random. The table is built over the backends an external client
 * may use (the local ones under externalTrafficPolicy: Local), so a client
 * bound to another set (a pod reaching an eTP=Local external address) and
 * sessionAffinity (per client, not per flow) keep the random choice.
 */
static __always_inline bool maglev_select_backend(const struct nat_fe_val *fe, bool local_only, const struct pkt *p,
						  __u32 n, struct nat_be_val *be, __u32 *ordinal)
{
	struct nat_be_key bk = { .id = fe->id };
	struct nat_be_val *found;
	struct maglev_chunk *c;
	__u32 key = 0, m, word, base;
	void *table;

	if (!(fe->flags & NAT_FLG_MAGLEV) || fe->affinity_timeout)
		return false;
	if (local_only != !!(fe->flags & NAT_FLG_EXTERNAL_LOCAL))
		return false;
	table = bpf_map_lookup_elem(&kpr_v4_maglev, &fe->id);
	if (!table)
		return false;
	c = bpf_map_lookup_elem(table, &key);
	if (!c || c->w[0] == 0)
		return false;
	m = c->w[0];
	word = 1 + maglev_flow_hash(p) % m;
	key = word / MAGLEV_CHUNK;
	c = bpf_map_lookup_elem(table, &key);
	if (!c)
		return false;
	bk.ordinal = c->w[word & (MAGLEV_CHUNK - 1)];
	/* The table names ordinals of the set this frontend reads: the local
	 * set (from NAT_BE_LOCAL_BASE) under eTP=Local, else the cluster set. */
	base = local_only ? NAT_BE_LOCAL_BASE : 0;
	if (bk.ordinal < base || bk.ordinal - base >= n)
		return false;
	found = bpf_map_lookup_elem(&kpr_v4_nat_be, &bk);
	if (!found)
		return false;
	*be = *found;
	*ordinal = bk.ordinal;
	return true;
}

#endif /* KPR_MAGLEV_H */
