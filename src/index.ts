/**
 * kpr's programmatic entry point, for tools built on the product (the bench
 * in bench/ imports kpr through this and kpr/lab only): the controller's
 * pieces, the data path, and the constants they are configured with.
 * The CLI (cli.ts) is the entry point for everyone else.
 */
export { Controller } from './controller/controller.js';
export { Reconciler } from './controller/reconciler.js';
export { ObjectStore } from './controller/store.js';
export { planMaglevTable } from './controller/maglev-plan.js';
export { bpf } from './datapath/addon.js';
export { Datapath } from './datapath/datapath.js';
export { CT_FWD, CT_REV } from './datapath/abi.js';
export { ctKeyFor, encodeCtKey, encodeCtVal } from './datapath/codec.js';
export { ConntrackScanner } from './datapath/conntrack.js';
export { ConntrackScanThread } from './datapath/conntrack-thread.js';
export type { KVMap } from './datapath/kvmap.js';
export { cleanup } from './datapath/pinned.js';
export { maglevTableBytes } from './datapath/maglev-tables.js';
export { DEFAULT_MAP_SIZES } from './datapath/names.js';
export { DEFAULT_MAGLEV_TABLE_SIZE, tableSizeProblem } from './model/maglev.js';
export { NAT_FLG_EXTERNAL, NAT_FLG_MAGLEV, serviceKey, type DesiredServicePort } from './model/types.js';
export { ManifestSource } from './sources/manifest.js';
export { ownScript, repoRoot } from './util/paths.js';
export { boundHeapGrowth } from './util/heap.js';
