/** A lab node's kpr_stats counters, and what changed between two reads. */
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { STAT_NAMES, type StatName } from '../../src/datapath/abi.js';
import type { LabNode } from '../../src/lab/cluster.js';

export type Stats = Record<StatName, number>;

export function stats(node: LabNode): Stats {
  return withPinnedMaps(node.pinPath, (m) => readStats(m.stats));
}

/** The counters that moved, by how much. */
export function delta(after: Stats, before: Stats): Partial<Stats> {
  const d: Partial<Stats> = {};
  for (const k of STAT_NAMES) if (after[k] !== before[k]) d[k] = after[k] - before[k];
  return d;
}
