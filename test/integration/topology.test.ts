/**
 * Endpoint selection with real traffic on the two-node lab: the local set
 * falling back to terminating endpoints on its own, zone hints read
 * against the Node objects, ipMode Proxy, and Local policy without a local
 * endpoint (a drop on both paths). Node n1 is in zone-a, n2 in zone-b.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Lab, LAB_EXT_IP, POD_PORT, type LabNode } from '../../src/lab/cluster.js';
import { defaultLabManifest, labNode } from '../../src/lab/manifest.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { requireRoot } from '../helpers/privileged.js';

const ports = [{ name: 'tcp', port: 80, protocol: 'TCP', targetPort: POD_PORT }];
const slicePorts = [{ name: 'tcp', port: POD_PORT, protocol: 'TCP' }];
const TERMINATING = { ready: false, serving: true, terminating: true };

function svc(name: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'topo', ...extra }, spec: { ports, ...spec } };
}

function slice(svcName: string, endpoints: unknown[]) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svcName}-1`, namespace: 'topo', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: 'IPv4',
    ports: slicePorts,
    endpoints,
  };
}

function manifest(lab: Lab, zones: { n1?: string | undefined } = { n1: 'zone-a' }): unknown[] {
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const eps = (node: LabNode, conditions: Record<string, boolean>, zone?: string) =>
    node.pods.map((p) => ({ addresses: [p.ip], conditions, nodeName: node.name, ...(zone ? { hints: { forZones: [{ name: zone }] } } : {}) }));
  const base = (defaultLabManifest(lab) as Array<{ kind: string; metadata: { name: string } }>).filter((o) => o.kind !== 'Node');
  return [
    labNode(n1, zones.n1),
    labNode(n2, 'zone-b'),
    ...base,
    // n1's endpoints are serving and terminating, n2's are ready.
    svc('term', {
      type: 'NodePort',
      clusterIP: '198.18.0.20',
      internalTrafficPolicy: 'Local',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32101,
      ports: [{ ...ports[0], nodePort: 30200 }],
    }),
    slice('term', [...eps(n1, TERMINATING), ...eps(n2, { ready: true })]),
    // the same endpoints under Cluster policy
    svc('termc', { clusterIP: '198.18.0.21' }),
    slice('termc', [...eps(n1, TERMINATING), ...eps(n2, { ready: true })]),
    // zone hints: each node's pods are hinted for its own zone
    svc('zonal', { clusterIP: '198.18.0.22' }, { annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } }),
    slice('zonal', [...eps(n1, { ready: true }, 'zone-a'), ...eps(n2, { ready: true }, 'zone-b')]),
    // one LB IP the load balancer proxies, one it only routes
    {
      ...svc('proxy', { type: 'LoadBalancer', clusterIP: '198.18.0.23', ports: [{ ...ports[0], nodePort: 30230 }] }),
      status: { loadBalancer: { ingress: [{ ip: '198.18.1.20', ipMode: 'Proxy' }, { ip: '198.18.1.21', ipMode: 'VIP' }] } },
    },
    slice('proxy', [...eps(n1, { ready: true }), ...eps(n2, { ready: true })]),
    // internalTrafficPolicy Local, endpoints only on n2
    svc('itpnone', { clusterIP: '198.18.0.24', internalTrafficPolicy: 'Local' }),
    slice('itpnone', eps(n2, { ready: true })),
  ];
}

test('endpoint selection with real traffic: terminating fallback per set, zone hints, ipMode Proxy, Local drops', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new Lab({ name: `tp${process.pid % 100000}`, nodes: 2, podsPerNode: 2 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const pod = (node: LabNode, connectTime: boolean) => ({ netns: node.pods[0]!.netns, ...(connectTime ? { cgroup: node.cgroup } : {}) });
  const names = (node: LabNode) => node.pods.map((p) => p.name).sort();
  const allPods = lab.allPods().map((p) => p.name).sort();
  const nat = (node: LabNode) => withPinnedMaps(node.pinPath, natRows);
  const stats = (node: LabNode) => withPinnedMaps(node.pinPath, (m) => readStats(m.stats));
  const backendsOf = (node: LabNode, vip: string) =>
    nat(node)
      .find((r) => r.frontend.addr === vip)
      ?.backends.map((b) => b.addr)
      .sort() ?? [];
  try {
    await lab.up({ manifest: manifest(lab) });
    for (const node of lab.nodes) {
      await lab.waitFor(async () => {
        try {
          return backendsOf(node, '198.18.0.24').length === 2 && backendsOf(node, '198.18.0.22').length === 2;
        } catch {
          return false;
        }
      }, `kpr on ${node.name}`);
    }

    await t.test('Local policy: the only local endpoints are terminating, so local traffic goes to them, by both paths', async () => {
      for (const connectTime of [false, true]) {
        const r = await lab.probe(pod(n1, connectTime), ['tcp', '198.18.0.20', '80', '--count', '30']);
        assert.deepEqual(r.errors, {}, `connect-time ${connectTime}`);
        assert.deepEqual(Object.keys(r.pods).sort(), names(n1), `connect-time ${connectTime}`);
      }
      // n2 has ready local endpoints and uses them
      const r2 = await lab.probe(pod(n2, false), ['tcp', '198.18.0.20', '80', '--count', '30']);
      assert.deepEqual(Object.keys(r2.pods).sort(), names(n2));
    });

    await t.test('externalTrafficPolicy Local through n1: the terminating local endpoints serve, client address kept', async () => {
      const r = await lab.probe(ext, ['tcp', n1.ip, '30200', '--count', '30']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), names(n1));
      assert.deepEqual(r.seenAs, { [LAB_EXT_IP]: 30 });
    });

    await t.test('the health check still fails on n1 (no local ready endpoint) so load balancers drain it', async () => {
      const bad = await lab.probe(ext, ['http', `http://${n1.ip}:32101/`, '--count', '1']);
      assert.deepEqual(bad.status, { '503': 1 });
      const good = await lab.probe(ext, ['http', `http://${n2.ip}:32101/`, '--count', '1']);
      assert.deepEqual(good.status, { '200': 1 });
    });

    await t.test('Cluster policy with the same endpoints: ready ones exist, so the terminating ones get nothing', async () => {
      for (const connectTime of [false, true]) {
        const r = await lab.probe(pod(n1, connectTime), ['tcp', '198.18.0.21', '80', '--count', '30']);
        assert.deepEqual(r.errors, {});
        assert.deepEqual(Object.keys(r.pods).sort(), names(n2), `connect-time ${connectTime}`);
      }
    });

    await t.test('inspect nat shows the two sets of the frontend', async () => {
      const row = nat(n1).find((r) => r.frontend.addr === '198.18.0.20')!;
      assert.deepEqual(row.backends.map((b) => b.addr).sort(), n2.pods.map((p) => p.ip).sort());
      assert.deepEqual(row.localBackends.map((b) => b.addr).sort(), n1.pods.map((p) => p.ip).sort());
      const text = await lab.kprCli(n1, ['inspect', 'nat', '--pin-path', n1.pinPath]);
      assert.match(text, /198\.18\.0\.20:80 .*\| local: 192\.0\.2\.11:8080\* 192\.0\.2\.12:8080\*/);
    });

    await t.test('zone hints: each node keeps traffic in its zone, by both paths', async () => {
      for (const node of [n1, n2]) {
        for (const connectTime of [false, true]) {
          const r = await lab.probe(pod(node, connectTime), ['tcp', '198.18.0.22', '80', '--count', '30']);
          assert.deepEqual(r.errors, {});
          assert.deepEqual(Object.keys(r.pods).sort(), names(node), `${node.name} connect-time ${connectTime}`);
        }
      }
    });

    await t.test('DSR peers come from the Node objects: each node trusts both InternalIPs without --cluster-node-ips', async () => {
      const peers = (node: LabNode) =>
        withPinnedMaps(node.pinPath, (m) =>
          m.dsrPeers.dump().map(([k]) => `${[...k.subarray(4, 8)].join('.')}/${k.readUInt32LE(0)}`).sort(),
        );
      const want = [n1.ip, n2.ip].map((a) => `${a}/32`).sort();
      for (const node of [n1, n2]) await lab.waitFor(async () => peers(node).join() === want.join(), `${node.name} to learn its peers`);
    });

    await t.test('a node without a zone label ignores the hints and uses every endpoint', async () => {
      await lab.writeManifest(manifest(lab, { n1: undefined }));
      await lab.waitFor(async () => backendsOf(n1, '198.18.0.22').length === 4, 'n1 to drop the hints');
      const r = await lab.probe(pod(n1, false), ['tcp', '198.18.0.22', '80', '--count', '60']);
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.equal(backendsOf(n2, '198.18.0.22').length, 2, 'n2 keeps its zone');
      await lab.writeManifest(manifest(lab));
      await lab.waitFor(async () => backendsOf(n1, '198.18.0.22').length === 2, 'n1 to use the hints again');
    });

    await t.test('ipMode Proxy: that LB IP is left to the load balancer, the VIP-mode one is served', async () => {
      const frontends = nat(n1).map((r) => r.frontend.addr);
      assert.ok(frontends.includes('198.18.1.21'));
      assert.ok(!frontends.includes('198.18.1.20'));
      const vip = await lab.probe(ext, ['tcp', '198.18.1.21', '80', '--count', '20']);
      assert.deepEqual(vip.errors, {});
      assert.equal(vip.ok, 20);
      const proxied = await lab.probe(ext, ['tcp', '198.18.1.20', '80', '--count', '2', '--timeout', '700']);
      assert.equal(proxied.ok, 0, 'nothing on the node answers for the proxied LB IP');
    });

    await t.test('internalTrafficPolicy Local with endpoints only elsewhere: dropped on both paths, not refused', async () => {
      const before = stats(n1).sock_drop_policy ?? 0;
      const ct = await lab.probe(pod(n1, true), ['tcp', '198.18.0.24', '80', '--count', '3', '--timeout', '5000']);
      assert.deepEqual(ct.errors, { ETIMEDOUT: 3 }, 'connect-time: the errno of a dropped SYN');
      assert.ok(ct.elapsedMs < 3000, `connect-time fails without waiting: ${ct.elapsedMs} ms`);
      assert.equal((stats(n1).sock_drop_policy ?? 0) - before, 3);
      const tc = await lab.probe(pod(n1, false), ['tcp', '198.18.0.24', '80', '--count', '2', '--timeout', '700']);
      assert.deepEqual(tc.errors, { ETIMEDOUT: 2 }, 'tc: the SYN is dropped');
      // n2 has the endpoints and serves
      const ok = await lab.probe(pod(n2, true), ['tcp', '198.18.0.24', '80', '--count', '10']);
      assert.deepEqual(ok.errors, {});
    });
  } finally {
    await lab.down();
  }
});
