/**
 * Validated Kubernetes objects (the subset kpr needs) and the desired
 * data-path state the translation layer produces from them.
 */

import type { IPFamily } from '../util/ip.js';

export type { IPFamily } from '../util/ip.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export type IPFamilyPolicy = 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';

export const IPPROTO: Record<'TCP' | 'UDP', number> = { TCP: 6, UDP: 17 };

export interface ServicePort {
  name: string;
  protocol: Protocol;
  port: number;
  targetPort: number | string | undefined;
  nodePort: number | undefined;
}

export interface Service {
  namespace: string;
  name: string;
  uid: string | undefined;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** One cluster IP per family, in spec order (the primary family first). */
  clusterIPs: string[];
  /** spec.ipFamilies, or the families of clusterIPs when unset. */
  ipFamilies: IPFamily[];
  ipFamilyPolicy: IPFamilyPolicy;
  headless: boolean;
  proxyNameLabel: string | undefined;
  ports: ServicePort[];
  /** Either family: each serves only the Service's side of its own family. */
  externalIPs: string[];
  /** status.loadBalancer.ingress IPs (VIP mode), either family. */
  loadBalancerIPs: string[];
  loadBalancerSourceRanges: string[];
  externalTrafficPolicy: 'Cluster' | 'Local';
  internalTrafficPolicy: 'Cluster' | 'Local';
  healthCheckNodePort: number | undefined;
  /** sessionAffinity ClientIP timeout in seconds, 0 when affinity is off. */
  affinityTimeout: number;
  annotations: Record<string, string>;
  /** kpr.io/nodeport-mode, when set */
  nodePortMode: 'snat' | 'dsr' | 'hybrid' | undefined;
  /** spec.trafficDistribution as written (PreferClose, PreferSameZone, PreferSameNode, ...). */
  trafficDistribution: string | undefined;
  /** kpr.io/lb-algorithm, when set: overrides --lb-algorithm for external frontends */
  lbAlgorithm?: 'random' | 'maglev' | undefined;
}

