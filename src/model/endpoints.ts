/**
 * Endpoint selection, the one place that decides which endpoints of a
 * Service port serve Cluster-policy traffic and which serve Local-policy
 * traffic on this node. It follows kube-proxy's CategorizeEndpoints
 * (pkg/proxy/topology.go):
 *
 *  - an endpoint is its first address only (addresses[0]);
 *  - the cluster set is the ready endpoints, narrowed by topology hints
 *    when the Service opted in and the hints are usable; with no ready
 *    endpoint anywhere it falls back to serving-and-terminating ones;
 *  - the local set is this node's ready endpoints, or, when it has none,
 *    this node's serving-and-terminating ones, decided on its own: a local
 *    terminating endpoint serves Local traffic while remote ones are ready;
 *  - hints are usable only when every ready endpoint has one and this node
 *    (forNodes) or its zone (forZones) is among them.
 *
 * translate programs these sets, the healthCheckNodePort server counts the
 * local ready ones, and `kpr inspect endpoints` prints the verdicts. Nothing
 * else looks at endpoint conditions.
 */
import { compareAddr } from '../util/ip.js';
import { ipv4ToNumber } from '../util/ipv4.js';
import type { Backend, Endpoint, EndpointSlice, IPFamily, Service, ServicePort } from './types.js';

export const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
/** Kubernetes 1.26 and older; topology-mode wins when both are set. */
export const TOPOLOGY_HINTS_ANNOTATION = 'service.kubernetes.io/topology-aware-hints';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export type TopologyMode = '' | 'PreferSameZone' | 'PreferSameNode';

/** Where this node sits: endpoints on it are local, hints are read against it. */
export interface NodeTopology {
  name: string | undefined;
  zone: string | undefined;
}

export interface EndpointVerdict {
  addr: string;
  port: number;
  nodeName: string | undefined;
  local: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  zoneHints: string[];
  nodeHints: string[];
  /** In the cluster-wide set (ordinals 0..count-1). */
  inCluster: boolean;
  /** In the node-local set. */
  inLocal: boolean;
  /** Why it is in or out, for `kpr inspect endpoints`. */
  reason: string;
}

export interface EndpointSelection {
  cluster: Backend[];
  local: Backend[];
  /** Any usable endpoint anywhere: without one, traffic is rejected, not dropped. */
  hasAny: boolean;
  /** Local ready endpoints: what healthCheckNodePort reports (terminating ones make it fail, as in kube-proxy). */
  localReady: number;
  topology: TopologyMode;
  /** Why hints were or were not used. */
  topologyReason: string;
  endpoints: EndpointVerdict[];
}

/** The slice port that carries a Service port's target, by port name as the EndpointSlice controller writes it. */
function slicePort(slice: EndpointSlice, sp: ServicePort): number | undefined {
  const byName = slice.ports.find((p) => p.name === sp.name && p.protocol === sp.protocol);
  if (byName) return byName.port;
  // Hand-written slices sometimes name the port after the container port.
  if (typeof sp.targetPort === 'string') {
    return slice.ports.find((p) => p.name === sp.targetPort && p.protocol === sp.protocol)?.port;
  }
  return undefined;
}

/** Did the Service ask for topology-aware routing? The EndpointSlice controller only writes hints then. */
export function topologyRequested(svc: Service): { on: boolean; why: string } {
  if (svc.trafficDistribution !== undefined) return { on: true, why: `trafficDistribution ${svc.trafficDistribution}` };
  const key = svc.annotations[TOPOLOGY_MODE_ANNOTATION] !== undefined ? TOPOLOGY_MODE_ANNOTATION : TOPOLOGY_HINTS_ANNOTATION;
  const v = svc.annotations[key];
  if (v === 'Auto' || v === 'auto') return { on: true, why: `${key}: ${v}` };
  return { on: false, why: v === undefined ? 'no topology requested' : `${key}: ${v} is not Auto` };
}

type Candidate = Omit<EndpointVerdict, 'inCluster' | 'inLocal' | 'reason'>;

