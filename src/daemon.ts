/**
 * `kpr run`: wire a source, the store, the controller and the data path
 * together, and keep them running until SIGTERM/SIGINT. Exiting leaves the
 * pinned maps and links in place, so forwarding goes on without us.
 */
import { DsrPeers, dsr6Allowed, neighbourPeers, PeerNeighbours } from './controller/dsr-peers.js';
import { Controller } from './controller/controller.js';
import { Reconciler } from './controller/reconciler.js';
import { ObjectStore } from './controller/store.js';
import { Datapath } from './datapath/datapath.js';
import type { KprConfig6 } from './datapath/codec.js';
import { checkBpffs, cleanup } from './datapath/pinned.js';
import { ALL_MAPS, type MapSizes } from './datapath/names.js';
import type { Ipv4Cidr } from './util/ipv4.js';
import { NODEPORT_MODES, type NodePortMode } from './model/types.js';
import { HttpServer, type ListenAddress } from './http/server.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { ManifestSource } from './sources/manifest.js';
import type { Source } from './sources/source.js';
import { cgroup2Mount, checkCgroup2 } from './util/cgroup.js';
import { existsSync } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import { ConntrackExpiry } from './datapath/conntrack-thread.js';
import { TcAttacher } from './datapath/tc-attach.js';
import { HealthTargets, ServiceHealthServers } from './health/service-health.js';
import { deleteNeighbour, deviceAddresses, kprNeighbours, listLinks, routeTo, setManagedNeighbour } from './util/netdev.js';
import { addrFamily, canonicalAddr, type IpCidr } from './util/ip.js';
import { SockDestroyer } from './datapath/sock-destroy.js';
import type { LbAlgorithm } from './model/maglev.js';
import { mapPinPath, migrate, versionedPinPaths } from './datapath/migrate.js';

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
  /** Parsed by the CLI; undefined turns the listener off. */
  healthzAddress?: ListenAddress | undefined;
  metricsAddress?: ListenAddress | undefined;
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
  clusterCidr?: Ipv4Cidr | undefined;
  /** The pod network's IPv6 prefix, if the cluster has one. */
  clusterCidr6?: IpCidr | undefined;
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
  dsrOptoutCidrs?: IpCidr[] | undefined;
  /** Nodes trusted to send DSR requests, besides the Node objects' addresses. */
  clusterNodeCidrs?: IpCidr[] | undefined;
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
export async function preflight(opts: DaemonOptions): Promise<{ cgroup: string | undefined; nodeIPs: string[] }> {
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
  let nodeIPs = (opts.nodeIPs ?? []).map(canonicalAddr);
  if (nodeIPs.length === 0 && devices.length > 0) nodeIPs = await deviceAddresses(devices);
  if (devices.length > 0 && nodeIPs.length === 0) throw new Error(`no global IPv4 or IPv6 address on ${devices.join(', ')}: give --node-ip`);
  checkBpffs(opts.pinPath);
  return { cgroup, nodeIPs };
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const { log } = opts;
  const { cgroup, nodeIPs } = await preflight(opts);
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
    // Loaded only here: the Kubernetes client costs ~55 MB of RSS that a
    // manifest-fed kpr never uses.
    const { KubeSource, loadKubeConfig } = await import('./sources/kube.js');
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
    healthzAddress: opts.healthzAddress,
    metricsAddress: opts.metricsAddress,
    healthTimeoutMs: opts.healthTimeoutMs ?? 2 * Math.max(opts.resyncIntervalMs, 30_000),
    metrics,
    log,
    state: {
      pendingSince: () => controller?.status().pendingSince,
      lastUpdated: () => controller?.status().lastSyncAt,
      synced: () => controller?.status().synced ?? false,
      sourcesSynced: () => store.isSynced(),
      sourceHealthy: () => source.status?.() ?? { healthy: true },
      nodeEligible: () => source.isNodeEligible?.() ?? true,
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
  // A new layout's map is pinned by the load below; a failed start unpins it
  // again, and the older layout's pin (which a downgrade reads) is retired
  // only once the start has succeeded.
  const newPins = Object.values(versionedPinPaths(opts.pinPath)).filter((p) => !existsSync(p));
  let datapath: Datapath;
  try {
    datapath = await Datapath.open(opts.pinPath, opts.sizes, opts.maglevTableSize);
  } catch (err) {
    await http.stop();
    if (freshPinPath) await cleanup(opts.pinPath).catch(() => undefined);
    throw err;
  }
  let ctExpiry: ConntrackExpiry | undefined;
  let healthServers: ServiceHealthServers | undefined;
  let sockDestroyer: SockDestroyer | undefined;
  // IPv6 peers on a device's link get managed neighbour entries: the backend
  // node's proof of the sender (dsr-peers.ts, neighbourPeers).
  const peerNeighbours = new PeerNeighbours(
    { routeTo, set: setManagedNeighbour, del: deleteNeighbour, list: kprNeighbours },
    (addr, err) => log.warn({ addr, err: String(err) }, 'could not keep a neighbour entry for a DSR peer'),
  );
  let neighbourScope: { devices: string[]; own: string[] } | undefined;
  let config6: KprConfig6 | undefined;
  const dsrPeers = new DsrPeers(
    opts.clusterNodeCidrs ?? [],
    (entries) => {
      datapath.setDsrPeers(entries);
      if (!neighbourScope) return;
      void peerNeighbours.sync(neighbourPeers(entries, neighbourScope.own), neighbourScope.devices);
      // IPv6 DSR only once there are IPv6 peers to trust it.
      const dsr = dsr6Allowed(entries, neighbourScope.own);
      if (config6 && config6.dsr !== dsr) datapath.writeConfig6((config6 = { ...config6, dsr }));
    },
    datapath.dsrPeers(),
  );
  // Every hook this start changes keeps what it ran before, and every node
  // setting what it held, until the start has gone through: a failed start
  // puts the older programs and settings back, and removes the neighbour
  // entries it added.
  datapath.startJournal();
  peerNeighbours.startJournal();
  try {
    // --- upgrade: maps whose layout changed are copied into their new
    // version before any program of this build is swapped in (docs/deploy.md).
    const migration = migrate(opts.pinPath, (name) => Object.values(datapath.maps).find((m) => m.name === name)!);
    if (migration.migrated.length) log.info({ migrated: migration.migrated }, 'migrated pinned maps to this build\'s layouts');
    const reconciler = new Reconciler(datapath.maps);
    const adopted = reconciler.adopt();
    log.info({ pinPath: opts.pinPath, ...adopted }, 'opened pinned maps');

    const maps = datapath.maps;
    for (const m of [maps.fe, maps.be, maps.meta, maps.skNat, maps.maglev, maps.maglev6]) metrics.mapCapacity.set({ map: m.name }, m.maxEntries);
    const refreshGauges = () => {
      const c = reconciler.counts();
      metrics.mapEntries.set({ map: maps.fe.name }, c.frontends);
      metrics.mapEntries.set({ map: maps.be.name }, c.backends);
      metrics.mapEntries.set({ map: maps.meta.name }, c.ports);
      metrics.mapEntries.set({ map: maps.maglev.name }, c.tables);
      metrics.mapEntries.set({ map: maps.maglev6.name }, c.tables6);
      for (const [event, v] of Object.entries(datapath.readStats())) metrics.datapathStats.set({ event }, v);
    };

    if (opts.connectTimeLb && cgroup) {
      // Before the hooks: from their first connect() they know the node's own sockets.
      const nodeNetns = datapath.writeSockConfig();
      const report = await datapath.attachSockHooks(cgroup);
      log.info({ cgroup, hooks: report, nodeNetnsCookie: String(nodeNetns) }, 'connect-time hooks attached');
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
    // NodePorts and the per-packet path serve both families, each SNATing
    // to the node's first address of that family.
    // A single-stack node (IPv6-only, say) serves the other family's
    // ClusterIPs as kube-proxy does, but has no NodePort or SNAT source
    // there: the translation notes each such NodePort, the data path drops
    // what would need that SNAT.
    const nodeIPs4 = nodeIPs.filter((a) => addrFamily(a) === 4);
    const nodeIPs6 = nodeIPs.filter((a) => addrFamily(a) === 6);
    metrics.nodeAddresses.set({ family: 'IPv4' }, nodeIPs4.length);
    metrics.nodeAddresses.set({ family: 'IPv6' }, nodeIPs6.length);
    if (nodeIPs.length > 0) {
      for (const [family, ips] of [['IPv4', nodeIPs4], ['IPv6', nodeIPs6]] as const) {
        if (ips.length === 0) log.warn({ family, nodeIPs }, `this node has no ${family} address: ${family} NodePorts and ${family} SNAT are off; ${family} ClusterIPs, external and LB IPs are still served`);
      }
    }
    datapath.writeConfig({
      nodeIP: nodeIPs4[0] ?? '0.0.0.0',
      clusterCidr: opts.clusterCidr?.addr ?? '0.0.0.0',
      clusterCidrLen: opts.clusterCidr?.len ?? 0,
      snatPortMin: opts.snatPortRange?.[0] ?? 61000,
      snatPortMax: opts.snatPortRange?.[1] ?? 65535,
      flags: NODEPORT_MODES[opts.nodePortMode ?? 'snat'],
    });
    config6 = {
      nodeIP: nodeIPs6[0] ?? '::',
      clusterCidr: opts.clusterCidr6?.addr ?? '::',
      clusterCidrLen: opts.clusterCidr6?.len ?? 0,
      dsr: false,
    };
    datapath.writeConfig6(config6);
    datapath.setNodeIPs(nodeIPs);
    datapath.setDsrOptout(opts.dsrOptoutCidrs ?? []);
    // This node's own addresses, beside what is pinned, until a source lists the Node objects.
    neighbourScope = { devices, own: nodeIPs };
    dsrPeers.setOwnAddresses(nodeIPs);
    if (devices.length > 0 || opts.workloadIfaces) {
      tc = new TcAttacher(datapath, { devices, workloadIfaces: opts.workloadIfaces, log });
      await tc.start();
      log.info({ devices, workloadIfaces: opts.workloadIfaces, nodeIPs, attached: tc.attachedNames() }, 'tc programs attached');
    }
    const ctEvery = opts.ctScanIntervalMs ?? 10_000;
    if (ctEvery > 0) {
      // The scan runs on its own thread, through its own descriptor of the pinned map.
      ctExpiry = await ConntrackExpiry.start({
        path: mapPinPath(opts.pinPath, maps.ct.name),
        path6: mapPinPath(opts.pinPath, maps.ct6.name),
        everyMs: ctEvery,
        log,
        onScan: (r) => {
          const v6 = r.ipv6 ? r.ipv6.fwd + r.ipv6.rev : 0;
          metrics.mapEntries.set({ map: maps.ct.name }, r.fwd + r.rev - v6);
          metrics.mapEntries.set({ map: maps.ct6.name }, v6);
          metrics.conntrackEntries.set({ type: 'fwd' }, r.fwd);
          metrics.conntrackEntries.set({ type: 'rev' }, r.rev);
          metrics.conntrackExpired.inc(r.expired);
        },
      });
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
    // --- upgrade: every hook runs this build's programs and the start went
    // through; the old layouts go (a failure here still rolls back), then
    // the programs swapped out, which cannot fail the start any more.
    const retired = migration.retire();
    if (retired.length) log.info({ retired }, 'unpinned the previous layouts of migrated maps');
    for (const e of datapath.commitJournal()) log.warn({ err: e.message }, 'cannot let go of what the start replaced');
    peerNeighbours.commitJournal();
    log.info({ source: source.name, maps: ALL_MAPS }, 'kpr running');
  } catch (err) {
    // Take back what this start did: a first start leaves nothing; a
    // restart over pinned state leaves that state serving as it was, less
    // any link this start added.
    log.error({ err: (err as Error).message }, 'start-up failed; rolling back what it created');
    await source.stop().catch(() => undefined);
    controller?.stop();
    await tc?.stop().catch(() => undefined);
    await ctExpiry?.stop().catch(() => undefined);
    healthServers?.close();
    await http.stop();
    sockDestroyer?.close();
    // Before the objects close (the swap back checks the link still runs
    // this start's program): each link and tc filter gets back the program
    // it ran before, or goes if this start added it; settings as they were.
    for (const e of datapath.rollbackJournal()) log.error({ err: e.message }, 'rollback: cannot put back what this start changed');
    // After the syncs already queued; nothing queues more once the source has stopped.
    await peerNeighbours.rollbackJournal();
    datapath.close();
    if (freshPinPath) {
      await cleanup(opts.pinPath).catch((e: unknown) => log.error({ err: e }, 'rollback: cleanup failed'));
    } else {
      for (const p of newPins) await unlink(p).catch(() => undefined);
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
      await ctExpiry?.stop();
      healthServers?.close();
      await http.stop();
      sockDestroyer?.close();
      // A neighbour change under way is finished, not cut off by an exit.
      await peerNeighbours.idle();
      datapath.close();
    },
  };
}
