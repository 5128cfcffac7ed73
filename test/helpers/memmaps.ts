import { MemoryMap } from '../../src/datapath/kvmap.js';
import type { NatMaps } from '../../src/controller/reconciler.js';

export function memoryNatMaps(sizes: { fe?: number; be?: number; meta?: number } = {}): NatMaps & {
  fe: MemoryMap;
  be: MemoryMap;
  meta: MemoryMap;
} {
  return {
    fe: new MemoryMap('kpr_v4_nat_fe', 16, 20, sizes.fe ?? 65536),
    be: new MemoryMap('kpr_v4_nat_be', 8, 8, sizes.be ?? 262144),
    meta: new MemoryMap('kpr_svc_meta', 4, 192, sizes.meta ?? 65536),
  };
}