function candidate(ep: Endpoint, addr: string, port: number, node: NodeTopology): Candidate {
  return {
    addr,
    port,
    nodeName: ep.nodeName,
    local: node.name !== undefined && ep.nodeName === node.name,
    ready: ep.conditions.ready,
    serving: ep.conditions.serving,
    terminating: ep.conditions.terminating,
    zoneHints: ep.zoneHints,
    nodeHints: ep.nodeHints,
  };
}

/**
 * The same endpoint in two slices (a slice being replaced): the first copy
 * stays unless a later one is local, as in kube-proxy. `list` is in slice
 * order; the survivors keep the position of their first copy.
 */
function dedup(list: Candidate[]): Candidate[] {
  const byKey = new Map<string, Candidate>();
  for (const c of list) {
    const key = `${c.addr}:${c.port}`;
    if (byKey.has(key) && !c.local) continue;
    byKey.set(key, c);
  }
  return [...byKey.values()];
}

function candidates(sp: ServicePort, slices: EndpointSlice[], node: NodeTopology, family: IPFamily): Candidate[] {
  const list: Candidate[] = [];
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  for (const slice of slices) {
    // A dual-stack Service has one slice family per IP family; the
    // selection of one family never sees the other's endpoints.
    if (slice.addressType !== addressType) continue;
    const port = slicePort(slice, sp);
    if (port === undefined) continue;
    for (const ep of slice.endpoints) {
      // kube-proxy programs only the first address of an endpoint.
      const addr = ep.addresses[0];
      if (addr !== undefined) list.push(candidate(ep, addr, port, node));
    }
  }
  if (addressType === 'IPv4') {
    // The same order as compareAddr, with each address parsed once rather
    // than per comparison. Sorted first, copies of one endpoint are next to
    // each other (the sort is stable, so in slice order), and only such a
    // run needs the dedup: at 1M endpoints a key string and a map entry
    // per endpoint were a tenth of a full sync.
    const nums = list.map((c) => ipv4ToNumber(c.addr));
    if (!nums.some(Number.isNaN)) {
      const order = list.map((_, i) => i);
      order.sort((a, b) => (nums[a] as number) - (nums[b] as number) || (list[a] as Candidate).port - (list[b] as Candidate).port);
      const out: Candidate[] = [];
      for (let i = 0; i < order.length; ) {
        let j = i + 1;
        const a = order[i] as number;
        while (j < order.length && nums[order[j] as number] === nums[a] && (list[order[j] as number] as Candidate).port === (list[a] as Candidate).port) j++;
        if (j === i + 1) out.push(list[a] as Candidate);
        else out.push(...dedup(order.slice(i, j).map((k) => list[k] as Candidate)));
        i = j;
      }
      return out;
    }
    const deduped = dedup(list);
    const keyed = deduped.map((c) => ({ c, n: ipv4ToNumber(c.addr) }));
    keyed.sort((a, b) => a.n - b.n || a.c.port - b.c.port);
    return keyed.map((k) => k.c);
  }
  const deduped = dedup(list);
  deduped.sort((a, b) => compareAddr(a.addr, b.addr) || a.port - b.port);
  return deduped;
}

/** kube-proxy's topologyModeFromHints, for a Service that asked for topology. */
function topologyFromHints(eps: Candidate[], node: NodeTopology): { mode: TopologyMode; why: string } {
  const ready = eps.filter((e) => e.ready);
  if (ready.length === 0) return { mode: '', why: 'no ready endpoint' };
  if (ready.every((e) => e.nodeHints.length > 0)) {
    if (node.name !== undefined && ready.some((e) => e.nodeHints.includes(node.name as string))) {
      return { mode: 'PreferSameNode', why: `node hints for ${node.name}` };
    }
  }
  if (!ready.every((e) => e.zoneHints.length > 0)) return { mode: '', why: 'a ready endpoint has no zone hint' };
  if (node.zone === undefined) return { mode: '', why: `this node has no ${ZONE_LABEL} label` };
  if (!ready.some((e) => e.zoneHints.includes(node.zone as string))) return { mode: '', why: `no endpoint is hinted for zone ${node.zone}` };
  return { mode: 'PreferSameZone', why: `zone hints for ${node.zone}` };
}

