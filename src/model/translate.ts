/**
 * The translation layer: validated Services and EndpointSlices in, desired
 * frontend and backend entries out. Pure, so it is tested without BPF and
 * shared by every source.
 */
import ipaddr from 'ipaddr.js';
import { ipv4ToNumber } from '../util/ipv4.js';
import {
  IPPROTO,
  NAT_FLG_EXTERNAL,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MAGLEV,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
  NODEPORT_ANY,
  NODEPORT_MODE_VALUES,
  servicePortName,
  type Backend,
  type DesiredServicePort,
  type EndpointSlice,
  type Frontend,
  type Service,
  type ServicePort,
} from './types.js';

export interface TranslateOptions {
  /** This node's name; endpoints on it are local. */
  nodeName?: string | undefined;
  /** This node's addresses: each gets a NodePort frontend (plus the wildcard). */
  nodeIPs?: string[] | undefined;
  /** Valid NodePort range, inclusive; default 30000-32767. */
  nodePortRange?: [number, number] | undefined;
  /** Backend choice for external frontends (--lb-algorithm); kpr.io/lb-algorithm overrides it. */
  lbAlgorithm?: 'random' | 'maglev' | undefined;
}

export const DEFAULT_NODEPORT_RANGE: [number, number] = [30000, 32767];

export interface Skip {
  object: string;
  reason: string;
  message: string;
}

export interface Translation {
  ports: DesiredServicePort[];
  skipped: Skip[];
}

/** Why kube-proxy would not program this Service at all, if it would not. */
export function serviceSkipReason(svc: Service): Skip | undefined {
  const object = `Service ${svc.namespace}/${svc.name}`;
  if (svc.type === 'ExternalName') return { object, reason: 'external-name', message: 'ExternalName Services are DNS only' };
  if (svc.headless) return { object, reason: 'headless', message: 'headless Services have no virtual IP' };
  if (svc.proxyNameLabel !== undefined) {
    return { object, reason: 'service-proxy-name', message: `labelled for proxy ${JSON.stringify(svc.proxyNameLabel)}` };
  }
  if (svc.clusterIPs.length === 0) return { object, reason: 'no-ipv4', message: 'no IPv4 cluster IP (IPv6 is not handled yet)' };
  return undefined;
}

function sortBackends(list: Backend[]): Backend[] {
  const keyed = list.map((b) => ({ b, n: ipv4ToNumber(b.addr) }));
  keyed.sort((x, y) => (x.b.local !== y.b.local ? (x.b.local ? -1 : 1) : x.n - y.n || x.b.port - y.b.port));
  return keyed.map((k) => k.b);
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

/**
 * Ready endpoints; when none is ready, serving-and-terminating ones, as
 * kube-proxy does so that connections drain instead of failing.
 */
function backendsFor(sp: ServicePort, slices: EndpointSlice[], nodeName: string | undefined): Backend[] {
  const ready = new Map<string, Backend>();
  const terminating = new Map<string, Backend>();
  for (const slice of slices) {
    if (slice.addressType !== 'IPv4') continue;
    const port = slicePort(slice, sp);
    if (port === undefined) continue;
    for (const ep of slice.endpoints) {
      const local = nodeName !== undefined && ep.nodeName === nodeName;
      for (const addr of ep.addresses) {
        const key = `${addr}:${port}`;
        const be = { addr, port, local };
        if (ep.conditions.ready) ready.set(key, be);
        else if (ep.conditions.serving && ep.conditions.terminating) terminating.set(key, be);
      }
    }
  }
  const chosen = ready.size > 0 ? ready : terminating;
  return sortBackends([...chosen.values()]);
}

function frontendsFor(svc: Service, sp: ServicePort, opts: TranslateOptions): Frontend[] {
  const proto = IPPROTO[sp.protocol as 'TCP' | 'UDP'];
  const open = { srcAddr: '0.0.0.0', srcLen: 0, blackhole: false };
  const internal = svc.internalTrafficPolicy === 'Local' ? NAT_FLG_INTERNAL_LOCAL : 0;
  const mode = svc.nodePortMode === undefined ? 0 : NAT_FLG_MODE_SET | (NODEPORT_MODE_VALUES[svc.nodePortMode] << NAT_FLG_MODE_SHIFT);
  // sessionAffinity picks per client, not per flow: it keeps the random choice, and needs no table.
  const maglev = (svc.lbAlgorithm ?? opts.lbAlgorithm) === 'maglev' && svc.affinityTimeout === 0 ? NAT_FLG_MAGLEV : 0;
  const external = NAT_FLG_EXTERNAL | mode | maglev | (svc.externalTrafficPolicy === 'Local' ? NAT_FLG_EXTERNAL_LOCAL : 0);
  const out: Frontend[] = [];
  for (const addr of svc.clusterIPs) out.push({ addr, port: sp.port, proto, flags: internal, ...open });
  if (sp.nodePort !== undefined && (svc.type === 'NodePort' || svc.type === 'LoadBalancer')) {
    for (const addr of [...new Set(opts.nodeIPs ?? [])]) out.push({ addr, port: sp.nodePort, proto, flags: external, ...open });
    out.push({ addr: NODEPORT_ANY, port: sp.nodePort, proto, flags: external, ...open });
  }
  for (const addr of svc.externalIPs) out.push({ addr, port: sp.port, proto, flags: external, ...open });
  for (const addr of svc.loadBalancerIPs) {
    const ranges = svc.loadBalancerSourceRanges.map((c) => ipaddr.parseCIDR(c)).filter(([a]) => a.kind() === 'ipv4');
    if (ranges.length === 0) {
      out.push({ addr, port: sp.port, proto, flags: external, ...open });
      continue;
    }
    for (const [a, len] of ranges) {
      const net = ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${len}`).toString();
      out.push({ addr, port: sp.port, proto, flags: external, srcAddr: net, srcLen: len, blackhole: false });
    }
    // Sources outside every range hit this entry and are dropped.
    if (!ranges.some(([, len]) => len === 0)) out.push({ addr, port: sp.port, proto, flags: external, ...open, blackhole: true });
  }
  return out;
}

export function translateService(svc: Service, slices: EndpointSlice[], opts: TranslateOptions = {}): Translation {
  const skip = serviceSkipReason(svc);
  if (skip) return { ports: [], skipped: [skip] };
  const ports: DesiredServicePort[] = [];
  const skipped: Skip[] = [];
  const own = slices.filter((s) => s.namespace === svc.namespace && s.serviceName === svc.name);
  for (const sp of svc.ports) {
    if (sp.protocol === 'SCTP') {
      skipped.push({
        object: `Service ${svc.namespace}/${svc.name} port ${sp.name || sp.port}`,
        reason: 'unsupported-protocol',
        message: 'SCTP is not load-balanced by kpr',
      });
      continue;
    }
    const [lo, hi] = opts.nodePortRange ?? DEFAULT_NODEPORT_RANGE;
    if (sp.nodePort !== undefined && (sp.nodePort < lo || sp.nodePort > hi)) {
      skipped.push({
        object: `Service ${svc.namespace}/${svc.name} port ${sp.name || sp.port}`,
        reason: 'nodeport-out-of-range',
        message: `nodePort ${sp.nodePort} is outside the NodePort range ${lo}-${hi}`,
      });
      continue;
    }
    ports.push({
      name: servicePortName(svc.namespace, svc.name, sp.name, sp.protocol),
      frontends: frontendsFor(svc, sp, opts),
      backends: backendsFor(sp, own, opts.nodeName),
      affinityTimeout: svc.affinityTimeout,
    });
  }
  return { ports, skipped };
}
