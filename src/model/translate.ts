/**
 * The translation layer: validated Services and EndpointSlices in, desired
 * frontend and backend entries out. Pure, so it is tested without BPF and
 * shared by every source.
 */
import ipaddr from 'ipaddr.js';
import { addrFamily, anyAddr, canonicalAddr } from '../util/ip.js';
import { selectEndpoints } from './endpoints.js';
import {
  IPPROTO,
  NAT_FLG_EXTERNAL,
  NAT_FLG_EXTERNAL_LOCAL,
  NAT_FLG_INTERNAL_LOCAL,
  NAT_FLG_MAGLEV,
  NAT_FLG_MODE_SET,
  NAT_FLG_MODE_SHIFT,
  NODEPORT_MODES,
  nodePortAny,
  serviceKey,
  servicePortName,
  type DesiredServicePort,
  type EndpointSlice,
  type Frontend,
  type IPFamily,
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
  const ips = [...new Set((opts.nodeIPs ?? []).map(canonicalAddr))];
  const filter = opts.nodePortAddresses ?? [];
  if (filter.length === 0) return { addrs: ips, wildcard: true };
  const cidrs = filter.filter((f) => f !== 'primary').map((c) => ipaddr.parseCIDR(c));
  // "primary" is the node's first address of each family (kube-proxy's per-family node IP).
  const primary = new Set([4, 6].map((f) => ips.find((a) => addrFamily(a) === f)));
  const addrs = ips.filter((a) => {
    if (primary.has(a) && filter.includes('primary')) return true;
    const parsed = ipaddr.parse(a);
    return cidrs.some(([net, len]) => net.kind() === parsed.kind() && parsed.match(net, len));
  });
  return { addrs, wildcard: false };
}

/**
 * Whether this node has an address of the family, so a NodePort of that
 * family has somewhere to be; undefined when no node address is known at
 * all (connect-time only: no --devices or --node-ip), as before.
 */
export function hasNodeAddress(opts: TranslateOptions, family: IPFamily): boolean | undefined {
  const ips = opts.nodeIPs ?? [];
  return ips.length === 0 ? undefined : ips.some((a) => addrFamily(a) === family);
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
  if (svc.clusterIPs.length === 0) return { object, reason: 'no-cluster-ip', message: 'no cluster IP' };
  return undefined;
}

/**
 * The families a Service is programmed for: those of its cluster IPs, as
 * kube-proxy's per-family proxiers see it (a family without a cluster IP
 * ignores the Service, external and LB IPs of that family included).
 */
export function serviceFamilies(svc: Service): IPFamily[] {
  return [...new Set(svc.clusterIPs.map(addrFamily))];
}

/** Notes on addresses of a family the Service is not programmed for; they are left alone. */
function familySkips(svc: Service, families: IPFamily[]): Skip[] {
  const object = `Service ${svc.namespace}/${svc.name}`;
  const out: Skip[] = [];
  if (svc.ipFamilyPolicy === 'RequireDualStack' && families.length < 2) {
    out.push({ object, reason: 'missing-family', message: `RequireDualStack but only an IPv${families[0]} cluster IP: the other family is not programmed` });
  }
  const stray = [...svc.externalIPs, ...svc.loadBalancerIPs].filter((a) => !families.includes(addrFamily(a)));
  if (stray.length > 0) {
    out.push({ object, reason: 'family-mismatch', message: `no cluster IP of the family of ${stray.join(', ')}: not programmed` });
  }
  return out;
}

/** loadBalancerSourceRanges of one family, as network address and length; [] means unrestricted. */
function sourceRanges(svc: Service, family: IPFamily): Array<[string, number]> {
  const ranges = svc.loadBalancerSourceRanges
    .map((c) => ipaddr.parseCIDR(c))
    .filter(([a]) => (a.kind() === 'ipv4' ? 4 : 6) === family);
  // A zero-length range allows every source, like no range at all (kube-proxy).
  if (ranges.some(([, len]) => len === 0)) return [];
  return ranges.map(([a, len]) => {
    const net = a.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(`${a.toString()}/${len}`) : ipaddr.IPv6.networkAddressFromCIDR(`${a.toString()}/${len}`);
    return [net.toString(), len];
  });
}

