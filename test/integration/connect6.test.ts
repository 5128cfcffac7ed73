/**
 * Connect-time load balancing for AF_INET6 sockets, end to end: a real kpr
 * process, its cgroup hooks on a child cgroup this test creates, and real
 * TCP/UDP sockets in network namespaces this test creates. Both families
 * in the same run: a dual-stack Service (198.18.0.10 and 2001:db8:f::10)
 * over pods that have 192.0.2.1x and 2001:db8::1x.
 *
 * Addresses: IPv6 only in 2001:db8::/32 (node and pods in 2001:db8::/48,
 * VIPs in 2001:db8:f::/64); nothing routes out of the namespaces.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { join } from 'node:path';
import { test } from 'node:test';
import { nodeArgv, runIn, spawnIn } from '../../src/lab/exec.js';
import { BpfMap } from '../../src/datapath/bpf-map.js';
import { encodeKprSockConfig, encodeU32 } from '../../src/datapath/codec.js';
import { mapPinPath } from '../../src/datapath/migrate.js';
import { MAP_SOCK_CONFIG } from '../../src/datapath/names.js';
import { repoRoot } from '../../src/util/paths.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { Harness } from '../helpers/harness.js';
import { service, slice } from '../../src/lab/objects.js';
import { requireRoot } from '../helpers/privileged.js';

const VIP4 = '198.18.0.10';
const VIP6 = '2001:db8:f::10';
const MAPPED = `::ffff:${VIP4}`;
const STICKY6 = '2001:db8:f::20';
const EMPTY6 = '2001:db8:f::30';
const LOCAL6 = '2001:db8:f::40';
const LB6_NODE_IN = '2001:db8:f::51';
const LB6_NODE_OUT = '2001:db8:f::61';
const NODEPORT = 30080;
const PORTS = [
  { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080, nodePort: NODEPORT },
  { name: 'dns', port: 53, protocol: 'UDP', targetPort: 8080 },
];
const SLICE_PORTS = [
  { name: 'http', port: 8080, protocol: 'TCP' },
  { name: 'dns', port: 8080, protocol: 'UDP' },
];

type Ev = { t: number; pod?: string; err?: string; connect?: string; done?: boolean };

/** sockclient in the node netns and the kpr cgroup; its JSON events as they arrive. */
function sockclient(h: Harness, args: string[]): { events: Ev[]; done: Promise<Ev[]> } {
  const p = spawnIn({ netns: h.topo.nodeNs, cgroup: h.cgroup }, process.execPath, [...nodeArgv(join(repoRoot(), 'test', 'helpers', 'sockclient.ts')), ...args]);
  const events: Ev[] = [];
  let buf = '';
  p.stdout?.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('{')) events.push(JSON.parse(line) as Ev);
    }
  });
  return { events, done: once(p, 'exit').then(() => events) };
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function objects(h: Harness, v6Ready: string[], v4Ready = h.topo.pods.map((p) => p.ip)) {
  const v4 = v4Ready.map((ip) => ({ ip }));
  const dual = (name: string, clusterIPs: string[], extra: Record<string, unknown> = {}) =>
    service(name, {
      ns: 'test',
      type: name === 'web' ? 'NodePort' : 'ClusterIP',
      clusterIP: clusterIPs[0],
      ports: PORTS,
      extra: { clusterIPs, ipFamilies: clusterIPs.map((a) => (a.includes(':') ? 'IPv6' : 'IPv4')), ipFamilyPolicy: clusterIPs.length > 1 ? 'RequireDualStack' : 'SingleStack', ...extra },
    });
  const v6slice = (name: string, svc: string, ips: string[]) =>
    slice(name, svc, ips.map((ip) => ({ ip })), SLICE_PORTS, { ns: 'test', addressType: 'IPv6' });
  return [
    dual('web', [VIP4, VIP6]),
    slice('web-4', 'web', v4, SLICE_PORTS, { ns: 'test' }),
    v6slice('web-6', 'web', v6Ready),
    dual('sticky', [STICKY6], { sessionAffinity: 'ClientIP' }),
    v6slice('sticky-6', 'sticky', h.topo.pods.map((p) => p.ip6!)),
    dual('empty', [EMPTY6]),
    // internalTrafficPolicy Local, endpoints on another node only
    dual('local', [LOCAL6], { internalTrafficPolicy: 'Local' }),
    slice('local-6', 'local', h.topo.pods.map((p) => ({ ip: p.ip6!, node: 'elsewhere' })), SLICE_PORTS, { ns: 'test', addressType: 'IPv6' }),
  ];
}

