/**
 * Health and metrics endpoints.
 *
 * /healthz and /livez follow kube-proxy's proxier health server: 200 unless
 * a change has waited longer than healthTimeout to be written (or, for
 * /healthz, the node is being deleted); same JSON body. Answering at all
 * shows the event loop runs. A full map or an API outage is not "waiting to
 * be written" (nothing more can be done), so neither restarts kpr: the
 * DaemonSet's liveness probe is /livez, never /healthz, whose node check
 * would get kpr killed on a node being scaled down.
 *
 * /readyz is ours: ready once every source has synced, the first full sync
 * is written and the data path is attached (tc on every --devices
 * interface). As kube-proxy, an API server outage does not make kpr
 * unready: the maps keep serving the last state, and every node turning
 * NotReady at once helps nobody. The outage and full maps are reported in
 * the body as degraded. /metrics is the prom-client registry.
 *
 * Like kube-proxy, healthz and metrics listen on two addresses (10256 on all
 * interfaces for probes and load balancers, 10249 on loopback for metrics);
 * an empty address turns a listener off, and the same address twice means
 * one server for both.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { listenHost } from '../util/listen.js';

export interface HealthState {
  /** Controller: oldest unwritten change, last successful write, first full sync done. */
  pendingSince(): number | undefined;
  lastUpdated(): number | undefined;
  synced(): boolean;
  /** Every source has delivered its first complete view. */
  sourcesSynced(): boolean;
  /** The source can reach what it reads (no API server outage). */
  sourceHealthy(): { healthy: boolean; message?: string | undefined };
  nodeEligible(): boolean;
  /** Every program the configuration asks for is attached (tc on each device). */
  dataPathAttached?(): { attached: boolean; message?: string | undefined };
  /** Map name -> Service ports not programmed because it is full. */
  mapFull?(): Record<string, number>;
}

export interface HttpServerOptions {
  /** undefined: off. Parsed once, by the CLI (parseAddress). */
  healthzAddress?: ListenAddress | undefined;
  metricsAddress?: ListenAddress | undefined;
  /** kube-proxy uses twice its sync period. */
  healthTimeoutMs: number;
  state: HealthState;
  metrics: Metrics;
  log: Logger;
  now?: () => number;
}

