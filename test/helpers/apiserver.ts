/**
 * A small Kubernetes API server for tests, on plain HTTP: cluster-wide list
 * and watch of Services, EndpointSlices and Nodes with the real protocol:
 * resourceVersion, ADDED/MODIFIED/DELETED/BOOKMARK events, ERROR 410 for a
 * compacted resourceVersion, newline-delimited JSON, bearer-token auth,
 * label and field selectors (an object that stops matching is DELETED from
 * the watch, as the real watch cache does), timeoutSeconds. Faults: close
 * every stream, reset every connection, stall streams, stop listening
 * altogether (connection refused) and come back on the same port.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { writeFileSync } from 'node:fs';

type Obj = Record<string, unknown> & { metadata: Record<string, unknown> };

interface ResourceDef {
  path: string;
  kind: string;
  apiVersion: string;
  listKind: string;
}

const RESOURCES: ResourceDef[] = [
  { path: '/api/v1/services', kind: 'Service', apiVersion: 'v1', listKind: 'ServiceList' },
  { path: '/apis/discovery.k8s.io/v1/endpointslices', kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', listKind: 'EndpointSliceList' },
  { path: '/api/v1/nodes', kind: 'Node', apiVersion: 'v1', listKind: 'NodeList' },
];

interface HistoryEntry {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: Obj;
  prev: Obj | undefined;
}

interface Watcher {
  res: ResourceDef;
  resp: ServerResponse;
  match: (o: Obj) => boolean;
  stalled: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: URLSearchParams;
  watch: boolean;
  status?: number;
}

function key(o: Obj): string {
  return `${(o.metadata.namespace as string | undefined) ?? ''}/${o.metadata.name as string}`;
}

/** Label selectors as kube-proxy uses them: k, !k, k=v, k!=v, comma-separated. */
export function labelMatcher(sel: string | null): (o: Obj) => boolean {
  if (!sel) return () => true;
  const reqs = sel.split(',').map((r) => r.trim()).filter(Boolean);
  return (o) => {
    const labels = (o.metadata.labels ?? {}) as Record<string, string>;
    return reqs.every((r) => {
      if (r.startsWith('!')) return !(r.slice(1) in labels);
      const ne = r.indexOf('!=');
      if (ne > 0) return labels[r.slice(0, ne)] !== r.slice(ne + 2);
      const eq = r.indexOf('=');
      if (eq > 0) return labels[r.slice(0, eq)] === r.slice(eq + 1).replace(/^=/, '');
      return r in labels;
    });
  };
}

function fieldMatcher(sel: string | null): (o: Obj) => boolean {
  if (!sel) return () => true;
  const reqs = sel.split(',').map((r) => r.split('='));
  return (o) =>
    reqs.every(([k, v]) => {
      if (k === 'metadata.name') return o.metadata.name === v;
      if (k === 'metadata.namespace') return o.metadata.namespace === v;
      return false;
    });
}

export class FakeApiServer {
  readonly token = randomBytes(12).toString('hex');
  /** Set to accept a different token than the kubeconfig carries. */
  expectedToken: string | undefined;
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly store = new Map<string, Map<string, Obj>>(RESOURCES.map((r) => [r.path, new Map()]));
  private readonly historyByPath = new Map<string, HistoryEntry[]>(RESOURCES.map((r) => [r.path, []]));
  /** Watches from a resourceVersion below this get 410 Gone. */
  private compactedRV = 0;
  private rv = 1000;
  private readonly watchers = new Set<Watcher>();
  readonly requests: RequestRecord[] = [];

  /** Fault modes. */
  closeWatchesAtOnce = false;
  stallNewWatches = false;
  /** kind -> how many more lists of it fail with a 500 */
  readonly failLists = new Map<string, number>();

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<void> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  /** Stop listening and drop every connection: clients see resets, then refusals. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const w of this.watchers) if (w.timer) clearTimeout(w.timer);
    this.watchers.clear();
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Come back on the same port, with the same objects and history. */
  async restart(): Promise<void> {
    await this.start(this.port);
  }

