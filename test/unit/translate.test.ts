import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseEndpointSlice, parseService } from '../../src/model/objects.js';
import { translateService } from '../../src/model/translate.js';
import { NAT_FLG_EXTERNAL, NAT_FLG_EXTERNAL_LOCAL, NAT_FLG_INTERNAL_LOCAL, type EndpointSlice, type Service } from '../../src/model/types.js';
import { service, slice } from '../helpers/objects.js';

function svc(raw: unknown): Service {
  const r = parseService(raw);
  if (!r.ok) throw new Error(r.message);
  return r.value;
}

function sl(raw: unknown): EndpointSlice {
  const r = parseEndpointSlice(raw);
  if (!r.ok) throw new Error(r.message);
  return r.value;
}

test('ClusterIP with several ports: one Service port each, TCP and UDP', () => {
  const s = svc(
    service('dns', {
      clusterIP: '198.18.0.53',
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
        { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 },
      ],
    }),
  );
  const slices = [
    sl(slice('dns-a', 'dns', [{ ip: '192.0.2.11' }, { ip: '192.0.2.12' }], [
      { name: 'dns', port: 5353, protocol: 'UDP' },
      { name: 'dns-tcp', port: 5353, protocol: 'TCP' },
    ])),
  ];
  const t = translateService(s, slices);
  assert.deepEqual(t.skipped, []);
  assert.deepEqual(t.ports.map((p) => p.name), ['default/dns:dns/UDP', 'default/dns:dns-tcp/TCP']);
  assert.deepEqual(t.ports[0]?.frontends, [
    { addr: '198.18.0.53', port: 53, proto: 17, flags: 0, srcAddr: '0.0.0.0', srcLen: 0, blackhole: false },
  ]);
  assert.equal(t.ports[1]?.frontends[0]?.proto, 6);
  assert.deepEqual(t.ports[0]?.backends, [
    { addr: '192.0.2.11', port: 5353, local: false },
    { addr: '192.0.2.12', port: 5353, local: false },
  ]);
});

test('named targetPort resolves per slice, so different slices may use different ports', () => {
  const s = svc(service('web', { ports: [{ name: 'http', port: 80, targetPort: 'web' }] }));
  const a = sl(slice('web-a', 'web', [{ ip: '192.0.2.1' }], [{ name: 'http', port: 8080 }]));
  const b = sl(slice('web-b', 'web', [{ ip: '192.0.2.2' }], [{ name: 'http', port: 9090 }]));
  const t = translateService(s, [a, b]);
  assert.deepEqual(t.ports[0]?.backends.map((x) => `${x.addr}:${x.port}`), ['192.0.2.1:8080', '192.0.2.2:9090']);
});

test('hand-written slice naming the port after targetPort still resolves', () => {
  const s = svc(service('web', { ports: [{ name: 'http', port: 80, targetPort: 'web' }] }));
  const a = sl(slice('web-a', 'web', [{ ip: '192.0.2.1' }], [{ name: 'web', port: 8080 }]));
  assert.deepEqual(translateService(s, [a]).ports[0]?.backends.map((x) => x.port), [8080]);
});

test('only ready endpoints; a missing ready means ready; duplicates across slices count once', () => {
  const s = svc(service('web'));
  const a = sl(slice('web-a', 'web', [{ ip: '192.0.2.1' }, { ip: '192.0.2.2', ready: false }, { ip: '192.0.2.3', ready: true }]));
  const b = sl(slice('web-b', 'web', [{ ip: '192.0.2.3' }, { ip: '192.0.2.4' }]));
  const t = translateService(s, [a, b]);
  assert.deepEqual(t.ports[0]?.backends.map((x) => x.addr), ['192.0.2.1', '192.0.2.3', '192.0.2.4']);
});

test('no ready endpoint: serving terminating ones are used, as kube-proxy does', () => {
  const s = svc(service('web'));
  const a = sl(slice('web-a', 'web', [
    { ip: '192.0.2.1', ready: false, serving: true, terminating: true },
    { ip: '192.0.2.2', ready: false, serving: false, terminating: true },
  ]));
  assert.deepEqual(translateService(s, [a]).ports[0]?.backends.map((x) => x.addr), ['192.0.2.1']);
});

test('no endpoints at all gives a frontend with zero backends (rejected by the data path)', () => {
  const t = translateService(svc(service('web')), []);
  assert.equal(t.ports.length, 1);
  assert.equal(t.ports[0]?.frontends.length, 1);
  assert.deepEqual(t.ports[0]?.backends, []);
});

test('headless, ExternalName and service-proxy-name Services are skipped', () => {
  const headless = svc(service('h', { clusterIP: 'None' }));
  assert.equal(translateService(headless, []).skipped[0]?.reason, 'headless');
  const ext = svc({ ...service('e'), spec: { type: 'ExternalName', externalName: 'example.invalid' } });
  assert.equal(translateService(ext, []).skipped[0]?.reason, 'external-name');
  const other = svc(service('o', { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }));
  assert.equal(translateService(other, []).skipped[0]?.reason, 'service-proxy-name');
  for (const s of [headless, ext, other]) assert.deepEqual(translateService(s, []).ports, []);
});

