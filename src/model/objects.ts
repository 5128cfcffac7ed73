/**
 * Parsing and validation of Service, EndpointSlice and Node objects.
 *
 * Input is whatever a source hands us: YAML documents, API list items (model
 * instances with Date fields) or watch events (plain JSON). Output is a
 * small validated record, or an error that names the object and the field.
 * Nothing here throws on bad input and nothing does I/O.
 */
import ipaddr from 'ipaddr.js';
import { canonicalAddr } from '../util/ip.js';
import { ZONE_LABEL } from './endpoints.js';
import { LB_ALGORITHM_ANNOTATION, LB_ALGORITHMS, type LbAlgorithm } from './maglev.js';
import {
  NODEPORT_MODE_ANNOTATION,
  type Endpoint,
  type EndpointConditions,
  type EndpointPort,
  type EndpointSlice,
  type IPFamily,
  type IPFamilyPolicy,
  type Node,
  type Protocol,
  type Service,
  type ServicePort,
} from './types.js';

export type ParseResult<T> = { ok: true; value: T } | { ok: false; object: string; reason: string; message: string };

export const PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';
const DEFAULT_AFFINITY_TIMEOUT = 10800;

class Invalid extends Error {}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function field(o: Obj, key: string, path: string): Obj | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) throw new Invalid(`${path}.${key} must be an object`);
  return v;
}

function list(o: Obj, key: string, path: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new Invalid(`${path}.${key} must be a list`);
  return v;
}

function str(o: Obj, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new Invalid(`${path}.${key} must be a string`);
  return v;
}

function strMap(o: Obj | undefined, key: string, path: string): Record<string, string> {
  const m = o ? field(o, key, path) : undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m ?? {})) {
    if (typeof v !== 'string') throw new Invalid(`${path}.${key}.${k} must be a string`);
    out[k] = v;
  }
  return out;
}

function port(v: unknown, path: string): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    throw new Invalid(`${path} must be a port number 1-65535, got ${JSON.stringify(v)}`);
  }
  return n;
}

function protocol(v: unknown, path: string): Protocol {
  if (v === undefined || v === null) return 'TCP';
  if (v === 'TCP' || v === 'UDP' || v === 'SCTP') return v;
  throw new Invalid(`${path} must be TCP, UDP or SCTP, got ${JSON.stringify(v)}`);
}

export function ipFamily(addr: string): 4 | 6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(addr)) return 4;
  if (ipaddr.IPv6.isValid(addr)) return 6;
  return undefined;
}

function ip(v: unknown, path: string): string {
  if (typeof v !== 'string' || ipFamily(v) === undefined) {
    throw new Invalid(`${path} must be an IP address, got ${JSON.stringify(v)}`);
  }
  return canonicalAddr(v);
}

function cidr(v: unknown, path: string): string {
  if (typeof v !== 'string') throw new Invalid(`${path} must be a CIDR, got ${JSON.stringify(v)}`);
  try {
    ipaddr.parseCIDR(v.trim());
  } catch {
    throw new Invalid(`${path} must be a CIDR, got ${JSON.stringify(v)}`);
  }
  return v.trim();
}

function metadata(o: Obj, kind: string): { namespace: string; name: string; meta: Obj } {
  const meta = field(o, 'metadata', kind);
  if (!meta) throw new Invalid('metadata is missing');
  const name = str(meta, 'name', 'metadata');
  if (!name) throw new Invalid('metadata.name is missing');
  return { namespace: str(meta, 'namespace', 'metadata') || 'default', name, meta };
}

function describe(o: unknown, kind: string): string {
  if (!isObj(o) || !isObj(o.metadata)) return `${kind} <unnamed>`;
  const m = o.metadata;
  const ns = typeof m.namespace === 'string' && m.namespace ? m.namespace : 'default';
  return `${kind} ${ns}/${typeof m.name === 'string' ? m.name : '<unnamed>'}`;
}

function checkKind(o: Obj, kind: string, apiVersions: string[]): void {
  // API list items carry no kind or apiVersion; only reject a wrong one.
  const k = o.kind;
  if (k !== undefined && k !== kind) throw new Invalid(`kind is ${JSON.stringify(k)}, expected ${kind}`);
  const av = o.apiVersion;
  if (av !== undefined && !apiVersions.includes(av as string)) {
    throw new Invalid(`apiVersion ${JSON.stringify(av)} is not one of ${apiVersions.join(', ')}`);
  }
}

function guard<T>(o: unknown, kind: string, fn: (o: Obj) => T): ParseResult<T> {
  try {
    if (!isObj(o)) throw new Invalid('not an object');
    return { ok: true, value: fn(o) };
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    return { ok: false, object: describe(o, kind), reason: 'invalid', message: err.message };
  }
}

