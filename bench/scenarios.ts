/**
 * The scenarios. Data plane (S1-S3, S6 transfers, S8 first-packet
 * latency): wrk or the latency probe through each mode, modes
 * alternating within each repetition. Control plane (S4): programming
 * cost of kpr vs iptables-restore vs an nft transaction. S5: end-to-end
 * programming latency from a manifest rewrite to the first connection
 * served by the new backend.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cleanup } from 'kpr';
import { nodeArgv, run, runIn, wrapArgv } from 'kpr/lab';
import { renderIptables, renderIptablesPartial, sepChainsOf } from './iptables.js';
import { benchScript, KprProcess } from './kpr.js';
import { CLUSTER_CIDR, POD_PORT, type BenchLab, type CpuPlan } from './lab.js';
import {
  buildModel,
  familyOf,
  fillerService,
  hostPort,
  manifestJson,
  targetOf,
  withPosition,
  type BenchBackend,
  type BenchModel,
  type BenchService,
  type IpFamily,
  type Position,
} from './model.js';
import { writeAtomic, type Mode, type ModeName } from './modes.js';
import { renderNftables, renderNftAddService, renderNftChangeEndpoints } from './nftables.js';
import { parseWrk, spreadScript, TRANSFERS, uploadScript, wrkArgs, type Transfer, type WrkResult } from './wrk.js';

export type Conn = 'keepalive' | 'close';

const SETTLE_MS = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Progress {
  (msg: string): void;
}

export type DpScenario = 'S1' | 'S2' | 'S3' | 'S6' | 'S7' | 'S8';

/** What the data-plane runs need of a lab (the node lab, or S7's two-node lab). */
export interface DpLab {
  dir: string;
  cpus: CpuPlan;
}

export interface DpWant {
  scenario: DpScenario;
  services: number;
  position: Position;
  conn: Conn;
  /** S6: what is transferred */
  transfer?: Transfer;
}

export interface DpOptions {
  /** which (size, position, conn, transfer) to measure */
  wants: DpWant[];
  durationS: number;
  repeat: number;
  connections: number;
  /** S8: sequential connections per repetition */
  latencyConnects?: number;
  /** The Service model at a count, target placed at random (the lab decides the target's backends). */
  model: (services: number) => BenchModel;
}

export interface CheckResult {
  ok: number;
  errors: Record<string, number>;
  pods: Record<string, number>;
  expected: string[];
  passed: boolean;
}

/** S8: one repetition's connect() -> first response byte samples. */
export interface LatencyRun {
  samplesMs: number[];
  errors: Record<string, number>;
}

export interface DpCell {
  scenario: DpScenario;
  /** The address family measured (absent in results written before IPv6 runs existed: IPv4). */
  family?: IpFamily;
  services: number;
  position: Position;
  targetIndex: number;
  conn: Conn;
  transfer?: Transfer;
  mode: ModeName;
  unavailable?: string;
  error?: string;
  check?: CheckResult;
  runs: WrkResult[];
  /** S8: the latency probe's runs (runs stays empty) */
  latency?: LatencyRun[];
  /** wrk runs that failed (their error is in `error`) */
  failedRuns?: number;
}

export function targetBackends(lab: BenchLab, n: number): BenchBackend[] {
  return lab.pods.slice(0, n).map((p) => ({ ip: lab.podIp(p), port: POD_PORT }));
}

/** Run httpprobe in the node namespace and the mode's cgroup. */
export async function httpCount(lab: DpLab, netns: string, cgroup: string, host: string, port: number, count: number): Promise<Omit<CheckResult, 'expected' | 'passed'>> {
  void lab;
  const out = await runIn(
    { netns, cgroup },
    process.execPath,
    [...nodeArgv(benchScript('httpprobe')), 'count', host, String(port), '--count', String(count), '--timeout', '2000', '--duration', '30000'],
    { timeoutMs: 60_000 },
  );
  return JSON.parse(out) as Omit<CheckResult, 'expected' | 'passed'>;
}

