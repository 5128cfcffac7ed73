/**
 * Endpoint selection against kube-proxy's documented rules (CategorizeEndpoints
 * in pkg/proxy/topology.go, KEP-1669 terminating endpoints, KEP-2086
 * internalTrafficPolicy, KEP-2433 topology hints, KEP-4444
 * trafficDistribution). The expectations are written out by hand per case.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { policyVerdict, selectEndpoints, type EndpointSelection } from '../../src/model/endpoints.js';
import { parseEndpointSlice, parseService } from '../../src/model/objects.js';
import type { EndpointSlice, IPFamily, Service } from '../../src/model/types.js';
import { service, slice, type SliceEndpoint } from '../../src/lab/objects.js';

/**
 * Every table runs for both families: the IPv6 run renames 192.0.2.N to
 * 2001:db8::N, gives the Service an IPv6 cluster IP and the slices
 * addressType IPv6.
 */
interface Fam {
  family: IPFamily;
  a: (s: string) => string;
  clusterIP: string;
  addressType: string;
}
const FAMILIES: Fam[] = [
  { family: 4, a: (s) => s, clusterIP: '198.18.0.10', addressType: 'IPv4' },
  { family: 6, a: (s) => s.replace(/192\.0\.2\.(\d+)/g, '2001:db8::$1'), clusterIP: '2001:db8:f::10', addressType: 'IPv6' },
];
const V4 = FAMILIES[0] as Fam;

const LOCAL = '192.0.2.1'; // on n1, this node
const REMOTE = '192.0.2.2'; // on n2
const NODE = { name: 'n1', zone: 'zone-a' };

type State = 'ready' | 'serving-terminating' | 'terminating' | 'not-ready';
const CONDITIONS: Record<State, Pick<SliceEndpoint, 'ready' | 'serving' | 'terminating'>> = {
  ready: { ready: true, serving: true, terminating: false },
  'serving-terminating': { ready: false, serving: true, terminating: true },
  terminating: { ready: false, serving: false, terminating: true },
  'not-ready': { ready: false, serving: false, terminating: false },
};

function svc(extra: Record<string, unknown> = {}, annotations?: Record<string, string>, F: Fam = V4): Service {
  const raw = service('web', { extra, clusterIP: F.clusterIP }) as { metadata: Record<string, unknown> };
  if (annotations) raw.metadata.annotations = annotations;
  const r = parseService(raw);
  if (!r.ok) throw new Error(r.message);
  return r.value;
}

function slices(eps: SliceEndpoint[], F: Fam = V4): EndpointSlice[] {
  const ofFamily = eps.map((e) => ({ ...e, ip: F.a(e.ip), ...(e.more ? { more: e.more.map(F.a) } : {}) }));
  const r = parseEndpointSlice(slice('web-x', 'web', ofFamily, undefined, { addressType: F.addressType }));
  if (!r.ok) throw new Error(r.message);
  return [r.value];
}

function select(
  s: Service,
  eps: SliceEndpoint[],
  node: { name: string | undefined; zone: string | undefined } = NODE,
  F: Fam = V4,
): EndpointSelection {
  return selectEndpoints(s, s.ports[0] as Service['ports'][number], slices(eps, F), node, F.family);
}

const addrs = (l: Array<{ addr: string }>) => l.map((b) => b.addr);

function verdict(sel: EndpointSelection, local: boolean): string {
  const v = policyVerdict(sel, local);
  return v.action === 'forward' ? addrs(v.to).join(',') : v.action.toUpperCase();
}

/*
 * One local and one remote endpoint, each in every condition. Columns: the
 * cluster set, the local set, then what Cluster and Local traffic policy do
 * (an address list = forward to those, DROP, REJECT). The same table holds
 * for externalTrafficPolicy and internalTrafficPolicy: both pick the local
 * set under Local and the cluster set under Cluster.
 */
const L = LOCAL;
const R = REMOTE;
const TABLE: Array<[State, State, string[], string[], string, string]> = [
  ['ready', 'ready', [L, R], [L], `${L},${R}`, L],
  ['ready', 'serving-terminating', [L], [L], L, L],
  ['ready', 'terminating', [L], [L], L, L],
  ['ready', 'not-ready', [L], [L], L, L],
  // the case: the local set falls back on its own while remote endpoints are ready
  ['serving-terminating', 'ready', [R], [L], R, L],
  ['serving-terminating', 'serving-terminating', [L, R], [L], `${L},${R}`, L],
  ['serving-terminating', 'terminating', [L], [L], L, L],
  ['serving-terminating', 'not-ready', [L], [L], L, L],
  ['terminating', 'ready', [R], [], R, 'DROP'],
  ['terminating', 'serving-terminating', [R], [], R, 'DROP'],
  ['terminating', 'terminating', [], [], 'REJECT', 'REJECT'],
  ['terminating', 'not-ready', [], [], 'REJECT', 'REJECT'],
  ['not-ready', 'ready', [R], [], R, 'DROP'],
  ['not-ready', 'serving-terminating', [R], [], R, 'DROP'],
  ['not-ready', 'terminating', [], [], 'REJECT', 'REJECT'],
  ['not-ready', 'not-ready', [], [], 'REJECT', 'REJECT'],
];

