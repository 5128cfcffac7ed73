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
import { servicePortNames, translateService, type TranslateOptions } from '../model/translate.js';
import { serviceKey, type DesiredServicePort } from '../model/types.js';
import type { ApplyResult, Reconciler, RemovedBackend, SyncPlan } from './reconciler.js';
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

/** One sync between planning and writing. */
interface Round {
  started: bigint;
  isFull: boolean;
  keys: Set<string>;
  produced: Map<string, Set<string>>;
  plan: SyncPlan;
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
  /** A sync is running (it may be waiting for Maglev tables). */
  private syncing = false;
  /** A sync was asked for while one ran. */
  private again = false;
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
  /** map name -> Service port name -> its Service, for ports that found no room */
  private full = new Map<string, Map<string, string | undefined>>();
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
    if (this.fullSyncDone && this.dirty.size === 0 && !this.timer && !this.syncing) return Promise.resolve();
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
      void this.sync();
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

  /**
   * Run one sync now; normally driven by schedule(). One at a time: a sync
   * that waits for Maglev tables lets the event loop turn, and a timer that
   * fires meanwhile only asks for another round. Without tables to build
   * it runs to the end before it returns.
   */
  sync(): void {
    if (this.syncing) {
      this.again = true;
      return;
    }
    const round = this.begin();
    if (!round) return;
    // Maglev tables take milliseconds each (10k of them: seconds): they are
    // built between event-loop turns, so health checks, metrics and the
    // sources' watches keep being served. Other syncs need no wait.
    if (round.plan.tables === 0) {
      this.finish(round);
      this.notifyIdle();
      return;
    }
    this.syncing = true;
    round.plan
      .prepare()
      .then(
        () => {
          if (!this.stopped) this.finish(round);
        },
        (err: unknown) => this.failed(round.keys, err),
      )
      .finally(() => {
        this.syncing = false;
        if (this.again) {
          this.again = false;
          this.schedule(0);
        }
        this.notifyIdle();
      });
  }

