/**
 * The IPv6 DSR Service of the lab tests (lab-dsr6, lab-dsr6-routed):
 * NodePorts in DSR mode on every node, every endpoint on node B, so each
 * request through another node crosses to B carrying kpr's option.
 */
import { POD_BULK_PORT, POD_PORT, type LabNode } from '../../src/lab/cluster.js';
import { service, slice } from '../../src/lab/objects.js';

export const TCP_NP = 30160;
export const UDP_NP = 30161;
export const BULK_NP = 30162;

export function dsr6Manifest(b: LabNode): unknown[] {
  const ports = [
    { name: 'tcp', port: 80, protocol: 'TCP', targetPort: POD_PORT, nodePort: TCP_NP },
    { name: 'udp', port: 53, protocol: 'UDP', targetPort: POD_PORT, nodePort: UDP_NP },
    { name: 'bulk', port: 9000, protocol: 'TCP', targetPort: POD_BULK_PORT, nodePort: BULK_NP },
  ];
  return [
    service('dsr6', {
      ns: 'dsr6',
      type: 'NodePort',
      clusterIP: '2001:db8:f::60',
      ports,
      annotations: { 'kpr.io/nodeport-mode': 'dsr' },
      extra: { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' },
    }),
    slice(
      'dsr6-1',
      'dsr6',
      b.pods.map((p) => ({ ip: p.ip6, ready: true, node: b.name })),
      ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
      { ns: 'dsr6', addressType: 'IPv6' },
    ),
  ];
}