/** Go's time.Time String() for UTC, which kube-proxy's %q prints. */
export function goTime(ms: number | undefined): string {
  if (ms === undefined) return '0001-01-01 00:00:00 +0000 UTC';
  const iso = new Date(ms).toISOString(); // 2006-01-02T15:04:05.000Z
  const frac = iso.slice(20, 23).replace(/0+$/, '');
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${frac ? '.' + frac : ''} +0000 UTC`;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** host:port, [v6]:port or :port. */
export function parseAddress(addr: string, flag: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--${flag} must be HOST:PORT (e.g. 0.0.0.0:10256), got ${JSON.stringify(addr)}`);
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export class HttpServer {
  private readonly servers: Server[] = [];
  /** Bound addresses, for tests that ask for port 0. */
  readonly bound: { healthz?: string; metrics?: string } = {};

  constructor(private readonly opts: HttpServerOptions) {}

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  /** kube-proxy's isHealthy(): healthy unless an update has been queued for healthTimeout or longer. */
  private proxierHealthy(): { healthy: boolean; lastUpdated: number | undefined; current: number } {
    const current = this.now();
    const pending = this.opts.state.pendingSince();
    const healthy = pending === undefined || current - pending < this.opts.healthTimeoutMs;
    return { healthy, lastUpdated: this.opts.state.lastUpdated(), current };
  }

  private healthz(res: ServerResponse, withNode: boolean): void {
    const nodeEligible = this.opts.state.nodeEligible();
    let { healthy, lastUpdated } = this.proxierHealthy();
    const { current } = this.proxierHealthy();
    if (withNode) healthy = healthy && nodeEligible;
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (withNode) this.opts.metrics.healthzTotal.inc({ code: healthy ? '200' : '503' });
    // As kube-proxy: a healthy answer reports lastUpdated as now, for old clients.
    if (healthy) lastUpdated = current;
    res.statusCode = healthy ? 200 : 503;
    const body = withNode
      ? `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(current))}, "nodeEligible": ${nodeEligible}}`
      : `{"lastUpdated": ${JSON.stringify(goTime(lastUpdated))},"currentTime": ${JSON.stringify(goTime(current))}}`;
    res.end(body);
  }

  private readyz(res: ServerResponse): void {
    const s = this.opts.state;
    const src = s.sourceHealthy();
    const dp = s.dataPathAttached?.() ?? { attached: true };
    const checks = {
      sourcesSynced: s.sourcesSynced(),
      firstSyncDone: s.synced(),
      dataPathAttached: dp.attached,
    };
    const ready = Object.values(checks).every(Boolean);
    const mapFull = Object.fromEntries(Object.entries(s.mapFull?.() ?? {}).filter(([, n]) => n > 0));
    const degraded = {
      ...(src.healthy ? {} : { sourceUnhealthy: true }),
      ...(Object.keys(mapFull).length ? { mapFull } : {}),
    };
    const message = [src.message, dp.message].filter(Boolean).join('; ');
    res.statusCode = ready ? 200 : 503;
    res.setHeader('Content-Type', 'application/json');
    res.end(
      JSON.stringify({
        ready,
        ...checks,
        apiServerReachable: src.healthy,
        ...(Object.keys(degraded).length ? { degraded } : {}),
        ...(message ? { message } : {}),
      }) + '\n',
    );
  }

  private async handle(req: IncomingMessage, res: ServerResponse, role: 'healthz' | 'metrics' | 'both'): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.statusCode = 405;
      return void res.end();
    }
    if (path === '/healthz') return this.healthz(res, true);
    if (path === '/livez') return this.healthz(res, false);
    if (path === '/readyz') return this.readyz(res);
    if (path === '/metrics' && role !== 'healthz') {
      const reg = this.opts.metrics.registry;
      res.setHeader('Content-Type', reg.contentType);
      return void res.end(await reg.metrics());
    }
    res.statusCode = 404;
    res.end('not found\n');
  }

  async start(): Promise<void> {
    const { healthzAddress, metricsAddress, log } = this.opts;
    const plan: Array<{ addr: ListenAddress; role: 'healthz' | 'metrics' | 'both'; flag: string }> = [];
    const same = healthzAddress && metricsAddress && healthzAddress.host === metricsAddress.host && healthzAddress.port === metricsAddress.port;
    if (healthzAddress && same) plan.push({ addr: healthzAddress, role: 'both', flag: 'healthz-bind-address' });
    else {
      if (healthzAddress) plan.push({ addr: healthzAddress, role: 'healthz', flag: 'healthz-bind-address' });
      if (metricsAddress) plan.push({ addr: metricsAddress, role: 'metrics', flag: 'metrics-bind-address' });
    }
    for (const p of plan) {
      const { host, port } = p.addr;
      const server = createServer((req, res) => {
        this.handle(req, res, p.role).catch((err: unknown) => {
          log.error({ err }, 'http handler failed');
          if (!res.headersSent) res.statusCode = 500;
          res.end();
        });
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new Error(`cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port} (--${p.flag}): ${err.message}`)));
        server.listen(port, listenHost(host), () => resolve());
      });
      this.servers.push(server);
      const a = server.address() as { address: string; port: number };
      const bound = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
      if (p.role !== 'metrics') this.bound.healthz = bound;
      if (p.role !== 'healthz') this.bound.metrics = bound;
      log.info({ address: bound, serves: p.role === 'both' ? 'healthz,readyz,livez,metrics' : p.role === 'healthz' ? 'healthz,readyz,livez' : 'metrics,healthz,readyz,livez' }, 'http server listening');
    }
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.servers.splice(0).map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
  }
}