  private notifyIdle(): void {
    if (this.fullSyncDone && this.dirty.size === 0 && !this.timer && !this.syncing) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** An unexpected error (not a per-entry map error): retry everything. */
  private failed(keys: Set<string>, err: unknown): void {
    for (const k of keys) this.dirty.add(k);
    this.lastError = (err as Error).message;
    this.opts.log.error({ err }, 'sync failed');
    this.retry();
  }

  /** Translate what changed and plan its writes. */
  private begin(): Round | undefined {
    const { store, reconciler } = this.opts;
    if (this.stopped || !store.isSynced()) return undefined;
    const started = process.hrtime.bigint();
    const isFull = !this.fullSyncDone || this.needFull;
    const keys = isFull ? new Set([...store.serviceKeys(), ...this.portsBySvc.keys(), ...this.dirty]) : new Set(this.dirty);
    for (const k of this.conflicted) keys.add(k);
    this.dirty.clear();
    const produced = new Map<string, Set<string>>();
    if (isFull && this.distinctNames(keys)) return this.beginFull(started, keys, produced);

    const changes = new Map<string, DesiredServicePort | null>();
    for (const key of keys) {
      const ports = this.translate(key);
      const names = new Set(ports.map((p) => p.name));
      produced.set(key, names);
      for (const p of ports) changes.set(p.name, p);
      for (const old of this.portsBySvc.get(key) ?? []) if (!names.has(old)) changes.set(old, null);
    }

    try {
      let plan: SyncPlan;
      if (isFull) {
        if (this.needFull) reconciler.adopt(); // re-read the kernel to find drift
        const desired = new Map<string, DesiredServicePort>();
        for (const [n, p] of changes) if (p) desired.set(n, p);
        plan = reconciler.planAll(desired);
      } else {
        plan = reconciler.plan(changes);
      }
      return { started, isFull, keys, produced, plan };
    } catch (err) {
      this.failed(keys, err);
      return undefined;
    }
  }

  /**
   * Does every Service of a full sync name its ports apart from every
   * other's, new names and names it drops alike? Then the ports can be
   * handed to the reconciler as they are translated (beginFull) with the
   * same outcome as a map of them all; otherwise (a name in two Services)
   * the map's first-place-last-value order is kept by building it.
   */
  private distinctNames(keys: Set<string>): boolean {
    const all = new Set<string>();
    const mine = new Map<string, Set<string>>();
    for (const key of keys) {
      const svc = this.opts.store.service(key);
      const names = new Set(svc ? servicePortNames(svc) : []);
      mine.set(key, names);
      for (const n of names) {
        if (all.has(n)) return false;
        all.add(n);
      }
    }
    for (const key of keys) {
      for (const old of this.portsBySvc.get(key) ?? []) if (!mine.get(key)?.has(old) && all.has(old)) return false;
    }
    return true;
  }

  /**
   * A full sync whose ports are planned as they are translated: at 100k
   * Services, holding every translation until the last one was done made
   * most of the sync's garbage live long enough to be promoted.
   */
  private beginFull(started: bigint, keys: Set<string>, produced: Map<string, Set<string>>): Round | undefined {
    const { reconciler } = this.opts;
    // A translation error escapes as it did when translation came first.
    let translateError: { err: unknown } | undefined;
    const desired = function* (self: Controller): Generator<[string, DesiredServicePort]> {
      for (const key of keys) {
        let ports: DesiredServicePort[];
        try {
          ports = self.translate(key);
        } catch (err) {
          translateError = { err };
          throw err;
        }
        // A name twice in one Service: first place, last value, as a map of the round's ports keeps it.
        const byName = new Map(ports.map((p) => [p.name, p]));
        produced.set(key, new Set(byName.keys()));
        yield* byName;
      }
    };
    try {
      if (this.needFull) reconciler.adopt(); // re-read the kernel to find drift
      const plan = reconciler.planAll(desired(this));
      return { started, isFull: true, keys, produced, plan };
    } catch (err) {
      if (translateError) throw translateError.err;
      this.failed(keys, err);
      return undefined;
    }
  }

  /** Write a planned round and account for it. */
  private finish(round: Round): void {
    const { log, metrics } = this.opts;
    const { started, isFull, keys, produced } = round;
    let result: ApplyResult;
    try {
      result = round.plan.execute();
    } catch (err) {
      this.failed(keys, err);
      return;
    }

    for (const [key, names] of produced) {
      if (names.size) this.portsBySvc.set(key, names);
      else this.portsBySvc.delete(key);
    }
    this.conflicted = new Set(result.conflicts.map((c) => c.service));
    for (const c of result.conflicts) {
      log.warn({ servicePort: c.name, frontend: c.frontend, owner: c.owner }, `frontend ${c.frontend} already belongs to ${c.owner}`);
    }
    metrics?.frontendConflicts.set(result.conflicts.length);

    const failedSvcs = new Set<string>();
    const full = new Map<string, Map<string, string | undefined>>();
    let stuck = 0;
    for (const f of result.failed) {
      if (f.service !== undefined) failedSvcs.add(f.service);
      metrics?.mapWriteErrors.inc({ map: f.map, code: f.code });
      if (f.full) {
        let ports = full.get(f.map);
        if (!ports) full.set(f.map, (ports = new Map()));
        ports.set(f.name, f.service);
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
  }

  /**
   * Keep the per-map set of Service ports that found no room, and log it
   * once per fullLogEveryMs: a retry every few seconds would otherwise log
   * every one of them each time.
   */
  private reportFull(failed: Map<string, Map<string, string | undefined>>, covered: Set<string>): void {
    const { log, metrics } = this.opts;
    for (const ports of this.full.values()) {
      for (const [p, service] of ports) if (service === undefined || covered.has(service)) ports.delete(p);
    }
    for (const [map, ports] of failed) {
      let known = this.full.get(map);
      if (!known) this.full.set(map, (known = new Map()));
      for (const [p, service] of ports) known.set(p, service);
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
      const sample = [...ports.keys()].slice(0, 5);
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
