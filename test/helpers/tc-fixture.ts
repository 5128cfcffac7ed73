/**
 * The fixture the tc packet tests share: kube objects translated into
 * desired Service ports as the daemon does, and a Datapath on the test's own
 * pin path with those ports written through the reconciler.
 */
import assert from 'node:assert/strict';
import { bpf } from '../../src/datapath/addon.js';
import { decodeCtKey, decodeCtVal } from '../../src/datapath/codec.js';
import { Datapath } from '../../src/datapath/datapath.js';
import type { KVMap } from '../../src/datapath/kvmap.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { parseEndpointSlice, parseService } from '../../src/model/objects.js';
import { translateService } from '../../src/model/translate.js';
import type { DesiredServicePort } from '../../src/model/types.js';

/** tc program verdicts (linux/pkt_cls.h) */
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

/** Services with their EndpointSlices -> desired ports, as node `nodeName` with `nodeIPs`. */
export function desiredPorts(objs: Array<[unknown, unknown[]]>, nodeIPs: string[], nodeName = 'n1'): Map<string, DesiredServicePort> {
  const out = new Map<string, DesiredServicePort>();
  for (const [s, sl] of objs) {
    const svc = parseService(s);
    assert.ok(svc.ok, JSON.stringify(svc));
    const slices = sl.map((x) => {
      const r = parseEndpointSlice(x);
      assert.ok(r.ok);
      return r.value;
    });
    for (const p of translateService(svc.value, slices, { nodeName, nodeIPs }).ports) out.set(p.name, p);
  }
  return out;
}

/** Open the data path at pin and write these ports; the caller closes and cleans it up. */
export async function syncedDatapath(pin: string, desired: Map<string, DesiredServicePort>): Promise<Datapath> {
  const dp = await Datapath.open(pin);
  const r = new Reconciler(dp.maps);
  r.adopt();
  assert.deepEqual(r.syncAll(desired).failed, []);
  return dp;
}

/** One packet through a tc program (BPF_PROG_TEST_RUN), its output parsed by the family's parser. */
export function runProg<P>(dp: Datapath, prog: string, pkt: Buffer, parse: (b: Buffer) => P): { retval: number; out: P; data: Buffer } {
  const r = bpf.progTestRun(dp.tcProgFd(prog), pkt);
  return { retval: r.retval, out: parse(r.data), data: r.data };
}

/** A conntrack map's entries, decoded (either family). */
export function ctEntries(ct: KVMap) {
  return ct.dump().map(([k, v]) => ({ key: decodeCtKey(k), val: decodeCtVal(v) }));
}

export function clearMap(m: KVMap): void {
  for (const [k] of m.dump()) m.delete(k);
}
