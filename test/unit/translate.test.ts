import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseEndpointSlice, parseService } from '../../src/model/objects.js';
import { translateService } from '../../src/model/translate.js';
import { NAT_FLG_EXTERNAL, NAT_FLG_EXTERNAL_LOCAL, NAT_FLG_INTERNAL_LOCAL, NAT_FLG_MAGLEV, type EndpointSlice, type Service } from '../../src/model/types.js';
import { service, slice } from '../../src/lab/objects.js';

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

/*
 * Both families. The IPv6 runs use 2001:db8::/48 for nodes and pods and
 * 2001:db8:f::/64 for VIPs, the IPv4 runs the usual test ranges.
 */
interface Fam {
  f: 4 | 6;
  vip: string;
  ext: string;
  lb: string;
  pod: (n: number) => string;
  node: (n: number) => string;
  any: string;
  open: string;
  host: number;
  addressType: string;
  range: [string, number];
}
const FAMS: Fam[] = [
  { f: 4, vip: '198.18.0.10', ext: '198.18.5.5', lb: '198.18.9.9', pod: (n) => `192.0.2.${n}`, node: (n) => `198.51.100.${n}`, any: '255.255.255.255', open: '0.0.0.0', host: 32, addressType: 'IPv4', range: ['203.0.113.0', 24] },
  { f: 6, vip: '2001:db8:f::10', ext: '2001:db8:f::55', lb: '2001:db8:f::99', pod: (n) => `2001:db8::${n}`, node: (n) => `2001:db8:0:1::${n}`, any: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', open: '::', host: 128, addressType: 'IPv6', range: ['2001:db8:0:2::', 64] },
];

function famService(F: Fam, name: string, o: { type?: string; ports?: Array<{ name: string; port: number; nodePort?: number }>; extra?: Record<string, unknown> } = {}): Service {
  return svc(
    service(name, {
      clusterIP: F.vip,
      ...(o.type ? { type: o.type } : {}),
      ...(o.ports ? { ports: o.ports } : {}),
      extra: { ipFamilies: [F.addressType], ...(o.extra ?? {}) },
    }),
  );
}

for (const F of FAMS) {
  test(`IPv${F.f}: ClusterIP, external IP and traffic policies; backends from slices of its family only`, () => {
    const s = famService(F, 'web', { extra: { internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Local', externalIPs: [F.ext] } });
    const own = sl(slice('web-a', 'web', [{ ip: F.pod(1), node: 'n2' }, { ip: F.pod(9), node: 'n1' }], undefined, { addressType: F.addressType }));
    const other = F.f === 4 ? sl(slice('web-6', 'web', [{ ip: '2001:db8::7' }], undefined, { addressType: 'IPv6' })) : sl(slice('web-4', 'web', [{ ip: '192.0.2.7' }]));
    const t = translateService(s, [own, other], { nodeName: 'n1' });
    assert.deepEqual(t.skipped, []);
    assert.deepEqual(t.ports[0]?.backends, [
      { addr: F.pod(1), port: 8080, local: false },
      { addr: F.pod(9), port: 8080, local: true },
    ]);
    assert.deepEqual(t.ports[0]?.localBackends, [{ addr: F.pod(9), port: 8080, local: true }]);
    assert.deepEqual(t.ports[0]?.frontends, [
      { addr: F.vip, port: 80, proto: 6, flags: NAT_FLG_INTERNAL_LOCAL, srcAddr: F.open, srcLen: 0, blackhole: false },
      { addr: F.ext, port: 80, proto: 6, flags: NAT_FLG_EXTERNAL | NAT_FLG_EXTERNAL_LOCAL, srcAddr: F.open, srcLen: 0, blackhole: false },
    ]);
  });

  test(`IPv${F.f}: NodePort on the node's addresses of its family, plus that family's wildcard`, () => {
    const s = famService(F, 'np', { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
    // the node has addresses of both families; only its own family's serve
    const t = translateService(s, [], { nodeIPs: ['198.51.100.1', '2001:db8:0:1::1', '203.0.113.1', '2001:db8:0:1::2'] });
    const own = ['198.51.100.1', '2001:db8:0:1::1', '203.0.113.1', '2001:db8:0:1::2'].filter((a) => a.includes(':') === (F.f === 6));
    assert.deepEqual(t.ports[0]?.frontends.filter((f) => f.port === 30080).map((f) => f.addr), [...own, F.any]);
  });

  test(`IPv${F.f}: loadBalancerSourceRanges of its own family become source prefixes plus a blackhole; allowFromNode by that family's primary address`, () => {
    const raw = service('lb', {
      type: 'LoadBalancer',
      clusterIP: F.vip,
      extra: { loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8:0:2::/64'] },
    });
    (raw as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: F.lb }] } };
    const rows = (nodeIPs: string[]) =>
      translateService(svc(raw), [], { nodeIPs })
        .ports[0]?.frontends.filter((f) => f.addr === F.lb)
        .map((f) => [f.srcAddr, f.srcLen, f.blackhole]);
    // The node's primary address of this family is outside every range: the
    // node gets no way in (its packets are judged by their source).
    assert.deepEqual(rows(['192.0.2.1', '2001:db8::1']), [
      [...F.range, false],
      [F.open, 0, true],
    ]);
    // Inside a range of this family: the LB IP looped back as the source is
    // allowed too. Only the first address of the family counts, and the
    // other family's primary address does not.
    const inside = F.f === 4 ? ['2001:db8:0:2::5', '192.0.2.1', '203.0.113.5'] : ['203.0.113.5', '2001:db8::1', '2001:db8:0:2::5'];
    assert.deepEqual(rows(F.f === 4 ? ['203.0.113.5', '2001:db8::1'] : ['192.0.2.1', '2001:db8:0:2::5']), [
      [...F.range, false],
      [F.lb, F.host, false],
      [F.open, 0, true],
    ]);
    assert.deepEqual(rows(inside), [
      [...F.range, false],
      [F.open, 0, true],
    ]);
  });
}

test('IPv6 LB IP when every source range is IPv4: unrestricted, as kube-proxy filters ranges by family', () => {
  const raw = service('lb', { type: 'LoadBalancer', clusterIP: '2001:db8:f::10', extra: { loadBalancerSourceRanges: ['203.0.113.0/24'] } });
  (raw as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: '2001:db8:f::99' }] } };
  const lb = translateService(svc(raw), []).ports[0]?.frontends.filter((f) => f.addr === '2001:db8:f::99');
  assert.deepEqual(lb?.map((f) => [f.srcAddr, f.srcLen, f.blackhole]), [['::', 0, false]]);
});

test('dual-stack: one Service port (one name, so one id) with frontends and backends of both families, never crossed', () => {
  const raw = service('d', {
    type: 'LoadBalancer',
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    extra: {
      ipFamilyPolicy: 'RequireDualStack',
      ipFamilies: ['IPv6', 'IPv4'],
      clusterIPs: ['2001:db8:f::10', '198.18.0.10'],
      clusterIP: '2001:db8:f::10',
      externalIPs: ['198.18.5.5', '2001:db8:f::55'],
    },
  });
  (raw as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: '198.18.9.9' }, { ip: '2001:db8:f::99' }] } };
  const s = svc(raw);
  assert.deepEqual(s.ipFamilies, [6, 4]);
  assert.equal(s.ipFamilyPolicy, 'RequireDualStack');
  const s4 = sl(slice('d-4', 'd', [{ ip: '192.0.2.5' }]));
  const s6 = sl(slice('d-6', 'd', [{ ip: '2001:db8::5' }, { ip: '2001:db8::6', ready: false }], undefined, { addressType: 'IPv6' }));
  const t = translateService(s, [s4, s6], { nodeIPs: ['198.51.100.1', '2001:db8:0:1::1'] });
  assert.deepEqual(t.skipped, []);
  assert.deepEqual(t.ports.map((p) => p.name), ['default/d:http/TCP']);
  const p = t.ports[0];
  assert.deepEqual(p?.frontends.map((f) => `${f.addr}:${f.port}`), [
    '2001:db8:f::10:80',
    '2001:db8:0:1::1:30080',
    'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:30080',
    '2001:db8:f::55:80',
    '2001:db8:f::99:80',
    '198.18.0.10:80',
    '198.51.100.1:30080',
    '255.255.255.255:30080',
    '198.18.5.5:80',
    '198.18.9.9:80',
  ]);
  assert.deepEqual(p?.backends.map((b) => b.addr), ['2001:db8::5', '192.0.2.5']);
});

