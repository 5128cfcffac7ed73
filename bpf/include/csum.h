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
 * most max_len), reading only inside [start, data_end). The loop bound is a
 * constant so the verifier accepts it.
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

#endif /* KPR_CSUM_H */
