/**
 * Node objects: validated into the store (all of them), read from
 * manifests, and driving the zone that endpoint selection uses; plus
 * `kpr inspect endpoints` built on the same selection.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { Controller } from '../../src/controller/controller.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { ObjectStore } from '../../src/controller/store.js';
import { formatEndpointReport, inspectEndpoints } from '../../src/inspect/endpoints.js';
import { pino } from 'pino';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { parseNode } from '../../src/model/objects.js';
import { natRows } from '../../src/inspect/nat.js';
import { memoryNatMaps } from '../helpers/memmaps.js';
import { node, service, slice } from '../../src/lab/objects.js';

test('parseNode keeps name, zone, addresses, deletion and taints; rejects a node without a name', () => {
  const raw = node('n1', { zone: 'zone-a', ip: '198.51.100.11' }) as Record<string, any>;
  raw.spec = { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] };
  const r = parseNode(raw);
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.value.name, 'n1');
  assert.equal(r.value.zone, 'zone-a');
  assert.deepEqual(r.value.addresses, [
    { type: 'InternalIP', address: '198.51.100.11' },
    { type: 'Hostname', address: 'n1' },
  ]);
  assert.deepEqual(r.value.taintKeys, ['ToBeDeletedByClusterAutoscaler']);
  assert.equal(r.value.deleting, false);
  const bad = parseNode({ kind: 'Node', metadata: {} });
  assert.equal(bad.ok, false);
});

test('the store keeps every Node; node changes are reported apart from Service changes', () => {
  const store = new ObjectStore();
  const nodeEvents: string[][] = [];
  const svcEvents: string[][] = [];
  const invalid: string[] = [];
  store.onNodesChange = (n) => nodeEvents.push([...n]);
  store.onChange = (k) => svcEvents.push([...k]);
  store.onInvalid = (e) => invalid.push(`${e.kind} ${e.object}`);
  store.replace('Node', [node('n2', { ip: '198.51.100.12' }), node('n1', { zone: 'zone-a', ip: '198.51.100.11' })]);
  assert.deepEqual(store.nodes().map((n) => n.name), ['n1', 'n2']);
  assert.deepEqual(store.nodeInternalIPs(), ['198.51.100.11', '198.51.100.12']);
  assert.equal(store.node('n1')?.zone, 'zone-a');
  assert.deepEqual(nodeEvents, [['n2', 'n1']]);
  // the same content again (a kubelet heartbeat) is not a change
  store.upsert('Node', node('n1', { zone: 'zone-a', ip: '198.51.100.11' }));
  assert.equal(nodeEvents.length, 1);
  // a malformed Node is skipped and named; the valid version stays
  store.upsert('Node', { kind: 'Node', metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP' }] } });
  assert.deepEqual(invalid, ['Node Node n1']);
  assert.equal(store.node('n1')?.zone, 'zone-a');
  store.remove('Node', '', 'n2');
  assert.deepEqual(store.nodes().map((n) => n.name), ['n1']);
  assert.deepEqual(nodeEvents.at(-1), ['n2']);
  store.replace('Node', []);
  assert.deepEqual(store.nodes(), []);
  assert.deepEqual(svcEvents, []);
});

test("a change of this node's zone re-selects endpoints for every Service", async () => {
  const store = new ObjectStore();
  const maps = memoryNatMaps();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const c = new Controller({ store, reconciler, log: createLogger('fatal'), translate: { nodeName: 'n1' } });
  const zonal = service('web', { extra: {} }) as { metadata: Record<string, unknown> };
  zonal.metadata.annotations = { 'service.kubernetes.io/topology-mode': 'Auto' };
  store.replace('Service', [zonal]);
  store.replace('EndpointSlice', [
    slice('web-1', 'web', [
      { ip: '192.0.2.1', node: 'n1', zones: ['zone-a'] },
      { ip: '192.0.2.2', node: 'n2', zones: ['zone-b'] },
    ]),
  ]);
  store.markSynced('Service');
  store.markSynced('EndpointSlice');
  c.start();
  try {
    await c.whenIdle();
    const addrs = () => natRows(maps).find((r) => r.frontend.addr === '198.18.0.10')?.backends.map((b) => b.addr);
    assert.deepEqual(addrs(), ['192.0.2.1', '192.0.2.2'], 'no Node yet: no zone, every endpoint');
    store.upsert('Node', node('n1', { zone: 'zone-b' }));
    await c.whenIdle();
    assert.deepEqual(addrs(), ['192.0.2.2'], 'zone-b: only the endpoint hinted for zone-b');
    store.upsert('Node', node('n2', { zone: 'zone-a' }));
    await c.whenIdle();
    assert.deepEqual(addrs(), ['192.0.2.2'], 'another node changing zone changes nothing here');
  } finally {
    c.stop();
  }
});

test('kpr inspect endpoints: the zone from the Node in the manifests, and why each endpoint is in or out', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-inspect-ep-'));
  try {
    const svc = service('web', { extra: { internalTrafficPolicy: 'Local' } }) as { metadata: Record<string, unknown> };
    svc.metadata.annotations = { 'service.kubernetes.io/topology-mode': 'Auto' };
    const objs = [
      node('n1', { zone: 'zone-a', ip: '198.51.100.11' }),
      svc,
      slice('web-1', 'web', [
        { ip: '192.0.2.1', node: 'n1', zones: ['zone-a'], ready: false, serving: true, terminating: true },
        { ip: '192.0.2.2', node: 'n2', zones: ['zone-a'] },
        { ip: '192.0.2.3', node: 'n3', zones: ['zone-b'] },
      ]),
    ];
    await writeFile(join(dir, 'all.yaml'), objs.map((o) => stringify(o)).join('---\n'));
    const report = await inspectEndpoints({ manifests: dir, nodeName: 'n1' });
    assert.deepEqual(report.node, { name: 'n1', zone: 'zone-a' });
    const text = formatEndpointReport(report);
    assert.match(text, /^node n1, zone zone-a$/m);
    assert.match(text, /default\/web:http\/TCP\s+iTP=Local eTP=Cluster\s+topology: PreferSameZone \(zone hints for zone-a\)/);
    assert.match(text, /192\.0\.2\.1:8080\s+n1\s+local\s+serving and terminating: fallback for the local set/);
    assert.match(text, /192\.0\.2\.2:8080\s+n2\s+cluster\s+ready, hinted for zone zone-a/);
    assert.match(text, /192\.0\.2\.3:8080\s+n3\s+out\s+ready, outside zone zone-a \(hints zone-b\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an out-of-range nodePort and an SCTP port: logged once at info, counted, the rest of the Service programmed', async () => {
  const logs: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  const metrics = new Metrics();
  const store = new ObjectStore();
  const maps = memoryNatMaps();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const c = new Controller({ store, reconciler, log, metrics, translate: { nodeName: 'n1', nodeIPs: ['198.51.100.11'] } });
  store.replace('Service', [
    service('np', {
      type: 'NodePort',
      ports: [
        { name: 'a', port: 80, nodePort: 40000 },
        { name: 's', port: 90, protocol: 'SCTP' },
      ],
    }),
  ]);
  store.replace('EndpointSlice', [slice('np-1', 'np', [{ ip: '192.0.2.1' }], [{ name: 'a', port: 8080 }])]);
  store.markSynced('Service');
  store.markSynced('EndpointSlice');
  c.start();
  try {
    await c.whenIdle();
    assert.deepEqual(natRows(maps).map((r) => `${r.frontend.addr}:${r.frontend.port}`), ['198.18.0.10:80'], 'the ClusterIP stays');
    const skips = () => logs.filter((l) => String(l.msg).startsWith('not programming'));
    assert.deepEqual(skips().map((l) => [l.level, l.reason]), [
      [30, 'nodeport-out-of-range'],
      [30, 'unsupported-protocol'],
    ]);
    const counted = async (reason: string) =>
      (await metrics.registry.getSingleMetric('kpr_skipped_objects_total')!.get()).values.find((v) => v.labels.reason === reason)?.value;
    assert.equal(await counted('nodeport-out-of-range'), 1);
    assert.equal(await counted('unsupported-protocol'), 1);
    // a later sync of the same Service logs at debug only
    store.upsert('EndpointSlice', slice('np-1', 'np', [{ ip: '192.0.2.2' }], [{ name: 'a', port: 8080 }]));
    await c.whenIdle();
    assert.deepEqual(skips().slice(2).map((l) => l.level), [20, 20]);
  } finally {
    c.stop();
  }
});
