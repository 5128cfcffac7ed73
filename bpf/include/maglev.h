/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Maglev consistent hashing for external frontends (NAT_FLG_MAGLEV).
 *
 * The controller builds one lookup table per Service port and family
 * (Maglev paper, section 3.4) from the backends' identities (addr:port), so
 * every node computes the same table, and stores it as an inner ARRAY of a
 * HASH_OF_MAPS keyed by the service id: kpr_v4_maglev for the IPv4 backend
 * sets, kpr_v6_maglev for the IPv6 ones (a dual-stack Service port keeps
 * one id, and each family its own ordinals). The data path hashes the
 * 5-tuple to a slot; the slot holds the backend's ordinal on this node. The
 * same flow thus picks the same backend whichever node it enters, and a
 * backend change moves only about 1/N of the flows.
 *
 * Table layout, as 32-bit words (src/datapath/maglev-tables.ts writes it):
 *   word 0        M, the table size (a prime)
 *   words 1..M    backend ordinal of each slot
 *   word M+1      digest of the table (userspace only: adoption at restart)
 * The words are grouped MAGLEV_CHUNK to an array value (struct maglev_chunk,
 * abi.h).
 *
 * A frontend whose table is missing or unusable falls back to random: the
 * controller installs a table before it sets the flag, and never depends on
 * the fallback.
 */
#ifndef KPR_MAGLEV_H
#define KPR_MAGLEV_H

#include "maps.h"
#include "maps6.h"
#include "parse.h"

#define KPR_MAGLEV_TABLES	8192	/* outer entries; --map-size-maglev */

/* BPF_F_INNER_MAP: tables of any M fit, so a restart with another
 * --maglev-table-size replaces tables one by one. */
#define KPR_MAGLEV_MAP(name)							\
	struct {								\
		__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);			\
		__type(key, __u32);	/* service port id */			\
		__uint(max_entries, KPR_MAGLEV_TABLES);				\
		__uint(pinning, LIBBPF_PIN_BY_NAME);				\
		__array(values, struct {					\
			__uint(type, BPF_MAP_TYPE_ARRAY);			\
			__uint(key_size, sizeof(__u32));			\
			__uint(value_size, sizeof(struct maglev_chunk));	\
			__uint(max_entries, 1);					\
			__uint(map_flags, BPF_F_INNER_MAP);			\
		});								\
	} name SEC(".maps")

KPR_MAGLEV_MAP(kpr_v4_maglev);
KPR_MAGLEV_MAP(kpr_v6_maglev);

static __always_inline __u32 maglev_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/* Bob Jenkins' final mix (the kernel's __jhash_final). */
static __always_inline __u32 maglev_final(__u32 a, __u32 b, __u32 c)
{
	c ^= b; c -= maglev_rol32(b, 14);
	a ^= c; a -= maglev_rol32(c, 11);
	b ^= a; b -= maglev_rol32(a, 25);
	c ^= b; c -= maglev_rol32(b, 16);
	a ^= c; a -= maglev_rol32(c, 4);
	b ^= a; b -= maglev_rol32(a, 14);
	c ^= b; c -= maglev_rol32(b, 24);
	return c;
}

/* The kernel's __jhash_mix. */
#define MAGLEV_MIX(a, b, c)						\
	do {								\
		a -= c; a ^= maglev_rol32(c, 4); c += b;		\
		b -= a; b ^= maglev_rol32(a, 6); a += c;		\
		c -= b; c ^= maglev_rol32(b, 8); b += a;		\
		a -= c; a ^= maglev_rol32(c, 16); c += b;		\
		b -= a; b ^= maglev_rol32(a, 19); a += c;		\
		c -= b; c ^= maglev_rol32(b, 4); b += a;		\
	} while (0)

/*
 * The flow as the client sent it, hashed with no per-node seed: every node
 * must agree. IPv4: the kernel's jhash_3words over the addresses and the
 * ports; IPv6: its jhash2 over the nine words of both addresses and the
 * ports. The protocol is the initial value. Twins in src/model/maglev.ts
 * (flowHash), which tests compare against.
 */
static __always_inline __u32 maglev_flow_hash(const struct pkt *p, const __u8 fam)
{
	__u32 ports = ((__u32)p->sport << 16) | p->dport;
	__u32 a, b, c;

	if (fam == AF_INET6) {
		a = b = c = 0xdeadbeef + (9 << 2) + p->proto;
		a += bpf_ntohl(p->saddr6[0]);
		b += bpf_ntohl(p->saddr6[1]);
		c += bpf_ntohl(p->saddr6[2]);
		MAGLEV_MIX(a, b, c);
		a += bpf_ntohl(p->saddr6[3]);
		b += bpf_ntohl(p->daddr6[0]);
		c += bpf_ntohl(p->daddr6[1]);
		MAGLEV_MIX(a, b, c);
		a += bpf_ntohl(p->daddr6[2]);
		b += bpf_ntohl(p->daddr6[3]);
		c += ports;
		return maglev_final(a, b, c);
	}
	a = b = c = 0xdeadbeef + (3 << 2) + p->proto;
	a += bpf_ntohl(p->saddr);
	b += bpf_ntohl(p->daddr);
	c += ports;
	return maglev_final(a, b, c);
}

/*
 * The backend of this flow by the Service's Maglev table of the packet's
 * family: the nat_be entry (struct nat_be_val or nat_be6_val, a map value),
 * or NULL to fall back to random. The table is built over the backends an
 * external client may use (the local ones under externalTrafficPolicy:
 * Local), so a client bound to another set (a pod reaching an eTP=Local
 * external address) and sessionAffinity (per client, not per flow) keep
 * the random choice.
 */
static __always_inline const void *maglev_select_backend(const struct nat_fe_val *fe, bool local_only,
							 const struct pkt *p, __u32 n, __u32 *ordinal, const __u8 fam)
{
	struct nat_be_key bk = { .id = fe->id };
	struct maglev_chunk *c;
	__u32 key = 0, m, word, base;
	const void *found;
	void *table;

	if (!(fe->flags & NAT_FLG_MAGLEV) || fe->affinity_timeout)
		return NULL;
	if (local_only != !!(fe->flags & NAT_FLG_EXTERNAL_LOCAL))
		return NULL;
	table = bpf_map_lookup_elem(fam == AF_INET6 ? (void *)&kpr_v6_maglev : (void *)&kpr_v4_maglev, &fe->id);
	if (!table)
		return NULL;
	c = bpf_map_lookup_elem(table, &key);
	if (!c || c->w[0] == 0)
		return NULL;
	m = c->w[0];
	word = 1 + maglev_flow_hash(p, fam) % m;
	key = word / MAGLEV_CHUNK;
	c = bpf_map_lookup_elem(table, &key);
	if (!c)
		return NULL;
	bk.ordinal = c->w[word & (MAGLEV_CHUNK - 1)];
	/* The table names ordinals of the set this frontend reads: the local
	 * set (from NAT_BE_LOCAL_BASE) under eTP=Local, else the cluster set. */
	base = local_only ? NAT_BE_LOCAL_BASE : 0;
	if (bk.ordinal < base || bk.ordinal - base >= n)
		return NULL;
	found = bpf_map_lookup_elem(fam == AF_INET6 ? (void *)&kpr_v6_nat_be : (void *)&kpr_v4_nat_be, &bk);
	if (found)
		*ordinal = bk.ordinal;
	return found;
}

#endif /* KPR_MAGLEV_H */
