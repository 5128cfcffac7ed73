/**
 * The conntrack expiry scan's thread (started by conntrack-thread.ts). It
 * opens the pinned conntrack map itself, so it has its own descriptor, and
 * runs one scan per request; the daemon's event loop only waits for the
 * answer.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { ConntrackScanner, type CtTimeouts, type ScanResult } from './conntrack.js';
import { BpfMap } from './bpf-map.js';

export interface CtWorkerData {
  /** the pinned conntrack map */
  path: string;
  /** the pinned IPv6 conntrack map (kpr_v6_ct), scanned after the IPv4 one */
  path6?: string;
  timeouts?: CtTimeouts;
}
export type CtWorkerRequest = { op: 'scan'; id: number; chunk?: number } | { op: 'close' };
export type CtWorkerReply =
  | { id: number; ok: true; result: ScanResult & { ipv6?: ScanResult; threadId: number } }
  | { id: number; ok: false; message: string; code?: string };

const data = workerData as CtWorkerData;
const port = parentPort;
if (!port) throw new Error('conntrack-worker runs as a worker thread');
const ct = BpfMap.openPinned(data.path, 'kpr_v4_ct');
const ct6 = data.path6 ? BpfMap.openPinned(data.path6, 'kpr_v6_ct') : undefined;
const scanner = new ConntrackScanner(ct, data.timeouts);
const scanner6 = ct6 ? new ConntrackScanner(ct6, data.timeouts) : undefined;

/** Both families' maps, one after the other: the counts are their sums, and ipv6 the IPv6 map's alone. */
async function scanAll(chunk?: number): Promise<ScanResult & { ipv6?: ScanResult }> {
  const r = await scanner.scan(chunk);
  if (!scanner6) return r;
  const r6 = await scanner6.scan(chunk);
  return { scanned: r.scanned + r6.scanned, expired: r.expired + r6.expired, fwd: r.fwd + r6.fwd, rev: r.rev + r6.rev, ipv6: r6 };
}

port.on('message', (req: CtWorkerRequest) => {
  if (req.op === 'close') {
    ct.close();
    ct6?.close();
    process.exit(0); // ends this thread only

  }
  scanAll(req.chunk).then(
    (result) => port.postMessage({ id: req.id, ok: true, result: { ...result, threadId } } satisfies CtWorkerReply),
    (err: Error & { code?: string }) => port.postMessage({ id: req.id, ok: false, message: err.message, code: err.code } satisfies CtWorkerReply),
  );
});
port.postMessage({ ready: true });
