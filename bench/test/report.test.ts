/**
 * The report for the new scenarios (S6 transfers, S8 first-packet latency,
 * S9 control-plane scale) from hand-made cells: tables, ratios, targets
 * met/missed/not measured, and charts. Also the wrk pieces S6 adds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nginxConfig } from '../nginx.js';
import { charts, markdown, s6Table, s8Table, targets } from '../report.js';
import type { CpCell, DpCell } from '../scenarios.js';
import { transferGbps, uploadScript, type Transfer, type WrkResult } from '../wrk.js';

const wrk = (rps: number, transferBps: number, errors = 0): WrkResult => ({
  requests: rps * 3,
  durationS: 3,
  rps,
  transferBps,
  latencyAvgMs: 10,
  latencyMaxMs: 40,
  percentilesMs: { '50': 9, '99': 30 },
  socketErrors: { connect: 0, read: 0, write: 0, timeout: errors },
  non2xx: 0,
});

const s6 = (mode: DpCell['mode'], transfer: Transfer, rps: number, bps: number): DpCell => ({
  scenario: 'S6',
  services: 1,
  position: 'random',
  targetIndex: 0,
  conn: 'keepalive',
  transfer,
  mode,
  runs: [wrk(rps, bps)],
});

const s8 = (mode: DpCell['mode'], services: number, samplesMs: number[]): DpCell => ({
  scenario: 'S8',
  services,
  position: 'random',
  targetIndex: 0,
  conn: 'close',
  mode,
  runs: [],
  latency: [{ samplesMs, errors: services === 1 ? {} : { ETIMEDOUT: 1 } }],
});

test('wrk for S6: upload Lua posts the body; Gbit/s from bytes read, or from bodies sent', () => {
  const lua = uploadScript(1 << 20);
  assert.match(lua, /wrk\.method = "POST"/);
  assert.match(lua, /wrk\.body = string\.rep\("a", 1048576\)/);
  // 125 MB/s read = 1 Gbit/s; 100 uploads/s of 1 MiB = 0.839 Gbit/s whatever was read.
  assert.equal(transferGbps(wrk(1, 125e6), 'get-10m'), 1);
  assert.ok(Math.abs(transferGbps(wrk(100, 1000), 'post-1m') - (100 * 1048576 * 8) / 1e9) < 1e-12);
});

test('nginx config for S6: static files by alias, an upload sink that takes 1 MiB bodies', () => {
  const c = nginxConfig({ dir: '/tmp/x', name: 'pod-1', ip: '192.0.2.11', port: 8080, www: '/tmp/www' });
  assert.match(c, /location \/files\/ \{\n\s+alias \/tmp\/www\/;/);
  assert.match(c, /location = \/upload \{\n\s+client_max_body_size 2m;/);
  assert.match(c, /sendfile on;/);
  // The body is read before the answer (a mirror), so keep-alive uploads do not interleave.
  assert.match(c, /mirror_request_body on;/);
  assert.match(c, /error_page 404 405 =200 @uploaded;/);
});

test('S6 table: Gbit/s per transfer, ratios within the same transfer, kpr-tc against direct-pod', () => {
  const cells = [
    s6('direct', 'get-10m', 40, 4e8),
    s6('kpr-ct', 'get-10m', 39, 3.9e8),
    s6('iptables', 'get-10m', 30, 3e8),
    s6('direct', 'post-1m', 200, 1000),
    s6('kpr-ct', 'post-1m', 180, 1000),
    s6('direct-pod', 'get-10m', 40, 4e8),
    s6('kpr-tc', 'get-10m', 20, 2e8),
    { ...s6('kpr-tc', 'post-1m', 0, 0), runs: [], error: 'wrk timed out' },
  ];
  const t = s6Table(cells);
  assert.match(t, /\| get-10m \| kpr-ct \| 3\.12 \| 39\.0 \| 30\.0 \| 0\.97× \| 1\.30× \| 0 \|/);
  assert.match(t, /\| post-1m \| kpr-ct \| 1\.51 \| 180\.0 \| 30\.0 \| 0\.90× \| – \| 0 \|/);
  assert.match(t, /\| get-10m \| kpr-tc \| 1\.60 \| 20\.0 \| 30\.0 \| 0\.50× \|/);
  assert.match(t, /\| post-1m \| kpr-tc \| error: wrk timed out \|/);
  const ts = targets(cells, [], []);
  const get = (name: string) => ts.find((x) => x.target === name);
  assert.deepEqual(get('S6 get-10m: kpr-ct ≥ 0.97 × direct'), { target: 'S6 get-10m: kpr-ct ≥ 0.97 × direct', value: '0.97×', met: true });
  assert.equal(get('S6 post-1m: kpr-ct ≥ 0.97 × direct')?.met, false);
  assert.equal(get('S6 get-10m: kpr-tc ≥ 0.9 × direct-pod')?.met, false);
  assert.equal(get('S6 post-1m: kpr-tc ≥ 0.9 × direct-pod')?.met, null);
  const svg = charts({ dp: cells, cp: [], s5: [] })['S6.svg'];
  assert.match(svg ?? '', /^<svg .*Gbit\/s/s);
});

test('S8 table and target: percentiles over all samples, p99 growth vs 1 Service, iptables beside kpr', () => {
  const flat = Array.from({ length: 100 }, (_, i) => 0.1 + i / 1000); // p99 0.198
  const cells = [
    s8('kpr-ct', 1, flat),
    s8('kpr-ct', 50_000, flat.map((x) => x * 1.05)),
    s8('iptables', 1, flat),
    s8('iptables', 50_000, flat.map((x) => x * 3)),
    s8('kpr-tc', 1, flat),
    s8('kpr-tc', 50_000, flat.map((x) => x * 1.5)),
  ];
  const t = s8Table(cells);
  assert.match(t, /\| 1 \| kpr-ct \| 100 \| 0\.149 \| 0\.198 \| – \| 0 \|/);
  assert.match(t, /\| 50000 \| iptables \| 100 \| 0\.447 \| 0\.594 \| 3\.00× \| 1 \|/);
  const ts = targets(cells, [], []);
  const ct = ts.find((x) => x.target.startsWith('S8 kpr-ct'));
  assert.equal(ct?.met, true);
  assert.equal(ct?.value, '50000 Services: 1.05×; iptables 3.00×, nftables –');
  assert.equal(ts.find((x) => x.target.startsWith('S8 kpr-tc'))?.met, false);
  // Below 50k the growth is shown, not judged.
  const small = targets([s8('kpr-ct', 1, flat), s8('kpr-ct', 100, flat)], [], []).find((x) => x.target.startsWith('S8 kpr-ct'));
  assert.equal(small?.met, null);
  assert.match(charts({ dp: cells, cp: [], s5: [] })['S8.svg'] ?? '', /kpr-ct p99/);
});

test('S9: targets judged at 100k only, RSS in GB, the table and chart come from the S4 cells', () => {
  const cell = (op: CpCell['op'], form: string, wallMs: number, services = 100_000): CpCell => ({
    system: 'kpr',
    op,
    form,
    services,
    endpoints: 10,
    runs: [{ wallMs, cpuMs: wallMs, peakRssKB: 1.2 * 1024 * 1024 }],
  });
  const s9 = [
    cell('full-sync', 'translate + map writes', 8000),
    cell('full-sync', 'incl. manifest parse', 12000),
    cell('change-endpoint', 'incremental sync', 3),
  ];
  const ts = targets([], [], [], s9).filter((x) => x.target.startsWith('S9'));
  assert.deepEqual(
    ts.map((x) => [x.value, x.met]),
    [
      ['8.00 s (100k×10)', true],
      ['12.00 s (100k×10)', false],
      ['1.20 GB (100k×10)', true],
      ['3.00 ms (100k×10)', true],
    ],
  );
  const small = targets([], [], [], [cell('full-sync', 'translate + map writes', 100, 1000)]).filter((x) => x.target.startsWith('S9'));
  assert.ok(small.every((x) => x.met === null), 'a smaller run is reported, not judged');
  const md = markdown({ dp: [], cp: [], s5: [], s9, meta: {} });
  assert.match(md, /## S9 — control-plane scale \(kpr\)/);
  assert.match(md, /\| S9 100k×10 full sync ≤ 10 s \(incl\. manifest parse\) \| 12\.00 s \(100k×10\) \| NO \|/);
  assert.match(charts({ dp: [], cp: [], s5: [], s9 })['S9.svg'] ?? '', /100000 Services × 10/);
});

const s2 = (mode: DpCell['mode'], family: 4 | 6, position: DpCell['position'], rps: number): DpCell => ({
  scenario: 'S2',
  family,
  services: 10000,
  position,
  targetIndex: position === 'worst' ? 9999 : 4170,
  conn: 'close',
  mode,
  runs: [wrk(rps, 0)],
});

test('IPv6 S2: its own tables, charts and targets (0.95 × direct, 1.1 × nftables); ratios never cross families', () => {
  const cells: DpCell[] = [];
  for (const pos of ['random', 'worst'] as const) {
    cells.push(s2('direct', 4, pos, 1000), s2('kpr-ct', 4, pos, 990), s2('iptables', 4, pos, 500), s2('nftables', 4, pos, 900));
    cells.push(s2('direct', 6, pos, 800), s2('kpr-ct', 6, pos, 780), s2('iptables', 6, pos, 300), s2('nftables', 6, pos, 700));
  }
  const md = markdown({ dp: cells, cp: [], s5: [], meta: {} });
  const v4 = md.indexOf('## S2 — new connection per request vs number of Services\n');
  const v6 = md.indexOf('## S2 — new connection per request vs number of Services (IPv6)\n');
  assert.ok(v4 >= 0 && v6 > v4, 'an IPv4 and an IPv6 S2 section, IPv4 first');
  // Each table's ratios are against its own family's direct and iptables.
  assert.match(md.slice(v4, v6), /\| 10000 \| random \(#4171\) \| new per request \| kpr-ct \| 990 \| .* \| 0\.99× \| 1\.98× \|/);
  assert.match(md.slice(v6), /\| 10000 \| random \(#4171\) \| new per request \| kpr-ct \| 780 \| .* \| 0\.97× \| 2\.60× \|/);
  assert.doesNotMatch(md.slice(v6, md.indexOf('## Targets')), /\| 990 \|/);
  const ts = targets(cells, [], []);
  const get = (name: string) => ts.find((x) => x.target === name);
  assert.deepEqual(get('S2 10k IPv6 (random): kpr-ct ≥ 0.95 × direct'), { target: 'S2 10k IPv6 (random): kpr-ct ≥ 0.95 × direct', value: '0.97×', met: true });
  assert.deepEqual(get('S2 10k IPv6 (worst): kpr-ct ≥ 1.1 × nftables'), { target: 'S2 10k IPv6 (worst): kpr-ct ≥ 1.1 × nftables', value: '1.11×', met: true });
  assert.equal(get('S2 10k (random): kpr-ct ≥ 0.95 × direct')?.value, '0.99×', 'the IPv4 row reads IPv4 cells only');
  assert.equal(targets(cells.filter((c) => c.family === 4), [], []).some((x) => x.target.includes('IPv6')), false, 'no IPv6 rows without IPv6 cells');
  const svgs = charts({ dp: cells, cp: [], s5: [] });
  assert.match(svgs['S2.svg'] ?? '', /S2: new connection per request/);
  assert.match(svgs['S2-ipv6.svg'] ?? '', /S2 \(IPv6\): new connection per request/);
});
