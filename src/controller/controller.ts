/**
 * The controller: turns store changes into reconciler writes.
 *
 * Nothing is written before every source has synced, so a restart never
 * writes a partial or empty state over the pinned maps. Then:
 *  - the first sync is a full one (adopted entries that are no longer
 *    desired are removed);
 *  - later syncs translate only the Services that changed;
 *  - failed writes are retried with capped exponential backoff; a full map
 *    is a degraded state (gauge, /readyz detail, one log line per map per
 *    fullLogEveryMs), not a stuck one: it does not hold pendingSince, so
 *    liveness does not restart kpr over it;
 *  - a periodic resync re-reads the maps and repairs any drift.
 */
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { translateService, type TranslateOptions } from '../model/translate.js';
import { serviceKey, type DesiredServicePort } from '../model/types.js';
import type { ApplyResult, Reconciler, RemovedBackend } from './reconciler.js';
import type { InvalidObject, ObjectStore } from './store.js';

export interface ControllerOptions {
  store: ObjectStore;
  reconciler: Reconciler;
  log: Logger;
  metrics?: Metrics | undefined;
  translate?: TranslateOptions;
  /** Full re-read and repair of the maps; 0 disables. */
  resyncIntervalMs?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Called whenever Node objects change (after the store has them). */
  onNodesChange?: (names: Set<string>) => void;
  /** Called after a sync whose writes took backends out of Service ports (they are gone from the maps). */
  onBackendsRemoved?: (removed: RemovedBackend[]) => void;
  /** A full map is logged at most once per this period, per map. */
  fullLogEveryMs?: number;
  /** Called after each sync with the Service keys it covered, to refresh gauges and health checks. */
  afterSync?: (serviceKeys: Set<string>) => void;
}

export class Controller {
  private readonly dirty = new Set<string>();
  /** service key -> the Service port names it produced last time */
  private readonly portsBySvc = new Map<string, Set<string>>();
  /** slice key -> trigger time already observed, so resyncs don't re-count it */
  private readonly observedTrigger = new Map<string, number>();
  private conflicted = new Set<string>();
  private fullSyncDone = false;
  private needFull = false;
  private timer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryDelay = 0;
  private stopped = false;
  private lastSyncAt: number | undefined;
  private lastError: string | undefined;
  /** When the oldest change not yet written arrived (kube-proxy's oldestPendingQueued). */
  private pendingSince: number | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Skips already logged at info, as "object\0reason". */
  private readonly skipsLogged = new Set<string>();
  /** This node's zone as last used for translation. */
  private zone: string | undefined;
  /** map name -> Service ports it has no room for, as of the last sync */
  private full = new Map<string, Set<string>>();
  private fullLoggedAt = new Map<string, number>();

  constructor(private readonly opts: ControllerOptions) {}

  start(): void {
    const { store, log } = this.opts;
    const self = this.opts.translate?.nodeName;
    this.zone = self === undefined ? undefined : store.node(self)?.zone;
    store.onChange = (keys) => {
      // Before the sources sync nothing can be written, so nothing is late.
      if (store.isSynced()) this.pendingSince ??= Date.now();
      for (const k of keys) this.dirty.add(k);
      this.schedule(0);
    };
    store.onNodesChange = (names) => {
      this.opts.onNodesChange?.(names);
      // This node's zone decides topology hints for every Service.
      const self = this.opts.translate?.nodeName;
      if (self === undefined || !names.has(self)) return;
      const zone = store.node(self)?.zone;
      if (zone === this.zone) return;
      log.info({ node: self, zone }, 'node zone changed: re-selecting endpoints for every Service');
      this.zone = zone;
      this.pendingSince ??= Date.now();
      for (const k of store.serviceKeys()) this.dirty.add(k);
      this.schedule(0);
    };
    store.onInvalid = (err: InvalidObject) => {
      log.warn({ object: err.object, reason: err.reason }, `skipping ${err.object}: ${err.message}`);
      this.opts.metrics?.skipped.inc({ kind: err.kind, reason: err.reason });
    };
    store.onSynced = () => {
      log.info(store.counts(), 'sources synced; programming the data path');
      this.pendingSince ??= Date.now();
      this.schedule(0);
    };
    if (store.isSynced()) this.schedule(0);
    const every = this.opts.resyncIntervalMs ?? 0;
    if (every > 0) {
      this.resyncTimer = setInterval(() => {
        this.needFull = true;
        this.schedule(0);
      }, every);
      this.resyncTimer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.timer = undefined;
  }

  /** Sync state for health endpoints. */
  status(): {
    synced: boolean;
    lastSyncAt: number | undefined;
    pending: number;
    pendingSince: number | undefined;
    lastError: string | undefined;
    /** map name -> Service ports not programmed because it is full */
    mapFull: Record<string, number>;
  } {
    return {
      mapFull: Object.fromEntries([...this.full].map(([m, ports]) => [m, ports.size])),
      synced: this.fullSyncDone,
      lastSyncAt: this.lastSyncAt,
      pending: this.dirty.size,
      pendingSince: this.pendingSince,
      lastError: this.lastError,
    };
  }

  /** Resolves when nothing is pending (tests and the demo use it). */
  whenIdle(): Promise<void> {
    if (this.fullSyncDone && this.dirty.size === 0 && !this.timer) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(delayMs: number): void {
    if (this.stopped || !this.opts.store.isSynced()) return;
    if (this.timer) {
      if (delayMs > 0) return; // a retry is already queued
      clearTimeout(this.timer);
    }
    // A zero delay still yields, so a burst of events becomes one sync.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sync();
    }, delayMs);
  }

