/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The TCP timestamp option (RFC 7323) of a segment, for any address family:
 * the caller gives the offset of the TCP header. Read only where kpr needs
 * it (a new flow's SYN, a masqueraded client's segments once it closes),
 * never on the ordinary per-packet path.
 */
#ifndef KPR_TCP_TS_H
#define KPR_TCP_TS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TCP_OPT_EOL	0
#define TCP_OPT_NOP	1
#define TCP_OPT_TS	8
#define TCP_OPT_TS_LEN	10
#define TCP_OPT_MAX	40

/*
 * Does the segment carry a timestamp option? Its TSval goes to *tsval.
 * Each option is read from the packet at its own offset: the walk never
 * indexes a buffer with a variable, which keeps the verifier simple. A
 * call of its own, so that its buffers do not add to a caller's stack.
 */
static __noinline bool tcp_tsval(struct __sk_buff *skb, __u32 l4_off, __u32 *tsval)
{
	__u32 off = l4_off + sizeof(struct tcphdr), end, n;
	__u8 doff, o[2];

	if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1))
		return false;
	end = l4_off + (doff >> 4) * 4;
	for (n = 0; n < TCP_OPT_MAX && off + TCP_OPT_TS_LEN <= end; n++) {
		if (bpf_skb_load_bytes(skb, off, o, 2))
			return false;
		if (o[0] == TCP_OPT_EOL)
			return false;
		if (o[0] == TCP_OPT_NOP) {
			off++;
			continue;
		}
		if (o[0] == TCP_OPT_TS) {
			__be32 v;

			if (o[1] != TCP_OPT_TS_LEN || bpf_skb_load_bytes(skb, off + 2, &v, 4))
				return false;
			*tsval = bpf_ntohl(v);
			return true;
		}
		if (o[1] < 2)
			return false;
		off += o[1];
	}
	return false;
}

#endif /* KPR_TCP_TS_H */
