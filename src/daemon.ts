/**
 * `kpr run`: wire a source, the store, the controller and the data path
 * together, and keep them running until SIGTERM/SIGINT. Exiting leaves the
 * pinned maps and links in place, so forwarding goes on without us.
 */
import { DsrPeers } from './controller/dsr-peers.js';
import { Controller } from './controller/controller.js';
import { Reconciler } from './controller/reconciler.js';
import { ObjectStore } from './controller/store.js';
import { checkBpffs, cleanup, Datapath, listLinks } from './datapath/loader.js';
import { ALL_MAPS, NODEPORT_MODES, type MapSizes, type NodePortMode } from './datapath/layout.js';
import { HttpServer } from './http/server.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { KubeSource, loadKubeConfig } from './sources/kube.js';
import { ManifestSource } from './sources/manifest.js';
import type { Source } from './sources/source.js';
import { cgroup2Mount, checkCgroup2 } from './util/cgroup.js';
import { existsSync } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import * as bpf from './datapath/addon.js';
import { LINKS_DIR } from './datapath/layout.js';
import { ConntrackScanner } from './controller/conntrack.js';
import { TcAttacher } from './datapath/tc-attach.js';
import { HealthTargets, ServiceHealthServers } from './health/service-health.js';
import { deviceAddresses } from './util/netdev.js';
import { SockDestroyer } from './datapath/sock-destroy.js';
import type { LbAlgorithm } from './model/maglev.js';

export interface DaemonOptions {
  manifests?: string | undefined;
  pinPath: string;
  cgroup?: string | undefined;
  connectTimeLb: boolean;
  /** Abort connect-time-balanced TCP connections to removed backends too (UDP always). */
  destroyTcpToRemovedBackends?: boolean | undefined;
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
  /** Cap on the retry wait while the API server refuses or resets connections. */
  apiUnreachableRetryMaxMs?: number | undefined;
  /** HOST:PORT; empty turns the listener off. */
  healthzAddress?: string | undefined;
  metricsAddress?: string | undefined;
  /** /healthz turns 503 when a change waits this long to be written. */
  healthTimeoutMs?: number | undefined;
  /** A source other than manifests or the API (tests). */
  source?: Source;
  /** Host-facing devices for the tc programs (NodePort, external traffic). */
  devices?: string[] | undefined;
  /** Glob of pod veths for the tc programs, attached as they appear. */
  workloadIfaces?: string | undefined;
  /** This node's addresses for NodePort and SNAT; default: those of --devices. */
  nodeIPs?: string[] | undefined;
  /** The pod network; sources inside it are cluster-internal. */
  clusterCidr?: string | undefined;
  nodePortRange?: [number, number] | undefined;
  /** --nodeport-addresses: CIDRs and/or "primary"; unset = every node address. */
  nodePortAddresses?: string[] | undefined;
  snatPortRange?: [number, number] | undefined;
  /** Conntrack expiry scan period; 0 = off. */
  ctScanIntervalMs?: number | undefined;
  /** Address healthCheckNodePort listeners bind to; empty = off. */
  healthCheckAddress?: string | undefined;
  /** How NodePort/external traffic reaches a backend on another node. */
  nodePortMode?: NodePortMode | undefined;
  /** Clients never served by DSR. */
  dsrOptoutCidrs?: string[] | undefined;
  /** Nodes trusted to send DSR requests, besides the Node objects' addresses. */
  clusterNodeCidrs?: string[] | undefined;
  /** Backend choice for external frontends; kpr.io/lb-algorithm overrides it. */
  lbAlgorithm?: LbAlgorithm | undefined;
  /** Slots per Maglev table (a prime). */
  maglevTableSize?: number | undefined;
}

export interface Daemon {
  readonly controller: Controller;
  readonly datapath: Datapath;
  readonly store: ObjectStore;
  readonly metrics: Metrics;
  readonly http: HttpServer;
  readonly tc: TcAttacher | undefined;
  /** The DSR peer set; feed it every node's addresses (setNodeAddresses). */
  readonly dsrPeers: DsrPeers;
  stop(): Promise<void>;
}

/**
 * Everything that can be checked without touching the kernel, checked
 * before it is touched: a bad flag must not leave pinned maps or attached
 * links behind.
 */
