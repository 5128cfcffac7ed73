/** The benchmark's pure parts: wrk output parsing, chain-name hashing, models, statistics. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { base32, sepChain, svcChain } from '../chainnames.js';
import { parseBenchArgs } from '../command.js';
import { buildModel, manifestJson, servicePortName, withPosition } from '../model.js';
import { median, percentile } from '../report.js';
import { parseBytes, parseCount, parseDurationMs, parseWrk, spreadScript, wrkArgs } from '../wrk.js';

const WRK_US = `Running 3s test @ http://198.18.0.10:80/
  3 threads and 30 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.34us  210.10us  12.50ms   91.20%
    Req/Sec    18.91k     1.02k   21.00k    70.00%
  Latency Distribution
     50%  480.00us
     75%  600.12us
     90%    1.10ms
     99%    2.50ms
  169342 requests in 3.00s, 26.48MB read
  Socket errors: connect 12, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 5
Requests/sec:  56447.33
Transfer/sec:      8.83MB
`;

const WRK_S = `Running 1m test @ http://192.0.2.11:8080/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20s   300.00ms   2.00s    60.00%
    Req/Sec     1.00      0.00     1.00    100.00%
  Latency Distribution
     50%    1.10s
     75%    1.50s
     90%    1.90s
     99%    2.00s
  100 requests in 1.00m, 15.00KB read
Requests/sec:      1.67
Transfer/sec:     256.00B
`;

test('wrk output with microseconds, socket errors and non-2xx', () => {
  const r = parseWrk(WRK_US);
  assert.equal(r.requests, 169342);
  assert.equal(r.durationS, 3);
  assert.equal(r.rps, 56447.33);
  assert.ok(Math.abs(r.latencyAvgMs - 0.51234) < 1e-9);
  assert.equal(r.latencyMaxMs, 12.5);
  assert.deepEqual(r.percentilesMs, { '50': 0.48, '75': 0.60012, '90': 1.1, '99': 2.5 });
  assert.deepEqual(r.socketErrors, { connect: 12, read: 3, write: 0, timeout: 7 });
  assert.equal(r.non2xx, 5);
  assert.equal(r.transferBps, 8.83 * 1024 * 1024);
});

test('wrk output with seconds and minutes and no error lines', () => {
  const r = parseWrk(WRK_S);
  assert.equal(r.durationS, 60);
  assert.equal(r.latencyAvgMs, 1200);
  assert.deepEqual(r.percentilesMs, { '50': 1100, '75': 1500, '90': 1900, '99': 2000 });
  assert.deepEqual(r.socketErrors, { connect: 0, read: 0, write: 0, timeout: 0 });
  assert.equal(r.non2xx, 0);
  assert.equal(r.transferBps, 256);
});

test('wrk output that is not a report is rejected', () => {
  assert.throws(() => parseWrk('unable to connect to 198.18.0.10:80 Connection refused\n'), /no Latency line/);
});

test('units: durations, counts, sizes', () => {
  assert.equal(parseDurationMs('250.00us'), 0.25);
  assert.equal(parseDurationMs('3.5ms'), 3.5);
  assert.equal(parseDurationMs('2.00s'), 2000);
  assert.equal(parseDurationMs('1.50m'), 90_000);
  assert.throws(() => parseDurationMs('12 ms'));
  assert.equal(parseCount('12.34k'), 12340);
  assert.equal(parseCount('1.5M'), 1.5e6);
  assert.equal(parseCount('7'), 7);
  assert.equal(parseBytes('1.00KB'), 1024);
  assert.throws(() => parseBytes('1.00 XB'));
});

test('wrk arguments: new connection per request, script, no shell', () => {
  const a = wrkArgs({ url: 'http://198.18.0.10:80/', durationS: 3, connections: 30, threads: 3, close: true, timeoutS: 2, script: '/tmp/s.lua' });
  assert.deepEqual(a, ['-t', '3', '-c', '30', '-d', '3s', '--timeout', '2s', '--latency', '-H', 'Connection: close', '-s', '/tmp/s.lua', 'http://198.18.0.10:80/']);
  assert.ok(!wrkArgs({ url: 'http://x/', durationS: 1, connections: 1, threads: 1, close: false, timeoutS: 1 }).includes('Connection: close'));
  const lua = spreadScript(['192.0.2.11', '192.0.2.12'], 8080);
  assert.match(lua, /local hosts = \{ "192\.0\.2\.11", "192\.0\.2\.12" \}/);
  assert.match(lua, /wrk\.lookup\(h, "8080"\)/);
  // IPv6 addresses keep their colons (and only address characters get through).
  assert.match(spreadScript(['2001:db8::11', '2001:db8::12"'], 8080), /local hosts = \{ "2001:db8::11", "2001:db8::12" \}/);
});

test('--ip-family: 4 by default; 6 measures S1-S3 only, and says so for anything else', () => {
  const base = { services: '1', 'include-50k': false, modes: 'direct', 'nodeport-modes': '', duration: 1, repeat: 1, connections: 6, 'filler-endpoints': 2, 's4-endpoints': 10, 's4-repeat': 1, 's5-changes': 1, 's8-connects': 10, 's9-services': 1000, 's9-endpoints': 10, seed: 1, out: '/tmp/x' };
  assert.equal(parseBenchArgs({ ...base, scenarios: 'S2' }).family, 4);
  assert.equal(parseBenchArgs({ ...base, scenarios: 'S1,S2,S3', 'ip-family': 6 }).family, 6);
  assert.throws(() => parseBenchArgs({ ...base, scenarios: 'S2,S4', 'ip-family': 6 }), /--ip-family 6 measures S1,S2,S3 only, not S4/);
  assert.throws(() => parseBenchArgs({ ...base, scenarios: 'S2', 'ip-family': 5 }), /--ip-family must be 4 or 6/);
});

test('base32 is RFC 4648 (padded)', () => {
  assert.equal(base32(Buffer.from('')), '');
  assert.equal(base32(Buffer.from('f')), 'MY======');
  assert.equal(base32(Buffer.from('foob')), 'MZXW6YQ=');
  assert.equal(base32(Buffer.from('foobar')), 'MZXW6YTBOI======');
});

test('chain names match the ones in real iptables-save output', () => {
  const seed = readFileSync(new URL('./fixtures/kube-proxy-iptables-save.txt', import.meta.url), 'utf8');
  const cases: Array<[string, string, string]> = [
    [servicePortName({ namespace: 'redis', name: 'redis', portName: 'client' }), 'TCP', 'KUBE-SVC-X65RDOJUUA3VPRY4'],
    [servicePortName({ namespace: 'rabbitmq', name: 'rabbitmq', portName: 'http' }), 'TCP', 'KUBE-SVC-35VHXOLOORONIWYJ'],
    [servicePortName({ namespace: 'default', name: 'hostnames', portName: '' }), 'TCP', 'KUBE-SVC-NWV5X2332I4OT4T3'],
    [servicePortName({ namespace: 'seaweedfs', name: 'filer', portName: 'http' }), 'TCP', 'KUBE-SVC-BRYNYVZ5Q2DDPJIY'],
  ];
  for (const [spn, proto, want] of cases) {
    assert.equal(svcChain(spn, proto), want, spn);
    assert.ok(seed.includes(want.replace('KUBE-SVC-', '')), `${want} is in the seed`);
  }
  assert.equal(sepChain('redis/redis:client', 'TCP', '10.244.5.216:6379'), 'KUBE-SEP-BAPRIFMT5YYOA3WI');
  assert.ok(seed.includes('-A KUBE-SEP-BAPRIFMT5YYOA3WI -s 10.244.5.216/32'));
});

test('model: target position, unique VIPs and endpoints, manifest is one List', () => {
  const m = buildModel({ services: 1000, fillerEndpoints: 10, targetBackends: [{ ip: '192.0.2.11', port: 8080 }], position: 'random', seed: 7, clusterCidr: '192.0.2.8/29' });
  assert.equal(m.services.length, 1000);
  assert.equal(m.services[m.targetIndex]?.name, 'target');
  assert.ok(m.targetIndex > 0 && m.targetIndex < 999, `random index ${m.targetIndex}`);
  assert.equal(new Set(m.services.map((s) => s.vip)).size, 1000);
  for (const s of m.services.slice(0, 50)) assert.equal(new Set(s.backends.map((b) => `${b.ip}:${b.port}`)).size, s.backends.length);
  const w = withPosition(m, 'worst');
  assert.equal(w.targetIndex, 999);
  assert.equal(w.services[999]?.name, 'target');
  assert.equal(w.services.length, 1000);
  const doc = JSON.parse(manifestJson(m.services.slice(0, 3))) as { kind: string; items: Array<{ kind: string }> };
  assert.equal(doc.kind, 'List');
  assert.ok(doc.items.filter((i) => i.kind === 'Service').length === 3);
  assert.ok(doc.items.filter((i) => i.kind === 'EndpointSlice').length >= 3);
});

test('median and nearest-rank percentile', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(median([]), null);
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile([5], 99), 5);
});