test('connect-time load balancing for AF_INET6 sockets: IPv6 Services and v4-mapped IPv4 ones', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`c6${process.pid % 100000}`, 3, { family: 'dual' });
  try {
    await h.setup();
    const v6 = h.topo.pods.map((p) => p.ip6!);
    await h.writeManifest('svc.yaml', objects(h, v6));
    // The node's addresses of both families serve NodePorts.
    h.startKpr(['--node-ip', '192.0.2.1', '--node-ip', '2001:db8::1']);
    await h.waitNat(
      (rows) => rows.filter((r) => r.family === 6 && r.backends.length === 3).length === 8 && rows.filter((r) => r.family === 4 && r.backends.length === 3).length === 4,
      'both families programmed',
    );

    await t.test('one Service port, one id, in both families', () => {
      const rows = h.nat().filter((r) => r.service === 'test/web:http/TCP');
      // ClusterIP, NodePort on each node address and each family's wildcard
      assert.deepEqual(rows.map((r) => r.frontend.addr).sort(), ['192.0.2.1', VIP4, '2001:db8::1', VIP6, '255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);
      assert.equal(new Set(rows.map((r) => r.id)).size, 1);
    });

    await t.test('TCP to the IPv6 VIP spreads over the pods\' IPv6 addresses; getpeername reports the VIP', async () => {
      const r = await h.probe(['tcp', VIP6, '80', '--count', '150']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), ['pod-1', 'pod-2', 'pod-3']);
      for (const n of Object.values(r.pods)) assert.ok(n >= 25, `uneven spread: ${JSON.stringify(r.pods)}`);
      assert.deepEqual(r.peers, { [`${VIP6}:80`]: 150 });
      // the pods saw the node's IPv6 address: the socket really went over IPv6
      assert.deepEqual(Object.keys(r.seenAs), ['2001:db8::1']);
    });

    await t.test('UDP over IPv6: recvmsg reports the VIP, unconnected and connected', async () => {
      const u = await h.probe(['udp', VIP6, '53', '--count', '60']);
      assert.deepEqual(u.errors, {});
      assert.deepEqual(u.peers, { [`${VIP6}:53`]: 60 });
      assert.equal(Object.keys(u.pods).length, 3);
      const c = await h.probe(['udp', VIP6, '53', '--count', '20', '--connected']);
      assert.deepEqual(c.errors, {});
      assert.deepEqual(c.peers, { [`${VIP6}:53 peer=${VIP6}:53`]: 20 });
    });

    await t.test('an unconnected UDP socket keeps its IPv6 conversation on one backend', async () => {
      const r = await h.probe(['udp', VIP6, '53', '--count', '30', '--bind-port', '45353']);
      assert.deepEqual(r.errors, {});
      assert.equal(Object.keys(r.pods).length, 1, `conversation moved: ${JSON.stringify(r.pods)}`);
    });

    await t.test('NodePort on the node\'s IPv6 address is balanced to the IPv6 endpoints', async () => {
      const r = await h.probe(['tcp', '2001:db8::1', String(NODEPORT), '--count', '30']);
      assert.deepEqual(r.errors, {});
      assert.equal(Object.keys(r.pods).length, 3);
      assert.deepEqual(r.peers, { [`2001:db8::1:${NODEPORT}`]: 30 });
      assert.deepEqual(Object.keys(r.seenAs), ['2001:db8::1']);
    });

    await t.test('the IPv4 side of the same Service still works in the same run', async () => {
      const r = await h.probe(['tcp', VIP4, '80', '--count', '30']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(r.peers, { [`${VIP4}:80`]: 30 });
      assert.deepEqual(Object.keys(r.seenAs), ['192.0.2.1']);
    });

    await t.test('an AF_INET6 socket to ::ffff:198.18.0.10 is balanced through the IPv4 maps and sees the VIP mapped', async () => {
      const r = await h.probe(['tcp', MAPPED, '80', '--count', '60']);
      assert.deepEqual(r.errors, {});
      assert.equal(Object.keys(r.pods).length, 3);
      assert.deepEqual(r.peers, { [`${MAPPED}:80`]: 60 });
      // IPv4 on the wire: the pods saw the node's IPv4 address
      assert.deepEqual(Object.keys(r.seenAs), ['192.0.2.1']);
      const u = await h.probe(['udp', MAPPED, '53', '--count', '20']);
      assert.deepEqual(u.errors, {});
      assert.deepEqual(u.peers, { [`${MAPPED}:53`]: 20 });
      const c = await h.probe(['udp', MAPPED, '53', '--count', '10', '--connected']);
      assert.deepEqual(c.peers, { [`${MAPPED}:53 peer=${MAPPED}:53`]: 10 });
    });

    await t.test('sessionAffinity ClientIP on an IPv6 Service: every connection from the pod goes to one backend', async () => {
      const r = await h.probe(['tcp', STICKY6, '80', '--count', '40']);
      assert.deepEqual(r.errors, {});
      assert.equal(Object.keys(r.pods).length, 1, `affinity broken: ${JSON.stringify(r.pods)}`);
    });

    await t.test('an IPv6 Service without endpoints refuses at once (ECONNREFUSED), TCP and connected UDP', async () => {
      const r = await h.probe(['tcp', EMPTY6, '80', '--count', '5']);
      assert.deepEqual(r.errors, { ECONNREFUSED: 5 });
      assert.ok(r.elapsedMs < 2000, `refusal should be immediate, took ${r.elapsedMs} ms`);
      const u = await h.probe(['udp', EMPTY6, '53', '--count', '3', '--connected']);
      assert.deepEqual(u.errors, { ECONNREFUSED: 3 });
    });

    await t.test('internalTrafficPolicy Local with IPv6 endpoints only elsewhere: ETIMEDOUT at once, counted as a policy drop', async () => {
      const drops = () => withPinnedMaps(h.pinPath, (m) => readStats(m.stats)).sock_drop_policy;
      const before = drops();
      const r = await h.probe(['tcp', LOCAL6, '80', '--count', '3']);
      assert.deepEqual(r.errors, { ETIMEDOUT: 3 });
      assert.ok(r.elapsedMs < 2000, `the drop should answer at once, took ${r.elapsedMs} ms`);
      assert.equal(drops() - before, 3);
    });

    await t.test('IPv6 endpoints gone while IPv4 ones stay: only the IPv6 frontend refuses', async () => {
      await h.writeManifest('svc.yaml', objects(h, []));
      await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP6 && r.count === 0 && r.frontend.port === 80), 'web IPv6 without endpoints');
      const r6 = await h.probe(['tcp', VIP6, '80', '--count', '3']);
      assert.deepEqual(r6.errors, { ECONNREFUSED: 3 });
      const r4 = await h.probe(['tcp', VIP4, '80', '--count', '3']);
      assert.equal(r4.ok, 3);
    });

    await t.test('a connected IPv6 UDP socket on a removed backend is aborted and reconnects to a live one', async () => {
      await h.writeManifest('svc.yaml', objects(h, v6));
      await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP6 && r.frontend.port === 53 && r.backends.length === 3), 'web IPv6 back');
      const c = sockclient(h, ['udp-connected', VIP6, '53', '5000', '10']);
      await until(() => c.events.filter((e) => e.pod).length >= 5, 'replies before the removal');
      const victim = c.events.find((e) => e.pod)!.pod!;
      const removedAt = Date.now();
      await h.writeManifest('svc.yaml', objects(h, h.topo.pods.filter((p) => p.name !== victim).map((p) => p.ip6!)));
      const evs = await c.done;
      const errAt = evs.find((e) => e.t >= removedAt && e.err && e.err !== 'ETIMEDOUT');
      assert.ok(errAt, `no error after the removal: ${JSON.stringify(evs.slice(-20))}\n${h.kprLog.slice(-2000)}`);
      t.diagnostic(`IPv6 connected UDP: backend removed -> client error in ${errAt.t - removedAt} ms (${errAt.err})`);
      assert.ok(errAt.t - removedAt <= 1000, `error came ${errAt.t - removedAt} ms after the removal`);
      const later = evs.filter((e) => e.t > errAt.t && e.pod);
      assert.ok(later.length > 20, `the socket carried on: ${later.length} replies`);
      assert.ok(later.every((e) => e.pod !== victim), 'after reconnecting, only live backends answer');
    });

    await t.test('an AF_INET6 socket connected through ::ffff: to a removed IPv4 backend is aborted too', async () => {
      await h.writeManifest('svc.yaml', objects(h, v6));
      await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP6 && r.frontend.port === 53 && r.backends.length === 3), 'web IPv6 back');
      const c = sockclient(h, ['udp-connected', MAPPED, '53', '5000', '10']);
      await until(() => c.events.filter((e) => e.pod).length >= 5, 'replies before the removal');
      const victim = c.events.find((e) => e.pod)!.pod!;
      const removedAt = Date.now();
      const rest = h.topo.pods.filter((p) => p.name !== victim);
      await h.writeManifest('svc.yaml', objects(h, v6, rest.map((p) => p.ip)));
      const evs = await c.done;
      const errAt = evs.find((e) => e.t >= removedAt && e.err && e.err !== 'ETIMEDOUT');
      assert.ok(errAt, `no error after the removal: ${JSON.stringify(evs.slice(-20))}`);
      assert.ok(errAt.t - removedAt <= 1000, `error came ${errAt.t - removedAt} ms after the removal`);
      assert.ok(evs.filter((e) => e.t > errAt.t && e.pod).every((e) => e.pod !== victim));
    });

    await t.test('a socket outside the kpr cgroup is not balanced', async () => {
      await h.writeManifest('svc.yaml', objects(h, v6));
      await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP6 && r.backends.length === 3), 'web IPv6 back');
      const r = await h.probe(['tcp', VIP6, '80', '--count', '1', '--timeout', '1000'], false);
      assert.equal(r.ok, 0);
    });

    await t.test('loadBalancerSourceRanges for the node\'s own IPv6 sockets: allowFromNode by the node\'s IPv6 primary address', async () => {
      // The node is the namespace whose cookie is in kpr_sock_config. This
      // kpr runs in the root netns, so the test names the lab node's
      // namespace instead, as kpr in that namespace would (writeSockConfig).
      const cookie = BigInt(
        (
          await runIn({ netns: h.topo.nodeNs }, process.execPath, [
            '--import',
            'tsx',
            '-e',
            `import(${JSON.stringify(join(repoRoot(), 'src', 'datapath', 'addon.ts'))}).then((m) => console.log(String(m.bpf.netnsCookie())))`,
          ])
        ).trim(),
      );
      const sockConfig = BpfMap.openPinned(mapPinPath(h.pinPath, MAP_SOCK_CONFIG), MAP_SOCK_CONFIG);
      try {
        sockConfig.update(encodeU32(0), encodeKprSockConfig({ nodeNetnsCookie: cookie }));
      } finally {
        sockConfig.close();
      }
      const v6eps = h.topo.pods.map((p) => ({ ip: p.ip6! }));
      const lb = (name: string, clusterIP: string, ip: string, ranges: string[]) => [
        service(name, {
          ns: 'test',
          type: 'LoadBalancer',
          clusterIP,
          ports: PORTS,
          extra: { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack', loadBalancerSourceRanges: ranges },
          status: { loadBalancer: { ingress: [{ ip }] } },
        }),
        slice(`${name}-6`, name, v6eps, SLICE_PORTS, { ns: 'test', addressType: 'IPv6' }),
      ];
      // The node (2001:db8::1) is inside the first one's ranges, not the second's.
      await h.writeManifest('lbsr.yaml', [...lb('lbin', '2001:db8:f::50', LB6_NODE_IN, ['2001:db8::/64']), ...lb('lbout', '2001:db8:f::60', LB6_NODE_OUT, ['2001:db8:0:2::/64'])]);
      await h.waitNat(
        (rows) => rows.some((r) => r.frontend.addr === LB6_NODE_IN && r.frontend.source === `${LB6_NODE_IN}/128`) && rows.some((r) => r.frontend.addr === LB6_NODE_OUT),
        'both IPv6 LB IPs, and the LB IP /128 entry for the node inside',
      );
      assert.ok(!h.nat().some((r) => r.frontend.addr === LB6_NODE_OUT && r.frontend.source === `${LB6_NODE_OUT}/128`), 'no LB IP entry when the node is outside');
      const stats = () => withPinnedMaps(h.pinPath, (m) => readStats(m.stats));

      const inside = await h.probe(['tcp', LB6_NODE_IN, '80', '--count', '20']);
      assert.deepEqual(inside.errors, {});
      assert.equal(inside.ok, 20);
      assert.deepEqual(inside.peers, { [`${LB6_NODE_IN}:80`]: 20 }, 'the socket sees the LB IP');

      const before = stats();
      const outside = await h.probe(['tcp', LB6_NODE_OUT, '80', '--count', '2', '--timeout', '20000']);
      assert.equal(outside.ok, 0);
      assert.deepEqual(outside.errors, { ETIMEDOUT: 2 });
      assert.ok(outside.elapsedMs < 20_000, `the errno came from connect(), not the probe's 20 s timer: ${outside.elapsedMs} ms`);
      assert.equal(stats().sock_blackhole - before.sock_blackhole, 2);
      await h.removeManifest('lbsr.yaml');
    });
  } finally {
    await h.teardown();
  }
});

