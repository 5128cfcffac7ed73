/**
 * A list/watch loop that survives what the client-node 1.4 informer does not:
 *
 *  - the informer stops for good on any error (failed list, reset socket,
 *    non-200 watch): we restart it with capped exponential backoff;
 *  - it never notices a watch that stalls: the watch path carries a
 *    server-side timeoutSeconds, and a watchdog aborts a watch that outlives
 *    it, and a list that hangs;
 *  - when the server closes a stream it re-watches at once, which becomes a
 *    tight loop against a server that closes every stream immediately: a
 *    watch that ends at once with no events delays the next one;
 *  - stop() makes it emit a spurious AbortError: ignored once we are closed;
 *  - after a 410 it re-lists silently: every successful list is handed over
 *    whole (onList), so deletions missed in between are applied.
 *
 * Objects are normalised to plain JSON before they leave this module: list
 * items are model instances with Date fields and no kind/apiVersion, watch
 * events are plain JSON.
 *
 * The client's ListWatch keeps every object it has seen, for its own
 * get/list and to find what a re-list dropped. kpr reads objects from its
 * store only, so the ListWatch is handed each object's name, namespace and
 * resourceVersion, not the object: at 10k Services the full copies were
 * tens of MB of RSS held for nothing. Objects reach the store from here
 * directly, once: a list as a whole (onList), a watch event as it arrives.
 */
import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export interface InformerOptions {
  kubeConfig: KubeConfig;
  /** Resource name for logs and metrics: services, endpointslices, nodes. */
  resource: string;
  kind: string;
  apiVersion: string;
  /** Cluster-wide collection path, e.g. /api/v1/services. */
  path: string;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  list: (opts: { labelSelector?: string; fieldSelector?: string; timeoutSeconds: number }) => Promise<KubernetesListObject<KubernetesObject>>;
  /** A complete list (the first one, or a re-list after a restart or a 410). */
  /**
   * A complete list, normalised item by item as it is iterated (once):
   * the client's model instance of each item is let go as its plain copy
   * is made, so a 10k-slice list is not held three times over.
   */
  onList: (items: Iterable<unknown>) => void;
  onUpsert: (obj: unknown) => void;
  onDelete: (namespace: string, name: string) => void;
  /** Called whenever healthy() may have changed. */
  onHealth?: () => void;
  log: Logger;
  metrics?: Metrics | undefined;
  /** Server-side watch timeout; the watchdog fires this much plus watchdogGraceMs later. */
  watchTimeoutSeconds?: number;
  watchdogGraceMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /**
   * Cap on the wait after a connection-level failure (refused, reset,
   * unreachable): retrying those costs the server nothing, and a long wait
   * is what delays catch-up once it is back. Jittered.
   */
  unreachableBackoffMaxMs?: number;
  /** A watch that ends sooner than this without any event counts as a quick close. */
  quickCloseMs?: number;
}

export interface InformerHealth {
  /** A complete list has been received at least once. */
  synced: boolean;
  /** The last list or watch attempt succeeded. */
  healthy: boolean;
  lastError?: string | undefined;
  /** When the current outage began (ms since epoch). */
  downSince?: number | undefined;
}

type WatchParams = Record<string, string | number | boolean | undefined>;
type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;
type DoneCallback = (err: unknown) => void;

function rfc3339(d: Date): string {
  // metav1.Time has second precision on the wire.
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** What the ListWatch keeps of an object: enough to key it, version it and report its deletion. */
function slim(obj: unknown): KubernetesObject {
  const m = (obj as KubernetesObject | null)?.metadata;
  return { metadata: { name: m?.name, namespace: m?.namespace, resourceVersion: m?.resourceVersion } };
}

function plain(v: unknown): unknown {
  if (v instanceof Date) return rfc3339(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = plain(x);
    return out;
  }
  return v;
}

/**
 * Plain JSON with kind/apiVersion, minus the metadata that changes on every
 * write but means nothing to translation, so a list and a watch replay of the
 * same object compare equal in the store and cost no re-translation.
 */
export function normalise(obj: unknown, kind: string, apiVersion: string): unknown {
  const o = plain(obj);
  if (!o || typeof o !== 'object' || Array.isArray(o)) return o;
  const rec = o as Record<string, unknown>;
  const meta = rec.metadata;
  if (meta && typeof meta === 'object' && !Array.isArray(meta)) {
    const m = { ...(meta as Record<string, unknown>) };
    for (const k of ['managedFields', 'resourceVersion', 'generation', 'creationTimestamp']) delete m[k];
    rec.metadata = m;
  }
  return { ...rec, kind: rec.kind ?? kind, apiVersion: rec.apiVersion ?? apiVersion };
}

/** The server is not there at all (as opposed to answering with an error). */
export function isUnreachable(err: unknown): boolean {
  const codes = /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ECONNABORTED|EPIPE|ETIMEDOUT|EAI_AGAIN|socket hang up/;
  for (let e = err as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && codes.test(e.code)) return true;
    if (typeof e.message === 'string' && codes.test(e.message)) return true;
  }
  return false;
}

