/**
 * Results: medians, ratios to direct and to iptables, the markdown table,
 * the JSON file with every raw figure, one SVG per scenario, and the
 * targets from the benchmark issue read off the numbers (reported, never
 * asserted).
 */
import type { CpCell, DpCell, S5Result } from './scenarios.js';
import { transferGbps, TRANSFERS, type Transfer } from './wrk.js';
import { DIRECT_REF, IPTABLES_REF } from './modes.js';
import { barChart, lineChart, type Series } from './svg.js';
import type { IpFamily } from './model.js';

export function median(xs: number[]): number | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2;
}

/** Nearest-rank percentile. */
export function percentile(xs: number[], p: number): number | null {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))] as number;
}

export interface DpSummary {
  rps: number | null;
  p50: number | null;
  p99: number | null;
  errors: number;
  failedRuns: number;
}

export function summarize(c: DpCell): DpSummary {
  return {
    rps: median(c.runs.map((r) => r.rps)),
    p50: median(c.runs.map((r) => r.percentilesMs['50'] ?? NaN)),
    p99: median(c.runs.map((r) => r.percentilesMs['99'] ?? NaN)),
    errors: c.runs.reduce((n, r) => n + r.socketErrors.connect + r.socketErrors.read + r.socketErrors.write + r.socketErrors.timeout + r.non2xx, 0),
    failedRuns: c.failedRuns ?? 0,
  };
}

/** A cell's address family (cells from before IPv6 runs carry none: IPv4). */
export function familyOfCell(c: DpCell): IpFamily {
  return c.family ?? 4;
}

/** The families present, IPv4 first; each gets its own S1-S3 tables and charts. */
function dpFamilies(cells: DpCell[]): IpFamily[] {
  return ([4, 6] as const).filter((f) => cells.some((c) => familyOfCell(c) === f));
}

/** Labels of an IPv6 table or chart (IPv4 keeps the unlabelled names it always had). */
const famTitle = (f: IpFamily) => (f === 6 ? ' (IPv6)' : '');
const famFile = (f: IpFamily) => (f === 6 ? '-ipv6' : '');

function peer(cells: DpCell[], c: DpCell, mode: string): DpCell | undefined {
  return cells.find(
    (x) => x.scenario === c.scenario && familyOfCell(x) === familyOfCell(c) && x.services === c.services && x.position === c.position && x.conn === c.conn && x.transfer === c.transfer && x.mode === mode,
  );
}

export function ratio(cells: DpCell[], c: DpCell, mode: string): number | null {
  if (mode === 'direct') mode = DIRECT_REF[c.mode] ?? 'direct';
  if (mode === 'iptables') mode = IPTABLES_REF[c.mode] ?? 'iptables';
  const a = summarize(c).rps;
  const p = peer(cells, c, mode);
  const b = p ? summarize(p).rps : null;
  return a !== null && b ? a / b : null;
}

const f = (v: number | null | undefined, d = 2) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const fr = (v: number | null) => (v === null ? '–' : `${v.toFixed(2)}×`);

function status(c: DpCell): string | undefined {
  if (c.unavailable) return `unavailable: ${c.unavailable}`;
  if (c.error && !c.runs.length) return `error: ${c.error.split('\n')[0]}`;
  return undefined;
}

export function dpTable(cells: DpCell[], scenario: string): string {
  const rows = cells.filter((c) => c.scenario === scenario);
  if (!rows.length) return '';
  const out = [
    '| Services | target position | connections | mode | req/s (median) | p50 ms | p99 ms | × direct¹ | × iptables | errors |',
    '|---:|---|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of rows) {
    const st = status(c);
    const pos = c.services === 1 ? '–' : `${c.position} (#${c.targetIndex + 1})`;
    const conn = c.conn === 'keepalive' ? 'keep-alive' : 'new per request';
    if (st) {
      out.push(`| ${c.services} | ${pos} | ${conn} | ${c.mode} | ${st} | | | | | |`);
      continue;
    }
    const s = summarize(c);
    out.push(
      `| ${c.services} | ${pos} | ${conn} | ${c.mode} | ${f(s.rps, 0)} | ${f(s.p50, 3)} | ${f(s.p99, 3)} | ${fr(ratio(cells, c, 'direct'))} | ${fr(ratio(cells, c, 'iptables'))} | ${s.errors}${s.failedRuns ? ` (+${s.failedRuns} failed run${s.failedRuns > 1 ? 's' : ''})` : ''} |`,
    );
  }
  out.push('', '¹ kpr-tc and direct-pod run their client in a pod (tc NAT starts flows only on ingress); their "direct" is direct-pod. All other modes run it in the node namespace.');
  return out.join('\n') + '\n';
}