/** Does the active mode carry traffic, to every backend it should? */
export async function checkMode(lab: DpLab, mode: Mode, model: BenchModel, count = 60): Promise<CheckResult> {
  const t = mode.target(model);
  // A spread target is checked address by address.
  const hosts = t.spread ?? [t.host];
  const per = Math.ceil(count / hosts.length);
  const r: Omit<CheckResult, 'expected' | 'passed'> = { ok: 0, errors: {}, pods: {} };
  for (const h of hosts) {
    const x = await httpCount(lab, mode.clientNs(), mode.cgroup(), h, t.port, per);
    r.ok += x.ok;
    for (const [k, v] of Object.entries(x.errors)) r.errors[k] = (r.errors[k] ?? 0) + v;
    for (const [k, v] of Object.entries(x.pods)) r.pods[k] = (r.pods[k] ?? 0) + v;
  }
  const expected = mode.expectedPods(model);
  const got = Object.keys(r.pods).sort();
  const passed = r.ok === per * hosts.length && JSON.stringify(got) === JSON.stringify([...expected].sort());
  return { ...r, expected, passed };
}

/** S8: the latency probe, sequential connections, bounded by count and time; a spread target is probed address by address. */
export async function runLatency(lab: DpLab, mode: Mode, model: BenchModel, connects: number): Promise<LatencyRun> {
  const t = mode.target(model);
  const hosts = t.spread ?? [t.host];
  const per = Math.ceil(connects / hosts.length);
  const r: LatencyRun = { samplesMs: [], errors: {} };
  for (const h of hosts) {
    const out = await runIn(
      { netns: mode.clientNs(), cgroup: mode.cgroup() },
      'taskset',
      ['-c', lab.cpus.client, process.execPath, ...nodeArgv(benchScript('httpprobe')), 'latency', h, String(t.port), '--count', String(per), '--timeout', '2000', '--duration', '60000'],
      { timeoutMs: 90_000 },
    );
    const x = JSON.parse(out) as LatencyRun;
    r.samplesMs.push(...x.samplesMs);
    for (const [k, v] of Object.entries(x.errors)) r.errors[k] = (r.errors[k] ?? 0) + v;
  }
  return r;
}

/** wrk threads, in every mode (the direct mode gives each its own backend). */
export const WRK_THREADS = 3;
/** S6: connections for transfers (two per thread: throughput, not concurrency, is measured). */
export const TRANSFER_CONNECTIONS = 6;
/** S6: wrk's per-request timeout for transfers; a path that stalls large packets shows as timeouts, not a hang. */
export const TRANSFER_TIMEOUT_S = 10;

export async function runWrk(
  lab: DpLab,
  mode: Mode,
  model: BenchModel,
  conn: Conn,
  o: { durationS: number; connections: number },
  transfer?: Transfer,
): Promise<WrkResult> {
  const t = mode.target(model);
  const spec = transfer ? TRANSFERS[transfer] : undefined;
  let lua = t.spread ? spreadScript(t.spread, t.port) : '';
  if (spec?.upload) lua += uploadScript(spec.bytes);
  let script: string | undefined;
  if (lua) {
    script = join(lab.dir, `wrk-${mode.name}-${transfer ?? 'req'}.lua`);
    await writeFile(script, lua);
  }
  const args = wrkArgs({
    url: `http://${hostPort(t.host, t.port)}${spec?.path ?? '/'}`,
    durationS: o.durationS,
    connections: spec ? TRANSFER_CONNECTIONS : o.connections,
    threads: WRK_THREADS,
    close: conn === 'close',
    timeoutS: spec ? TRANSFER_TIMEOUT_S : 2,
    ...(script ? { script } : {}),
  });
  const out = await runIn({ netns: mode.clientNs(), cgroup: mode.cgroup() }, 'taskset', ['-c', lab.cpus.client, 'wrk', ...args], {
    timeoutMs: (o.durationS + 30) * 1000,
  });
  return parseWrk(out);
}

