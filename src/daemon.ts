/**
 * `kpr run`: wire a source, the store, the controller and the data path
 * together, and keep them running until SIGTERM/SIGINT. Exiting leaves the
 * pinned maps and links in place, so forwarding goes on without us.
 */
import { Controller } from './controller/controller.js';
import { Reconciler } from './controller/reconciler.js';
import { ObjectStore } from './controller/store.js';
import { Datapath } from './datapath/loader.js';
import { ALL_MAPS, type MapSizes } from './datapath/layout.js';
import { HttpServer } from './http/server.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { KubeSource, loadKubeConfig } from './sources/kube.js';
import { ManifestSource } from './sources/manifest.js';
import type { Source } from './sources/source.js';
import { cgroup2Mount } from './util/cgroup.js';

export interface DaemonOptions {
  manifests?: string | undefined;
  pinPath: string;
  cgroup?: string | undefined;
  connectTimeLb: boolean;
  sizes: MapSizes;
  nodeName?: string | undefined;
  resyncIntervalMs: number;
  log: Logger;
  metrics?: Metrics;
  /** Kubernetes API source: a kubeconfig file, or the in-cluster service account. */
  kubeconfig?: string | undefined;
  inCluster?: boolean | undefined;
  /** Server-side timeout of each API watch, in seconds. */
  watchTimeoutSeconds?: number | undefined;
  /** HOST:PORT; empty turns the listener off. */
  healthzAddress?: string | undefined;
  metricsAddress?: string | undefined;
  /** /healthz turns 503 when a change waits this long to be written. */
  healthTimeoutMs?: number | undefined;
  /** A source other than manifests or the API (tests). */
  source?: Source;
}

export interface Daemon {
  readonly controller: Controller;
  readonly datapath: Datapath;
  readonly store: ObjectStore;
  readonly metrics: Metrics;
  readonly http: HttpServer;
  stop(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { log } = opts;
  const metrics = opts.metrics ?? new Metrics({ defaultMetrics: true });

  // The source is built first, so a bad kubeconfig fails before any BPF work.
  let source: Source;
  if (opts.source) source = opts.source;
  else if (opts.manifests) {
    source = new ManifestSource({
      path: opts.manifests,
      log,
      onIgnored: (_object, reason) => metrics.skipped.inc({ kind: 'Other', reason }),
    });
  } else if (opts.kubeconfig || opts.inCluster) {
    source = new KubeSource({
      kubeConfig: loadKubeConfig({ kubeconfig: opts.kubeconfig, inCluster: opts.inCluster }),
      log,
      metrics,
      nodeName: opts.nodeName,
      watchTimeoutSeconds: opts.watchTimeoutSeconds,
    });
  } else throw new Error('no source: give --manifests PATH, --kubeconfig PATH or --in-cluster');

  // Health first, so probes answer while the maps load; readiness waits for the sync.
  const store = new ObjectStore();
  let controller: Controller | undefined;
  const http = new HttpServer({
    healthzAddress: opts.healthzAddress ?? '',
    metricsAddress: opts.metricsAddress ?? '',
    healthTimeoutMs: opts.healthTimeoutMs ?? 2 * Math.max(opts.resyncIntervalMs, 30_000),
    metrics,
    log,
    state: {
      pendingSince: () => controller?.status().pendingSince,
      lastUpdated: () => controller?.status().lastSyncAt,
      synced: () => controller?.status().synced ?? false,
      sourcesSynced: () => store.isSynced(),
      sourceHealthy: () => source.status?.() ?? { healthy: true },
      nodeEligible: () => (source instanceof KubeSource ? source.isNodeEligible() : true),
    },
  });
  await http.start();

  let datapath: Datapath;
  try {
    datapath = await Datapath.open(opts.pinPath, opts.sizes);
  } catch (err) {
    await http.stop();
    throw err;
  }
  const reconciler = new Reconciler(datapath.maps);
  const adopted = reconciler.adopt();
  log.info({ pinPath: opts.pinPath, ...adopted }, 'opened pinned maps');

  const maps = datapath.maps;
  for (const m of [maps.fe, maps.be, maps.meta, maps.skNat]) metrics.mapCapacity.set({ map: m.name }, m.maxEntries);
  const refreshGauges = () => {
    const c = reconciler.counts();
    metrics.mapEntries.set({ map: maps.fe.name }, c.frontends);
    metrics.mapEntries.set({ map: maps.be.name }, c.backends);
    metrics.mapEntries.set({ map: maps.meta.name }, c.ports);
    for (const [event, v] of Object.entries(datapath.readStats())) metrics.datapathStats.set({ event }, v);
  };

  if (opts.connectTimeLb) {
    const cgroup = opts.cgroup ?? cgroup2Mount();
    const report = await datapath.attachSockHooks(cgroup);
    log.info({ cgroup, hooks: report }, 'connect-time hooks attached');
  }

  controller = new Controller({
    store,
    reconciler,
    log,
    metrics,
    translate: { nodeName: opts.nodeName },
    resyncIntervalMs: opts.resyncIntervalMs,
    afterSync: refreshGauges,
  });
  controller.start();

  await source.start(store);
  log.info({ source: source.name, maps: ALL_MAPS }, 'kpr running');

  return {
    controller,
    datapath,
    store,
    metrics,
    http,
    async stop() {
      await source.stop();
      controller.stop();
      await http.stop();
      datapath.close();
    },
  };
}