function inTopology(e: Candidate, mode: TopologyMode, node: NodeTopology): boolean {
  if (mode === 'PreferSameNode') return node.name !== undefined && e.nodeHints.includes(node.name);
  if (mode === 'PreferSameZone') return node.zone !== undefined && e.zoneHints.includes(node.zone);
  return true;
}

const toBackend = (e: Candidate): Backend => ({ addr: e.addr, port: e.port, local: e.local });

/**
 * The selection for one IP family: kube-proxy runs one proxier per family,
 * so hints, fallbacks and the reject/drop verdict are decided per family.
 */
export function selectEndpoints(svc: Service, sp: ServicePort, slices: EndpointSlice[], node: NodeTopology, family: IPFamily): EndpointSelection {
  const eps = candidates(sp, slices, node, family);
  const wanted = topologyRequested(svc);
  const topo = wanted.on ? topologyFromHints(eps, node) : { mode: '' as TopologyMode, why: wanted.why };
  const servingTerminating = (e: Candidate) => !e.ready && e.serving && e.terminating;

  let clusterPick = eps.filter((e) => e.ready && inTopology(e, topo.mode, node));
  const clusterFallback = clusterPick.length === 0;
  if (clusterFallback) clusterPick = eps.filter(servingTerminating);

  let localPick = eps.filter((e) => e.local && e.ready);
  const localFallback = localPick.length === 0;
  if (localFallback) localPick = eps.filter((e) => e.local && servingTerminating(e));

  const verdicts = (): EndpointVerdict[] => {
    const inCluster = new Set(clusterPick);
    const inLocal = new Set(localPick);
    return eps.map((e) => {
      let reason: string;
      if (e.ready) {
        if (!inCluster.has(e)) reason = `ready, outside ${topo.mode === 'PreferSameNode' ? 'this node' : `zone ${node.zone}`} (hints ${[...e.nodeHints, ...e.zoneHints].join(',')})`;
        else if (topo.mode) reason = `ready, hinted for ${topo.mode === 'PreferSameNode' ? 'this node' : `zone ${node.zone}`}`;
        else reason = 'ready';
      } else if (servingTerminating(e)) {
        const used = [inCluster.has(e) && 'cluster', inLocal.has(e) && 'local'].filter(Boolean);
        reason = used.length ? `serving and terminating: fallback for the ${used.join(' and ')} set (no ready endpoint there)` : 'serving and terminating: ready endpoints exist';
      } else {
        reason = e.terminating ? 'terminating, not serving' : 'not ready';
      }
      return { ...e, inCluster: inCluster.has(e), inLocal: inLocal.has(e), reason };
    });
  };
  let endpoints: EndpointVerdict[] | undefined;
  return {
    cluster: clusterPick.map(toBackend),
    local: localPick.map(toBackend),
    hasAny: clusterPick.length > 0 || localPick.length > 0,
    localReady: localFallback ? 0 : localPick.length,
    topology: topo.mode,
    topologyReason: topo.why,
    // Only inspect reads the verdicts: translation at 1M endpoints would
    // otherwise build a reason string and a copy of every endpoint.
    get endpoints() {
      return (endpoints ??= verdicts());
    },
  };
}

export type PolicyVerdict = { action: 'forward'; to: Backend[] } | { action: 'drop' } | { action: 'reject' };

/**
 * What a frontend does with a selection under its traffic policy, as the
 * data path decides it from the frontend's count and local (nat_lookup.h):
 * Local policy without a local endpoint drops while endpoints exist
 * elsewhere; no endpoint at all rejects.
 */
export function policyVerdict(sel: Pick<EndpointSelection, 'cluster' | 'local'>, localPolicy: boolean): PolicyVerdict {
  const set = localPolicy ? sel.local : sel.cluster;
  if (set.length > 0) return { action: 'forward', to: set };
  return sel.cluster.length === 0 && sel.local.length === 0 ? { action: 'reject' } : { action: 'drop' };
}
