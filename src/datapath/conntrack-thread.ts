/**
 * The daemon's conntrack expiry scan, off the main thread: reading and
 * judging 500k entries is a few hundred ms of CPU each time, which even cut
 * into yielding slices showed as 100-280 ms of event-loop lag under load.
 * On a worker thread it costs the main loop one message each way.
 */
import { once } from 'node:events';
import type { Logger } from '../log.js';
import type { Worker } from 'node:worker_threads';
import { startOwnWorker } from '../util/worker.js';
import type { CtTimeouts, ScanResult } from './conntrack.js';
import type { CtWorkerData, CtWorkerReply, CtWorkerRequest } from './conntrack-worker.js';

/** ipv6: kpr_v6_ct's part of the counts, when the thread scans it too. */
export type ThreadScanResult = ScanResult & { ipv6?: ScanResult; threadId: number };

export class ConntrackScanThread {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: ThreadScanResult) => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: CtWorkerReply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (this.waiting.size === 0) worker.unref();
      if (m.ok) w.resolve(m.result);
      else w.reject(Object.assign(new Error(m.message), { code: m.code }));
    });
    const fail = (err: Error) => {
      this.failed = err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`conntrack scan thread exited (code ${code})`)));
    // An idle scan thread does not keep the process alive; one that is scanning does.
    worker.unref();
  }

  /** Start the thread on the maps pinned at path (and path6, IPv6); resolves once it has opened them. */
  static async start(path: string, timeouts?: CtTimeouts, path6?: string): Promise<ConntrackScanThread> {
    const worker = startOwnWorker('datapath/conntrack-worker', { path, timeouts, ...(path6 ? { path6 } : {}) } satisfies CtWorkerData);
    const ready = once(worker, 'message');
    const died = once(worker, 'error').then(([err]) => Promise.reject(err as Error));
    await Promise.race([ready, died]);
    return new ConntrackScanThread(worker);
  }

  /** false once the thread has exited or failed */
  get alive(): boolean {
    return this.failed === undefined;
  }

  scan(chunk?: number): Promise<ThreadScanResult> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ op: 'scan', id, chunk } satisfies CtWorkerRequest);
    });
  }

  /** Stop the thread at once, mid-scan or not (a scan waiting for it fails). */
  async terminate(): Promise<void> {
    if (this.failed) return;
    await this.worker.terminate();
  }

  async close(): Promise<void> {
    if (this.failed) return;
    const exited = once(this.worker, 'exit');
    this.worker.postMessage({ op: 'close' } satisfies CtWorkerRequest);
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export interface ConntrackExpiryOptions {
  /** the pinned conntrack maps: IPv4, and IPv6 when given */
  path: string;
  path6?: string | undefined;
  everyMs: number;
  log: Logger;
  onScan: (r: ThreadScanResult) => void;
}

/**
 * The periodic expiry scan on its thread: one scan at a time (a slow one is
 * not stacked under the next tick), and a thread that died (it should not:
 * a crash, or killed) is replaced at the next tick, so expiry goes on.
 */
export class ConntrackExpiry {
  private thread: ConntrackScanThread;
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | undefined;
  private stopped = false;

  private constructor(
    private readonly opts: ConntrackExpiryOptions,
    first: ConntrackScanThread,
  ) {
    this.thread = first;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.tick().finally(() => (this.running = undefined));
    }, opts.everyMs);
    this.timer.unref();
  }

  /** Starts the first thread (a map that is not there fails here), then scans every everyMs. */
  static async start(opts: ConntrackExpiryOptions): Promise<ConntrackExpiry> {
    return new ConntrackExpiry(opts, await ConntrackExpiry.spawn(opts));
  }

  private static spawn(opts: ConntrackExpiryOptions): Promise<ConntrackScanThread> {
    return ConntrackScanThread.start(opts.path, undefined, opts.path6);
  }

  /** The thread that scans now. */
  get current(): ConntrackScanThread {
    return this.thread;
  }

  private async tick(): Promise<void> {
    try {
      if (!this.thread.alive) {
        this.opts.log.warn({ path: this.opts.path }, 'conntrack scan thread is gone; starting a new one');
        const fresh = await ConntrackExpiry.spawn(this.opts);
        if (this.stopped) return void (await fresh.close());
        this.thread = fresh;
      }
      this.opts.onScan(await this.thread.scan());
    } catch (err) {
      this.opts.log.error({ err }, 'conntrack scan failed');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    await this.thread.close();
  }
}