const FAMILY_NAMES: Record<string, IPFamily> = { IPv4: 4, IPv6: 6 };
const POLICIES: readonly IPFamilyPolicy[] = ['SingleStack', 'PreferDualStack', 'RequireDualStack'];

/**
 * spec.ipFamilies and spec.ipFamilyPolicy, checked against the cluster IPs
 * as the API server allocates them: at most one address per family, in
 * ipFamilies order, and two only when the policy allows dual-stack.
 */
function families(spec: Obj, clusterIPs: string[], headless: boolean): { ipFamilies: IPFamily[]; ipFamilyPolicy: IPFamilyPolicy } {
  const policy = (str(spec, 'ipFamilyPolicy', 'spec') ?? 'SingleStack') as IPFamilyPolicy;
  if (!POLICIES.includes(policy)) throw new Invalid(`spec.ipFamilyPolicy must be ${POLICIES.join(', ')}, got ${JSON.stringify(policy)}`);
  const named = list(spec, 'ipFamilies', 'spec').map((v, i) => {
    const f = typeof v === 'string' ? FAMILY_NAMES[v] : undefined;
    if (f === undefined) throw new Invalid(`spec.ipFamilies[${i}] must be IPv4 or IPv6, got ${JSON.stringify(v)}`);
    return f;
  });
  if (new Set(named).size !== named.length) throw new Invalid('spec.ipFamilies lists a family twice');
  const ofIPs = clusterIPs.map((a) => ipFamily(a) as IPFamily);
  if (new Set(ofIPs).size !== ofIPs.length) throw new Invalid('spec.clusterIPs has two addresses of one family');
  if (policy === 'SingleStack' && (ofIPs.length > 1 || named.length > 1)) {
    throw new Invalid('spec.ipFamilyPolicy SingleStack allows one family only');
  }
  if (!headless) {
    ofIPs.forEach((f, i) => {
      if (named[i] !== undefined && named[i] !== f) {
        throw new Invalid(`spec.clusterIPs[${i}] is IPv${f} but spec.ipFamilies[${i}] is IPv${named[i]}`);
      }
    });
  }
  return { ipFamilies: named.length > 0 ? named : ofIPs, ipFamilyPolicy: policy };
}