/** S1-S3: per Service count, load every mode once, then alternate modes for each repetition. */
export async function runDataPlane(lab: DpLab, modes: Mode[], o: DpOptions, log: Progress): Promise<DpCell[]> {
  const cells: DpCell[] = [];
  const cellFor = (w: DpWant, m: Mode, model: BenchModel): DpCell => {
    let c = cells.find(
      (x) => x.scenario === w.scenario && x.services === w.services && x.position === w.position && x.conn === w.conn && x.transfer === w.transfer && x.mode === m.name,
    );
    if (!c) {
      c = { scenario: w.scenario, family: familyOf(model), services: w.services, position: w.position, targetIndex: model.targetIndex, conn: w.conn, ...(w.transfer ? { transfer: w.transfer } : {}), mode: m.name, runs: [] };
      if (m.unavailable) c.unavailable = m.unavailable;
      cells.push(c);
    }
    return c;
  };
  const sizes = [...new Set(o.wants.map((w) => w.services))].sort((a, b) => a - b);
  for (const size of sizes) {
    let model = o.model(size);
    const live = modes.filter((m) => !m.unavailable);
    const failed = new Map<ModeName, string>();
    for (const m of live) {
      const t0 = Date.now();
      try {
        await m.load(model);
        log(`  ${size} Services: ${m.name} loaded in ${Date.now() - t0} ms`);
      } catch (err) {
        failed.set(m.name, `load failed: ${(err as Error).message.slice(0, 500)}`);
        log(`  ${size} Services: ${m.name} FAILED to load: ${(err as Error).message.slice(0, 300)}`);
      }
    }
    // Loading 10k-Service rulesets leaves work behind (kernel RCU frees,
    // kpr's GC after parsing): let it finish before the first measurement.
    await sleep(2 * SETTLE_MS);
    for (const position of ['random', 'worst'] as const) {
      const wants = o.wants.filter((w) => w.services === size && w.position === position);
      if (!wants.length) continue;
      if (position === 'worst' && model.targetIndex !== model.services.length - 1) {
        model = withPosition(model, 'worst');
        for (const m of live) if (!failed.has(m.name)) await m.reorder(model);
      }
      log(`  ${size} Services, target at index ${model.targetIndex} (${position})`);
      for (const w of wants) for (const m of modes) cellFor(w, m, model);
      // Each repetition switches every mode on once (A B C … A B C …) and
      // runs all of this layout's measurements while it is on; the first
      // time, the mode must first prove it reaches every backend.
      for (let rep = 0; rep < o.repeat; rep++) {
        for (const m of live) {
          if (failed.has(m.name)) {
            for (const w of wants) cellFor(w, m, model).error = failed.get(m.name);
            continue;
          }
          try {
            await m.activate();
            if (m.name === 'kpr-tc') await sleep(SETTLE_MS); // let the freshly started controller go idle
            if (rep === 0) {
              const c = await checkMode(lab, m, model);
              for (const w of wants) cellFor(w, m, model).check = c;
              if (!c.passed) {
                const more = m.diagnose ? await m.diagnose().catch((err: Error) => `(no diagnosis: ${err.message})`) : '';
                const why = `check failed: ${JSON.stringify({ pods: c.pods, errors: c.errors, expected: c.expected })}${more ? `\n${more}` : ''}`;
                failed.set(m.name, why);
                for (const w of wants) cellFor(w, m, model).error = why;
                log(`  ${m.name}: ${why}`);
                continue;
              }
            }
            for (const w of wants) {
              const cell = cellFor(w, m, model);
              try {
                if (w.scenario === 'S8') {
                  const r = await runLatency(lab, m, model, o.latencyConnects ?? 200);
                  (cell.latency ??= []).push(r);
                  log(`  S8 n=${size} ${m.name} #${rep + 1}: ${r.samplesMs.length} connections, errors ${JSON.stringify(r.errors)}`);
                  continue;
                }
                const r = await runWrk(lab, m, model, w.conn, o, w.transfer);
                cell.runs.push(r);
                if (r.requests === 0) {
                  // A stalled path finishes nothing within the run (wrk counts a
                  // timeout only after --timeout): say so, do not show a quiet 0.
                  cell.error = `no request completed in ${o.durationS} s (stalled?)`;
                  cell.failedRuns = (cell.failedRuns ?? 0) + 1;
                }
                log(
                  `  ${w.scenario} n=${size} ${position} ${w.transfer ?? w.conn} ${m.name} #${rep + 1}: ${r.rps.toFixed(0)} req/s p50 ${r.percentilesMs['50']?.toFixed(3)} ms p99 ${r.percentilesMs['99']?.toFixed(3)} ms`,
                );
              } catch (err) {
                // The command line leads the message; the cause is at its end.
                cell.error = (err as Error).message.slice(-400);
                cell.failedRuns = (cell.failedRuns ?? 0) + 1;
                log(`  ${m.name}: ${cell.error}`);
              }
            }
          } catch (err) {
            const why = `activation failed: ${(err as Error).message.slice(-400)}`;
            failed.set(m.name, why);
            for (const w of wants) cellFor(w, m, model).error = why;
            log(`  ${m.name}: ${why}`);
          } finally {
            await m.deactivate().catch((err: Error) => log(`  ${m.name}: deactivate failed: ${err.message}`));
          }
        }
      }
    }
    for (const m of live) await m.unload().catch((err: Error) => log(`  ${m.name}: unload failed: ${err.message}`));
  }
  return cells;
}