/** S6: median payload Gbit/s of a transfer cell. */
export function gbps(c: DpCell): number | null {
  const t = c.transfer;
  return t ? median(c.runs.map((r) => transferGbps(r, t))) : null;
}

export function s6Table(cells: DpCell[]): string {
  const rows = cells.filter((c) => c.scenario === 'S6');
  if (!rows.length) return '';
  const out = ['| transfer | mode | Gbit/s (median) | transfers/s | p99 ms | × direct¹ | × iptables | errors |', '|---|---|---:|---:|---:|---:|---:|---:|'];
  for (const c of rows) {
    const st = status(c);
    if (st) {
      out.push(`| ${c.transfer} | ${c.mode} | ${st} | | | | | |`);
      continue;
    }
    const s = summarize(c);
    out.push(
      `| ${c.transfer} | ${c.mode} | ${f(gbps(c), 2)} | ${f(s.rps, 1)} | ${f(s.p99, 1)} | ${fr(ratio(cells, c, 'direct'))} | ${fr(ratio(cells, c, 'iptables'))} | ${s.errors}${s.failedRuns ? ` (+${s.failedRuns} failed run${s.failedRuns > 1 ? 's' : ''})` : ''} |`,
    );
  }
  out.push(
    '',
    '¹ as in S1: kpr-tc and direct-pod are against direct-pod. Errors include wrk timeouts (10 s per transfer): a path that stalls large packets shows here, not as a hang.',
  );
  return out.join('\n') + '\n';
}

/** S7: per Service count and mode, new connections/s and 10 MiB transfer Gbit/s from an external client. */
export function s7Table(cells: DpCell[]): string {
  const rows = cells.filter((c) => c.scenario === 'S7' && c.conn === 'close');
  if (!rows.length) return '';
  const out = [
    '| Services | mode | new connections/s (median) | × np-iptables | p99 ms | 10 MiB Gbit/s | × np-direct | errors |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of rows) {
    const tr = cells.find((x) => x.scenario === 'S7' && x.services === c.services && x.mode === c.mode && x.transfer);
    const st = status(c);
    if (st) {
      out.push(`| ${c.services} | ${c.mode} | ${st} | | | | | |`);
      continue;
    }
    const s = summarize(c);
    const ts = tr && tr.runs.length ? summarize(tr) : null;
    const errs = s.errors + (ts?.errors ?? 0) + s.failedRuns + (ts?.failedRuns ?? 0);
    const trErr = tr?.error ? ` (transfer: ${tr.error.split('\n')[0]})` : '';
    out.push(
      `| ${c.services} | ${c.mode} | ${f(s.rps, 0)} | ${fr(ratio(cells, c, 'iptables'))} | ${f(s.p99, 2)} | ${tr ? f(gbps(tr), 2) : '–'} | ${tr ? fr(ratio(cells, tr, 'direct')) : '–'} | ${errs}${trErr} |`,
    );
  }
  out.push(
    '',
    'Client in the external namespace, to the ingress node n1 on the NodePort; backends: one pod on n1, one on n2. np-direct: the client to the pod IPs through their own nodes, no translation. 10 MiB: keep-alive GETs, wrk timeout 10 s.',
  );
  return out.join('\n') + '\n';
}

