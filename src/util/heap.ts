/**
 * How far V8 lets the heap grow past what survived its last full GC.
 *
 * V8's own factor is dynamic, up to 4x: after a full sync at 10k Services
 * (~80-100 MB live) it let the heap reach ~250 MB before collecting, and
 * every periodic resync's garbage pushed RSS higher (kpr run with the
 * Kubernetes source: 347 MB after the first sync, 448 MB after two
 * resyncs). A fixed 1.3x keeps RSS near the live data at no CPU cost
 * visible at that size. With a large live heap (100k Services, ~1 GB) a
 * fixed factor means a full GC every few hundred MB promoted, which cost
 * ~45% more CPU in a full sync; there V8 sizes the heap itself again. The
 * choice is re-made after every full GC. The flag is read at each GC, so
 * setting it at run time takes effect; NODE_OPTIONS does not accept it.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 30;
/** Live heap above which V8's dynamic factor is used again. */
export const BOUNDED_HEAP_LIMIT = 256 * 1024 * 1024;

let observer: PerformanceObserver | undefined;

export function boundHeapGrowth(): void {
  if (observer) return;
  let bounded: boolean | undefined;
  const choose = (): void => {
    const b = getHeapStatistics().used_heap_size < BOUNDED_HEAP_LIMIT;
    if (b === bounded) return;
    bounded = b;
    // 0: V8's dynamic factor.
    setFlagsFromString(`--heap-growing-percent=${b ? HEAP_GROWING_PERCENT : 0}`);
  };
  choose();
  observer = new PerformanceObserver((list) => {
    if (list.getEntries().some((e) => ((e as unknown as { detail?: { kind?: number } }).detail)?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) choose();
  });
  observer.observe({ entryTypes: ['gc'] });
}
