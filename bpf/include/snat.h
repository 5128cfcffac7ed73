/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * SNAT source port choice, for any address family.
 *
 * The port walk follows nf_nat's (nf_nat_l4proto_unique_tuple): probe
 * consecutive ports from a start, and if a round finds none, start again at
 * a random offset with half as many probes. The first round starts at the
 * port the caller prefers (the client's own, or the port a reopened flow
 * had) when it lies in the range, else at a random one. A range no larger
 * than the first round is walked whole, so it yields a port while any is
 * free. The probes are capped, as in nf_nat, so that a full range costs
 * each new flow a bounded amount of work.
 *
 * The caller supplies the probe as a bpf_loop callback: it builds its own
 * family's conntrack key for snat_walk_port(w, i) and claims the port if
 * it can, setting w->found. Its context must start with struct snat_walk.
 *
 * Which taken ports may be claimed is snat_tw_accepts(): a TCP flow closed
 * by FINs leaves the side that closed first in TIME_WAIT, and a backend in
 * TIME_WAIT accepts a new SYN on that tuple only if the SYN is "past" the
 * old connection (tcp_timewait_state_process; RFC 6191): here, a timestamp
 * newer than any the old client sent once it started closing.
 */
#ifndef KPR_SNAT_H
#define KPR_SNAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

#define SNAT_PORT_MIN_DEFAULT	61000	/* above the kernel's ephemeral range */
#define SNAT_PORT_MAX_DEFAULT	65535
#define SNAT_WALK_FIRST		128	/* nf_nat's NF_NAT_MAX_ATTEMPTS */
#define SNAT_WALK_LAST		16	/* smallest round */
#define SNAT_WALK_ROUNDS	4	/* 128 + 64 + 32 + 16 probes at most */

struct snat_walk {
	__u32 lo;
	__u32 size;	/* ports in the range */
	__u32 start;	/* offset of this round's first probe */
	__u16 port;	/* out: the port claimed */
	__u8 found;
	__u8 pad;
};

static __always_inline __u16 snat_walk_port(const struct snat_walk *w, __u32 i)
{
	return w->lo + (w->start + i) % w->size;
}

/*
 * Walk [lo, hi] (0/0: the default range) with the probe `try_port`, a
 * bpf_loop callback whose context `ctx` begins with `w`. Returns whether a
 * port was claimed, in w->port.
 */
static __always_inline bool snat_port_walk(struct snat_walk *w, __u16 lo, __u16 hi, __u16 prefer,
					   long (*try_port)(__u32, void *), void *ctx)
{
	__u32 n;
	int round;

	if (lo == 0 || hi < lo) {
		lo = SNAT_PORT_MIN_DEFAULT;
		hi = SNAT_PORT_MAX_DEFAULT;
	}
	w->lo = lo;
	w->size = (__u32)hi - lo + 1;
	w->start = prefer >= lo && prefer <= hi ? prefer - lo : bpf_get_prandom_u32() % w->size;
	w->found = 0;
	n = w->size < SNAT_WALK_FIRST ? w->size : SNAT_WALK_FIRST;
	for (round = 0; round < SNAT_WALK_ROUNDS; round++) {
		bpf_loop(n, try_port, ctx, 0);
		if (w->found)
			return true;
		if (n >= w->size || n / 2 < SNAT_WALK_LAST)
			break;
		n /= 2;
		w->start = bpf_get_prandom_u32() % w->size;
	}
	return false;
}

/*
 * TIME_WAIT bookkeeping of the client side of a masqueraded TCP flow:
 * `mark` is the newest TCP timestamp (TSval) the client sent, valid while
 * CT_TCP_TS is set in the client's flags. It is taken from the SYN and
 * from every client segment once the client has closed, and it is valid
 * for reuse only from a client segment sent after the backend's FIN too:
 *  - the backend closed first: the client's FIN is such a segment, and the
 *    backend's TIME_WAIT keeps the TSval of the client's last segment it
 *    took, which is no newer than the mark;
 *  - the client closed first: its last ACK is, after which the backend is
 *    CLOSED; before it, the backend sits in LAST_ACK, which would answer a
 *    new SYN with a challenge ACK.
 * A segment without a timestamp makes the mark unknown.
 */
static __always_inline void snat_tw_note(__u8 *client_flags, __u32 *mark, __u8 server_flags, bool has_ts, __u32 tsval)
{
	if (!has_ts || !(server_flags & CT_TCP_FIN)) {
		*client_flags &= ~CT_TCP_TS;
		return;
	}
	if (!(*client_flags & CT_TCP_TS) || (__s32)(tsval - *mark) > 0)
		*mark = tsval;
	*client_flags |= CT_TCP_TS;
}

/*
 * Would a backend holding the old flow's tuple in TIME_WAIT accept the new
 * flow's SYN? With timestamps on both, when the SYN's TSval is newer than
 * the old client's mark: PAWS passes and the SYN counts as a new
 * connection. Without them this would take the old sequence numbers, which
 * are not kept; the port then stays taken.
 */
static __always_inline bool snat_tw_accepts(__u8 old_client_flags, __u32 old_mark, __u8 syn_flags, __u32 syn_tsval)
{
	return (old_client_flags & CT_TCP_TS) && (syn_flags & CT_TCP_TS) && (__s32)(syn_tsval - old_mark) > 0;
}

#endif /* KPR_SNAT_H */
