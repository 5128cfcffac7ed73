/**
 * How far V8 lets the heap grow past what survived its last full GC.
 *
 * V8's own factor is dynamic, up to 4x: after a full sync at 10k Services
 * (~80-100 MB live) it let the heap reach ~250 MB before collecting, and
 * every periodic resync's garbage pushed RSS higher (kpr run with the
 * Kubernetes source: 347 MB after the first sync, 448 MB after two
 * resyncs). A fixed 1.3x keeps RSS near the live data at a small CPU cost
 * (see README, controller scale). The flag is read at each GC, so setting
 * it at start-up takes effect; NODE_OPTIONS does not accept it.
 */
import { setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 30;

export function boundHeapGrowth(percent = HEAP_GROWING_PERCENT): void {
  setFlagsFromString(`--heap-growing-percent=${percent}`);
}