export interface EndpointConditions {
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

export interface Endpoint {
  addresses: string[];
  conditions: EndpointConditions;
  nodeName: string | undefined;
  /** hints.forZones[].name */
  zoneHints: string[];
  /** hints.forNodes[].name (Kubernetes 1.33+) */
  nodeHints: string[];
}

/** The part of a Node kpr needs: its zone and its addresses. */
export interface Node {
  name: string;
  /** topology.kubernetes.io/zone label, if set */
  zone: string | undefined;
  labels: Record<string, string>;
  /** status.addresses, in the order the kubelet wrote them */
  addresses: Array<{ type: string; address: string }>;
  /** metadata.deletionTimestamp is set */
  deleting: boolean;
  /** spec.taints[].key */
  taintKeys: string[];
}

export interface EndpointPort {
  name: string;
  protocol: Protocol;
  port: number;
}

export interface EndpointSlice {
  namespace: string;
  name: string;
  /** Owning Service, from the kubernetes.io/service-name label. */
  serviceName: string;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  ports: EndpointPort[];
  endpoints: Endpoint[];
  /** endpoints.kubernetes.io/last-change-trigger-time, ms since epoch. */
  triggerTime: number | undefined;
}

/** A Service port's stable identity, as kube-proxy names it: "ns/name:port/PROTO". */
export function servicePortName(ns: string, name: string, port: string, proto: Protocol): string {
  return `${ns}/${name}:${port}/${proto}`;
}

export function serviceKey(ns: string, name: string): string {
  return `${ns}/${name}`;
}

/**
 * The Service and protocol of a name servicePortName() built. Only for names
 * read back from the maps (kpr_svc_meta) at adoption: everything that comes
 * from translate carries them as fields of DesiredServicePort.
 */
export function parseServicePortName(name: string): { service: string; proto: string } | undefined {
  const colon = name.lastIndexOf(':');
  const slash = name.lastIndexOf('/');
  return colon > 0 && slash > colon ? { service: name.slice(0, colon), proto: name.slice(slash + 1) } : undefined;
}

/** One frontend: an address:port:proto that belongs to a Service port. */
export interface Frontend {
  addr: string;
  port: number;
  proto: number;
  /** loadBalancerSourceRanges entry; 0.0.0.0/0 (::/0 for IPv6) when unrestricted. */
  srcAddr: string;
  srcLen: number;
  /** NAT_FLG_* bits for this frontend (traffic policy depends on how it was reached). */
  flags: number;
  /** true for the blackhole entry that drops sources outside the ranges. */
  blackhole: boolean;
}

export interface Backend {
  addr: string;
  port: number;
  local: boolean;
}

/**
 * Everything the data path needs for one Service port, both families: one
 * name and one service id however many families the Service has. Frontends
 * and backends of each family go to that family's maps (kpr_v4_* or
 * kpr_v6_*), where each family has its own ordinals, so a frontend only
 * ever counts and reaches backends of its own family.
 */
export interface DesiredServicePort {
  /** servicePortName(): the port's identity in the maps (kpr_svc_meta). */
  name: string;
  /** serviceKey() of the Service the port belongs to. */
  service: string;
  proto: Protocol;
  frontends: Frontend[];
  /** The cluster-wide set (Cluster traffic policy), at ordinals 0..count-1 of each family. */
  backends: Backend[];
  /**
   * The node-local set (Local traffic policy), at ordinals
   * NAT_BE_LOCAL_BASE..+local-1. Not a subset of `backends`: each set falls
   * back to serving-and-terminating endpoints on its own.
   */
  localBackends: Backend[];
  affinityTimeout: number;
}

/** One backend as `kpr inspect nat` shows it. */
export interface NatBackendRow {
  ordinal: number;
  addr: string;
  port: number;
  local: boolean;
}

/** First ordinal of the node-local backend set in nat_be (bpf/include/abi.h). */
export const NAT_BE_LOCAL_BASE = 0x80000000;
/** nat_be_val.flags: the backend runs on this node. */
export const NAT_BE_F_LOCAL = 0x1;

export const NAT_FLG_EXTERNAL_LOCAL = 0x1;
export const NAT_FLG_INTERNAL_LOCAL = 0x2;
/** Backend by the Service's Maglev table (bpf/include/maglev.h); set only on external frontends. */
export const NAT_FLG_MAGLEV = 0x8;
/** NodePort, externalIP or LoadBalancer IP: reached from outside, not a ClusterIP. */
export const NAT_FLG_EXTERNAL = 0x10;
/** Per-Service NodePort mode override: NAT_FLG_MODE_SET | mode << NAT_FLG_MODE_SHIFT. */
export const NAT_FLG_MODE_SET = 0x20;
export const NAT_FLG_MODE_SHIFT = 6;
export const NODEPORT_MODE_ANNOTATION = 'kpr.io/nodeport-mode';
/** NodePort modes: --nodeport-mode (kpr_config.flags bits 0-1) and the per-Service override. */
export const NODEPORT_MODES = { snat: 0, dsr: 1, hybrid: 2 } as const;
export type NodePortMode = keyof typeof NODEPORT_MODES;

/** Frontend address of the NodePort entry that matches every node address. */
export const NODEPORT_ANY = '255.255.255.255';
/** The same for the node's IPv6 addresses (all ones, never a unicast destination). */
export const NODEPORT_ANY6 = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';

export function nodePortAny(f: IPFamily): string {
  return f === 4 ? NODEPORT_ANY : NODEPORT_ANY6;
}
export const NAT_FE_BLACKHOLE = 0xffffffff;

export function frontendKey(f: Pick<Frontend, 'addr' | 'port' | 'proto' | 'srcAddr' | 'srcLen'>): string {
  return `${f.addr}:${f.port}/${f.proto}<${f.srcAddr}/${f.srcLen}`;
}

export function backendKey(b: Pick<Backend, 'addr' | 'port'>): string {
  return `${b.addr}:${b.port}`;
}
