/**
 * Kubernetes API source: core/v1 Services and discovery.k8s.io/v1
 * EndpointSlices, cluster-wide, selected as kube-proxy selects them, and
 * every Node (this node's zone for topology hints and its eligibility for
 * /healthz; the others' addresses for peer checks).
 *
 * Each kind is marked synced only after its first complete list, so the
 * controller writes nothing until both are in; after that, a failing API
 * server only stops updates: the maps keep their last state.
 */
import { existsSync } from 'node:fs';
import { CoreV1Api, DiscoveryV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Kind, ObjectStore } from '../controller/store.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { PROXY_NAME_LABEL } from '../model/objects.js';
import { ResilientInformer, type InformerHealth } from './informer.js';
import type { Source, SourceStatus } from './source.js';

/** Set by the EndpointSlice controller on slices of headless Services. */
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';

/**
 * kube-proxy's selector. The API server sends DELETED when an object stops
 * matching it, so a Service that gains the proxy-name label goes away.
 */
export const KUBE_PROXY_SELECTOR = `!${PROXY_NAME_LABEL},!${HEADLESS_LABEL}`;

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  metrics?: Metrics | undefined;
  /** This node: its Node decides /healthz's nodeEligible (every Node is watched into the store). */
  nodeName?: string | undefined;
  /** Server-side timeout of each watch, in seconds. */
  watchTimeoutSeconds?: number;
  watchdogGraceMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Cap on the retry wait while the API server refuses or resets connections. */
  unreachableBackoffMaxMs?: number | undefined;
  quickCloseMs?: number;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * --kubeconfig PATH, or the in-cluster service account. In-cluster,
 * KUBERNETES_SERVICE_HOST/PORT should name the real API server: with
 * kube-proxy gone, the kubernetes ClusterIP works only once kpr runs.
 */
export function loadKubeConfig(opts: { kubeconfig?: string | undefined; inCluster?: boolean | undefined }): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else if (opts.inCluster) {
    // loadFromCluster() checks nothing: it would build https://undefined:undefined
    // and a token path that fails only at the first request.
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set');
    }
    if (!existsSync(SERVICE_ACCOUNT_TOKEN)) throw new Error(`in-cluster config: no service account token at ${SERVICE_ACCOUNT_TOKEN}`);
    kc.loadFromCluster();
  }
  else throw new Error('no Kubernetes config: give --kubeconfig PATH or --in-cluster');
  if (!kc.getCurrentCluster()) throw new Error(`${opts.kubeconfig ?? 'in-cluster config'}: no current cluster`);
  return kc;
}

export class KubeSource implements Source {
  readonly name = 'kubernetes';
  private readonly informers: Array<{ kind: Kind | 'Node'; informer: ResilientInformer }> = [];
  private nodeEligible = true;

  constructor(private readonly opts: KubeSourceOptions) {}

  async start(store: ObjectStore): Promise<void> {
    const { kubeConfig: kc, log, metrics } = this.opts;
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const common = {
      kubeConfig: kc,
      log,
      metrics,
      watchTimeoutSeconds: this.opts.watchTimeoutSeconds,
      watchdogGraceMs: this.opts.watchdogGraceMs,
      backoffMinMs: this.opts.backoffMinMs,
      backoffMaxMs: this.opts.backoffMaxMs,
      unreachableBackoffMaxMs: this.opts.unreachableBackoffMaxMs,
      quickCloseMs: this.opts.quickCloseMs,
      onHealth: () => this.refreshGauge(),
    };
    const kinds = [
      {
        kind: 'Service' as const,
        resource: 'services',
        apiVersion: 'v1',
        path: '/api/v1/services',
        list: (a: { labelSelector?: string; timeoutSeconds: number }) => core.listServiceForAllNamespaces(a),
      },
      {
        kind: 'EndpointSlice' as const,
        resource: 'endpointslices',
        apiVersion: 'discovery.k8s.io/v1',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        list: (a: { labelSelector?: string; timeoutSeconds: number }) => discovery.listEndpointSliceForAllNamespaces(a),
      },
    ];
    for (const k of kinds) {
      const informer = new ResilientInformer({
        ...common,
        ...k,
        labelSelector: KUBE_PROXY_SELECTOR,
        onList: (items) => {
          // The whole list: objects deleted while we were not watching go too.
          store.replace(k.kind, items);
          store.markSynced(k.kind);
        },
        onUpsert: (o) => store.upsert(k.kind, o),
        onDelete: (ns, name) => store.remove(k.kind, ns, name),
      });
      this.informers.push({ kind: k.kind, informer });
    }
    if (this.opts.nodeName) {
      const nodeName = this.opts.nodeName;
      const isSelf = (o: unknown) => (o as { metadata?: { name?: string } } | null)?.metadata?.name === nodeName;
      // Every Node: this node's zone drives topology hints, the others'
      // addresses identify peer nodes.
      const informer = new ResilientInformer({
        ...common,
        kind: 'Node',
        resource: 'nodes',
        apiVersion: 'v1',
        path: '/api/v1/nodes',
        list: (a) => core.listNode(a),
        onList: (list) => {
          const items = [...list];
          store.replace('Node', items);
          store.markSynced('Node');
          const node = items.find(isSelf);
          if (node) this.syncNode(node);
          else log.warn({ node: nodeName }, `node ${nodeName} not found; check --node-name`);
        },
        onUpsert: (o) => {
          store.upsert('Node', o);
          if (isSelf(o)) this.syncNode(o);
        },
        onDelete: (ns, name) => {
          store.remove('Node', ns, name);
          if (name === nodeName) this.setEligible(false, 'node deleted');
        },
      });
      this.informers.push({ kind: 'Node', informer });
    }
    this.refreshGauge();
    await Promise.all(this.informers.map((i) => i.informer.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.informer.stop()));
  }

  health(): Array<InformerHealth & { kind: string }> {
    return this.informers.map((i) => ({ kind: i.kind, ...i.informer.health() }));
  }

  /** Unhealthy while any list/watch is failing. */
  status(): SourceStatus {
    const down = this.health().filter((h) => !h.healthy);
    if (down.length === 0) return { healthy: true };
    return {
      healthy: false,
      message: down.map((h) => `${h.kind}: ${h.lastError ?? 'unreachable'} since ${new Date(h.downSince ?? 0).toISOString()}`).join('; '),
    };
  }

  /** kube-proxy's rule: a node being deleted, or tainted for deletion by the autoscaler, is not eligible. */
  isNodeEligible(): boolean {
    return this.nodeEligible;
  }

  private syncNode(raw: unknown): void {
    const n = raw as { metadata?: { deletionTimestamp?: unknown }; spec?: { taints?: Array<{ key?: unknown }> } };
    if (n.metadata?.deletionTimestamp) return this.setEligible(false, 'node is being deleted');
    if ((n.spec?.taints ?? []).some((t) => t?.key === 'ToBeDeletedByClusterAutoscaler')) {
      return this.setEligible(false, 'node is tainted ToBeDeletedByClusterAutoscaler');
    }
    this.setEligible(true, 'node is eligible');
  }

  private setEligible(v: boolean, why: string): void {
    if (this.nodeEligible !== v) this.opts.log.info({ node: this.opts.nodeName, eligible: v }, why);
    this.nodeEligible = v;
  }

  private refreshGauge(): void {
    this.opts.metrics?.apiReachable.set(this.informers.every((i) => i.informer.health().healthy) ? 1 : 0);
  }
}