export async function preflight(opts: DaemonOptions): Promise<{ cgroup: string | undefined }> {
  if (opts.manifests) {
    try {
      await stat(opts.manifests);
    } catch (err) {
      throw new Error(`--manifests ${opts.manifests}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (err as Error).message}`);
    }
  }
  let cgroup: string | undefined;
  if (opts.connectTimeLb) {
    cgroup = opts.cgroup ?? cgroup2Mount();
    checkCgroup2(cgroup);
  }
  const devices = opts.devices ?? [];
  if (devices.length > 0) {
    const names = new Set((await listLinks()).map((l) => l.ifname));
    const missing = devices.filter((d) => !names.has(d));
    if (missing.length) throw new Error(`--devices: no interface named ${missing.join(', ')} in this network namespace`);
  }
  checkBpffs(opts.pinPath);
  return { cgroup };
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { log } = opts;
  const { cgroup } = await preflight(opts);
  const metrics = opts.metrics ?? new Metrics({ defaultMetrics: true });

  // The source is built first, so a bad kubeconfig fails before any BPF work.
  let source: Source;
  if (opts.source) source = opts.source;
  else if (opts.manifests) {
    source = new ManifestSource({
      path: opts.manifests,
      log,
      onIgnored: (_object, reason) => metrics.skipped.inc({ kind: 'Other', reason }),
      onParseError: () => metrics.skipped.inc({ kind: 'Document', reason: 'parse-error' }),
      onDuplicate: (id) => metrics.skipped.inc({ kind: id.slice(0, id.indexOf(' ')), reason: 'duplicate' }),
    });
  } else if (opts.kubeconfig || opts.inCluster) {
    source = new KubeSource({
      kubeConfig: loadKubeConfig({ kubeconfig: opts.kubeconfig, inCluster: opts.inCluster }),
      log,
      metrics,
      nodeName: opts.nodeName,
      watchTimeoutSeconds: opts.watchTimeoutSeconds,
      unreachableBackoffMaxMs: opts.apiUnreachableRetryMaxMs,
    });
  } else throw new Error('no source: give --manifests PATH, --kubeconfig PATH or --in-cluster');

  // Health first, so probes answer while the maps load; readiness waits for the sync.
  const store = new ObjectStore();
  let controller: Controller | undefined;
  let tc: TcAttacher | undefined;
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
      mapFull: () => controller?.status().mapFull ?? {},
      dataPathAttached: () => {
        const missing = tc?.missingDevices() ?? [];
        return missing.length ? { attached: false, message: `tc programs not attached to ${missing.join(', ')}; retrying` } : { attached: true };
      },
    },
  });
  await http.start();

  // What this start creates, so a failure can take back exactly that.
  const freshPinPath = !existsSync(opts.pinPath);
  const createdLinks: string[] = [];
  let datapath: Datapath;
  try {
    datapath = await Datapath.open(opts.pinPath, opts.sizes, opts.maglevTableSize);
  } catch (err) {
    await http.stop();
    if (freshPinPath) await cleanup(opts.pinPath).catch(() => undefined);
    throw err;
  }
  let ctTimer: NodeJS.Timeout | undefined;
  let healthServers: ServiceHealthServers | undefined;
  let sockDestroyer: SockDestroyer | undefined;
  const dsrPeers = new DsrPeers(opts.clusterNodeCidrs ?? [], (entries) => datapath.setDsrPeers(entries));
  try {
    const reconciler = new Reconciler(datapath.maps);
    const adopted = reconciler.adopt();
    log.info({ pinPath: opts.pinPath, ...adopted }, 'opened pinned maps');

    const maps = datapath.maps;
    for (const m of [maps.fe, maps.be, maps.meta, maps.skNat, maps.maglev]) metrics.mapCapacity.set({ map: m.name }, m.maxEntries);
    const refreshGauges = () => {
      const c = reconciler.counts();
      metrics.mapEntries.set({ map: maps.fe.name }, c.frontends);
      metrics.mapEntries.set({ map: maps.be.name }, c.backends);
      metrics.mapEntries.set({ map: maps.meta.name }, c.ports);
      metrics.mapEntries.set({ map: maps.maglev.name }, c.tables);
      for (const [event, v] of Object.entries(datapath.readStats())) metrics.datapathStats.set({ event }, v);
    };

    if (opts.connectTimeLb && cgroup) {
      const report = await datapath.attachSockHooks(cgroup);
      for (const r of report) if (r.action !== 'updated') createdLinks.push(`cgroup_${r.hook}`);
      log.info({ cgroup, hooks: report }, 'connect-time hooks attached');
      sockDestroyer = SockDestroyer.open({
        pinPath: opts.pinPath,
        sizes: opts.sizes,
        cgroup,
        tcp: opts.destroyTcpToRemovedBackends ?? false,
        log,
        metrics,
      });
    }

    // Per-packet NAT: settings first, then programs on the devices.
    const devices = opts.devices ?? [];
    let nodeIPs = opts.nodeIPs ?? [];
    if (nodeIPs.length === 0 && devices.length > 0) nodeIPs = await deviceAddresses(devices);
    if (devices.length > 0 && nodeIPs.length === 0) throw new Error(`no IPv4 address on ${devices.join(', ')}: give --node-ip`);
    const [cidrAddr, cidrLen] = (opts.clusterCidr ?? '0.0.0.0/0').split('/');
    datapath.writeConfig({
      nodeIP: nodeIPs[0] ?? '0.0.0.0',
      clusterCidr: cidrAddr ?? '0.0.0.0',
      clusterCidrLen: opts.clusterCidr ? Number(cidrLen) : 0,
      snatPortMin: opts.snatPortRange?.[0] ?? 61000,
      snatPortMax: opts.snatPortRange?.[1] ?? 65535,
      flags: NODEPORT_MODES[opts.nodePortMode ?? 'snat'],
    });
    datapath.setNodeIPs(nodeIPs);
    datapath.setDsrOptout(opts.dsrOptoutCidrs ?? []);
    // This node's own addresses until a source lists the Node objects.
    dsrPeers.setNodeAddresses(nodeIPs);
    if (devices.length > 0 || opts.workloadIfaces) {
      tc = new TcAttacher(datapath, { devices, workloadIfaces: opts.workloadIfaces, log });
      await tc.start();
      log.info({ devices, workloadIfaces: opts.workloadIfaces, nodeIPs, attached: tc.attachedNames() }, 'tc programs attached');
    }
    const ctEvery = opts.ctScanIntervalMs ?? 10_000;
    if (ctEvery > 0) {
      const scanner = new ConntrackScanner(maps.ct);
      // One scan at a time: a slow one is not stacked under the next tick.
      let scanning = false;
      ctTimer = setInterval(() => {
        if (scanning) return;
        scanning = true;
        scanner
          .scan()
          .then((r) => {
            metrics.mapEntries.set({ map: maps.ct.name }, r.fwd + r.rev);
            metrics.conntrackEntries.set({ type: 'fwd' }, r.fwd);
            metrics.conntrackEntries.set({ type: 'rev' }, r.rev);
            metrics.conntrackExpired.inc(r.expired);
          })
          .catch((err: unknown) => log.error({ err }, 'conntrack scan failed'))
          .finally(() => (scanning = false));
      }, ctEvery);
      ctTimer.unref();
    }
    metrics.mapCapacity.set({ map: maps.ct.name }, maps.ct.maxEntries);
    const healthTargets = new HealthTargets(store, opts.nodeName);
    healthServers =
      opts.healthCheckAddress === '' ? undefined : new ServiceHealthServers({
        host: opts.healthCheckAddress ?? '0.0.0.0',
        log,
        proxyHealthy: () => controller?.status().synced ?? false,
      });

    controller = new Controller({
      store,
      reconciler,
      log,
      metrics,
      translate: {
        nodeName: opts.nodeName,
        nodeIPs,
        nodePortRange: opts.nodePortRange,
        nodePortAddresses: opts.nodePortAddresses,
        lbAlgorithm: opts.lbAlgorithm,
      },
      resyncIntervalMs: opts.resyncIntervalMs,
      // Every node's InternalIP may send DSR requests to this node's pods.
      onNodesChange: () => {
        const peers = dsrPeers.setNodeAddresses([...nodeIPs, ...store.nodeInternalIPs()]);
        log.debug({ peers }, 'DSR peers updated from Node objects');
      },
      onBackendsRemoved: (removed) => {
        if (!sockDestroyer?.available) return;
        const started = process.hrtime.bigint();
        const r = sockDestroyer.reap(removed);
        const ms = +(Number(process.hrtime.bigint() - started) / 1e6).toFixed(2);
        for (const e of r.errors) log.warn({ netns: e.netns }, `socket iterator failed: ${e.message}`);
        if (r.destroyed.length > 0 || r.errors.length > 0) {
          log.info(
            { destroyed: r.destroyed.map((d) => `${d.proto === 6 ? 'TCP' : 'UDP'} ${d.addr}:${d.port}${d.err ? ` err ${d.err}` : ''}`), namespaces: r.namespaces, ms },
            'aborted connected sockets on removed backends',
          );
        }
      },
      afterSync: (keys) => {
        refreshGauges();
        if (healthServers) healthServers.update(healthTargets.refresh(keys));
      },
    });
    controller.start();

    await source.start(store);
    log.info({ source: source.name, maps: ALL_MAPS }, 'kpr running');
  } catch (err) {
    // Take back what this start did: a first start leaves nothing; a
    // restart over pinned state leaves that state serving as it was, less
    // any link this start added.
    log.error({ err: (err as Error).message }, 'start-up failed; rolling back what it created');
    await source.stop().catch(() => undefined);
    controller?.stop();
    await tc?.stop().catch(() => undefined);
    if (ctTimer) clearInterval(ctTimer);
    healthServers?.close();
    await http.stop();
    sockDestroyer?.close();
    datapath.close();
    if (freshPinPath) {
      await cleanup(opts.pinPath).catch((e: unknown) => log.error({ err: e }, 'rollback: cleanup failed'));
    } else {
      for (const name of createdLinks) {
        const pin = join(opts.pinPath, LINKS_DIR, name);
        try {
          const fd = bpf.objGet(pin);
          try {
            bpf.linkDetach(fd);
          } finally {
            bpf.closeFd(fd);
          }
          await unlink(pin);
        } catch (e) {
          log.error({ err: e, pin }, 'rollback: cannot detach a link this start created');
        }
      }
    }
    throw err;
  }

  return {
    controller,
    datapath,
    store,
    metrics,
    http,
    tc,
    dsrPeers,
    async stop() {
      await source.stop();
      controller.stop();
      await tc?.stop();
      if (ctTimer) clearInterval(ctTimer);
      healthServers?.close();
      await http.stop();
      sockDestroyer?.close();
      datapath.close();
    },
  };
}
