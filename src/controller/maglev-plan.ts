/**
 * Which Maglev table a Service port needs, if any.
 *
 * Only external frontends carry NAT_FLG_MAGLEV. The table covers the
 * backends an external client may reach: all of them, or under
 * externalTrafficPolicy: Local only this node's (ordinals 0..local-1), as
 * Cilium does. Such a table differs between nodes, and needs to: another
 * node has other local backends, so a flow moved there cannot keep its
 * backend whatever the algorithm.
 */
import { createHash } from 'node:crypto';
import { encodeMaglevTable } from '../datapath/maglev-tables.js';
import type { NatBeVal } from '../datapath/codec.js';
import { maglevOrdinals } from '../model/maglev.js';
import { NAT_FLG_EXTERNAL_LOCAL, NAT_FLG_MAGLEV, type Frontend } from '../model/types.js';

/** Bumped whenever the builder would build another table from the same inputs. */
const BUILDER_VERSION = 1;

export interface TablePlan {
  /**
   * Digest of what the table is built from (builder version, M, backends by
   * ordinal): equal inputs build equal tables, so a restart or a periodic
   * resync compares digests, read from the kernel, instead of building.
   */
  digest: number;
  build(): Buffer;
}

export function planMaglevTable(frontends: Frontend[], atOrdinal: NatBeVal[], local: number, m: number): TablePlan | undefined {
  const flagged = frontends.filter((f) => !f.blackhole && f.flags & NAT_FLG_MAGLEV);
  if (flagged.length === 0) return undefined;
  const localOnly = flagged.some((f) => f.flags & NAT_FLG_EXTERNAL_LOCAL);
  const eligible = atOrdinal.slice(0, localOnly ? local : atOrdinal.length);
  if (eligible.length === 0) return undefined;
  const sig = `v${BUILDER_VERSION}|${m}|${eligible.map((b) => `${b.addr}:${b.port}`).join(',')}`;
  const digest = createHash('sha256').update(sig).digest().readUInt32LE(0);
  return { digest, build: () => encodeMaglevTable(maglevOrdinals(eligible, m), digest) };
}