// ---------------------------------------------------------------- S4

export interface CpRun {
  wallMs: number;
  cpuMs: number;
  peakRssKB?: number;
  /** kpr: RSS after the full sync and a GC */
  steadyRssKB?: number;
  /** kpr: the ms of the controller's own "synced" log line */
  syncedMs?: number;
}

export interface CpCell {
  system: 'kpr' | 'iptables-restore' | 'nft';
  op: 'full-sync' | 'add-service' | 'change-endpoint';
  form: string;
  services: number;
  endpoints: number;
  runs: CpRun[];
  note?: string;
  error?: string;
}

/** Run a command in a netns under GNU time for CPU and peak RSS; wall time from our clock. */
async function timed(ns: string, cmd: string, args: string[], dir: string, timeoutMs: number): Promise<CpRun> {
  const tf = join(dir, 'time.out');
  const t0 = performance.now();
  await run('/usr/bin/time', ['-o', tf, '-f', '%U %S %M', 'ip', 'netns', 'exec', ns, cmd, ...args], { timeoutMs });
  const wallMs = performance.now() - t0;
  const [u, s, m] = (await readFile(tf, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number);
  return { wallMs, cpuMs: ((u ?? 0) + (s ?? 0)) * 1000, peakRssKB: m ?? 0 };
}

export interface CpOptions {
  sizes: number[];
  endpoints: number;
  repeat: number;
  systems: Array<CpCell['system']>;
}

export async function runControlPlane(lab: BenchLab, o: CpOptions, log: Progress): Promise<CpCell[]> {
  const cells: CpCell[] = [];
  const ns = `${lab.id}-cp`;
  lab.extraNetns.add(ns);
  const dir = join(lab.dir, 'cp');
  await mkdir(dir, { recursive: true });
  const cell = (system: CpCell['system'], op: CpCell['op'], form: string, n: number): CpCell => {
    let c = cells.find((x) => x.system === system && x.op === op && x.form === form && x.services === n);
    if (!c) cells.push((c = { system, op, form, services: n, endpoints: o.endpoints, runs: [] }));
    return c;
  };
  for (const n of o.sizes) {
    const base = buildModel({ services: n, fillerEndpoints: o.endpoints, targetBackends: [], position: 'worst', clusterCidr: CLUSTER_CIDR });
    // The S4 model has no live target: drop the empty placeholder so all N Services have N×endpoints.
    base.services.pop();
    base.services.push(fillerService(n - 1, o.endpoints));
    const added = (r: number) => fillerService(n + r, o.endpoints);
    const changedOf = (r: number) => {
      const before = base.services[r] ?? fillerService(r, o.endpoints);
      const after = { ...before, backends: before.backends.map((b, i) => (i === 0 ? { ip: `198.51.100.${(r % 250) + 1}`, port: b.port } : b)) };
      return { before, after };
    };
    const withSvc = (m: BenchModel, replace: Map<number, ReturnType<typeof fillerService>>, extra: ReturnType<typeof fillerService>[]) => ({
      ...m,
      services: [...m.services.map((s, i) => replace.get(i) ?? s), ...extra],
    });

    if (o.systems.includes('iptables-restore')) {
      log(`  S4 iptables-restore, ${n} Services × ${o.endpoints}`);
      await run('ip', ['netns', 'add', ns]);
      try {
        const f = (tag: string) => join(dir, `ipt-${tag}.rules`);
        const restore = async (tag: string, text: string, noflush: boolean) => {
          await writeFile(f(tag), text);
          return timed(ns, 'iptables-restore', [...(noflush ? ['--noflush'] : []), f(tag)], dir, 1_800_000);
        };
        const fullText = renderIptables(base, { hooks: true });
        for (let r = 0; r < o.repeat; r++) {
          await restore('empty', '*filter\nCOMMIT\n*nat\nCOMMIT\n', false);
          cell('iptables-restore', 'full-sync', 'full', n).runs.push(await restore('full', fullText, false));
          // kube-proxy's partial form: top-level chains + the new Service's chains, --noflush.
          const a = added(r);
          const plusOne = withSvc(base, new Map(), [a]);
          cell('iptables-restore', 'add-service', 'partial --noflush', n).runs.push(await restore('add-p', renderIptablesPartial(plusOne, [a]), true));
          const { before, after } = changedOf(r);
          const changedModel = withSvc(plusOne, new Map([[r, after]]), []);
          const stale = sepChainsOf(before).filter((c) => !sepChainsOf(after).includes(c));
          cell('iptables-restore', 'change-endpoint', 'partial --noflush', n).runs.push(
            await restore('chg-p', renderIptablesPartial(changedModel, [after], stale), true),
          );
          // The full form: the whole ruleset rewritten for one change.
          cell('iptables-restore', 'change-endpoint', 'full', n).runs.push(await restore('chg-f', renderIptables(withSvc(base, new Map([[r, after]]), [a]), { hooks: true }), false));
          cell('iptables-restore', 'add-service', 'full', n).runs.push(
            await restore('add-f', renderIptables(withSvc(base, new Map([[r, after]]), [a, added(r + o.repeat)]), { hooks: true }), false),
          );
        }
      } catch (err) {
        cell('iptables-restore', 'full-sync', 'full', n).error = (err as Error).message.slice(0, 500);
      } finally {
        await run('ip', ['netns', 'del', ns], { allowFail: true });
      }
    }

    if (o.systems.includes('nft')) {
      log(`  S4 nft, ${n} Services × ${o.endpoints}`);
      await run('ip', ['netns', 'add', ns]);
      try {
        const nft = async (tag: string, text: string) => {
          const file = join(dir, `nft-${tag}.nft`);
          await writeFile(file, text);
          return timed(ns, 'nft', ['-f', file], dir, 1_800_000);
        };
        const fullText = renderNftables(base, { hooks: true });
        for (let r = 0; r < o.repeat; r++) {
          await run('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset']);
          cell('nft', 'full-sync', 'one transaction', n).runs.push(await nft('full', fullText));
          const a = added(r);
          cell('nft', 'add-service', 'incremental transaction', n).runs.push(await nft('add', renderNftAddService(base, a)));
          const { before, after } = changedOf(r);
          cell('nft', 'change-endpoint', 'incremental transaction', n).runs.push(await nft('chg', renderNftChangeEndpoints(base, before, after)));
        }
      } catch (err) {
        cell('nft', 'full-sync', 'one transaction', n).error = (err as Error).message.slice(0, 500);
      } finally {
        await run('ip', ['netns', 'del', ns], { allowFail: true });
      }
    }

    if (o.systems.includes('kpr')) {
      log(`  S4 kpr controller, ${n} Services × ${o.endpoints}`);
      for (let r = 0; r < o.repeat; r++) await kprSyncRun(lab, join(dir, `kpr-${n}`), base.services, { services: n, endpoints: o.endpoints, tag: 's4' }, cell);
    }
  }
  return cells;
}