/** S8: every sample of a cell, all repetitions together. */
export function latencySamples(c: DpCell): number[] {
  return (c.latency ?? []).flatMap((r) => r.samplesMs);
}

function latencyErrors(c: DpCell): number {
  return (c.latency ?? []).reduce((n, r) => n + Object.values(r.errors).reduce((a, b) => a + b, 0), 0);
}

/** S8: a mode's p99 at n Services over its p99 at one Service. */
export function p99Growth(cells: DpCell[], mode: string, n: number): number | null {
  const at = (k: number) => cells.find((c) => c.scenario === 'S8' && c.mode === mode && c.services === k);
  const a = at(n);
  const b = at(1);
  const pa = a ? percentile(latencySamples(a), 99) : null;
  const pb = b ? percentile(latencySamples(b), 99) : null;
  return pa !== null && pb ? pa / pb : null;
}

export function s8Table(cells: DpCell[]): string {
  const rows = cells.filter((c) => c.scenario === 'S8');
  if (!rows.length) return '';
  const out = ['| Services | mode | connections | p50 ms | p99 ms | p99 × own p99 at 1 Service | errors |', '|---:|---|---:|---:|---:|---:|---:|'];
  for (const c of rows) {
    const st = status(c);
    if (st && !c.latency?.length) {
      out.push(`| ${c.services} | ${c.mode} | ${st} | | | | |`);
      continue;
    }
    const xs = latencySamples(c);
    out.push(
      `| ${c.services} | ${c.mode} | ${xs.length} | ${f(percentile(xs, 50), 3)} | ${f(percentile(xs, 99), 3)} | ${c.services === 1 ? '–' : fr(p99Growth(cells, c.mode, c.services))} | ${latencyErrors(c)}${c.error ? ` (${c.error.split('\n')[0]})` : ''} |`,
    );
  }
  return out.join('\n') + '\n';
}

export function cpTable(cells: CpCell[]): string {
  if (!cells.length) return '';
  const out = [
    '| system | operation | form | Services × endpoints | wall ms (median) | CPU ms | peak RSS MB | steady RSS MB | runs |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cells) {
    if (c.error && !c.runs.length) {
      out.push(`| ${c.system} | ${c.op} | ${c.form} | ${c.services} × ${c.endpoints} | error: ${c.error.split('\n').pop()} | | | | 0 |`);
      continue;
    }
    const rss = median(c.runs.map((r) => r.peakRssKB ?? NaN));
    const steady = median(c.runs.map((r) => r.steadyRssKB ?? NaN));
    out.push(
      `| ${c.system} | ${c.op} | ${c.form} | ${c.services} × ${c.endpoints} | ${f(median(c.runs.map((r) => r.wallMs)), 1)} | ${f(median(c.runs.map((r) => r.cpuMs)), 1)} | ${f(rss === null ? null : rss / 1024, 0)} | ${f(steady === null ? null : steady / 1024, 0)} | ${c.runs.length} |`,
    );
    if (c.error) out.push(`| | | ↳ error in a later step: ${c.error.split('\n').pop()} | | | | | | |`);
  }
  return out.join('\n') + '\n';
}

export function s5Table(rs: S5Result[]): string {
  if (!rs.length) return '';
  const out = ['| mode | Services | changes | p50 ms | p99 ms | max ms | timeouts |', '|---|---:|---:|---:|---:|---:|---:|'];
  for (const r of rs) {
    if (r.unavailable) out.push(`| ${r.mode} | ${r.services} | – | unavailable: ${r.unavailable} | | | |`);
    else if (r.error && !r.latenciesMs.length) out.push(`| ${r.mode} | ${r.services} | ${r.changes} | error: ${r.error.split('\n')[0]} | | | |`);
    else
      out.push(
        `| ${r.mode} | ${r.services} | ${r.latenciesMs.length} | ${f(percentile(r.latenciesMs, 50), 1)} | ${f(percentile(r.latenciesMs, 99), 1)} | ${f(Math.max(...r.latenciesMs), 1)} | ${r.timeouts} |`,
      );
  }
  return out.join('\n') + '\n';
}