export function parseService(raw: unknown): ParseResult<Service> {
  return guard(raw, 'Service', (o) => {
    checkKind(o, 'Service', ['v1']);
    const { namespace, name, meta } = metadata(o, 'Service');
    const spec = field(o, 'spec', 'Service') ?? {};
    const type = (str(spec, 'type', 'spec') ?? 'ClusterIP') as Service['type'];
    if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type)) {
      throw new Invalid(`spec.type ${JSON.stringify(type)} is not a Service type`);
    }
    const labels = strMap(meta, 'labels', 'metadata');
    const annotations = strMap(meta, 'annotations', 'metadata');

    const clusterIP = str(spec, 'clusterIP', 'spec');
    const rawIPs = list(spec, 'clusterIPs', 'spec');
    const headless = clusterIP === 'None' || rawIPs[0] === 'None';
    const all = headless ? [] : rawIPs.length > 0 ? rawIPs : clusterIP ? [clusterIP] : [];
    const clusterIPs = all.map((v, i) => ip(v, `spec.clusterIPs[${i}]`));
    const { ipFamilies, ipFamilyPolicy } = families(spec, clusterIPs, headless);

    const ports: ServicePort[] = list(spec, 'ports', 'spec').map((p, i) => {
      const path = `spec.ports[${i}]`;
      if (!isObj(p)) throw new Invalid(`${path} must be an object`);
      const tp = p.targetPort;
      let targetPort: number | string | undefined;
      if (typeof tp === 'string' && !/^\d+$/.test(tp)) targetPort = tp;
      else if (tp !== undefined && tp !== null) targetPort = port(tp, `${path}.targetPort`);
      return {
        name: str(p, 'name', path) ?? '',
        protocol: protocol(p.protocol, `${path}.protocol`),
        port: port(p.port, `${path}.port`),
        targetPort,
        nodePort: p.nodePort === undefined || p.nodePort === null ? undefined : port(p.nodePort, `${path}.nodePort`),
      };
    });
    const seen = new Set<string>();
    for (const p of ports) {
      const k = `${p.name}/${p.protocol}`;
      if (seen.has(k)) throw new Invalid(`spec.ports has two ports named ${JSON.stringify(p.name)} for ${p.protocol}`);
      seen.add(k);
    }

    const status = field(o, 'status', 'Service');
    const lb = status ? field(status, 'loadBalancer', 'status') : undefined;
    // ipMode Proxy: the load balancer must see the traffic (it proxies and
    // may apply its own policy), so kube-proxy leaves that IP alone.
    const loadBalancerIPs = (lb ? list(lb, 'ingress', 'status.loadBalancer') : [])
      .map((g, i) => {
        if (!isObj(g) || g.ip === undefined || g.ip === null) return undefined;
        const addr = ip(g.ip, `status.loadBalancer.ingress[${i}].ip`);
        const mode = str(g, 'ipMode', `status.loadBalancer.ingress[${i}]`);
        return mode === 'Proxy' ? undefined : addr;
      })
      .filter((a): a is string => a !== undefined);

    const affinity = str(spec, 'sessionAffinity', 'spec') ?? 'None';
    let affinityTimeout = 0;
    if (affinity === 'ClientIP') {
      const cfg = field(spec, 'sessionAffinityConfig', 'spec');
      const cip = cfg ? field(cfg, 'clientIP', 'spec.sessionAffinityConfig') : undefined;
      const t = cip?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 86400) {
        throw new Invalid(`spec.sessionAffinityConfig.clientIP.timeoutSeconds must be 1-86400`);
      }
      affinityTimeout = t;
    } else if (affinity !== 'None') {
      throw new Invalid(`spec.sessionAffinity must be None or ClientIP`);
    }

    const policy = (key: string): 'Cluster' | 'Local' => {
      const v = str(spec, key, 'spec') ?? 'Cluster';
      if (v !== 'Cluster' && v !== 'Local') throw new Invalid(`spec.${key} must be Cluster or Local`);
      return v;
    };
    const hc = spec.healthCheckNodePort;
    const mode = annotations[NODEPORT_MODE_ANNOTATION];
    if (mode !== undefined && mode !== 'snat' && mode !== 'dsr' && mode !== 'hybrid') {
      throw new Invalid(`metadata.annotations["${NODEPORT_MODE_ANNOTATION}"] must be snat, dsr or hybrid, got ${JSON.stringify(mode)}`);
    }
    const algorithm = annotations[LB_ALGORITHM_ANNOTATION];
    if (algorithm !== undefined && !(LB_ALGORITHMS as readonly string[]).includes(algorithm)) {
      throw new Invalid(`metadata.annotations["${LB_ALGORITHM_ANNOTATION}"] must be ${LB_ALGORITHMS.join(' or ')}, got ${JSON.stringify(algorithm)}`);
    }

    return {
      namespace,
      name,
      uid: str(meta, 'uid', 'metadata'),
      type,
      clusterIPs,
      ipFamilies,
      ipFamilyPolicy,
      headless,
      proxyNameLabel: labels[PROXY_NAME_LABEL],
      ports,
      externalIPs: list(spec, 'externalIPs', 'spec').map((v, i) => ip(v, `spec.externalIPs[${i}]`)),
      loadBalancerIPs,
      loadBalancerSourceRanges: list(spec, 'loadBalancerSourceRanges', 'spec').map((v, i) =>
        cidr(v, `spec.loadBalancerSourceRanges[${i}]`),
      ),
      externalTrafficPolicy: policy('externalTrafficPolicy'),
      internalTrafficPolicy: policy('internalTrafficPolicy'),
      healthCheckNodePort: hc === undefined || hc === null ? undefined : port(hc, 'spec.healthCheckNodePort'),
      affinityTimeout,
      annotations,
      nodePortMode: mode as Service['nodePortMode'],
      trafficDistribution: str(spec, 'trafficDistribution', 'spec'),
      lbAlgorithm: algorithm as LbAlgorithm | undefined,
    };
  });
}

