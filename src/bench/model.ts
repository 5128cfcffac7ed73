/**
 * The benchmark's Service model: one list of Services that every mode is
 * built from (kube-proxy iptables and nftables renderings, kpr manifests),
 * so the modes differ only in how they translate, never in what.
 *
 * Addresses: pods and the node in 192.0.2.0/24 (NodeTopology), VIPs in
 * 198.18.0.0/15, and the never-contacted endpoints of filler Services in
 * 203.0.113.0/24. Nothing here routes out of the lab's namespaces.
 */

export interface BenchBackend {
  ip: string;
  port: number;
}

export interface BenchService {
  namespace: string;
  name: string;
  /** Service port name ('' for an unnamed port, as kube-proxy prints it). */
  portName: string;
  vip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  nodePort?: number;
  backends: BenchBackend[];
}

export interface BenchModel {
  /** Services in kube-proxy rule order (the order of KUBE-SERVICES). */
  services: BenchService[];
  /** Index of the measured Service in `services`. */
  targetIndex: number;
  /** Pod CIDR: kube-proxy masquerades Service traffic from outside it. */
  clusterCidr: string;
}

export const TARGET_NS = 'bench';
export const TARGET_NAME = 'target';
export const TARGET_VIP = '198.18.0.10';
export const TARGET_PORT = 80;
export const FILLER_NS = 'fill';

/**
 * servicePortName as kube-proxy formats it: "ns/name:port", and "ns/name:"
 * for an unnamed port (the trailing colon is part of the hashed name: see
 * the seed chains in test/fixtures/bench).
 */
export function servicePortName(s: Pick<BenchService, 'namespace' | 'name' | 'portName'>): string {
  return `${s.namespace}/${s.name}:${s.portName}`;
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Filler VIPs start above the target's so they can never collide with it. */
export function fillerVip(i: number): string {
  const base = (198 << 24) + (18 << 16) + 256; // 198.18.1.0
  if (i < 0 || i >= 131072 - 512) throw new Error(`filler index ${i} is outside 198.18.0.0/15`);
  return intToIp((base + i) >>> 0);
}

/** Endpoint j of filler i: unique per Service, inside 203.0.113.0/24 (port varies, the address wraps). */
export function fillerBackend(i: number, j: number, perService: number): BenchBackend {
  const k = i * perService + j;
  return { ip: `203.0.113.${(k % 250) + 1}`, port: 1024 + Math.floor(k / 250) };
}

export function fillerService(i: number, endpoints: number): BenchService {
  const backends: BenchBackend[] = [];
  for (let j = 0; j < endpoints; j++) backends.push(fillerBackend(i, j, endpoints));
  return { namespace: FILLER_NS, name: `svc-${i}`, portName: 'http', vip: fillerVip(i), port: 80, protocol: 'TCP', backends };
}

/** A small deterministic PRNG (mulberry32) so a "random" position is reproducible from the seed in the results. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Position = 'random' | 'worst';

export interface ModelOptions {
  /** Total Services, the target included. */
  services: number;
  /** Endpoints of each filler Service. */
  fillerEndpoints: number;
  /** Backends of the target Service. */
  targetBackends: BenchBackend[];
  position: Position;
  seed?: number;
  clusterCidr: string;
  targetNodePort?: number;
}

/**
 * Build the model. kube-proxy's KUBE-SERVICES order follows Go map
 * iteration, i.e. it is effectively random; "random" places the target at a
 * seeded random index, "worst" places it last (the longest linear walk).
 */
export function buildModel(o: ModelOptions): BenchModel {
  if (!Number.isInteger(o.services) || o.services < 1) throw new Error(`services must be >= 1, got ${o.services}`);
  const target: BenchService = {
    namespace: TARGET_NS,
    name: TARGET_NAME,
    portName: 'http',
    vip: TARGET_VIP,
    port: TARGET_PORT,
    protocol: 'TCP',
    backends: o.targetBackends,
    ...(o.targetNodePort ? { nodePort: o.targetNodePort } : {}),
  };
  const services: BenchService[] = [];
  for (let i = 0; i < o.services - 1; i++) services.push(fillerService(i, o.fillerEndpoints));
  const targetIndex = o.position === 'worst' ? services.length : Math.floor(prng(o.seed ?? 1)() * (services.length + 1));
  services.splice(targetIndex, 0, target);
  return { services, targetIndex, clusterCidr: o.clusterCidr };
}

export function targetOf(m: BenchModel): BenchService {
  const t = m.services[m.targetIndex];
  if (!t) throw new Error('model has no target');
  return t;
}

/** The same model with the target moved (only the order changes). */
export function withPosition(m: BenchModel, position: Position, seed = 1): BenchModel {
  const services = m.services.slice();
  const [target] = services.splice(m.targetIndex, 1);
  if (!target) throw new Error('model has no target');
  const targetIndex = position === 'worst' ? services.length : Math.floor(prng(seed)() * (services.length + 1));
  services.splice(targetIndex, 0, target);
  return { ...m, services, targetIndex };
}

/** Service and EndpointSlice objects, shaped as kubectl prints them. */
export function serviceObject(s: BenchService): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace },
    spec: {
      type: s.nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP: s.vip,
      clusterIPs: [s.vip],
      ports: [
        {
          ...(s.portName ? { name: s.portName } : {}),
          port: s.port,
          protocol: s.protocol,
          targetPort: s.backends[0]?.port ?? s.port,
          ...(s.nodePort ? { nodePort: s.nodePort } : {}),
        },
      ],
    },
  };
}

/**
 * EndpointSlices for a Service. Backends on different ports cannot share a
 * slice (a slice has one port list), so backends are grouped by port.
 */
export function sliceObjects(s: BenchService): Array<Record<string, unknown>> {
  const byPort = new Map<number, string[]>();
  for (const b of s.backends) {
    let l = byPort.get(b.port);
    if (!l) byPort.set(b.port, (l = []));
    l.push(b.ip);
  }
  const out: Array<Record<string, unknown>> = [];
  let n = 0;
  for (const [port, ips] of byPort) {
    out.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-${n++}`, namespace: s.namespace, labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: [{ ...(s.portName ? { name: s.portName } : {}), port, protocol: s.protocol }],
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    });
  }
  // A Service with no endpoints still has an (empty) slice, as the API shows.
  if (out.length === 0) {
    out.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${s.name}-0`, namespace: s.namespace, labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: [{ ...(s.portName ? { name: s.portName } : {}), port: s.port, protocol: s.protocol }],
      endpoints: [],
    });
  }
  return out;
}

/**
 * One `kind: List` JSON document (JSON is YAML). Built piecewise so 50k
 * Services do not need one giant intermediate object.
 */
export function manifestJson(services: BenchService[]): string {
  const parts: string[] = [];
  for (const s of services) {
    parts.push(JSON.stringify(serviceObject(s)));
    for (const sl of sliceObjects(s)) parts.push(JSON.stringify(sl));
  }
  return `{"apiVersion":"v1","kind":"List","items":[\n${parts.join(',\n')}\n]}\n`;
}