  kubeconfig() {
    return {
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'fake', token: this.token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'fake' }],
      currentContext: 'fake',
    };
  }

  writeKubeconfig(path: string): void {
    const c = this.kubeconfig();
    const yaml = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: fake\n  cluster:\n    server: ${this.url}\n    insecure-skip-tls-verify: true`,
      'users:',
      `- name: fake\n  user:\n    token: ${c.users[0]?.token}`,
      'contexts:',
      '- name: fake\n  context:\n    cluster: fake\n    user: fake',
      'current-context: fake',
      '',
    ].join('\n');
    writeFileSync(path, yaml);
  }

  // ---- objects ----------------------------------------------------------

  private def(kind: string): ResourceDef {
    const d = RESOURCES.find((r) => r.kind === kind);
    if (!d) throw new Error(`unknown kind ${kind}`);
    return d;
  }

  /** Create or replace; returns the stored object with its resourceVersion. */
  apply(obj: Record<string, unknown>, opts: { emit?: boolean } = {}): Obj {
    const kind = obj.kind as string;
    const d = this.def(kind);
    const o = structuredClone(obj) as Obj;
    // Cluster-wide lists carry no kind/apiVersion per item; watch events do.
    o.kind = d.kind;
    o.apiVersion = d.apiVersion;
    const objects = this.store.get(d.path)!;
    const prev = objects.get(key(o));
    const rv = ++this.rv;
    o.metadata = {
      ...o.metadata,
      resourceVersion: String(rv),
      uid: (prev?.metadata.uid as string | undefined) ?? randomBytes(8).toString('hex'),
      creationTimestamp: (prev?.metadata.creationTimestamp as string | undefined) ?? '2025-01-01T00:00:00Z',
      managedFields: [{ manager: 'test', operation: 'Update', time: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }],
    };
    objects.set(key(o), o);
    this.record(d, { rv, type: prev ? 'MODIFIED' : 'ADDED', obj: o, prev }, opts.emit !== false);
    return o;
  }

  /** Apply many objects at once without notifying watchers one by one (the initial state). */
  seed(objs: Array<Record<string, unknown>>): void {
    for (const o of objs) this.apply(o, { emit: false });
    this.compact();
  }

  delete(kind: string, namespace: string | undefined, name: string): boolean {
    const d = this.def(kind);
    const objects = this.store.get(d.path)!;
    const k = `${namespace ?? ''}/${name}`;
    const prev = objects.get(k);
    if (!prev) return false;
    objects.delete(k);
    const rv = ++this.rv;
    const obj = { ...prev, metadata: { ...prev.metadata, resourceVersion: String(rv) } };
    this.record(d, { rv, type: 'DELETED', obj, prev }, true);
    return true;
  }

  get(kind: string, namespace: string | undefined, name: string): Obj | undefined {
    return this.store.get(this.def(kind).path)!.get(`${namespace ?? ''}/${name}`);
  }

  /** Forget history: watches from any resourceVersion seen so far get 410 Gone. */
  compact(): void {
    this.compactedRV = this.rv;
    for (const h of this.historyByPath.values()) h.length = 0;
  }

  /** Change objects without telling any watcher (as if the events fell in a gap), then compact. */
  applySilently(fn: () => void): void {
    const saved = new Set(this.watchers);
    for (const w of saved) w.stalled = true;
    fn();
    this.compact();
    for (const w of saved) w.stalled = false;
  }

  resourceVersion(): string {
    return String(this.rv);
  }

  // ---- stream faults ----------------------------------------------------

  watchCount(kind?: string): number {
    return [...this.watchers].filter((w) => !kind || w.res.kind === kind).length;
  }

  /** End every watch stream cleanly. */
  closeWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w);
  }

  /** Reset every connection (RST), as a crashing server or a middlebox would. */
  resetConnections(): void {
    for (const w of this.watchers) if (w.timer) clearTimeout(w.timer);
    this.watchers.clear();
    for (const s of this.sockets) s.resetAndDestroy();
  }

  /** Existing streams stop carrying anything and never time out, but stay open. */
  stallWatches(): void {
    for (const w of this.watchers) {
      w.stalled = true;
      if (w.timer) clearTimeout(w.timer);
    }
  }

  /** Send a BOOKMARK at the current resourceVersion to every watch that asked for them. */
  bookmark(): void {
    for (const w of this.watchers) {
      if (w.stalled) continue;
      this.send(w, { type: 'BOOKMARK', object: { kind: w.res.kind, apiVersion: w.res.apiVersion, metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  // ---- protocol ---------------------------------------------------------

  private record(d: ResourceDef, e: HistoryEntry, emit: boolean): void {
    this.historyByPath.get(d.path)!.push(e);
    if (!emit) return;
    for (const w of this.watchers) if (w.res === d && !w.stalled) this.deliver(w, e);
  }

  /** One history entry as the watch sees it, through its selectors. */
  private deliver(w: Watcher, e: HistoryEntry): void {
    const now = e.type !== 'DELETED' && w.match(e.obj);
    const before = e.prev !== undefined && w.match(e.prev);
    if (e.type === 'DELETED') {
      if (before) this.send(w, { type: 'DELETED', object: e.obj });
    } else if (now && before) this.send(w, { type: 'MODIFIED', object: e.obj });
    else if (now) this.send(w, { type: 'ADDED', object: e.obj });
    else if (before) this.send(w, { type: 'DELETED', object: e.obj });
  }

  private send(w: Watcher, ev: unknown): void {
    if (!w.resp.writableEnded && !w.resp.destroyed) w.resp.write(JSON.stringify(ev) + '\n');
  }

  private endWatch(w: Watcher): void {
    if (w.timer) clearTimeout(w.timer);
    this.watchers.delete(w);
    if (!w.resp.writableEnded) w.resp.end();
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    const rec: RequestRecord = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, watch };
    this.requests.push(rec);
    res.on('finish', () => (rec.status = res.statusCode));
    if (req.headers.authorization !== `Bearer ${this.expectedToken ?? this.token}`) return this.status(res, 401, 'Unauthorized', 'Unauthorized');
    const d = RESOURCES.find((r) => r.path === url.pathname);
    if (!d || req.method !== 'GET') return this.status(res, 404, 'NotFound', `the server could not find ${url.pathname}`);
    const match = ((l, f) => (o: Obj) => l(o) && f(o))(labelMatcher(url.searchParams.get('labelSelector')), fieldMatcher(url.searchParams.get('fieldSelector')));
    if (!watch) {
      const fails = this.failLists.get(d.kind) ?? 0;
      if (fails > 0) {
        this.failLists.set(d.kind, fails - 1);
        return this.status(res, 500, 'InternalError', 'injected list failure');
      }
      const items = [...this.store.get(d.path)!.values()].filter(match).map((o) => {
        const { kind: _k, apiVersion: _a, ...rest } = o;
        return rest;
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: d.listKind, apiVersion: d.apiVersion, metadata: { resourceVersion: String(this.rv) }, items }));
      return;
    }

    // Headers at once: the client waits for them before it returns the watch.
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res: d, resp: res, match, stalled: this.stallNewWatches, timer: undefined };
    const fromRV = Number(url.searchParams.get('resourceVersion') || this.rv);
    if (this.closeWatchesAtOnce) return void res.end();
    if (fromRV < this.compactedRV) {
      this.send(w, {
        type: 'ERROR',
        object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${fromRV} (${this.compactedRV})`, reason: 'Expired', code: 410 },
      });
      return void res.end();
    }
    this.watchers.add(w);
    res.on('close', () => {
      if (w.timer) clearTimeout(w.timer);
      this.watchers.delete(w);
    });
    for (const e of this.historyByPath.get(d.path)!) if (e.rv > fromRV && !w.stalled) this.deliver(w, e);
    const timeout = Number(url.searchParams.get('timeoutSeconds') || 0);
    if (timeout > 0) w.timer = setTimeout(() => this.endWatch(w), timeout * 1000);
  }
}
