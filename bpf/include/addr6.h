/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * IPv6 addresses as four __be32 words (struct in6_addr's s6_addr32, and
 * bpf_sock_addr's user_ip6[]): compare, copy, and the IPv4-mapped form
 * ::ffff:a.b.c.d that an AF_INET6 socket uses to reach an IPv4 peer.
 */
#ifndef KPR_ADDR6_H
#define KPR_ADDR6_H

#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>

static __always_inline bool ipv6_addr_eq(const __be32 *a, const __be32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void ipv6_addr_copy(__be32 *dst, const __be32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline bool ipv6_addr_is_zero(const __be32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

static __always_inline bool ipv6_addr_is_v4mapped(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Numeric order of two addresses (conntrack keys put the lower side first). */
static __always_inline int ipv6_addr_cmp(const __be32 *a, const __be32 *b)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 x = bpf_ntohl(a[i]), y = bpf_ntohl(b[i]);

		if (x != y)
			return x < y ? -1 : 1;
	}
	return 0;
}

/*
 * Family-neutral addresses: `__be32 *` plus AF_INET or AF_INET6, with an
 * IPv4 address in word 0 (struct pkt, struct nat_choice). Code shared by
 * both families' per-packet paths compares and copies through these.
 */
#ifndef AF_INET6
#define AF_INET6	10
#endif

static __always_inline bool addr_eq(__u8 fam, const __be32 *a, const __be32 *b)
{
	return fam == AF_INET6 ? ipv6_addr_eq(a, b) : a[0] == b[0];
}

static __always_inline void addr_copy(__u8 fam, __be32 *dst, const __be32 *src)
{
	if (fam == AF_INET6)
		ipv6_addr_copy(dst, src);
	else
		dst[0] = src[0];
}

static __always_inline bool addr_is_zero(__u8 fam, const __be32 *a)
{
	return fam == AF_INET6 ? ipv6_addr_is_zero(a) : a[0] == 0;
}

#endif /* KPR_ADDR6_H */
