/**
 * The IPv6 DSR Service of the lab tests (lab-dsr6, lab-dsr6-routed):
 * NodePorts in DSR mode on every node, every endpoint on node B, so each
 * request through another node crosses to B carrying kpr's option.
 */
import assert from 'node:assert/strict';
import { LAB_EXT_IP6, POD_BULK_PORT, POD_PORT, type Lab, type LabNode } from '../../src/lab/cluster.js';
import { service, slice } from '../../src/lab/objects.js';
import { delta, stats } from './lab-stats.js';

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

/**
 * 40 TCP and 40 UDP flows from the external client to A's NodePorts: each
 * reaches a pod on B that sees the client's address, the replies come from
 * A's NodePort, and the counters show DSR: A sent each flow on with the
 * option and saw no reply, B learnt each flow and answered it, trusting
 * every sender.
 */
export async function assertDsr6Flows(lab: Lab, a: LabNode, b: LabNode): Promise<void> {
  const ext = { netns: lab.extNs };
  const beforeA = stats(a);
  const beforeB = stats(b);
  const tcp = await lab.probe(ext, ['tcp', a.ip6, String(TCP_NP), '--count', '40']);
  assert.deepEqual(tcp.errors, {}, `node B: ${(await lab.kprLog(b)).slice(-800)}`);
  assert.deepEqual(Object.keys(tcp.pods).sort(), b.pods.map((p) => p.name).sort());
  assert.deepEqual(tcp.peers, { [`${a.ip6}:${TCP_NP}`]: 40 }, 'the client talks to the NodePort throughout');
  assert.deepEqual(tcp.seenAs, { [LAB_EXT_IP6]: 40 }, 'the backend sees the client address');
  const udp = await lab.probe(ext, ['udp', a.ip6, String(UDP_NP), '--count', '40']);
  assert.deepEqual(udp.errors, {});
  assert.deepEqual(udp.peers, { [`${a.ip6}:${UDP_NP}`]: 40 }, 'UDP replies come from the NodePort');
  assert.deepEqual(udp.seenAs, { [LAB_EXT_IP6]: 40 });
  const dA = delta(stats(a), beforeA);
  const dB = delta(stats(b), beforeB);
  assert.equal(dA.tc_dsr_fwd, 80, 'node A sent each new flow on with the option');
  assert.equal(dB.tc_dsr_learn, 80, 'node B learnt each one');
  assert.ok((dB.tc_dsr_reply ?? 0) >= 80, 'node B answered the client itself');
  assert.equal(dA.tc_rev ?? 0, 0, 'node A saw no reply packet at all');
  assert.equal(dB.tc_dsr_untrusted ?? 0, 0);
}
