/**
 * healthCheckNodePort servers, with kube-proxy's semantics: for each
 * Service with externalTrafficPolicy Local and a healthCheckNodePort, an
 * HTTP server on that port answers 200 with the number of local endpoints,
 * or 503 when this node has none, so external load balancers only send
 * traffic to nodes that can serve it.
 */
import { createServer, type Server } from 'node:http';
import type { ObjectStore } from '../controller/store.js';
import type { Logger } from '../log.js';
import { selectEndpoints } from '../model/endpoints.js';
import { serviceFamilies } from '../model/translate.js';
import { listenHost } from '../util/listen.js';

export interface HealthTarget {
  namespace: string;
  name: string;
  localEndpoints: number;
}

/**
 * Pure: the health-check port a Service needs and what it reports, if any.
 * The count comes from the one endpoint selection: local ready endpoints,
 * so a node left with only terminating ones fails the check and the load
 * balancer drains it, while those endpoints still serve (kube-proxy).
 */
export function healthTarget(store: ObjectStore, key: string, nodeName: string | undefined): [number, HealthTarget] | undefined {
  const svc = store.service(key);
  if (!svc || svc.externalTrafficPolicy !== 'Local' || svc.healthCheckNodePort === undefined) return undefined;
  const node = { name: nodeName, zone: nodeName === undefined ? undefined : store.node(nodeName)?.zone };
  const slices = store.slicesFor(key);
  // A dual-stack pod is one endpoint with an address per family: count the
  // family that has the most, not their sum.
  let localEndpoints = 0;
  for (const family of serviceFamilies(svc)) {
    const local = new Set<string>();
    for (const sp of svc.ports) {
      const sel = selectEndpoints(svc, sp, slices, node, family);
      if (sel.localReady > 0) for (const b of sel.local) local.add(b.addr);
    }
    localEndpoints = Math.max(localEndpoints, local.size);
  }
  return [svc.healthCheckNodePort, { namespace: svc.namespace, name: svc.name, localEndpoints }];
}

/**
 * Health-check targets kept up to date by Service key, so a sync that
 * touched one Service recomputes one entry rather than scanning them all.
 */
export class HealthTargets {
  private readonly byKey = new Map<string, [number, HealthTarget]>();

  constructor(
    private readonly store: ObjectStore,
    private readonly nodeName: string | undefined,
  ) {}

  refresh(keys: Iterable<string>): Map<number, HealthTarget> {
    for (const key of keys) {
      const t = healthTarget(this.store, key, this.nodeName);
      if (t) this.byKey.set(key, t);
      else this.byKey.delete(key);
    }
    return new Map(this.byKey.values());
  }
}

export function healthBody(t: HealthTarget, proxyHealthy: boolean): { status: number; body: string } {
  const body = JSON.stringify({
    service: { namespace: t.namespace, name: t.name },
    localEndpoints: t.localEndpoints,
    serviceProxyHealthy: proxyHealthy,
  });
  return { status: t.localEndpoints > 0 && proxyHealthy ? 200 : 503, body };
}

export class ServiceHealthServers {
  /** failedAt: the listener could not bind; it is not re-created before retryMs has passed. */
  private servers = new Map<number, { server: Server; target: HealthTarget; failedAt?: number }>();

  constructor(
    private readonly opts: { host: string; log: Logger; proxyHealthy: () => boolean; retryMs?: number },
  ) {}

  /** Open, update and close listeners to match the targets. */
  update(targets: Map<number, HealthTarget>): void {
    for (const [port, s] of this.servers) {
      if (!targets.has(port)) {
        s.server.close();
        this.servers.delete(port);
      }
    }
    for (const [port, target] of targets) {
      const cur = this.servers.get(port);
      // A listener that failed to bind (port taken) is retried on a timer,
      // not on every sync: a sync can run several times a second.
      if (cur && (cur.failedAt === undefined || Date.now() - cur.failedAt < (this.opts.retryMs ?? 30_000))) {
        cur.target = target;
        continue;
      }
      if (cur) cur.server.close();
      const entry: { server: Server; target: HealthTarget; failedAt?: number } = { server: createServer(), target };
      entry.server.on('request', (_req, res) => {
        const { status, body } = healthBody(entry.target, this.opts.proxyHealthy());
        res.writeHead(status, {
          'Content-Type': 'application/json',
          'X-Content-Type-Options': 'nosniff',
          'X-Load-Balancing-Endpoint-Weight': String(entry.target.localEndpoints),
        });
        res.end(body);
      });
      entry.server.on('error', (err) => {
        this.opts.log.error(
          { port, service: `${entry.target.namespace}/${entry.target.name}`, err: err.message, retryInMs: this.opts.retryMs ?? 30_000 },
          'healthCheckNodePort listener failed; retrying later',
        );
        entry.failedAt = Date.now();
      });
      entry.server.listen(port, listenHost(this.opts.host));
      this.servers.set(port, entry);
    }
  }

  /** Ports with a listening server. */
  ports(): number[] {
    return [...this.servers].filter(([, s]) => s.failedAt === undefined).map(([p]) => p).sort((a, b) => a - b);
  }

  close(): void {
    for (const s of this.servers.values()) s.server.close();
    this.servers.clear();
  }
}
