/**
 * Builders for Service, EndpointSlice and Node objects, shaped as kubectl
 * prints them: the one place the lab's default manifest, the bench's model
 * and the tests make Kubernetes objects.
 */

export interface SvcOpts {
  ns?: string;
  clusterIP?: string;
  ports?: Array<{ name?: string; port: number; protocol?: string; targetPort?: number | string; nodePort?: number }>;
  type?: string;
  extra?: Record<string, unknown>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Service status, e.g. a LoadBalancer's ingress addresses */
  status?: Record<string, unknown>;
}

export function service(name: string, o: SvcOpts = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: o.ns ?? 'default',
      ...(o.labels ? { labels: o.labels } : {}),
      ...(o.annotations ? { annotations: o.annotations } : {}),
    },
    spec: {
      type: o.type ?? 'ClusterIP',
      clusterIP: o.clusterIP ?? '198.18.0.10',
      clusterIPs: [o.clusterIP ?? '198.18.0.10'],
      ports: o.ports ?? [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }],
      ...(o.extra ?? {}),
    },
    ...(o.status ? { status: o.status } : {}),
  };
}

export interface SliceEndpoint {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
  /** more addresses after ip (kube-proxy uses only the first) */
  more?: string[];
  /** hints.forZones */
  zones?: string[];
  /** hints.forNodes */
  forNodes?: string[];
}

/** A Node with a zone label and an InternalIP, as the kubelet registers it. */
export function node(name: string, o: { zone?: string; ip?: string } = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, ...(o.zone ? { 'topology.kubernetes.io/zone': o.zone } : {}) } },
    status: { addresses: [...(o.ip ? [{ type: 'InternalIP', address: o.ip }] : []), { type: 'Hostname', address: name }] },
  };
}

export function slice(
  name: string,
  svc: string,
  endpoints: SliceEndpoint[],
  ports: Array<{ name?: string; port: number; protocol?: string }> = [{ name: 'http', port: 8080, protocol: 'TCP' }],
  o: { ns?: string; addressType?: string; annotations?: Record<string, string> } = {},
): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: o.ns ?? 'default',
      labels: { 'kubernetes.io/service-name': svc },
      ...(o.annotations ? { annotations: o.annotations } : {}),
    },
    addressType: o.addressType ?? 'IPv4',
    ports,
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip, ...(e.more ?? [])],
      conditions: {
        ...(e.ready === undefined ? {} : { ready: e.ready }),
        ...(e.serving === undefined ? {} : { serving: e.serving }),
        ...(e.terminating === undefined ? {} : { terminating: e.terminating }),
      },
      ...(e.node ? { nodeName: e.node } : {}),
      ...(e.zones || e.forNodes
        ? {
            hints: {
              ...(e.zones ? { forZones: e.zones.map((z) => ({ name: z })) } : {}),
              ...(e.forNodes ? { forNodes: e.forNodes.map((n) => ({ name: n })) } : {}),
            },
          }
        : {}),
    })),
  };
}