for (const F of FAMILIES) for (const [ls, rs, cluster, local, clusterPolicy, localPolicy] of TABLE) {
  test(`IPv${F.family}: local ${ls}, remote ${rs}: cluster [${cluster}] local [${local}]; Cluster -> ${clusterPolicy}, Local -> ${localPolicy}`, () => {
    for (const policy of [{}, { internalTrafficPolicy: 'Local' }, { externalTrafficPolicy: 'Local', type: 'NodePort' }]) {
      const sel = select(svc(policy, undefined, F), [
        { ip: L, node: 'n1', ...CONDITIONS[ls] },
        { ip: R, node: 'n2', ...CONDITIONS[rs] },
      ], NODE, F);
      assert.deepEqual(addrs(sel.cluster), cluster.map(F.a));
      assert.deepEqual(addrs(sel.local), local.map(F.a));
      assert.ok(sel.local.every((b) => b.local) && sel.cluster.every((b) => b.local === (b.addr === F.a(L))));
      assert.equal(verdict(sel, false), F.a(clusterPolicy));
      assert.equal(verdict(sel, true), F.a(localPolicy));
      assert.equal(sel.localReady, ls === 'ready' ? 1 : 0, 'health check counts local ready endpoints only');
      // every endpoint has a verdict line, in or out
      assert.equal(sel.endpoints.length, 2);
    }
  });
}

test('the same selection with hints on every endpoint but no topology requested: hints ignored', () => {
  const sel = select(svc(), [
    { ip: L, node: 'n1', zones: ['zone-b'] },
    { ip: R, node: 'n2', zones: ['zone-b'] },
  ]);
  assert.deepEqual(addrs(sel.cluster), [L, R]);
  assert.equal(sel.topology, '');
  assert.match(sel.topologyReason, /no topology requested/);
});

/* Topology: which opt-ins count, and when hints are usable (cluster set only). */
const AUTO = { 'service.kubernetes.io/topology-mode': 'Auto' };
type Ep = Omit<SliceEndpoint, 'ip' | 'node'>;
const ST = CONDITIONS['serving-terminating'];
const NO_ZONE = { name: 'n1', zone: undefined };
/** name, Service, local endpoint (n1), remote endpoint (n2), cluster set, local set, topology mode[, node, more endpoints] */
type HintCase = [string, Service, Ep, Ep, string[], string[], string, { name: string; zone: string | undefined }?, SliceEndpoint[]?];
const HINTS: HintCase[] = [
  // the local endpoint was hinted away: the cluster set skips it, the local set keeps it
  ['topology-mode Auto, every ready endpoint hinted, this zone among them: only this zone', svc({}, AUTO), { zones: ['zone-b'] }, { zones: ['zone-a'] }, [R], [L], 'PreferSameZone'],
  ['older annotation topology-aware-hints: auto is honoured', svc({}, { 'service.kubernetes.io/topology-aware-hints': 'auto' }), { zones: ['zone-a'] }, { zones: ['zone-b'] }, [L], [L], 'PreferSameZone'],
  [
    'topology-mode wins over the older annotation',
    svc({}, { 'service.kubernetes.io/topology-mode': 'Disabled', 'service.kubernetes.io/topology-aware-hints': 'Auto' }),
    { zones: ['zone-a'] },
    { zones: ['zone-b'] },
    [L, R],
    [L],
    '',
  ],
  ['trafficDistribution PreferClose is honoured without an annotation', svc({ trafficDistribution: 'PreferClose' }), { zones: ['zone-b'] }, { zones: ['zone-a'] }, [R], [L], 'PreferSameZone'],
  ['one ready endpoint without a hint: every endpoint', svc({}, AUTO), { zones: ['zone-b'] }, {}, [L, R], [L], ''],
  [
    'a not-ready endpoint without a hint does not spoil the hints',
    svc({}, AUTO),
    CONDITIONS['not-ready'],
    { zones: ['zone-a'] },
    [R],
    [],
    'PreferSameZone',
    NODE,
    [{ ip: '192.0.2.3', node: 'n3', zones: ['zone-c'] }],
  ],
  ['no endpoint hinted for this zone: every endpoint', svc({}, AUTO), { zones: ['zone-b'] }, { zones: ['zone-c'] }, [L, R], [L], ''],
  ['this node has no zone label: every endpoint', svc({}, AUTO), { zones: ['zone-a'] }, { zones: ['zone-b'] }, [L, R], [L], '', NO_ZONE],
  [
    'PreferSameNode: every ready endpoint has node hints and one names this node',
    svc({ trafficDistribution: 'PreferSameNode' }),
    { forNodes: ['n1'], zones: ['zone-a'] },
    { forNodes: ['n2'], zones: ['zone-a'] },
    [L],
    [L],
    'PreferSameNode',
  ],
  [
    'node hints name other nodes only: zone hints decide',
    svc({ trafficDistribution: 'PreferSameNode' }),
    { forNodes: ['n3'], zones: ['zone-b'] },
    { forNodes: ['n2'], zones: ['zone-a'] },
    [R],
    [L],
    'PreferSameZone',
  ],
  ['no ready endpoint: hints are moot, serving-terminating ones everywhere', svc({}, AUTO), { zones: ['zone-b'], ...ST }, { zones: ['zone-a'], ...ST }, [L, R], [L], ''],
];