/**
 * One kprsync child process (S4, S9): the manifest written once per
 * directory, then the controller's full sync, RSS and incremental changes,
 * recorded in the cells `cell` hands out. A failure is recorded, never thrown.
 */
export async function kprSyncRun(
  lab: BenchLab,
  mdir: string,
  services: BenchService[],
  o: { services: number; endpoints: number; tag: string; timeoutMs?: number },
  cell: (system: 'kpr', op: CpCell['op'], form: string, n: number) => CpCell,
): Promise<void> {
  const n = o.services;
  const manifest = join(mdir, 'services.json');
  await mkdir(mdir, { recursive: true });
  if (!existsSync(manifest)) await writeAtomic(manifest, manifestJson(services));
  const pin = lab.pinPath(o.tag);
  await cleanup(pin);
  try {
    const out = await run(
      process.execPath,
      ['--expose-gc', ...nodeArgv(benchScript('kprsync')), '--pin-path', pin, '--manifests', mdir, '--repeat', '3', '--services', String(n), '--endpoints', String(o.endpoints)],
      { timeoutMs: o.timeoutMs ?? 1_800_000 },
    );
    const j = JSON.parse(out) as {
      load: CpRun;
      full: CpRun;
      add: CpRun[];
      change: CpRun[];
      maxRssKB: number;
      rssAfterFullKB: number;
      rssSteadyKB: number | null;
      fullSyncedMs: number | null;
    };
    const c = cell('kpr', 'full-sync', 'translate + map writes', n);
    c.runs.push({ ...j.full, peakRssKB: j.rssAfterFullKB, ...(j.rssSteadyKB ? { steadyRssKB: j.rssSteadyKB } : {}), ...(j.fullSyncedMs !== null ? { syncedMs: j.fullSyncedMs } : {}) });
    c.note = 'wall: controller.start() to idle; syncedMs: the "synced" log line; peak RSS includes the YAML parse, steadyRssKB is after GC';
    cell('kpr', 'full-sync', 'incl. manifest parse', n).runs.push({ wallMs: j.load.wallMs + j.full.wallMs, cpuMs: j.load.cpuMs + j.full.cpuMs, peakRssKB: j.rssAfterFullKB });
    for (const a of j.add) cell('kpr', 'add-service', 'incremental sync', n).runs.push({ ...a, peakRssKB: j.maxRssKB });
    for (const ch of j.change) cell('kpr', 'change-endpoint', 'incremental sync', n).runs.push({ ...ch, peakRssKB: j.maxRssKB });
  } catch (err) {
    cell('kpr', 'full-sync', 'translate + map writes', n).error = (err as Error).message.slice(0, 500);
  } finally {
    await cleanup(pin);
  }
}

