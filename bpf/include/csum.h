/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Checksums: incremental updates through the kernel helpers where a field
 * changes in place, and a bounded full computation for headers kpr builds
 * itself (ICMP errors).
 */
#ifndef KPR_CSUM_H
#define KPR_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __always_inline __u16 csum_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * One's-complement sum of `len` bytes at `start` (len a multiple of 2, at
 * most CSUM_MAX_WORDS words), reading only inside [start, data_end). The
 * loop bound is a constant so the verifier accepts it.
 */
#define CSUM_MAX_WORDS	64	/* 128 bytes */

static __always_inline __u64 csum_add_words(void *start, void *data_end, __u32 len, __u64 sum)
{
	__u16 *w = start;

#pragma clang loop unroll(disable)
	for (int i = 0; i < CSUM_MAX_WORDS; i++) {
		if ((__u32)i * 2 >= len)
			break;
		if ((void *)(w + i + 1) > data_end)
			break;
		sum += w[i];
	}
	return sum;
}

/*
 * One's-complement sum of `len` bytes of the packet from `off`, for
 * messages longer than csum_add_words takes (an ICMPv6 error quoting
 * extension headers). `len` is a multiple of CSUM_CHUNK, at most
 * CSUM_CHUNKS_MAX chunks. Each chunk is copied out, so the data need not be
 * linear, and summed by bpf_csum_diff; the result is a 32-bit partial sum
 * (csum_fold32 it), or < 0 if the packet is shorter than that.
 */
#define CSUM_CHUNK	8
#define CSUM_CHUNKS_MAX	160	/* 1280 bytes: IPv6's minimum MTU */

static __always_inline __s64 csum_skb_range(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__s64 sum = 0;

	/* Hide what the caller knows of len: clang would otherwise drop the
	 * constant bound, and the verifier cannot see that len is small. */
	asm volatile("" : "+r"(len));
#pragma clang loop unroll(disable)
	for (int i = 0; i < CSUM_CHUNKS_MAX; i++) {
		__be32 chunk[CSUM_CHUNK / 4];

		if ((__u32)i * CSUM_CHUNK >= len)
			break;
		if (bpf_skb_load_bytes(skb, off + i * CSUM_CHUNK, chunk, sizeof(chunk)))
			return -1;
		sum = bpf_csum_diff(NULL, 0, chunk, sizeof(chunk), (__u32)sum);
		if (sum < 0)
			return -1;
	}
	return sum;
}

#endif /* KPR_CSUM_H */
