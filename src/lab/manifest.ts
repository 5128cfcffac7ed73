/**
 * The lab's default manifest: the Nodes, and one Service per behaviour the
 * demo and the lab tests exercise, built with the shared object builders.
 */
import { POD_PORT, type Lab, type LabNode, type LabPod } from './cluster.js';
import { node, service, slice, type SliceEndpoint, type SvcOpts } from './objects.js';

/** A lab node as the kubelet would register it: zone label and InternalIP. */
export function labNode(n: LabNode, zone: string | undefined): Record<string, unknown> {
  return node(n.name, { zone, ip: n.ip });
}

// Functions, not constants: cluster.ts imports this module, so POD_PORT is
// not yet initialised while this module's top level runs.
/** A lab Service's ports: TCP 80 and UDP 53, both to the pods' POD_PORT. */
export function labServicePorts() {
  return [
    { name: 'tcp', port: 80, protocol: 'TCP', targetPort: POD_PORT },
    { name: 'udp', port: 53, protocol: 'UDP', targetPort: POD_PORT },
  ];
}
/** The EndpointSlice ports that go with labServicePorts(). */
export function labSlicePorts() {
  return [
    { name: 'tcp', port: POD_PORT, protocol: 'TCP' },
    { name: 'udp', port: POD_PORT, protocol: 'UDP' },
  ];
}

/**
 * The manifest `lab up` writes when there is none: one Service per
 * behaviour; on an IPv6-only lab, labIpv6OnlyObjects (its pods have no
 * IPv4 address to list).
 */
export function defaultLabManifest(lab: Lab): unknown[] {
  if (lab.spec.ipv6Only) return labIpv6OnlyObjects(lab);
  const ep = (pods: LabPod[], node: string): SliceEndpoint[] => pods.map((p) => ({ ip: p.ip, ready: true, node }));
  const allEndpoints = lab.nodes.flatMap((n) => ep(n.pods, n.name));
  const n2 = lab.nodes[1] ?? lab.nodes[0]!;
  const ports = labServicePorts();
  const slicePorts = labSlicePorts();
  const svc = (name: string, o: SvcOpts) => service(name, { ns: 'lab', ports, ...o });
  const endpoints = (svcName: string, eps: SliceEndpoint[]) => slice(`${svcName}-1`, svcName, eps, slicePorts, { ns: 'lab' });
  const np = (base: number) => [
    { ...ports[0]!, nodePort: base },
    { ...ports[1]!, nodePort: base + 1 },
  ];
  return [
    // Nodes, one zone each, so topology hints have something to match.
    ...lab.nodes.map((n, i) => labNode(n, `zone-${String.fromCharCode(97 + i)}`)),
    svc('web', { type: 'NodePort', clusterIP: '198.18.0.10', ports: np(30080) }),
    endpoints('web', allEndpoints),
    // eTP=Local, endpoints only on node 2: node 1 must drop, node 2 keeps the client IP
    svc('local', { type: 'NodePort', clusterIP: '198.18.0.11', ports: np(30090), extra: { externalTrafficPolicy: 'Local', healthCheckNodePort: 32100 } }),
    endpoints('local', ep(n2.pods, n2.name)),
    // iTP=Local: pods only reach endpoints on their own node
    svc('itp', { clusterIP: '198.18.0.12', extra: { internalTrafficPolicy: 'Local' } }),
    endpoints('itp', allEndpoints),
    // no endpoints: REJECT
    svc('empty', { type: 'NodePort', clusterIP: '198.18.0.13', ports: np(30100) }),
    // externalIP and a LoadBalancer IP restricted to one source range
    // sessionAffinity: ClientIP: one client, one backend
    svc('sticky', { type: 'NodePort', clusterIP: '198.18.0.16', ports: np(30120), extra: { sessionAffinity: 'ClientIP' } }),
    endpoints('sticky', allEndpoints),
    svc('ext', { clusterIP: '198.18.0.14', extra: { externalIPs: ['198.18.1.14'] } }),
    endpoints('ext', allEndpoints),
    svc('lb', {
      type: 'LoadBalancer',
      clusterIP: '198.18.0.15',
      ports: np(30110),
      extra: { loadBalancerSourceRanges: ['203.0.113.0/24'] },
      status: { loadBalancer: { ingress: [{ ip: '198.18.1.15' }] } },
    }),
    endpoints('lb', allEndpoints),
  ];
}