  private translate(key: string): DesiredServicePort[] {
    const { store, log, metrics } = this.opts;
    const svc = store.service(key);
    if (!svc) return [];
    const t = translateService(svc, store.slicesFor(key), { ...this.opts.translate, nodeZone: this.zone });
    for (const s of t.skipped) {
      // Info the first time (an operator should see an SCTP port or a stray
      // nodePort), debug on every later resync of the same object.
      const seen = `${s.object}\0${s.reason}`;
      const level = this.skipsLogged.has(seen) ? 'debug' : 'info';
      this.skipsLogged.add(seen);
      log[level]({ object: s.object, reason: s.reason }, `not programming ${s.object}: ${s.message}`);
      metrics?.skipped.inc({ kind: 'Service', reason: s.reason });
    }
    return t.ports;
  }

  /** Run one sync now. Exposed for tests; normally driven by schedule(). */
  sync(): ApplyResult | undefined {
    const { store, reconciler, log, metrics } = this.opts;
    if (this.stopped || !store.isSynced()) return undefined;
    const started = process.hrtime.bigint();
    const isFull = !this.fullSyncDone || this.needFull;
    const keys = isFull ? new Set([...store.serviceKeys(), ...this.portsBySvc.keys(), ...this.dirty]) : new Set(this.dirty);
    for (const k of this.conflicted) keys.add(k);
    this.dirty.clear();

    const changes = new Map<string, DesiredServicePort | null>();
    const produced = new Map<string, Set<string>>();
    for (const key of keys) {
      const ports = this.translate(key);
      const names = new Set(ports.map((p) => p.name));
      produced.set(key, names);
      for (const p of ports) changes.set(p.name, p);
      for (const old of this.portsBySvc.get(key) ?? []) if (!names.has(old)) changes.set(old, null);
    }

    let result: ApplyResult;
    try {
      if (isFull) {
        if (this.needFull) reconciler.adopt(); // re-read the kernel to find drift
        const desired = new Map<string, DesiredServicePort>();
        for (const [n, p] of changes) if (p) desired.set(n, p);
        result = reconciler.syncAll(desired);
      } else {
        result = reconciler.apply(changes);
      }
    } catch (err) {
      // Unexpected (not a per-entry map error): retry everything.
      for (const k of keys) this.dirty.add(k);
      this.lastError = (err as Error).message;
      log.error({ err }, 'sync failed');
      this.retry();
      return undefined;
    }

    for (const [key, names] of produced) {
      if (names.size) this.portsBySvc.set(key, names);
      else this.portsBySvc.delete(key);
    }
    this.conflicted = new Set(result.conflicts.map((c) => c.name.split(':')[0] as string));
    for (const c of result.conflicts) {
      log.warn({ servicePort: c.name, frontend: c.frontend, owner: c.owner }, `frontend ${c.frontend} already belongs to ${c.owner}`);
    }
    metrics?.frontendConflicts.set(result.conflicts.length);

    const failedSvcs = new Set<string>();
    const full = new Map<string, Set<string>>();
    let stuck = 0;
    for (const f of result.failed) {
      failedSvcs.add(f.name.split(':')[0] as string);
      metrics?.mapWriteErrors.inc({ map: f.map, code: f.code });
      if (f.full) {
        let set = full.get(f.map);
        if (!set) full.set(f.map, (set = new Set()));
        set.add(f.name);
      } else {
        stuck++;
        log.error({ map: f.map, servicePort: f.name, code: f.code }, `write for ${f.name} failed: ${f.message}`);
      }
    }
    this.reportFull(full, keys);
    for (const k of failedSvcs) this.dirty.add(k);
    if (result.removedBackends.length > 0 && this.opts.onBackendsRemoved) {
      try {
        this.opts.onBackendsRemoved(result.removedBackends);
      } catch (err) {
        log.error({ err }, 'handling removed backends failed');
      }
    }

    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    metrics?.syncDuration.observe(seconds);
    this.observeProgramming(keys, failedSvcs);
    this.fullSyncDone = true;
    // The re-read is done; what failed is retried as ordinary dirty Services.
    if (isFull) this.needFull = false;
    log.info(
      { full: isFull, services: keys.size, writes: result.writes, deletes: result.deletes, failed: result.failed.length, ms: +(seconds * 1000).toFixed(2) },
      'synced',
    );
    this.opts.afterSync?.(keys);

    if (result.failed.length > 0) {
      this.lastError = result.failed[0]?.message;
      // Only full maps left: everything that fits is written; kpr is degraded, not behind.
      if (stuck === 0) this.pendingSince = undefined;
      this.retry();
    } else {
      this.retryDelay = 0;
      this.lastError = undefined;
      this.lastSyncAt = Date.now();
      metrics?.lastSync.set(this.lastSyncAt / 1000);
      metrics?.pendingRetries.set(0);
      if (this.dirty.size > 0) this.schedule(0);
      else this.pendingSince = undefined;
    }
    if (this.dirty.size === 0 && !this.timer) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
    return result;
  }

