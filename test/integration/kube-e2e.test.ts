/**
 * End to end from the Kubernetes API: a real kpr process watches the
 * in-repo API server, programs real pinned maps and cgroup hooks, and a
 * client in the test cgroup reaches the backends through the ClusterIP.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { FakeApiServer } from '../helpers/apiserver.js';
import { Harness } from '../helpers/harness.js';
import { service, slice } from '../../src/lab/objects.js';
import { requireRoot } from '../helpers/privileged.js';

const VIP = '198.18.0.20';

/** The lab harness, with kpr fed by the API server instead of manifests. */
class KubeHarness extends Harness {
  kubeconfig = '';

  protected override sourceArgs(): string[] {
    return ['--kubeconfig', this.kubeconfig, '--node-name', 'node-1'];
  }

  /** The health address kpr logged. */
  healthAddress(): string | undefined {
    for (const line of this.kprLog.split('\n')) {
      if (!line.includes('http server listening')) continue;
      return (JSON.parse(line) as { address: string }).address;
    }
    return undefined;
  }
}

const backends = (rows: ReturnType<Harness['nat']>) =>
  rows.find((r) => r.frontend.addr === VIP && r.frontend.port === 80)?.backends.map((b) => b.addr).sort() ?? [];

test('Services and EndpointSlices from the API server are reachable through the ClusterIP', async (t) => {
  if (!requireRoot(t)) return;
  const api = new FakeApiServer();
  const h = new KubeHarness(`kube-${process.pid % 100000}`);
  try {
    await api.start();
    await h.setup();
    h.kubeconfig = join(h.dir, 'kubeconfig.yaml');
    api.writeKubeconfig(h.kubeconfig);
    h.startKpr();

    const ips = h.topo.pods.map((p) => p.ip);
    api.apply(service('web', { ns: 'test', clusterIP: VIP, ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] }));
    api.apply(slice('web-1', 'web', ips.map((ip) => ({ ip, ready: true })), [{ name: 'http', port: 8080, protocol: 'TCP' }], { ns: 'test' }));
    await h.waitNat((rows) => backends(rows).length === 3, 'three backends from the API');

    const r = await h.probe(['tcp', VIP, '80', '--count', '60']);
    assert.deepEqual(r.errors, {});
    assert.equal(r.ok, 60);
    assert.deepEqual(Object.keys(r.pods).sort(), ['pod-1', 'pod-2', 'pod-3']);

    const addr = h.healthAddress();
    assert.ok(addr, `no http address in the log:\n${h.kprLog}`);
    const ready = await fetch(`http://${addr}/readyz`);
    assert.equal(ready.status, 200);
    const metrics = await (await fetch(`http://${addr}/metrics`)).text();
    assert.match(metrics, /kpr_bpf_map_entries\{map="kpr_v4_nat_fe"\} 1\b/);

    // An endpoint removed through the API stops receiving connections.
    api.apply(slice('web-1', 'web', ips.slice(0, 2).map((ip) => ({ ip, ready: true })), [{ name: 'http', port: 8080, protocol: 'TCP' }], { ns: 'test' }));
    await h.waitNat((rows) => backends(rows).length === 2, 'two backends');
    const r2 = await h.probe(['tcp', VIP, '80', '--count', '40']);
    assert.equal(r2.ok, 40);
    assert.deepEqual(Object.keys(r2.pods).sort(), ['pod-1', 'pod-2']);

    // API server gone: connections keep working on the last state.
    await api.stop();
    const r3 = await h.probe(['tcp', VIP, '80', '--count', '20']);
    assert.equal(r3.ok, 20);
  } finally {
    await h.teardown();
    await api.stop();
  }
});