function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { statusCode?: unknown; code?: unknown }).statusCode ?? (err as { code?: unknown }).code;
    return code !== undefined ? `${err.message} (${String(code)})` : err.message;
  }
  return String(err);
}

/** Routes the informer's watch() through the owner, which guards it. */
class GuardedWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly owner: ResilientInformer,
  ) {
    super(kc);
  }

  override watch(path: string, params: WatchParams, cb: WatchCallback, done: DoneCallback): Promise<AbortController> {
    return this.owner.openWatch(path, params, cb, done, (p, q, c, d) => super.watch(p, q, c, d));
  }
}

export class ResilientInformer {
  private informer: ListWatch<KubernetesObject> | undefined;
  private closed = false;
  private synced = false;
  private healthy = true;
  private lastError: string | undefined;
  private downSince: number | undefined;
  private failures = 0;
  private quickCloses = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private sleeper: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  private readonly watchdogs = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: InformerOptions) {}

  private get timeoutSeconds(): number {
    return this.opts.watchTimeoutSeconds ?? 300;
  }

  health(): InformerHealth {
    return { synced: this.synced, healthy: this.healthy, lastError: this.lastError, downSince: this.downSince };
  }

  /** Resolves after the first attempt, whether or not it succeeded; errors are retried in the background. */
  async start(): Promise<void> {
    const { kubeConfig, path, labelSelector, log, resource } = this.opts;
    // timeoutSeconds in the path: the informer passes no timeout of its own,
    // and a query string in the path survives into the watch URL.
    const sep = path.includes('?') ? '&' : '?';
    const watchPath = `${path}${sep}timeoutSeconds=${this.timeoutSeconds}&allowWatchBookmarks=true`;
    const informer = new ListWatch<KubernetesObject>(watchPath, new GuardedWatch(kubeConfig, this), () => this.list(), false, labelSelector, this.opts.fieldSelector);
    // No 'add'/'update' handlers: the ListWatch sees slim copies only
    // (list() and openWatch() deliver the objects themselves).
    informer.on('delete', (o) => {
      const m = (o as KubernetesObject).metadata;
      if (m?.name) this.opts.onDelete(m.namespace || 'default', m.name);
    });
    informer.on('error', (err) => this.onError(err));
    this.informer = informer;
    log.debug({ resource, path: watchPath, labelSelector }, 'starting informer');
    await this.run();
  }

  async stop(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    if (this.sleeper) {
      clearTimeout(this.sleeper.timer);
      this.sleeper.wake();
    }
    for (const t of this.watchdogs) clearTimeout(t);
    this.watchdogs.clear();
    await this.informer?.stop();
  }

  private async run(): Promise<void> {
    try {
      await this.informer?.start();
    } catch (err) {
      this.onError(err);
    }
  }

  private upsert(o: unknown): void {
    if (this.closed) return;
    this.opts.onUpsert(normalise(o, this.opts.kind, this.opts.apiVersion));
  }

  private async list(): Promise<KubernetesListObject<KubernetesObject>> {
    const { labelSelector, fieldSelector, resource, log, metrics } = this.opts;
    const deadline = this.timeoutSeconds * 1000 + (this.opts.watchdogGraceMs ?? 30_000);
    let timer: NodeJS.Timeout | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`list of ${resource} did not finish in ${deadline} ms`)), deadline);
    });
    try {
      const args: { labelSelector?: string; fieldSelector?: string; timeoutSeconds: number } = { timeoutSeconds: this.timeoutSeconds };
      if (labelSelector) args.labelSelector = labelSelector;
      if (fieldSelector) args.fieldSelector = fieldSelector;
      const list = await Promise.race([this.opts.list(args), stalled]);
      if (this.closed) return { ...list, items: (list.items ?? []).map(slim) };
      const models: Array<KubernetesObject | undefined> = list.items ?? [];
      const slims = models.map(slim);
      const { kind, apiVersion } = this.opts;
      this.opts.onList(
        (function* () {
          for (let i = 0; i < models.length; i++) {
            const o = models[i];
            models[i] = undefined;
            yield normalise(o, kind, apiVersion);
          }
        })(),
      );
      this.synced = true;
      this.setUp();
      log.info({ resource, items: slims.length, resourceVersion: list.metadata?.resourceVersion }, `listed ${resource}`);
      metrics?.watchLists.inc({ resource });
      return { ...list, items: slims };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The informer's watch(), guarded. Never rejects: failures go to done(). */
  async openWatch(
    path: string,
    params: WatchParams,
    cb: WatchCallback,
    done: DoneCallback,
    open: (path: string, params: WatchParams, cb: WatchCallback, done: DoneCallback) => Promise<AbortController>,
  ): Promise<AbortController> {
    const { resource, log } = this.opts;
    if (this.quickCloses > 0) {
      const delay = this.backoff(this.quickCloses);
      log.warn({ resource, delayMs: delay, closes: this.quickCloses }, 'the API server closed the watch at once; waiting before the next one');
      await this.sleep(delay);
    }
    if (this.closed) return new AbortController();

    const started = Date.now();
    let finished = false;
    let events = 0;
    let watchdog: NodeJS.Timeout | undefined;
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      if (watchdog) {
        clearTimeout(watchdog);
        this.watchdogs.delete(watchdog);
      }
      if (this.closed) return; // the AbortError that stop() causes
      if (!err) {
        this.quickCloses = events === 0 && Date.now() - started < (this.opts.quickCloseMs ?? 1000) ? this.quickCloses + 1 : 0;
      }
      done(err);
    };
    const onEvent: WatchCallback = (phase, obj, raw) => {
      if (this.closed || finished) return;
      events++;
      if (phase === 'ERROR') {
        const status = obj as { code?: unknown; message?: unknown } | null;
        log.info({ resource, code: status?.code, message: status?.message }, 'watch ERROR event');
      }
      if (phase === 'ADDED' || phase === 'MODIFIED') {
        this.upsert(obj);
        cb(phase, slim(obj), raw);
      } else if (phase === 'DELETED') cb(phase, slim(obj), raw);
      else cb(phase, obj, raw);
    };

    let ctrl: AbortController;
    try {
      ctrl = await open(path, params, onEvent, finish);
    } catch (err) {
      // e.g. no current cluster, or credentials that cannot be read
      queueMicrotask(() => finish(err));
      return new AbortController();
    }
    if (!finished) {
      this.setUp();
      const deadline = this.timeoutSeconds * 1000 + (this.opts.watchdogGraceMs ?? 30_000);
      watchdog = setTimeout(() => {
        log.warn({ resource, ms: deadline }, 'watch outlived its server-side timeout; aborting it');
        ctrl.abort();
        finish(new Error(`watch of ${resource} stalled`));
      }, deadline);
      this.watchdogs.add(watchdog);
    }
    return ctrl;
  }

  private onError(err: unknown): void {
    if (this.closed) return;
    const { resource, log, metrics } = this.opts;
    metrics?.watchErrors.inc({ resource });
    this.lastError = errText(err);
    if (this.healthy) {
      this.healthy = false;
      this.downSince = Date.now();
      this.opts.onHealth?.();
    }
    if (this.restartTimer) return;
    this.failures++;
    const delay = this.backoff(this.failures, isUnreachable(err));
    log.warn({ resource, err: this.lastError, delayMs: delay, failures: this.failures }, `${resource} list/watch failed; restarting`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.closed) return;
      metrics?.watchRestarts.inc({ resource });
      void this.run();
    }, delay);
  }

  private setUp(): void {
    this.failures = 0;
    if (!this.healthy) {
      this.opts.log.info({ resource: this.opts.resource, downMs: Date.now() - (this.downSince ?? Date.now()) }, 'API server reachable again');
      this.healthy = true;
      this.downSince = undefined;
      this.lastError = undefined;
      this.opts.onHealth?.();
    }
  }

  private backoff(n: number, unreachable = false): number {
    const min = this.opts.backoffMinMs ?? 500;
    const max = unreachable ? Math.min(this.opts.backoffMaxMs ?? 30_000, this.opts.unreachableBackoffMaxMs ?? 2000) : (this.opts.backoffMaxMs ?? 30_000);
    const base = Math.min(max, min * 2 ** Math.min(30, n - 1));
    if (unreachable && base >= max) return Math.round(base * (0.5 + Math.random() * 0.5));
    // Jitter, so that every node does not hit a recovering API server at once.
    return Math.round(base * (0.9 + Math.random() * 0.2));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sleeper = undefined;
        resolve();
      }, ms);
      this.sleeper = { timer, wake: resolve };
    });
  }
}