test('a family without a cluster IP is not programmed: its external and LB IPs are noted and left alone', () => {
  const s = svc(service('v4only', { extra: { externalIPs: ['198.18.5.5', '2001:db8:f::55'] } }));
  const t = translateService(s, [sl(slice('v-6', 'v4only', [{ ip: '2001:db8::5' }], undefined, { addressType: 'IPv6' }))]);
  assert.deepEqual(t.ports[0]?.frontends.map((f) => f.addr), ['198.18.0.10', '198.18.5.5']);
  assert.deepEqual(t.ports[0]?.backends, []);
  assert.deepEqual(t.skipped.map((x) => x.reason), ['family-mismatch']);
  assert.match(t.skipped[0]?.message ?? '', /2001:db8:f::55/);
});

test('RequireDualStack with one cluster IP programs that family and notes the missing one', () => {
  const s = svc(service('r', { clusterIP: '2001:db8:f::10', extra: { ipFamilyPolicy: 'RequireDualStack' } }));
  const t = translateService(s, []);
  assert.deepEqual(t.ports[0]?.frontends.map((f) => f.addr), ['2001:db8:f::10']);
  assert.deepEqual(t.skipped.map((x) => x.reason), ['missing-family']);
});

test('ipFamilies and ipFamilyPolicy must agree with the cluster IPs', () => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ ipFamilyPolicy: 'SingleStack', clusterIPs: ['198.18.0.10', '2001:db8:f::10'] }, /SingleStack allows one family/],
    [{ ipFamilyPolicy: 'PreferDualStack', clusterIPs: ['198.18.0.10', '198.18.0.11'] }, /two addresses of one family/],
    [{ ipFamilyPolicy: 'PreferDualStack', ipFamilies: ['IPv6', 'IPv4'], clusterIPs: ['198.18.0.10', '2001:db8:f::10'] }, /clusterIPs\[0\] is IPv4 but spec.ipFamilies\[0\] is IPv6/],
    [{ ipFamilies: ['IPv5'] }, /ipFamilies\[0\] must be IPv4 or IPv6/],
    [{ ipFamilyPolicy: 'DualStack' }, /ipFamilyPolicy must be/],
  ];
  for (const [extra, re] of cases) {
    const r = parseService(service('x', { extra }));
    assert.equal(r.ok, false, JSON.stringify(extra));
    if (!r.ok) assert.match(r.message, re);
  }
  // no ipFamilies: read from the cluster IPs
  assert.deepEqual(svc(service('y', { clusterIP: '2001:db8:f::10' })).ipFamilies, [6]);
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
  const rows = (nodeIPs: string[]) =>
    translateService(svc(raw), [], { nodeIPs })
      .ports[0]?.frontends.filter((f) => f.addr === '198.18.9.9')
      .map((f) => [f.srcAddr, f.srcLen, f.blackhole]);
  // The node's primary address is outside every range: the node gets no
  // way in, as in kube-proxy (its packets are judged by their source).
  assert.deepEqual(rows(['192.0.2.1', '203.0.113.5']), [
    ['203.0.113.0', 24, false],
    ['198.51.100.7', 32, false],
    ['0.0.0.0', 0, true],
  ]);
  // Inside a range (kube-proxy's allowFromNode): the LB IP looped back as the source is allowed too.
  assert.deepEqual(rows(['203.0.113.5', '192.0.2.1']), [
    ['203.0.113.0', 24, false],
    ['198.51.100.7', 32, false],
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

test('--nodeport-addresses on a dual-stack node: "primary" is the first address of each family; CIDRs of either family', () => {
  const s = svc(service('np', { type: 'NodePort', ports: [{ name: 'a', port: 80, nodePort: 30080 }], clusterIP: '2001:db8:f::10' }));
  const ips = ['198.51.100.1', '2001:db8:0:1::1', '2001:db8:0:1::2'];
  const np = (filter: string[]) =>
    translateService(s, [], { nodeIPs: ips, nodePortAddresses: filter }).ports[0]?.frontends.filter((f) => f.port === 30080).map((f) => f.addr);
  assert.deepEqual(np(['primary']), ['2001:db8:0:1::1']);
  assert.deepEqual(np(['2001:db8:0:1::2/128']), ['2001:db8:0:1::2']);
  // node addresses in another spelling still produce the canonical key
  const t = translateService(s, [], { nodeIPs: ['2001:DB8:0:1:0:0:0:1'] });
  assert.deepEqual(t.ports[0]?.frontends.filter((f) => f.port === 30080).map((f) => f.addr), ['2001:db8:0:1::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);
});

test('Maglev flags the external frontends of both families, never a ClusterIP: each family has its tables and per-packet path', () => {
  const s = svc(
    service('m', {
      type: 'NodePort',
      ports: [{ name: 'a', port: 80, nodePort: 30080 }],
      extra: { clusterIPs: ['198.18.0.10', '2001:db8:f::10'], ipFamilyPolicy: 'PreferDualStack', externalIPs: ['198.18.5.5', '2001:db8:f::55'] },
    }),
  );
  const all = translateService(s, [], { lbAlgorithm: 'maglev' }).ports[0]!.frontends;
  assert.deepEqual(all.map((f) => [f.addr, Boolean(f.flags & NAT_FLG_MAGLEV)]), [
    ['198.18.0.10', false],
    ['255.255.255.255', true],
    ['198.18.5.5', true],
    ['2001:db8:f::10', false],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['2001:db8:f::55', true],
  ]);
  for (const f of all) assert.equal(Boolean(f.flags & NAT_FLG_MAGLEV), Boolean(f.flags & NAT_FLG_EXTERNAL), f.addr);
});

test('an IPv6-only node: IPv6 NodePorts on its addresses; an IPv4 NodePort is not programmed, with a reason; ClusterIPs and external IPs of both families are', () => {
  const s = svc(
    service('ds', {
      type: 'NodePort',
      ports: [{ name: 'a', port: 80, nodePort: 30080 }],
      extra: { clusterIPs: ['198.18.0.10', '2001:db8:f::10'], ipFamilyPolicy: 'RequireDualStack', externalIPs: ['198.18.5.5', '2001:db8:f::55'] },
    }),
  );
  const t = translateService(s, [], { nodeIPs: ['2001:db8:0:100::11'] });
  const fe = t.ports[0]!.frontends.map((f) => `${f.addr} ${f.port}`);
  assert.deepEqual(fe, [
    '198.18.0.10 80',
    '198.18.5.5 80',
    '2001:db8:f::10 80',
    '2001:db8:0:100::11 30080',
    'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 30080',
    '2001:db8:f::55 80',
  ]);
  assert.deepEqual(t.skipped, [
    {
      object: 'Service default/ds port a',
      reason: 'no-node-address',
      message: 'this node has no IPv4 address: the IPv4 NodePort 30080 is not programmed',
    },
  ]);
  // The mirror image on an IPv4-only node; with no node address known at
  // all (connect-time only) nothing is noted and the wildcards stay.
  const v4 = translateService(s, [], { nodeIPs: ['198.51.100.11'] });
  assert.deepEqual(v4.skipped.map((k) => k.message), ['this node has no IPv6 address: the IPv6 NodePort 30080 is not programmed']);
  assert.ok(v4.ports[0]!.frontends.some((f) => f.addr === '198.51.100.11' && f.port === 30080));
  const none = translateService(s, [], {});
  assert.deepEqual(none.skipped, []);
  assert.equal(none.ports[0]!.frontends.filter((f) => f.port === 30080).length, 2);
  // A ClusterIP Service notes nothing.
  const c = svc(service('c', { clusterIP: '198.18.0.11' }));
  assert.deepEqual(translateService(c, [], { nodeIPs: ['2001:db8:0:100::11'] }).skipped, []);
});
