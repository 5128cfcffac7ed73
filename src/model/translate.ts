/**
 * The translation layer: validated Services and EndpointSlices in, desired
 * frontend and backend entries out. Pure, so it is tested without BPF and
 * shared by every source.
 */
import ipaddr from 'ipaddr.js';
import { selectEndpoints } from './endpoints.js';
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
  type DesiredServicePort,
  type EndpointSlice,
  type Frontend,
  type Service,
  type ServicePort,
} from './types.js';

export interface TranslateOptions {
  /** This node's name; endpoints on it are local. */
  nodeName?: string | undefined;
  /** This node's topology.kubernetes.io/zone, from its Node object: topology hints are read against it. */
  nodeZone?: string | undefined;
  /** This node's addresses, the first one primary: each gets a NodePort frontend (plus the wildcard). */
  nodeIPs?: string[] | undefined;
  /**
   * kube-proxy's --nodeport-addresses: CIDRs and/or "primary". When set,
   * only node addresses that match serve NodePorts, and there is no
   * wildcard entry (a new address must match before it serves).
   */
  nodePortAddresses?: string[] | undefined;
  /** Valid NodePort range, inclusive; default 30000-32767. */
  nodePortRange?: [number, number] | undefined;
  /** Backend choice for external frontends (--lb-algorithm); kpr.io/lb-algorithm overrides it. */
  lbAlgorithm?: 'random' | 'maglev' | undefined;
}

/** The node addresses that get NodePort frontends, and whether the any-address entry is written. */
export function nodePortAddrs(opts: TranslateOptions): { addrs: string[]; wildcard: boolean } {
  const ips = [...new Set(opts.nodeIPs ?? [])];
  const filter = opts.nodePortAddresses ?? [];
  if (filter.length === 0) return { addrs: ips, wildcard: true };
  const cidrs = filter.filter((f) => f !== 'primary').map((c) => ipaddr.parseCIDR(c));
  const addrs = ips.filter((a, i) => {
    if (i === 0 && filter.includes('primary')) return true;
    const parsed = ipaddr.parse(a);
    return cidrs.some(([net, len]) => net.kind() === parsed.kind() && parsed.match(net, len));
  });
  return { addrs, wildcard: false };
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

function frontendsFor(svc: Service, sp: ServicePort, opts: TranslateOptions, withNodePort: boolean): Frontend[] {
  const proto = IPPROTO[sp.protocol as 'TCP' | 'UDP'];
  const open = { srcAddr: '0.0.0.0', srcLen: 0, blackhole: false };
  const internal = svc.internalTrafficPolicy === 'Local' ? NAT_FLG_INTERNAL_LOCAL : 0;
  const mode = svc.nodePortMode === undefined ? 0 : NAT_FLG_MODE_SET | (NODEPORT_MODE_VALUES[svc.nodePortMode] << NAT_FLG_MODE_SHIFT);
  // sessionAffinity picks per client, not per flow: it keeps the random choice, and needs no table.
  const maglev = (svc.lbAlgorithm ?? opts.lbAlgorithm) === 'maglev' && svc.affinityTimeout === 0 ? NAT_FLG_MAGLEV : 0;
  const external = NAT_FLG_EXTERNAL | mode | maglev | (svc.externalTrafficPolicy === 'Local' ? NAT_FLG_EXTERNAL_LOCAL : 0);
  const out: Frontend[] = [];
  for (const addr of svc.clusterIPs) out.push({ addr, port: sp.port, proto, flags: internal, ...open });
  if (withNodePort && sp.nodePort !== undefined && (svc.type === 'NodePort' || svc.type === 'LoadBalancer')) {
    const np = nodePortAddrs(opts);
    for (const addr of np.addrs) out.push({ addr, port: sp.nodePort, proto, flags: external, ...open });
    if (np.wildcard) out.push({ addr: NODEPORT_ANY, port: sp.nodePort, proto, flags: external, ...open });
  }
  for (const addr of svc.externalIPs) out.push({ addr, port: sp.port, proto, flags: external, ...open });
  for (const addr of svc.loadBalancerIPs) {
    const ranges = svc.loadBalancerSourceRanges.map((c) => ipaddr.parseCIDR(c)).filter(([a]) => a.kind() === 'ipv4');
    if (ranges.length === 0) {
      out.push({ addr, port: sp.port, proto, flags: external, ...open });
      continue;
    }
    const allowed = new Map<string, number>();
    for (const [a, len] of ranges) allowed.set(ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${len}`).toString(), len);
    // The node itself may always reach its LB IPs, as in kube-proxy: from
    // its own addresses, and from the LB IP when that address is local
    // and the packet loops back with it as the source (connect-time uses
    // this entry for the node's own sockets).
    for (const self of [...(opts.nodeIPs ?? []), addr]) if (!allowed.has(self)) allowed.set(self, 32);
    for (const [net, len] of allowed) out.push({ addr, port: sp.port, proto, flags: external, srcAddr: net, srcLen: len, blackhole: false });
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
    const nodePortOk = sp.nodePort === undefined || (sp.nodePort >= lo && sp.nodePort <= hi);
    if (!nodePortOk) {
      // Only the NodePort frontends go; the ClusterIP, external and LB IPs stay.
      skipped.push({
        object: `Service ${svc.namespace}/${svc.name} port ${sp.name || sp.port}`,
        reason: 'nodeport-out-of-range',
        message: `nodePort ${sp.nodePort} is outside the NodePort range ${lo}-${hi}: NodePort frontends not programmed`,
      });
    }
    const sel = selectEndpoints(svc, sp, own, { name: opts.nodeName, zone: opts.nodeZone });
    ports.push({
      name: servicePortName(svc.namespace, svc.name, sp.name, sp.protocol),
      frontends: frontendsFor(svc, sp, opts, nodePortOk),
      backends: sel.cluster,
      localBackends: sel.local,
      affinityTimeout: svc.affinityTimeout,
    });
  }
  return { ports, skipped };
}