export interface TargetCheck {
  target: string;
  value: string;
  met: boolean | null;
}

/** The issue's targets, evaluated where the run has the numbers (null = not measured). */
export function targets(dp: DpCell[], cp: CpCell[], s5: S5Result[], s9: CpCell[] = []): TargetCheck[] {
  const out: TargetCheck[] = [];
  const cell = (sc: string, n: number, pos: string, conn: string, mode: string, fam: IpFamily = 4) =>
    dp.find((c) => c.scenario === sc && familyOfCell(c) === fam && c.services === n && c.position === pos && c.conn === conn && c.mode === mode && c.runs.length);
  for (const pos of ['random', 'worst']) {
    const ct = cell('S2', 10000, pos, 'close', 'kpr-ct');
    const rd = ct ? ratio(dp, ct, 'direct') : null;
    const ri = ct ? ratio(dp, ct, 'iptables') : null;
    out.push({ target: `S2 10k (${pos}): kpr-ct ≥ 0.95 × direct`, value: fr(rd), met: rd === null ? null : rd >= 0.95 });
    out.push({ target: `S2 10k (${pos}): kpr-ct ≥ 1.5 × iptables`, value: fr(ri), met: ri === null ? null : ri >= 1.5 });
  }
  // Issue #14: S2 over IPv6 has IPv4's targets (issue #15's): ≥ 0.95 × direct and ≥ 1.1 × nftables.
  if (dp.some((c) => familyOfCell(c) === 6)) {
    for (const pos of ['random', 'worst']) {
      const ct = cell('S2', 10000, pos, 'close', 'kpr-ct', 6);
      const rd = ct ? ratio(dp, ct, 'direct') : null;
      const rn = ct ? ratio(dp, ct, 'nftables') : null;
      out.push({ target: `S2 10k IPv6 (${pos}): kpr-ct ≥ 0.95 × direct`, value: fr(rd), met: rd === null ? null : rd >= 0.95 });
      out.push({ target: `S2 10k IPv6 (${pos}): kpr-ct ≥ 1.1 × nftables`, value: fr(rn), met: rn === null ? null : rn >= 1.1 });
    }
  }
  const at50 = cell('S2', 50000, 'worst', 'close', 'kpr-ct') ?? cell('S2', 50000, 'random', 'close', 'kpr-ct');
  const at1 = cell('S2', 1, 'random', 'close', 'kpr-ct');
  const loss = at50 && at1 ? 1 - (summarize(at50).rps ?? 0) / (summarize(at1).rps ?? 1) : null;
  out.push({ target: 'S2 50k: kpr-ct loses ≤ 5% vs 1 Service', value: loss === null ? '–' : `${(loss * 100).toFixed(1)}% loss`, met: loss === null ? null : loss <= 0.05 });
  const tc = cell('S1', 1, 'random', 'keepalive', 'kpr-tc');
  const tcr = tc ? ratio(dp, tc, 'direct') : null;
  const tcu = dp.find((c) => c.mode === 'kpr-tc' && c.unavailable);
  out.push({ target: 'S1 keep-alive: kpr-tc ≥ 0.95 × direct', value: tcu ? `unavailable: ${tcu.unavailable}` : fr(tcr), met: tcr === null ? null : tcr >= 0.95 });
  const cpm = (sys: string, op: string, form: string | null, n: number) =>
    cp.find((c) => c.system === sys && c.op === op && (form === null || c.form === form) && c.services === n && c.runs.length);
  const kfull = cpm('kpr', 'full-sync', 'translate + map writes', 10000);
  const kfullWall = kfull ? median(kfull.runs.map((r) => r.wallMs)) : null;
  out.push({ target: 'S4 10k×10 full sync ≤ 1 s (kpr, translate + writes)', value: kfullWall === null ? '–' : `${kfullWall.toFixed(0)} ms`, met: kfullWall === null ? null : kfullWall <= 1000 });
  const kparse = cpm('kpr', 'full-sync', 'incl. manifest parse', 10000);
  const kparseWall = kparse ? median(kparse.runs.map((r) => r.wallMs)) : null;
  out.push({ target: 'S4 10k×10 full sync ≤ 1 s (kpr, incl. manifest parse)', value: kparseWall === null ? '–' : `${kparseWall.toFixed(0)} ms`, met: kparseWall === null ? null : kparseWall <= 1000 });
  const ifull = cpm('iptables-restore', 'full-sync', 'full', 10000);
  const ifullWall = ifull ? median(ifull.runs.map((r) => r.wallMs)) : null;
  const speedup = kfullWall && ifullWall ? ifullWall / kfullWall : null;
  out.push({ target: 'S4 10k×10 full sync ≥ 10× faster than iptables-restore', value: speedup === null ? '–' : `${speedup.toFixed(1)}×`, met: speedup === null ? null : speedup >= 10 });
  const kchg = cpm('kpr', 'change-endpoint', null, 10000);
  const kchgWall = kchg ? median(kchg.runs.map((r) => r.wallMs)) : null;
  out.push({ target: 'S4 one endpoint change at 10k ≤ 10 ms', value: kchgWall === null ? '–' : `${kchgWall.toFixed(2)} ms`, met: kchgWall === null ? null : kchgWall <= 10 });
  const s5r = s5.find((r) => r.mode === 'kpr-ct' && r.services === 10000 && r.latenciesMs.length);
  const p99 = s5r ? percentile(s5r.latenciesMs, 99) : null;
  out.push({ target: 'S5 p99 ≤ 50 ms at 10k (kpr-ct)', value: p99 === null ? '–' : `${p99.toFixed(1)} ms`, met: p99 === null ? null : p99 <= 50 });
  const rss = kfull ? median(kfull.runs.map((r) => r.peakRssKB ?? NaN)) : null;
  out.push({ target: 'S4 controller RSS at 10k×10 ≤ 200 MB (peak, incl. manifest parse)', value: rss === null ? '–' : `${(rss / 1024).toFixed(0)} MB`, met: rss === null ? null : rss / 1024 <= 200 });
  const steady = kfull ? median(kfull.runs.map((r) => r.steadyRssKB ?? NaN)) : null;
  out.push({ target: 'S4 controller RSS at 10k×10 ≤ 200 MB (steady, after GC)', value: steady === null ? '–' : `${(steady / 1024).toFixed(0)} MB`, met: steady === null ? null : steady / 1024 <= 200 });
  out.push(...s6Targets(dp), ...s7Targets(dp), ...s8Targets(dp), ...s9Targets(s9));
  return out;
}