// ---------------------------------------------------------------- S9

/**
 * S9: control-plane scale, kpr alone (no baseline loads 1M rules in
 * reasonable time): S4's kprsync at services × endpoints, maps sized for
 * it. The same cells as S4, kept apart in the results.
 */
export async function runS9(lab: BenchLab, o: { services: number; endpoints: number; repeat: number }, log: Progress): Promise<CpCell[]> {
  const cells: CpCell[] = [];
  const cell = (system: 'kpr', op: CpCell['op'], form: string, n: number): CpCell => {
    let c = cells.find((x) => x.system === system && x.op === op && x.form === form && x.services === n);
    if (!c) cells.push((c = { system, op, form, services: n, endpoints: o.endpoints, runs: [] }));
    return c;
  };
  const services = Array.from({ length: o.services }, (_, i) => fillerService(i, o.endpoints));
  log(`  S9 kpr controller, ${o.services} Services × ${o.endpoints}`);
  for (let r = 0; r < o.repeat; r++) await kprSyncRun(lab, join(lab.dir, 's9', `kpr-${o.services}`), services, { services: o.services, endpoints: o.endpoints, tag: 's9', timeoutMs: 3_600_000 }, cell);
  return cells;
}

// ---------------------------------------------------------------- S5

export interface S5Result {
  mode: ModeName;
  services: number;
  changes: number;
  latenciesMs: number[];
  timeouts: number;
  error?: string;
  unavailable?: string;
}