function frontendsFor(svc: Service, sp: ServicePort, opts: TranslateOptions, withNodePort: boolean, family: IPFamily): Frontend[] {
  const proto = IPPROTO[sp.protocol as 'TCP' | 'UDP'];
  const ofFamily = (addrs: string[]) => addrs.filter((a) => addrFamily(a) === family);
  const hostLen = family === 4 ? 32 : 128;
  const open = { srcAddr: anyAddr(family), srcLen: 0, blackhole: false };
  const internal = svc.internalTrafficPolicy === 'Local' ? NAT_FLG_INTERNAL_LOCAL : 0;
  const mode = svc.nodePortMode === undefined ? 0 : NAT_FLG_MODE_SET | (NODEPORT_MODES[svc.nodePortMode] << NAT_FLG_MODE_SHIFT);
  // sessionAffinity picks per client, not per flow: it keeps the random choice, and needs no table.
  const maglev = (svc.lbAlgorithm ?? opts.lbAlgorithm) === 'maglev' && svc.affinityTimeout === 0 ? NAT_FLG_MAGLEV : 0;
  const external = NAT_FLG_EXTERNAL | mode | maglev | (svc.externalTrafficPolicy === 'Local' ? NAT_FLG_EXTERNAL_LOCAL : 0);
  const out: Frontend[] = [];
  for (const addr of ofFamily(svc.clusterIPs)) out.push({ addr, port: sp.port, proto, flags: internal, ...open });
  if (withNodePort && sp.nodePort !== undefined && (svc.type === 'NodePort' || svc.type === 'LoadBalancer')) {
    const np = nodePortAddrs(opts);
    for (const addr of ofFamily(np.addrs)) out.push({ addr, port: sp.nodePort, proto, flags: external, ...open });
    if (np.wildcard) out.push({ addr: nodePortAny(family), port: sp.nodePort, proto, flags: external, ...open });
  }
  for (const addr of ofFamily(svc.externalIPs)) out.push({ addr, port: sp.port, proto, flags: external, ...open });
  const ranges = sourceRanges(svc, family);
  const primaryText = ofFamily((opts.nodeIPs ?? []).map(canonicalAddr))[0];
  const primary = primaryText === undefined ? undefined : ipaddr.parse(primaryText);
  for (const addr of ofFamily(svc.loadBalancerIPs)) {
    if (ranges.length === 0) {
      out.push({ addr, port: sp.port, proto, flags: external, ...open });
      continue;
    }
    const allowed = new Map<string, number>(ranges);
    // kube-proxy's allowFromNode, per family: when a range holds this
    // node's primary address of the family, the LB IP is allowed as a
    // source too, the one a packet from the node carries when the LB IP is
    // local and it loops back (connect-time also reads this entry for the
    // node's unbound IPv6 sockets, sock_lb.bpf.c). The node gets no other
    // way in: its own packets are judged by their source.
    if (primary !== undefined && ranges.some(([net, len]) => primary.match(ipaddr.parse(net), len)) && !allowed.has(addr)) {
      allowed.set(addr, hostLen);
    }
    for (const [net, len] of allowed) out.push({ addr, port: sp.port, proto, flags: external, srcAddr: net, srcLen: len, blackhole: false });
    // Sources outside every range hit this entry and are dropped.
    out.push({ addr, port: sp.port, proto, flags: external, ...open, blackhole: true });
  }
  return out;
}

/** kpr load-balances TCP and UDP; an SCTP port is skipped (and said so). */
const unsupported = (sp: ServicePort): boolean => sp.protocol === 'SCTP';

/** The names of the ports translateService gives a Service (none when it skips the Service), without selecting endpoints. */
export function servicePortNames(svc: Service): string[] {
  if (serviceSkipReason(svc)) return [];
  return svc.ports.filter((sp) => !unsupported(sp)).map((sp) => servicePortName(svc.namespace, svc.name, sp.name, sp.protocol));
}

export function translateService(svc: Service, slices: EndpointSlice[], opts: TranslateOptions = {}): Translation {
  const skip = serviceSkipReason(svc);
  if (skip) return { ports: [], skipped: [skip] };
  const families = serviceFamilies(svc);
  const ports: DesiredServicePort[] = [];
  const skipped: Skip[] = familySkips(svc, families);
  const own = slices.filter((s) => s.namespace === svc.namespace && s.serviceName === svc.name);
  for (const sp of svc.ports) {
    if (unsupported(sp)) {
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
    // One Service port, one name and one id for every family; each
    // family's endpoints are selected on their own, as kube-proxy's
    // per-family proxiers do.
    const port: DesiredServicePort = {
      name: servicePortName(svc.namespace, svc.name, sp.name, sp.protocol),
      service: serviceKey(svc.namespace, svc.name),
      proto: sp.protocol,
      frontends: [],
      backends: [],
      localBackends: [],
      affinityTimeout: svc.affinityTimeout,
    };
    for (const family of families) {
      const sel = selectEndpoints(svc, sp, own, { name: opts.nodeName, zone: opts.nodeZone }, family);
      // A single-stack node of the other family (IPv6-only, say) still
      // serves this family's ClusterIP, external and LB IPs, as kube-proxy
      // does; a NodePort has no node address to be on.
      const addressless = sp.nodePort !== undefined && (svc.type === 'NodePort' || svc.type === 'LoadBalancer') && hasNodeAddress(opts, family) === false;
      if (addressless && nodePortOk) {
        skipped.push({
          object: `Service ${svc.namespace}/${svc.name} port ${sp.name || sp.port}`,
          reason: 'no-node-address',
          message: `this node has no IPv${family} address: the IPv${family} NodePort ${sp.nodePort} is not programmed`,
        });
      }
      port.frontends.push(...frontendsFor(svc, sp, opts, nodePortOk && !addressless, family));
      port.backends.push(...sel.cluster);
      port.localBackends.push(...sel.local);
    }
    ports.push(port);
  }
  return { ports, skipped };
}