function s6Targets(dp: DpCell[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  for (const t of Object.keys(TRANSFERS) as Transfer[]) {
    for (const [mode, ref, min] of [
      ['kpr-ct', 'direct', 0.97],
      ['kpr-tc', 'direct-pod', 0.9],
    ] as const) {
      const c = dp.find((x) => x.scenario === 'S6' && x.transfer === t && x.mode === mode);
      if (!c) continue;
      const r = c.runs.length ? ratio(dp, c, 'direct') : null;
      out.push({ target: `S6 ${t}: ${mode} ≥ ${min} × ${ref}`, value: c.unavailable ? `unavailable: ${c.unavailable}` : fr(r), met: r === null ? null : r >= min });
    }
  }
  return out;
}

function s7Targets(dp: DpCell[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  const s7 = dp.filter((c) => c.scenario === 'S7');
  if (!s7.length) return out;
  const snat = s7.find((c) => c.mode === 'kpr-snat' && c.conn === 'close' && c.services === 10_000 && c.runs.length);
  const r = snat ? ratio(dp, snat, 'iptables') : null;
  out.push({ target: 'S7 10k: kpr SNAT ≥ 1.5 × iptables, new connections/s', value: fr(r), met: r === null ? null : r >= 1.5 });
  for (const n of [...new Set(s7.map((c) => c.services))].sort((a, b) => a - b)) {
    const dsr = s7.find((c) => c.mode === 'kpr-dsr' && c.transfer && c.services === n && c.runs.length);
    const d = dsr ? ratio(dp, dsr, 'direct') : null;
    out.push({ target: `S7 ${n} Services: DSR 10 MiB transfer ≥ 0.95 × client to the backend node directly`, value: fr(d), met: d === null ? null : d >= 0.95 });
  }
  return out;
}

function s8Targets(dp: DpCell[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  const top = Math.max(0, ...dp.filter((c) => c.scenario === 'S8').map((c) => c.services));
  if (top <= 1) return out;
  const ipt = p99Growth(dp, 'iptables', top);
  const nft = p99Growth(dp, 'nftables', top);
  const beside = `; iptables ${fr(ipt)}, nftables ${fr(nft)}`;
  for (const mode of ['kpr-ct', 'kpr-tc']) {
    const g = p99Growth(dp, mode, top);
    if (!dp.some((c) => c.scenario === 'S8' && c.mode === mode)) continue;
    // The target is stated at 50k; a smaller top count is shown but not judged.
    out.push({ target: `S8 ${mode}: p99 at 50k within 10% of p99 at 1 Service`, value: `${top} Services: ${fr(g)}${beside}`, met: g === null || top !== 50_000 ? null : g <= 1.1 });
  }
  return out;
}

function s9Targets(cp: CpCell[]): TargetCheck[] {
  if (!cp.length) return [];
  const n = Math.max(...cp.map((c) => c.services));
  const at = (op: string, form: string | null) => cp.find((c) => c.op === op && (form === null || c.form === form) && c.services === n && c.runs.length);
  const size = `${n / 1000}k×${cp[0]?.endpoints}`;
  const judged = n >= 100_000;
  const full = at('full-sync', 'translate + map writes');
  const parse = at('full-sync', 'incl. manifest parse');
  const chg = at('change-endpoint', null);
  const wall = (c: CpCell | undefined) => (c ? median(c.runs.map((r) => r.wallMs)) : null);
  const rss = full ? median(full.runs.map((r) => r.peakRssKB ?? NaN)) : null;
  const out: TargetCheck[] = [];
  const add = (target: string, v: number | null, unit: string, digits: number, limit: number) =>
    out.push({ target: `S9 ${target}`, value: v === null ? '–' : `${v.toFixed(digits)} ${unit} (${size})`, met: v === null || !judged ? null : v <= limit });
  add('100k×10 full sync ≤ 10 s (translate + map writes)', wall(full) === null ? null : wall(full)! / 1000, 's', 2, 10);
  add('100k×10 full sync ≤ 10 s (incl. manifest parse)', wall(parse) === null ? null : wall(parse)! / 1000, 's', 2, 10);
  add('100k×10 controller RSS ≤ 1.5 GB (peak, incl. parse)', rss === null ? null : rss / 1024 / 1024, 'GB', 2, 1.5);
  add('100k×10 one endpoint change ≤ 5 ms', wall(chg), 'ms', 2, 5);
  return out;
}

export function targetsTable(ts: TargetCheck[]): string {
  const out = ['| target | measured | met |', '|---|---|---|'];
  for (const t of ts) out.push(`| ${t.target} | ${t.value} | ${t.met === null ? 'not measured' : t.met ? 'yes' : 'NO'} |`);
  return out.join('\n') + '\n';
}

export function markdown(r: { dp: DpCell[]; cp: CpCell[]; s5: S5Result[]; s9?: CpCell[]; meta: Record<string, unknown> }): string {
  const parts = ['# kpr bench', '', '```', JSON.stringify(r.meta, null, 2), '```', ''];
  const titles: Record<string, string> = {
    S1: 'S1 — one Service, a few backends',
    S2: 'S2 — new connection per request vs number of Services',
    S3: 'S3 — keep-alive vs number of Services (control for S2)',
  };
  for (const fam of dpFamilies(r.dp)) {
    for (const sc of ['S1', 'S2', 'S3']) {
      const t = dpTable(
        r.dp.filter((c) => familyOfCell(c) === fam),
        sc,
      );
      if (t) parts.push(`## ${titles[sc]}${famTitle(fam)}`, '', t);
    }
  }
  const cpt = cpTable(r.cp);
  if (cpt) parts.push('## S4 — control plane', '', cpt);
  const s5t = s5Table(r.s5);
  if (s5t) parts.push('## S5 — programming latency, manifest rewrite to first connection on the new backend', '', s5t);
  const s6 = s6Table(r.dp);
  if (s6) parts.push('## S6 — transfers over keep-alive (1 MiB, 10 MiB responses; 1 MiB uploads)', '', s6);
  const s7 = s7Table(r.dp);
  if (s7) parts.push('## S7 — NodePort from an external client (two-node lab)', '', s7);
  const s8 = s8Table(r.dp);
  if (s8) parts.push('## S8 — first-packet latency, connect() to first response byte', '', s8);
  const s9 = cpTable(r.s9 ?? []);
  if (s9) parts.push('## S9 — control-plane scale (kpr)', '', s9);
  parts.push('## Targets (read off this run)', '', targetsTable(targets(r.dp, r.cp, r.s5, r.s9 ?? [])));
  return parts.join('\n');
}

export function charts(r: { dp: DpCell[]; cp: CpCell[]; s5: S5Result[]; s9?: CpCell[] }): Record<string, string> {
  const out: Record<string, string> = {};
  const s6 = r.dp.filter((c) => c.scenario === 'S6');
  if (s6.length) {
    const ts = [...new Set(s6.map((c) => c.transfer as Transfer))];
    out['S6.svg'] = barChart({
      title: 'S6: transfers over keep-alive — Gbit/s (median)',
      yLabel: 'Gbit/s',
      groups: ts,
      series: [...new Set(s6.map((c) => c.mode))].map((m) => ({
        name: m,
        values: ts.map((t) => {
          const c = s6.find((x) => x.mode === m && x.transfer === t);
          return c ? gbps(c) : null;
        }),
      })),
    });
  }
  const s7 = r.dp.filter((c) => c.scenario === 'S7');
  if (s7.length) {
    const sizes = [...new Set(s7.map((c) => c.services))].sort((a, b) => a - b);
    const ms = [...new Set(s7.map((c) => c.mode))];
    const at = (m: string, n: number, transfer: boolean) => s7.find((x) => x.mode === m && x.services === n && !!x.transfer === transfer);
    out['S7.svg'] = barChart({
      title: 'S7: NodePort from an external client — new connections/s (median)',
      yLabel: 'conn/s',
      groups: sizes.map((n) => `${n} Services`),
      series: ms.map((m) => ({ name: m, values: sizes.map((n) => (at(m, n, false) ? summarize(at(m, n, false)!).rps : null)) })),
    });
    out['S7-transfer.svg'] = barChart({
      title: 'S7: NodePort from an external client — 10 MiB transfers, Gbit/s (median)',
      yLabel: 'Gbit/s',
      groups: sizes.map((n) => `${n} Services`),
      series: ms.map((m) => ({ name: m, values: sizes.map((n) => (at(m, n, true) ? gbps(at(m, n, true)!) : null)) })),
    });
  }
  const s8 = r.dp.filter((c) => c.scenario === 'S8');
  if (s8.length) {
    const sizes = [...new Set(s8.map((c) => c.services))].sort((a, b) => a - b);
    const series: Series[] = [];
    for (const [p, dashed] of [
      [99, false],
      [50, true],
    ] as const) {
      for (const m of [...new Set(s8.map((c) => c.mode))]) {
        series.push({
          name: `${m} p${p}`,
          dashed,
          values: sizes.map((n) => {
            const c = s8.find((x) => x.mode === m && x.services === n);
            return c ? percentile(latencySamples(c), p) : null;
          }),
        });
      }
    }
    out['S8.svg'] = lineChart({ title: 'S8: connect() → first response byte vs Services', yLabel: 'ms', groups: sizes.map(String), series }, 860, 460);
  }
  if (r.s9?.length) {
    const cs = r.s9.filter((c) => c.runs.length);
    out['S9.svg'] = barChart({
      title: `S9: kpr controller at ${r.s9[0]!.services} Services × ${r.s9[0]!.endpoints} — wall time (median)`,
      yLabel: 'ms',
      log: true,
      groups: cs.map((c) => `${c.op}: ${c.form}`),
      series: [{ name: 'wall ms', values: cs.map((c) => median(c.runs.map((x) => x.wallMs))) }],
    }, 1000, 420);
  }
  for (const fam of dpFamilies(r.dp)) dpCharts(r.dp.filter((c) => familyOfCell(c) === fam), fam, out);
  if (r.cp.length) {
    const keys = [...new Set(r.cp.map((c) => `${c.op}|${c.services}`))];
    const sysForms = [...new Set(r.cp.map((c) => `${c.system}: ${c.form}`))];
    out['S4.svg'] = barChart(
      {
        title: 'S4: control plane — wall time (median)',
        yLabel: 'ms',
        log: true,
        groups: keys.map((k) => k.replace('|', ' @ ')),
        series: sysForms.map((sf) => ({
          name: sf,
          values: keys.map((k) => {
            const [op, n] = k.split('|');
            const c = r.cp.find((x) => `${x.system}: ${x.form}` === sf && x.op === op && String(x.services) === n);
            return c && c.runs.length ? median(c.runs.map((x) => x.wallMs)) : null;
          }),
        })),
      },
      1100,
      460,
    );
  }
  if (r.s5.length) {
    out['S5.svg'] = barChart({
      title: 'S5: manifest rewrite → first connection on the new backend',
      yLabel: 'ms',
      groups: r.s5.map((x) => `${x.mode} @ ${x.services}`),
      series: [
        { name: 'p50', values: r.s5.map((x) => percentile(x.latenciesMs, 50)) },
        { name: 'p99', values: r.s5.map((x) => percentile(x.latenciesMs, 99)) },
      ],
    });
  }
  return out;
}

/** S1-S3 charts of one family's cells (S1.svg, S2.svg; S1-ipv6.svg, S2-ipv6.svg, …). */
function dpCharts(dp: DpCell[], fam: IpFamily, out: Record<string, string>): void {
  const modes = [...new Set(dp.map((c) => c.mode))];
  const s1 = dp.filter((c) => c.scenario === 'S1');
  if (s1.length) {
    out[`S1${famFile(fam)}.svg`] = barChart({
      title: `S1${famTitle(fam)}: one Service — requests/s (median)`,
      yLabel: 'req/s',
      groups: ['keep-alive', 'new connection per request'],
      series: modes.map((m) => ({
        name: m,
        values: (['keepalive', 'close'] as const).map((conn) => {
          const c = s1.find((x) => x.mode === m && x.conn === conn);
          return c ? summarize(c).rps : null;
        }),
      })),
    });
  }
  for (const sc of ['S2', 'S3'] as const) {
    const cs = dp.filter((c) => c.scenario === sc);
    if (!cs.length) continue;
    const sizes = [...new Set(cs.map((c) => c.services))].sort((a, b) => a - b);
    const series: Series[] = [];
    for (const pos of ['random', 'worst'] as const) {
      if (!cs.some((c) => c.position === pos && c.services > 1)) continue;
      for (const m of modes) {
        series.push({
          name: sc === 'S2' ? `${m} (${pos})` : m,
          dashed: pos === 'worst',
          values: sizes.map((n) => {
            const c = cs.find((x) => x.mode === m && x.services === n && (n === 1 || x.position === pos));
            return c ? summarize(c).rps : null;
          }),
        });
      }
    }
    out[`${sc}${famFile(fam)}.svg`] = lineChart(
      { title: `${sc}${famTitle(fam)}: ${sc === 'S2' ? 'new connection per request' : 'keep-alive'} — req/s vs Services`, yLabel: 'req/s', groups: sizes.map(String), series },
      860,
      420,
    );
  }
}