/** The dual-stack Service's addresses, and an IPv6 Service without endpoints. */
export const LAB_VIP4_DS = '198.18.0.30';
export const LAB_VIP6_DS = '2001:db8:f::30';
export const LAB_EMPTY6 = '2001:db8:f::31';

/**
 * IPv6 on the lab: 'web46', dual-stack (RequireDualStack) over every pod,
 * NodePorts 30140/30141 on the node addresses of both families, and
 * 'empty6', IPv6 only, with no endpoints (NodePorts 30150/30151).
 */
export function labDualStackObjects(lab: Lab): unknown[] {
  const ports = labServicePorts();
  const np = [
    { ...ports[0]!, nodePort: 30140 },
    { ...ports[1]!, nodePort: 30141 },
  ];
  const pods = lab.nodes.flatMap((n) => n.pods.map((p) => ({ p, node: n.name })));
  return [
    service('web46', {
      ns: 'lab',
      type: 'NodePort',
      clusterIP: LAB_VIP4_DS,
      ports: np,
      extra: { clusterIPs: [LAB_VIP4_DS, LAB_VIP6_DS], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' },
    }),
    slice('web46-v4', 'web46', pods.map(({ p, node }) => ({ ip: p.ip, ready: true, node })), labSlicePorts(), { ns: 'lab' }),
    slice('web46-v6', 'web46', pods.map(({ p, node }) => ({ ip: p.ip6, ready: true, node })), labSlicePorts(), { ns: 'lab', addressType: 'IPv6' }),
    // no endpoints: REJECT, over IPv6
    service('empty6', {
      ns: 'lab',
      type: 'NodePort',
      clusterIP: LAB_EMPTY6,
      ports: [
        { ...ports[0]!, nodePort: 30150 },
        { ...ports[1]!, nodePort: 30151 },
      ],
      extra: { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' },
    }),
  ];
}

/** An IPv4 Service on the IPv6-only lab: its ClusterIP is programmed, its NodePort has no address. */
export const LAB_VIP4_ON_V6ONLY = '198.18.0.40';
/** The IPv6-only lab's eTP=Local Service. */
export const LAB_LOCAL6 = '2001:db8:f::32';

/**
 * The IPv6-only lab's manifest: Nodes with their IPv6 InternalIP; 'web6'
 * over every pod (NodePorts 30140/30141); 'local6', eTP=Local with
 * endpoints on node 2 only and healthCheckNodePort 32100; and 'web4', an
 * IPv4 NodePort Service (30160) that no node can carry a NodePort for.
 */
export function labIpv6OnlyObjects(lab: Lab): unknown[] {
  const ports = labServicePorts();
  const np = (base: number) => [
    { ...ports[0]!, nodePort: base },
    { ...ports[1]!, nodePort: base + 1 },
  ];
  const v6 = { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' };
  const eps = (nodes: LabNode[]) => nodes.flatMap((n) => n.pods.map((p) => ({ ip: p.ip6, ready: true, node: n.name })));
  const n2 = lab.nodes[1] ?? lab.nodes[0]!;
  return [
    ...lab.nodes.map((n) => node(n.name, { ip: n.ip6 })),
    service('web6', { ns: 'lab', type: 'NodePort', clusterIP: LAB_VIP6_DS, ports: np(30140), extra: v6 }),
    slice('web6-1', 'web6', eps(lab.nodes), labSlicePorts(), { ns: 'lab', addressType: 'IPv6' }),
    service('local6', {
      ns: 'lab',
      type: 'NodePort',
      clusterIP: LAB_LOCAL6,
      ports: np(30090),
      extra: { ...v6, externalTrafficPolicy: 'Local', healthCheckNodePort: 32100 },
    }),
    slice('local6-1', 'local6', eps([n2]), labSlicePorts(), { ns: 'lab', addressType: 'IPv6' }),
    service('web4', { ns: 'lab', type: 'NodePort', clusterIP: LAB_VIP4_ON_V6ONLY, ports: np(30160) }),
  ];
}