for (const F of FAMILIES) for (const [name, s, l, r, cluster, local, mode, node = NODE, more = []] of HINTS) {
  test(`IPv${F.family} hints: ${name}`, () => {
    // the same Service, with the IPv6 run's cluster IP
    const sv: Service = F.family === 4 ? s : { ...s, clusterIPs: [F.clusterIP], ipFamilies: [6] };
    const sel = select(sv, [{ ip: L, node: 'n1', ...l }, { ip: R, node: 'n2', ...r }, ...more], node, F);
    assert.deepEqual(addrs(sel.cluster), cluster.map(F.a));
    assert.deepEqual(addrs(sel.local), local.map(F.a));
    assert.equal(sel.topology, mode);
    for (const e of sel.endpoints) assert.ok(e.reason.length > 0);
  });
}

test('only addresses[0] of an endpoint is used', () => {
  const sel = select(svc(), [{ ip: L, node: 'n1', more: ['192.0.2.77'] }]);
  assert.deepEqual(addrs(sel.cluster), [L]);
});

test('unset conditions: ready and serving read as true, terminating as false (kube-proxy endpointslicecache)', () => {
  const r = parseEndpointSlice(slice('s', 'web', [{ ip: L }]));
  assert.ok(r.ok);
  if (r.ok) assert.deepEqual(r.value.endpoints[0]?.conditions, { ready: true, serving: true, terminating: false });
  // ready false, serving unset, terminating true: serving-and-terminating, a fallback candidate
  const sel = select(svc(), [{ ip: L, node: 'n1', ready: false, terminating: true }]);
  assert.deepEqual(addrs(sel.cluster), [L]);
  assert.deepEqual(addrs(sel.local), [L]);
});

test('an endpoint in two slices counts once; the local copy wins', () => {
  const s = svc();
  const a = parseEndpointSlice(slice('a', 'web', [{ ip: L, node: 'n2' }]));
  const b = parseEndpointSlice(slice('b', 'web', [{ ip: L, node: 'n1' }]));
  assert.ok(a.ok && b.ok);
  if (!a.ok || !b.ok) return;
  const sel = selectEndpoints(s, s.ports[0] as Service['ports'][number], [a.value, b.value], NODE, 4);
  assert.deepEqual(sel.cluster, [{ addr: L, port: 8080, local: true }]);
});

test('verdicts say why an endpoint is in or out', () => {
  const sel = select(svc({}, AUTO), [
    { ip: L, node: 'n1', zones: ['zone-b'], ...CONDITIONS['serving-terminating'] },
    { ip: R, node: 'n2', zones: ['zone-a'] },
    { ip: '192.0.2.3', node: 'n3', zones: ['zone-b'] },
    { ip: '192.0.2.4', node: 'n3', ...CONDITIONS['not-ready'] },
  ]);
  const why = Object.fromEntries(sel.endpoints.map((e) => [e.addr, [e.inCluster, e.inLocal, e.reason]]));
  assert.deepEqual(why[L], [false, true, 'serving and terminating: fallback for the local set (no ready endpoint there)']);
  assert.deepEqual(why[R], [true, false, 'ready, hinted for zone zone-a']);
  assert.deepEqual(why['192.0.2.3'], [false, false, 'ready, outside zone zone-a (hints zone-b)']);
  assert.deepEqual(why['192.0.2.4'], [false, false, 'not ready']);
});

test('dual-stack: each family selects from its own slices only, and falls back on its own', () => {
  const s = svc({ ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'], clusterIPs: ['198.18.0.10', '2001:db8:f::10'] });
  const v4 = slices([{ ip: L, node: 'n1' }, { ip: R, node: 'n2' }]);
  // the IPv6 side has only a serving-and-terminating endpoint
  const v6 = slices([{ ip: R, node: 'n2', ...ST }], FAMILIES[1]);
  const both = [...v4, ...v6];
  const sp = s.ports[0] as Service['ports'][number];
  const s4 = selectEndpoints(s, sp, both, NODE, 4);
  const s6 = selectEndpoints(s, sp, both, NODE, 6);
  assert.deepEqual(addrs(s4.cluster), [L, R]);
  assert.deepEqual(addrs(s4.local), [L]);
  assert.deepEqual(addrs(s6.cluster), ['2001:db8::2']);
  assert.deepEqual(addrs(s6.local), []);
  assert.equal(verdict(s6, true), 'DROP', 'Local policy on IPv6 drops though IPv4 has a local endpoint');
});
