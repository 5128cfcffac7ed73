/**
 * End to end on the connect-time data path: real kpr process, real pinned
 * maps and cgroup hooks, real TCP/UDP sockets in network namespaces.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { bpf, type CgroupAttachType } from '../../src/datapath/addon.js';
import { ALL_MAPS, MAP_NAT_BE, SOCK_HOOKS } from '../../src/datapath/names.js';
import { mapPinPath } from '../../src/datapath/migrate.js';
import { Harness } from '../helpers/harness.js';
import { service, slice } from '../../src/lab/objects.js';
import { requireRoot } from '../helpers/privileged.js';

const run = promisify(execFile);
const VIP = '198.18.0.10';

function web(ready: string[]) {
  return [
    service('web', {
      ns: 'test',
      clusterIP: VIP,
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', targetPort: 'web' },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 8080 },
      ],
    }),
    slice('web-1', 'web', ready.map((ip) => ({ ip })), [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 8080, protocol: 'UDP' },
    ], { ns: 'test' }),
  ];
}

const backendsOf = (rows: ReturnType<Harness['nat']>, port: number) =>
  rows.find((r) => r.frontend.addr === VIP && r.frontend.port === port)?.backends.map((b) => b.addr).sort() ?? [];

test('connect-time load balancing, end to end', async (t) => {
  if (!requireRoot(t)) return;
  const h = new Harness(`c${process.pid % 100000}`);
  try {
    await h.setup();
    const all = h.topo.pods.map((p) => p.ip);
    await h.writeManifest('web.yaml', web(all));
    h.startKpr();
    await h.waitNat((rows) => backendsOf(rows, 80).length === 3 && backendsOf(rows, 53).length === 3, 'three backends');

    await t.test('TCP connections spread across all backends, roughly evenly', async () => {
      const r = await h.probe(['tcp', VIP, '80', '--count', '300']);
      assert.deepEqual(r.errors, {});
      assert.equal(r.ok, 300);
      assert.deepEqual(Object.keys(r.pods).sort(), ['pod-1', 'pod-2', 'pod-3']);
      // Expected 100 each; 60 is about five standard deviations away.
      for (const n of Object.values(r.pods)) assert.ok(n >= 60, `uneven spread: ${JSON.stringify(r.pods)}`);
    });

    await t.test('getpeername on a connected TCP socket reports the VIP', async () => {
      const r = await h.probe(['tcp', VIP, '80', '--count', '20']);
      assert.deepEqual(r.peers, { [`${VIP}:80`]: 20 });
    });

    await t.test('UDP replies read with recvmsg come from the VIP, and UDP spreads too', async () => {
      const r = await h.probe(['udp', VIP, '53', '--count', '150']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(r.peers, { [`${VIP}:53`]: 150 });
      assert.equal(Object.keys(r.pods).length, 3);
      for (const n of Object.values(r.pods)) assert.ok(n >= 25, `uneven spread: ${JSON.stringify(r.pods)}`);
    });

    await t.test('connected UDP: reply source and getpeername are the VIP', async () => {
      const r = await h.probe(['udp', VIP, '53', '--count', '20', '--connected']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(r.peers, { [`${VIP}:53 peer=${VIP}:53`]: 20 });
    });

    await t.test('traffic to an address that is not a Service is untouched', async () => {
      const pod = h.topo.pods[1]!;
      const r = await h.probe(['tcp', pod.ip, '8080', '--count', '10']);
      assert.deepEqual(r.pods, { [pod.name]: 10 });
      assert.deepEqual(r.peers, { [`${pod.ip}:8080`]: 10 });
      // a VIP port that has no Service is not translated either: nothing routes 198.18/15 here
      const other = await h.probe(['tcp', VIP, '81', '--count', '1', '--timeout', '1000']);
      assert.equal(other.ok, 0);
      assert.equal(other.errors.ECONNREFUSED, undefined);
    });

    await t.test('a socket outside the kpr cgroup is not load-balanced', async () => {
      const r = await h.probe(['tcp', VIP, '80', '--count', '1', '--timeout', '1000'], false);
      assert.equal(r.ok, 0);
    });

    await t.test('scaling down to one backend sends everything there', async () => {
      await h.writeManifest('web.yaml', web([all[0]!]));
      await h.waitNat((rows) => backendsOf(rows, 80).length === 1, 'one backend');
      const r = await h.probe(['tcp', VIP, '80', '--count', '30']);
      assert.deepEqual(r.pods, { 'pod-1': 30 });
    });

    await t.test('scaling back up spreads again', async () => {
      await h.writeManifest('web.yaml', web(all));
      await h.waitNat((rows) => backendsOf(rows, 80).length === 3, 'three backends again');
      const r = await h.probe(['tcp', VIP, '80', '--count', '90']);
      assert.equal(Object.keys(r.pods).length, 3);
    });

    await t.test('no ready endpoint: connect() fails at once with ECONNREFUSED', async () => {
      await h.writeManifest('web.yaml', web([]));
      await h.waitNat((rows) => rows.length === 2 && rows.every((r) => r.count === 0), 'zero backends');
      const r = await h.probe(['tcp', VIP, '80', '--count', '5']);
      assert.deepEqual(r.errors, { ECONNREFUSED: 5 });
      assert.ok(r.elapsedMs < 2000, `refusal should be immediate, took ${r.elapsedMs} ms`);
      const u = await h.probe(['udp', VIP, '53', '--count', '3', '--connected']);
      assert.deepEqual(u.errors, { ECONNREFUSED: 3 });
    });

    await t.test('a malformed object is skipped with a log line naming it; others keep working', async () => {
      await h.writeManifest('web.yaml', web(all));
      await h.writeManifest('bad.yaml', [service('broken', { ns: 'test', clusterIP: '198.18.0.999' })]);
      await h.waitNat((rows) => backendsOf(rows, 80).length === 3, 'web restored');
      const end = Date.now() + 10_000;
      while (!h.kprLog.includes('Service test/broken') && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      assert.match(h.kprLog, /skipping Service test\/broken: spec\.clusterIPs\[0\] must be an IP address/);
      const r = await h.probe(['tcp', VIP, '80', '--count', '9']);
      assert.equal(r.ok, 9);
      await h.removeManifest('bad.yaml');
    });

    await t.test('restarting the controller while a client loops loses no request', async () => {
      const before = h.nat();
      const links = () =>
        ['connect4', 'sendmsg4', 'recvmsg4', 'getpeername4'].map((hook) => bpf.cgroupQuery(h.cgroup, hook as CgroupAttachType));
      const linksBefore = links();
      const client = h.probeInBackground(['tcp', VIP, '80', '--count', '2000', '--interval', '2', '--duration', '15000']);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await h.stopKpr(), 0);
      // The data path works with no controller at all.
      await new Promise((r) => setTimeout(r, 500));
      h.startKpr();
      const r = await client;
      assert.deepEqual(r.errors, {});
      assert.ok(r.ok > 100, `client made only ${r.ok} requests`);
      assert.equal(Object.keys(r.pods).length, 3);
      // Same ids, same entries, and the hooks were swapped in place, never removed.
      await h.waitNat((rows) => JSON.stringify(rows) === JSON.stringify(before), 'adopted state');
      const after = links();
      assert.equal(after.length, linksBefore.length);
      for (const ids of after) assert.equal(ids.length, 1);
    });

    await t.test('bpftool map dump shows named fields', async () => {
      const { stdout } = await run('bpftool', ['-j', 'map', 'dump', 'pinned', `${h.pinPath}/kpr_v4_nat_fe`]);
      const entries = JSON.parse(stdout) as Array<{ formatted?: { key: Record<string, unknown>; value: Record<string, unknown> } }>;
      assert.ok(entries.length >= 2);
      const f = entries[0]?.formatted;
      assert.ok(f, 'bpftool printed no BTF-formatted entries');
      assert.deepEqual(Object.keys(f.key).sort(), ['addr', 'pad', 'port', 'prefixlen', 'proto', 'saddr']);
      assert.deepEqual(Object.keys(f.value).sort(), ['affinity_timeout', 'count', 'flags', 'id', 'local']);
      const be = JSON.parse((await run('bpftool', ['-j', 'map', 'dump', 'pinned', mapPinPath(h.pinPath, MAP_NAT_BE)])).stdout) as Array<{
        formatted: { key: Record<string, unknown>; value: Record<string, unknown> };
      }>;
      assert.deepEqual(Object.keys(be[0]!.formatted.key).sort(), ['id', 'ordinal']);
      assert.deepEqual(Object.keys(be[0]!.formatted.value).sort(), ['addr', 'flags', 'port']);
    });

    await t.test('deleting the Service removes its frontends; the VIP stops being translated', async () => {
      await h.writeManifest('web.yaml', []);
      await h.waitNat((rows) => rows.length === 0, 'no frontends');
      const r = await h.probe(['tcp', VIP, '80', '--count', '1', '--timeout', '1000']);
      assert.equal(r.ok, 0);
    });

    await t.test('kpr cleanup leaves no pinned map, cgroup attachment or tc filter', async () => {
      assert.equal(await h.stopKpr(), 0);
      const cli = ['--import', 'tsx', 'src/cli.ts', 'cleanup', '--pin-path', h.pinPath];
      const { stdout } = await run(process.execPath, cli);
      assert.match(stdout, new RegExp(`detached ${Object.keys(SOCK_HOOKS).length} link\\(s\\), unpinned ${ALL_MAPS.length} map\\(s\\)`));
      assert.equal(existsSync(h.pinPath), false);
      for (const hook of Object.keys(SOCK_HOOKS) as Array<keyof typeof SOCK_HOOKS>) {
        assert.deepEqual(bpf.cgroupQuery(h.cgroup, hook), [], `${hook} still attached`);
      }
      const { stdout: cg } = await run('bpftool', ['-j', 'cgroup', 'show', h.cgroup]);
      assert.deepEqual(JSON.parse(cg.trim() || '[]'), []);
      for (let i = 1; i <= h.topo.pods.length; i++) {
        for (const dir of ['ingress', 'egress']) {
          const { stdout: tc } = await run('ip', ['netns', 'exec', h.topo.nodeNs, 'tc', 'filter', 'show', 'dev', `veth${i}`, dir]);
          assert.equal(tc.trim(), '');
        }
      }
      // and traffic to the VIP is no longer translated
      const r = await h.probe(['tcp', VIP, '80', '--count', '1', '--timeout', '1000']);
      assert.equal(r.ok, 0);
    });
  } finally {
    await h.teardown();
  }
});