test('IPv6 cluster IPs and IPv6 slices are ignored; dual-stack keeps the IPv4 side', () => {
  const v6 = svc(service('v6', { clusterIP: '2001:db8::1' }));
  assert.equal(translateService(v6, []).skipped[0]?.reason, 'no-ipv4');
  const dual = svc({ ...service('d'), spec: { ...(service('d').spec as object), clusterIPs: ['198.18.0.10', '2001:db8::1'] } });
  const s6 = sl(slice('d-6', 'd', [{ ip: '2001:db8::5' }], undefined, { addressType: 'IPv6' }));
  const s4 = sl(slice('d-4', 'd', [{ ip: '192.0.2.5' }]));
  const t = translateService(dual, [s6, s4]);
  assert.deepEqual(t.ports[0]?.frontends.map((f) => f.addr), ['198.18.0.10']);
  assert.deepEqual(t.ports[0]?.backends.map((b) => b.addr), ['192.0.2.5']);
});

test('SCTP ports are skipped with a reason, other ports kept', () => {
  const s = svc(service('m', { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 90, protocol: 'SCTP' }] }));
  const t = translateService(s, []);
  assert.deepEqual(t.ports.map((p) => p.name), ['default/m:a/TCP']);
  assert.equal(t.skipped[0]?.reason, 'unsupported-protocol');
});

test('slices of other Services and other namespaces do not leak in', () => {
  const s = svc(service('web'));
  const other = sl(slice('x', 'other', [{ ip: '192.0.2.9' }]));
  const otherNs = sl(slice('y', 'web', [{ ip: '192.0.2.8' }], undefined, { ns: 'prod' }));
  assert.deepEqual(translateService(s, [other, otherNs]).ports[0]?.backends, []);
});

test('local endpoints are marked and form the local set; traffic policies set frontend flags', () => {
  const s = svc(service('web', { extra: { internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Local', externalIPs: ['198.18.5.5'] } }));
  const a = sl(slice('web-a', 'web', [{ ip: '192.0.2.1', node: 'n2' }, { ip: '192.0.2.9', node: 'n1' }]));
  const t = translateService(s, [a], { nodeName: 'n1' });
  assert.deepEqual(t.ports[0]?.backends, [
    { addr: '192.0.2.1', port: 8080, local: false },
    { addr: '192.0.2.9', port: 8080, local: true },
  ]);
  assert.deepEqual(t.ports[0]?.localBackends, [{ addr: '192.0.2.9', port: 8080, local: true }]);
  assert.deepEqual(t.ports[0]?.frontends.map((f) => [f.addr, f.flags]), [
    ['198.18.0.10', NAT_FLG_INTERNAL_LOCAL],
    ['198.18.5.5', NAT_FLG_EXTERNAL | NAT_FLG_EXTERNAL_LOCAL],
  ]);
});

test('NodePort: a frontend per node IP plus the wildcard, external and with the eTP flag', () => {
  const s = svc(service('np', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }], extra: { externalTrafficPolicy: 'Local' } }));
  const t = translateService(s, [], { nodeIPs: ['198.51.100.1', '198.51.100.1', '203.0.113.1'] });
  assert.deepEqual(t.ports[0]?.frontends.map((f) => [f.addr, f.port, f.flags]), [
    ['198.18.0.10', 80, 0],
    ['198.51.100.1', 30080, NAT_FLG_EXTERNAL | NAT_FLG_EXTERNAL_LOCAL],
    ['203.0.113.1', 30080, NAT_FLG_EXTERNAL | NAT_FLG_EXTERNAL_LOCAL],
    ['255.255.255.255', 30080, NAT_FLG_EXTERNAL | NAT_FLG_EXTERNAL_LOCAL],
  ]);
  // a ClusterIP Service with a stray nodePort gets no NodePort frontends
  const c = svc(service('c', { ports: [{ name: 'http', port: 80, nodePort: 30081 }] }));
  assert.equal(translateService(c, [], { nodeIPs: ['198.51.100.1'] }).ports[0]?.frontends.length, 1);
});

test('a nodePort outside the configured range loses only its NodePort frontends, with a reason', () => {
  const s = svc(
    service('np', {
      type: 'NodePort',
      ports: [{ name: 'a', port: 80, nodePort: 30080 }, { name: 'b', port: 81, nodePort: 40000 }],
      extra: { externalIPs: ['198.18.5.5'] },
    }),
  );
  const t = translateService(s, [], { nodePortRange: [30000, 32767], nodeIPs: ['198.51.100.1'] });
  assert.deepEqual(t.ports.map((p) => p.name), ['default/np:a/TCP', 'default/np:b/TCP']);
  assert.deepEqual(t.ports[1]?.frontends.map((f) => `${f.addr}:${f.port}`), ['198.18.0.10:81', '198.18.5.5:81']);
  assert.equal(t.ports[0]?.frontends.filter((f) => f.port === 30080).length, 2);
  assert.deepEqual(t.skipped.map((x) => [x.object, x.reason]), [['Service default/np port b', 'nodeport-out-of-range']]);
});

test('--nodeport-addresses: only matching node addresses serve NodePorts, "primary" is the first, no wildcard', () => {
  const s = svc(service('np', { type: 'NodePort', ports: [{ name: 'a', port: 80, nodePort: 30080 }] }));
  const np = (filter: string[] | undefined) =>
    translateService(s, [], { nodeIPs: ['198.51.100.1', '203.0.113.1', '192.0.2.7'], nodePortAddresses: filter })
      .ports[0]?.frontends.filter((f) => f.port === 30080)
      .map((f) => f.addr);
  assert.deepEqual(np(undefined), ['198.51.100.1', '203.0.113.1', '192.0.2.7', '255.255.255.255']);
  assert.deepEqual(np(['203.0.113.0/24']), ['203.0.113.1']);
  assert.deepEqual(np(['primary']), ['198.51.100.1']);
  assert.deepEqual(np(['primary', '192.0.2.0/24']), ['198.51.100.1', '192.0.2.7']);
  assert.deepEqual(np(['10.0.0.0/8']), []);
});

test('LoadBalancer ingress with ipMode Proxy is not programmed; VIP mode and unset are', () => {
  const raw = service('lb', { type: 'LoadBalancer' });
  (raw as { status?: unknown }).status = {
    loadBalancer: { ingress: [{ ip: '198.18.9.1', ipMode: 'Proxy' }, { ip: '198.18.9.2', ipMode: 'VIP' }, { ip: '198.18.9.3' }] },
  };
  const t = translateService(svc(raw), []);
  assert.deepEqual(t.ports[0]?.frontends.map((f) => f.addr), ['198.18.0.10', '198.18.9.2', '198.18.9.3']);
});

test('loadBalancerSourceRanges become source prefixes plus a blackhole', () => {
  const raw = service('lb', { type: 'LoadBalancer', extra: { loadBalancerSourceRanges: ['203.0.113.0/24', '198.51.100.7/32'] } });
  (raw as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: '198.18.9.9' }] } };
  const t = translateService(svc(raw), [], { nodeIPs: ['192.0.2.1'] });
  const lb = t.ports[0]?.frontends.filter((f) => f.addr === '198.18.9.9');
  // the node itself (its addresses, and the LB IP looped back) is always allowed, as in kube-proxy
  assert.deepEqual(lb?.map((f) => [f.srcAddr, f.srcLen, f.blackhole]), [
    ['203.0.113.0', 24, false],
    ['198.51.100.7', 32, false],
    ['192.0.2.1', 32, false],
    ['198.18.9.9', 32, false],
    ['0.0.0.0', 0, true],
  ]);
});