  /**
   * Keep the per-map set of Service ports that found no room, and log it
   * once per fullLogEveryMs: a retry every few seconds would otherwise log
   * every one of them each time.
   */
  private reportFull(failed: Map<string, Set<string>>, covered: Set<string>): void {
    const { log, metrics } = this.opts;
    const svcOf = (name: string) => name.split(':')[0] as string;
    for (const ports of this.full.values()) {
      for (const p of ports) if (covered.has(svcOf(p))) ports.delete(p);
    }
    for (const [map, ports] of failed) {
      let set = this.full.get(map);
      if (!set) this.full.set(map, (set = new Set()));
      for (const p of ports) set.add(p);
    }
    const now = Date.now();
    const every = this.opts.fullLogEveryMs ?? 30_000;
    for (const [map, ports] of [...this.full]) {
      metrics?.mapFull.set({ map }, ports.size);
      if (ports.size === 0) {
        this.full.delete(map);
        this.fullLoggedAt.delete(map);
        log.info({ map }, `map ${map} has room again: every Service port is programmed`);
        continue;
      }
      const last = this.fullLoggedAt.get(map);
      if (last !== undefined && now - last < every) continue;
      this.fullLoggedAt.set(map, now);
      const sample = [...ports].slice(0, 5);
      log.error({ map, servicePorts: ports.size, sample }, `map ${map} is full: ${ports.size} Service port(s) not programmed (e.g. ${sample.join(', ')}); raise its size flag`);
    }
  }

  private retry(): void {
    const min = this.opts.retryMinMs ?? 100;
    const max = this.opts.retryMaxMs ?? 10_000;
    this.retryDelay = this.retryDelay === 0 ? min : Math.min(max, this.retryDelay * 2);
    this.opts.metrics?.pendingRetries.set(this.dirty.size);
    this.schedule(this.retryDelay);
  }

  private observeProgramming(keys: Set<string>, failed: Set<string>): void {
    const hist = this.opts.metrics?.programmingDuration;
    const now = Date.now();
    for (const key of keys) {
      if (failed.has(key)) continue;
      for (const slice of this.opts.store.slicesFor(key)) {
        const t = slice.triggerTime;
        const sk = serviceKey(slice.namespace, slice.name);
        if (t === undefined || this.observedTrigger.get(sk) === t) continue;
        this.observedTrigger.set(sk, t);
        hist?.observe(Math.max(0, now - t) / 1000);
      }
    }
  }
}
