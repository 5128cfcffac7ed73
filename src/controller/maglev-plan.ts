/**
 * Which Maglev table a Service port needs, if any.
 *
 * Only external frontends carry NAT_FLG_MAGLEV. The table covers the
 * backends an external client may reach: all of them, or under
 * externalTrafficPolicy: Local only this node's (the local set, at ordinals
 * from NAT_BE_LOCAL_BASE), as Cilium does. Such a table differs between nodes, and needs to: another
 * node has other local backends, so a flow moved there cannot keep its
 * backend whatever the algorithm.
 */
import { createHash } from 'node:crypto';
import { encodeMaglevTable } from '../datapath/maglev-tables.js';
import type { NatBeVal } from '../datapath/codec.js';
import { maglevOrdinals } from '../model/maglev.js';
import { NAT_BE_LOCAL_BASE, NAT_FLG_EXTERNAL_LOCAL, NAT_FLG_MAGLEV, type Frontend } from '../model/types.js';

/** Bumped whenever the builder would build another table from the same inputs. */
const BUILDER_VERSION = 2;

export interface TablePlan {
  /**
   * Digest of what the table is built from (builder version, M, backends by
   * ordinal): equal inputs build equal tables, so a restart or a periodic
   * resync compares digests, read from the kernel, instead of building.
   */
  digest: number;
  build(): Buffer;
}

/**
 * `cluster` and `local` are the port's two backend sets by ordinal (the
 * cluster set from 0, the local set from NAT_BE_LOCAL_BASE); the table
 * holds ordinals of the set its frontends read.
 */
export function planMaglevTable(frontends: Frontend[], cluster: NatBeVal[], local: NatBeVal[], m: number): TablePlan | undefined {
  const flagged = frontends.filter((f) => !f.blackhole && f.flags & NAT_FLG_MAGLEV);
  if (flagged.length === 0) return undefined;
  const localOnly = flagged.some((f) => f.flags & NAT_FLG_EXTERNAL_LOCAL);
  const eligible = localOnly ? local : cluster;
  if (eligible.length === 0) return undefined;
  const base = localOnly ? NAT_BE_LOCAL_BASE : 0;
  const sig = `v${BUILDER_VERSION}|${m}|${base}|${eligible.map((b) => `${b.addr}:${b.port}`).join(',')}`;
  const digest = createHash('sha256').update(sig).digest().readUInt32LE(0);
  return {
    digest,
    build: () => {
      const ordinals = maglevOrdinals(eligible, m);
      if (base !== 0) for (let i = 0; i < m; i++) ordinals[i] = (ordinals[i] as number) + base;
      return encodeMaglevTable(ordinals, digest);
    },
  };
}