function condition(c: Obj | undefined, key: string, dflt: boolean): boolean {
  const v = c?.[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new Invalid(`conditions.${key} must be a boolean`);
  return v;
}

function triggerTime(annotations: Record<string, string>): number | undefined {
  const v = annotations[TRIGGER_TIME_ANNOTATION];
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Shared by every endpoint without hints, and the conditions below by every
 * endpoint with the same three: the store keeps a million endpoints at 100k
 * Services, and these were three of its objects per endpoint. Frozen, so
 * nothing can change one endpoint's through another's.
 */
const NO_HINTS = Object.freeze([]) as unknown as string[];
const CONDITIONS = new Map<number, EndpointConditions>();

function sharedConditions(ready: boolean, serving: boolean, terminating: boolean): EndpointConditions {
  const k = (ready ? 1 : 0) | (serving ? 2 : 0) | (terminating ? 4 : 0);
  let c = CONDITIONS.get(k);
  if (!c) CONDITIONS.set(k, (c = Object.freeze({ ready, serving, terminating })));
  return c;
}

function hintNames(e: Obj, key: string, path: string): string[] {
  const hints = field(e, 'hints', path);
  if (!hints) return NO_HINTS;
  const names = list(hints, key, `${path}.hints`).map((h, i) => {
    const name = isObj(h) ? str(h, 'name', `${path}.hints.${key}[${i}]`) : undefined;
    if (!name) throw new Invalid(`${path}.hints.${key}[${i}].name is missing`);
    return name;
  });
  return names.length > 0 ? names : NO_HINTS;
}

export function parseEndpointSlice(raw: unknown): ParseResult<EndpointSlice> {
  return guard(raw, 'EndpointSlice', (o) => {
    checkKind(o, 'EndpointSlice', ['discovery.k8s.io/v1']);
    const { namespace, name, meta } = metadata(o, 'EndpointSlice');
    const labels = strMap(meta, 'labels', 'metadata');
    const serviceName = labels[SERVICE_NAME_LABEL];
    if (!serviceName) throw new Invalid(`metadata.labels["${SERVICE_NAME_LABEL}"] is missing`);
    const addressType = str(o, 'addressType', 'EndpointSlice');
    if (addressType !== 'IPv4' && addressType !== 'IPv6' && addressType !== 'FQDN') {
      throw new Invalid(`addressType must be IPv4, IPv6 or FQDN, got ${JSON.stringify(addressType)}`);
    }
    const ports: EndpointPort[] = list(o, 'ports', 'EndpointSlice').flatMap((p, i) => {
      const path = `ports[${i}]`;
      if (!isObj(p)) throw new Invalid(`${path} must be an object`);
      // A port without a number means "all ports"; kube-proxy ignores it.
      if (p.port === undefined || p.port === null) return [];
      return [{ name: str(p, 'name', path) ?? '', protocol: protocol(p.protocol, `${path}.protocol`), port: port(p.port, `${path}.port`) }];
    });
    const endpoints: Endpoint[] = list(o, 'endpoints', 'EndpointSlice').map((e, i) => {
      const path = `endpoints[${i}]`;
      if (!isObj(e)) throw new Invalid(`${path} must be an object`);
      const addrs = list(e, 'addresses', path);
      const addresses = addressType === 'FQDN' ? [] : addrs.map((a, j) => ip(a, `${path}.addresses[${j}]`));
      const c = field(e, 'conditions', path);
      const ready = condition(c, 'ready', true);
      return {
        addresses,
        // kube-proxy (endpointslicecache.go) reads a missing serving as
        // true, like a missing ready; only terminating defaults to false.
        conditions: sharedConditions(ready, condition(c, 'serving', true), condition(c, 'terminating', false)),
        nodeName: str(e, 'nodeName', path),
        zoneHints: hintNames(e, 'forZones', path),
        nodeHints: hintNames(e, 'forNodes', path),
      };
    });
    return {
      namespace,
      name,
      serviceName,
      addressType,
      ports,
      endpoints,
      triggerTime: triggerTime(strMap(meta, 'annotations', 'metadata')),
    };
  });
}

export function parseNode(raw: unknown): ParseResult<Node> {
  return guard(raw, 'Node', (o) => {
    checkKind(o, 'Node', ['v1']);
    const meta = field(o, 'metadata', 'Node');
    const name = meta ? str(meta, 'name', 'metadata') : undefined;
    if (!meta || !name) throw new Invalid('metadata.name is missing');
    const labels = strMap(meta, 'labels', 'metadata');
    const spec = field(o, 'spec', 'Node') ?? {};
    const status = field(o, 'status', 'Node') ?? {};
    const addresses = list(status, 'addresses', 'status').map((a, i) => {
      const path = `status.addresses[${i}]`;
      if (!isObj(a)) throw new Invalid(`${path} must be an object`);
      const type = str(a, 'type', path);
      const address = str(a, 'address', path);
      if (!type || !address) throw new Invalid(`${path} needs type and address`);
      return { type, address };
    });
    const taintKeys = list(spec, 'taints', 'spec').flatMap((t) => (isObj(t) && typeof t.key === 'string' ? [t.key] : []));
    return {
      name,
      zone: labels[ZONE_LABEL] || undefined,
      labels,
      addresses,
      deleting: meta.deletionTimestamp !== undefined && meta.deletionTimestamp !== null,
      taintKeys,
    };
  });
}