test('an IPv6-only node topology: no IPv4 address in any namespace, and an IPv6 Service balanced at connect time', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`c6o${process.pid % 100000}`, 2, { family: 'ipv6' });
  try {
    await h.setup();
    for (const ns of [h.topo.nodeNs, ...h.topo.pods.map((p) => p.netns)]) {
      const v4 = await runIn({ netns: ns }, 'ip', ['-4', '-o', 'addr', 'show']);
      assert.deepEqual(v4.split('\n').filter((l) => l.trim() && !/^\d+: lo\s/.test(l)), [], `${ns} has no IPv4 address but loopback's`);
    }
    assert.deepEqual(h.topo.pods.map((p) => p.ip), ['', '']);
    await h.writeManifest('svc.yaml', [
      service('web6', { ns: 'test', clusterIP: VIP6, ports: PORTS.slice(0, 1).map(({ nodePort: _, ...p }) => p), extra: { ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' } }),
      slice('web6-1', 'web6', h.topo.pods.map((p) => ({ ip: p.ip6! })), SLICE_PORTS.slice(0, 1), { ns: 'test', addressType: 'IPv6' }),
    ]);
    h.startKpr(['--node-ip', '2001:db8::1']);
    await h.waitNat((rows) => rows.some((r) => r.frontend.addr === VIP6 && r.backends.length === 2), 'the IPv6 Service');
    const r = await h.probe(['tcp', VIP6, '80', '--count', '40']);
    assert.deepEqual(r.errors, {});
    assert.deepEqual(Object.keys(r.pods).sort(), ['pod-1', 'pod-2']);
    assert.deepEqual(r.peers, { [`${VIP6}:80`]: 40 });
    assert.deepEqual(Object.keys(r.seenAs), ['2001:db8::1'], 'the pods saw the node over IPv6');
  } finally {
    await h.teardown();
  }
});