test('malformed objects are rejected with a message that names them and the field', () => {
  const cases: Array<[unknown, RegExp]> = [
    [service('a', { clusterIP: '198.18.0.300' }), /spec\.clusterIPs\[0\] must be an IP/],
    [service('b', { ports: [{ name: 'x', port: 70000 }] }), /spec\.ports\[0\]\.port must be a port/],
    [service('c', { ports: [{ name: 'x', port: 80, protocol: 'ICMP' }] }), /protocol must be TCP, UDP or SCTP/],
    [{ kind: 'Service', spec: {} }, /metadata is missing/],
    [{ ...service('d'), kind: 'Deployment' }, /kind is "Deployment"/],
    [service('e', { ports: [{ name: 'x', port: 80 }, { name: 'x', port: 81 }] }), /two ports named "x"/],
  ];
  for (const [raw, re] of cases) {
    const r = parseService(raw);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.match(r.message, re);
      assert.match(r.object, /^Service /);
    }
  }
  const bad = parseEndpointSlice({ ...slice('s', 'web', [{ ip: 'nope' }]) });
  assert.equal(bad.ok, false);
  if (!bad.ok) {
    assert.equal(bad.object, 'EndpointSlice default/s');
    assert.match(bad.message, /endpoints\[0\]\.addresses\[0\] must be an IP/);
  }
  const noLabel = parseEndpointSlice({ ...slice('s', 'web', []), metadata: { name: 's' } });
  assert.equal(noLabel.ok, false);
});

test('API list items without kind and with Date fields parse like YAML', () => {
  const raw = service('web') as Record<string, unknown>;
  delete raw.kind;
  delete raw.apiVersion;
  (raw.metadata as Record<string, unknown>).creationTimestamp = new Date();
  assert.equal(parseService(raw).ok, true);
});

test('the trigger-time annotation is parsed for programming latency', () => {
  const r = parseEndpointSlice(slice('s', 'web', [], undefined, { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-02T03:04:05Z' } }));
  assert.ok(r.ok);
  if (r.ok) assert.equal(r.value.triggerTime, Date.parse('2026-01-02T03:04:05Z'));
});
