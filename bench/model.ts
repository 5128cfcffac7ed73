/**
 * The benchmark's Service model: one list of Services that every mode is
 * built from (kube-proxy iptables and nftables renderings, kpr manifests),
 * so the modes differ only in how they translate, never in what.
 *
 * Addresses: pods and the node in 192.0.2.0/24 (NodeTopology), VIPs in
 * 198.18.0.0/15, and the never-contacted endpoints of filler Services in
 * 203.0.113.0/24. An IPv6 model (family 6) has its VIPs in 2001:db8:f::/64
 * and filler endpoints in 2001:db8:0:ff::/64 (nodes and pods are under
 * 2001:db8::/48). Nothing here routes out of the lab's namespaces.
 */
import { service, slice } from 'kpr/lab';

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

/** The address family of a model: every address in it is of that family, as with one of kube-proxy's per-family proxiers. */
export type IpFamily = 4 | 6;

export interface BenchModel {
  /** Absent means IPv4. */
  family?: IpFamily;
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
export const TARGET_VIP6 = '2001:db8:f::10';
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

export function familyOf(m: Pick<BenchModel, 'family'>): IpFamily {
  return m.family ?? 4;
}

/** "ip:port", with the IPv6 address in brackets (Go's net.JoinHostPort: kube-proxy's endpoint string). */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The host prefix length of an address's family (kube-proxy writes "-d VIP/32" or "/128"). */
export function hostBits(ip: string): 32 | 128 {
  return ip.includes(':') ? 128 : 32;
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Filler VIPs start above the target's so they can never collide with it (IPv6: 2001:db8:f::1:0 and up). */
export function fillerVip(i: number, family: IpFamily = 4): string {
  if (family === 6) {
    if (i < 0 || i >= 0xfff0000) throw new Error(`filler index ${i} is outside the bench's IPv6 VIP range`);
    return `2001:db8:f::${(1 + Math.floor(i / 0x10000)).toString(16)}:${(i % 0x10000).toString(16)}`;
  }
  const base = (198 << 24) + (18 << 16) + 256; // 198.18.1.0
  if (i < 0 || i >= 131072 - 512) throw new Error(`filler index ${i} is outside 198.18.0.0/15`);
  return intToIp((base + i) >>> 0);
}

/** Endpoint j of filler i: unique per Service, inside 203.0.113.0/24 or 2001:db8:0:ff::/64 (port varies, the address wraps). */
export function fillerBackend(i: number, j: number, perService: number, family: IpFamily = 4): BenchBackend {
  const k = i * perService + j;
  const host = (k % 250) + 1;
  return { ip: family === 6 ? `2001:db8:0:ff::${host.toString(16)}` : `203.0.113.${host}`, port: 1024 + Math.floor(k / 250) };
}

export function fillerService(i: number, endpoints: number, family: IpFamily = 4): BenchService {
  const backends: BenchBackend[] = [];
  for (let j = 0; j < endpoints; j++) backends.push(fillerBackend(i, j, endpoints, family));
  return { namespace: FILLER_NS, name: `svc-${i}`, portName: 'http', vip: fillerVip(i, family), port: 80, protocol: 'TCP', backends };
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
  /** IPv4 (default) or IPv6 VIPs and filler endpoints; targetBackends and clusterCidr must be of the same family. */
  family?: IpFamily;
}

/**
 * Build the model. kube-proxy's KUBE-SERVICES order follows Go map
 * iteration, i.e. it is effectively random; "random" places the target at a
 * seeded random index, "worst" places it last (the longest linear walk).
 */
export function buildModel(o: ModelOptions): BenchModel {
  if (!Number.isInteger(o.services) || o.services < 1) throw new Error(`services must be >= 1, got ${o.services}`);
  const family = o.family ?? 4;
  for (const a of [o.clusterCidr, ...o.targetBackends.map((b) => b.ip)]) {
    if (a.includes(':') !== (family === 6)) throw new Error(`${a} is not an IPv${family} address or CIDR`);
  }
  const target: BenchService = {
    namespace: TARGET_NS,
    name: TARGET_NAME,
    portName: 'http',
    vip: family === 6 ? TARGET_VIP6 : TARGET_VIP,
    port: TARGET_PORT,
    protocol: 'TCP',
    backends: o.targetBackends,
    ...(o.targetNodePort ? { nodePort: o.targetNodePort } : {}),
  };
  const services: BenchService[] = [];
  for (let i = 0; i < o.services - 1; i++) services.push(fillerService(i, o.fillerEndpoints, family));
  const targetIndex = o.position === 'worst' ? services.length : Math.floor(prng(o.seed ?? 1)() * (services.length + 1));
  services.splice(targetIndex, 0, target);
  return { services, targetIndex, clusterCidr: o.clusterCidr, ...(family === 6 ? { family } : {}) };
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

/** The Service object of a bench Service. */
export function serviceObject(s: BenchService): Record<string, unknown> {
  const port = {
    ...(s.portName ? { name: s.portName } : {}),
    port: s.port,
    protocol: s.protocol,
    targetPort: s.backends[0]?.port ?? s.port,
    ...(s.nodePort ? { nodePort: s.nodePort } : {}),
  };
  return service(s.name, { ns: s.namespace, type: s.nodePort ? 'NodePort' : 'ClusterIP', clusterIP: s.vip, ports: [port] });
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
  // A Service with no endpoints still has an (empty) slice, as the API shows.
  if (byPort.size === 0) byPort.set(s.port, []);
  let n = 0;
  return [...byPort].map(([port, ips]) =>
    slice(
      `${s.name}-${n++}`,
      s.name,
      ips.map((ip) => ({ ip, ready: true })),
      [{ ...(s.portName ? { name: s.portName } : {}), port, protocol: s.protocol }],
      { ns: s.namespace, addressType: s.vip.includes(':') ? 'IPv6' : 'IPv4' },
    ),
  );
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