/**
 * S5: kpr runs on a manifest directory with N Services; each change adds a
 * new backend (the spare pod) to the target's manifest file; a probe in the
 * kpr cgroup connects again and again until the new backend answers. The
 * latency is (probe success time) - (moment before the rename), both on the
 * epoch clock. Then the backend is removed again and we wait for kpr's sync.
 */
export async function runS5(
  lab: BenchLab,
  mode: Mode & { manifestDir?: string; kpr?: KprProcess | undefined },
  o: { services: number; changes: number; fillerEndpoints: number; seed: number; timeoutMs: number },
  log: Progress,
): Promise<S5Result> {
  const res: S5Result = { mode: mode.name, services: o.services, changes: o.changes, latenciesMs: [], timeouts: 0 };
  if (mode.unavailable) return { ...res, unavailable: mode.unavailable };
  const spare = lab.pods[lab.pods.length - 1];
  if (!spare) throw new Error('S5 needs a spare pod');
  const base = targetBackends(lab, lab.pods.length - 1);
  const model = buildModel({ services: o.services, fillerEndpoints: o.fillerEndpoints, targetBackends: base, position: 'random', seed: o.seed, clusterCidr: CLUSTER_CIDR });
  const probe = (() => {
    const [c, a] = wrapArgv(process.execPath, [...nodeArgv(benchScript('httpprobe')), 'watch', targetOf(model).vip, String(targetOf(model).port), '--timeout', '1000'], {
      netns: mode.clientNs(),
      cgroup: mode.cgroup(),
    });
    return spawn(c, a, { stdio: ['pipe', 'pipe', 'pipe'] });
  })();
  const lines = createInterface({ input: probe.stdout! })[Symbol.asyncIterator]();
  try {
    await mode.load(model);
    await mode.activate();
    const dir = mode.manifestDir;
    const k = mode.kpr;
    if (!dir || !k) throw new Error(`${mode.name} has no manifest directory or kpr process`);
    const targetFile = join(dir, 'target.json');
    const t = targetOf(model);
    // kpr logs its first sync before its manifest watcher is set up; a
    // rename in that gap is only seen by the 2 s poll. S5 measures steady
    // state, so start after the controller has settled.
    await sleep(SETTLE_MS);
    for (let i = 0; i < o.changes; i++) {
      const syncsBefore = k.syncs.length;
      const t0 = performance.timeOrigin + performance.now();
      await writeAtomic(targetFile, manifestJson([{ ...t, backends: [...base, { ip: spare.ip, port: POD_PORT }] }]));
      probe.stdin!.write(`want ${spare.name} ${t0 + o.timeoutMs}\n`);
      const { value } = await lines.next();
      const r = JSON.parse(String(value)) as { at: number | null; tries: number };
      if (r.at === null) res.timeouts++;
      else res.latenciesMs.push(r.at - t0);
      // Back to the base set; wait for kpr's sync of that removal before the next change.
      await k.waitSyncs(syncsBefore + 1, 30_000);
      const before = k.syncs.length;
      await writeAtomic(targetFile, manifestJson([t]));
      await k.waitSyncs(before + 1, 30_000);
      await new Promise((r2) => setTimeout(r2, 20));
    }
    log(`  S5 ${mode.name} n=${o.services}: ${res.latenciesMs.length} changes, ${res.timeouts} timeouts`);
  } catch (err) {
    res.error = (err as Error).message.slice(0, 500);
  } finally {
    probe.stdin?.end();
    if (probe.exitCode === null) {
      const exited = once(probe, 'exit');
      probe.kill('SIGTERM');
      await exited;
    }
    await mode.deactivate().catch(() => undefined);
    await mode.unload().catch(() => undefined);
  }
  return res;
}

