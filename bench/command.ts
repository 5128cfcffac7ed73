/**
 * `kpr bench`: kpr against kube-proxy's iptables and nftables modes (and a
 * direct pod connection), side by side in one run, in network namespaces
 * this command creates and removes. See docs in README "Benchmark".
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { run } from 'kpr/lab';
import { repoRoot } from 'kpr';
import { BenchLab, cpuPlan, withLab } from './lab.js';
import { createModes, MODE_NAMES, NODEPORT_MODE_NAMES, type ModeName, type NodePortModeName } from './modes.js';
import { buildModel, type IpFamily } from './model.js';
import { NodePortLab, createNodePortModes } from './nodeport.js';
import { TRANSFER_NAMES } from './wrk.js';
import type { Position } from './model.js';
import { charts, markdown } from './report.js';
import { runControlPlane, runDataPlane, runS5, runS9, targetBackends, type Conn, type CpCell, type DpCell, type DpOptions, type S5Result } from './scenarios.js';

export const SCENARIOS = ['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'S8', 'S9'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchArgs {
  scenarios: string;
  services: string;
  'include-50k': boolean;
  modes: string;
  'nodeport-modes': string;
  duration: number;
  repeat: number;
  connections: number;
  'filler-endpoints': number;
  's4-endpoints': number;
  's4-repeat': number;
  's5-services'?: number | undefined;
  's5-changes': number;
  's8-connects': number;
  's9-services': number;
  's9-endpoints': number;
  seed: number;
  out: string;
  'ip-family'?: number | undefined;
}

export interface BenchOptions {
  scenarios: Scenario[];
  sizes: number[];
  modes: ModeName[];
  nodePortModes: NodePortModeName[];
  durationS: number;
  repeat: number;
  connections: number;
  fillerEndpoints: number;
  s4Endpoints: number;
  s4Repeat: number;
  s5Services: number;
  s5Changes: number;
  s8Connects: number;
  s9Services: number;
  s9Endpoints: number;
  seed: number;
  out: string;
  /** The family S1-S3 measure (6: IPv6 VIPs, pods and clients, ip6tables and ip6 nftables rules). */
  family: IpFamily;
}

/** What an IPv6 run can measure: the ClusterIP data-plane scenarios on the node lab. */
export const IPV6_SCENARIOS: readonly Scenario[] = ['S1', 'S2', 'S3'];

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export function parseBenchArgs(a: BenchArgs): BenchOptions {
  const scenarios = list(a.scenarios).map((s) => s.toUpperCase());
  for (const s of scenarios) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario ${s} (choose from ${SCENARIOS.join(',')})`);
  const sizes = list(a.services).map((s) => {
    const n = Number(s.replace(/k$/i, '000'));
    if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new Error(`--services: ${s} is not a Service count in 1..100000`);
    return n;
  });
  if (a['include-50k'] && !sizes.includes(50_000)) sizes.push(50_000);
  sizes.sort((x, y) => x - y);
  if (a['s9-services'] > 130_000) throw new Error('--s9-services: at most 130000 (the VIP range 198.18.0.0/15)');
  const modes = list(a.modes);
  for (const m of modes) if (!(MODE_NAMES as readonly string[]).includes(m)) throw new Error(`unknown mode ${m} (choose from ${MODE_NAMES.join(',')})`);
  const npModes = list(a['nodeport-modes']);
  for (const m of npModes) if (!(NODEPORT_MODE_NAMES as readonly string[]).includes(m)) throw new Error(`unknown NodePort mode ${m} (choose from ${NODEPORT_MODE_NAMES.join(',')})`);
  const family = a['ip-family'] ?? 4;
  if (family !== 4 && family !== 6) throw new Error(`--ip-family must be 4 or 6, got ${family}`);
  if (family === 6) {
    const other = scenarios.filter((s) => !(IPV6_SCENARIOS as readonly string[]).includes(s));
    if (other.length) throw new Error(`--ip-family 6 measures ${IPV6_SCENARIOS.join(',')} only, not ${other.join(',')}`);
  }
  const pos = (name: string, v: number, min = 1) => {
    if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be >= ${min}`);
    return v;
  };
  return {
    scenarios: scenarios as Scenario[],
    sizes,
    modes: modes as ModeName[],
    nodePortModes: npModes as NodePortModeName[],
    durationS: pos('duration', a.duration),
    repeat: pos('repeat', a.repeat),
    connections: pos('connections', a.connections),
    fillerEndpoints: pos('filler-endpoints', a['filler-endpoints']),
    s4Endpoints: pos('s4-endpoints', a['s4-endpoints']),
    s4Repeat: pos('s4-repeat', a['s4-repeat']),
    s5Services: a['s5-services'] ?? (sizes.includes(10_000) ? 10_000 : Math.max(...sizes)),
    s5Changes: pos('s5-changes', a['s5-changes']),
    s8Connects: pos('s8-connects', a['s8-connects']),
    s9Services: pos('s9-services', a['s9-services']),
    s9Endpoints: pos('s9-endpoints', a['s9-endpoints']),
    seed: a.seed,
    out: a.out,
    family,
  };
}

/**
 * What S1-S3, S6 and S8 measure. S2/S3 at one Service are S1's measurements
 * (copied after the run) when S1 runs too. S6 runs at one Service (the
 * transfer cost is per packet, not per Service); S8 at every --services count.
 */
export function dataPlaneWants(o: Pick<BenchOptions, 'scenarios' | 'sizes'>): DpOptions['wants'] {
  const w: DpOptions['wants'] = [];
  const has = (s: Scenario) => o.scenarios.includes(s);
  if (has('S1')) {
    w.push({ scenario: 'S1', services: 1, position: 'random', conn: 'keepalive' });
    w.push({ scenario: 'S1', services: 1, position: 'random', conn: 'close' });
  }
  for (const n of o.sizes) {
    if (n === 1 && has('S1')) continue;
    if (has('S2')) {
      w.push({ scenario: 'S2', services: n, position: 'random', conn: 'close' });
      if (n > 1) w.push({ scenario: 'S2', services: n, position: 'worst', conn: 'close' });
    }
    if (has('S3')) w.push({ scenario: 'S3', services: n, position: 'random', conn: 'keepalive' });
  }
  if (has('S6')) for (const transfer of TRANSFER_NAMES) w.push({ scenario: 'S6', services: 1, position: 'random', conn: 'keepalive', transfer });
  if (has('S8')) for (const n of o.sizes) w.push({ scenario: 'S8', services: n, position: 'random', conn: 'close' });
  return w;
}

/** S7 (new connections/s and 10 MiB transfers per Service count) and S6's NodePort rows, on the two-node lab. */
export function nodePortWants(o: Pick<BenchOptions, 'scenarios' | 'sizes'>): DpOptions['wants'] {
  const w: DpOptions['wants'] = [];
  if (o.scenarios.includes('S6')) for (const transfer of TRANSFER_NAMES) w.push({ scenario: 'S6', services: 1, position: 'random', conn: 'keepalive', transfer });
  if (o.scenarios.includes('S7')) {
    for (const n of o.sizes) {
      w.push({ scenario: 'S7', services: n, position: 'random', conn: 'close' });
      w.push({ scenario: 'S7', services: n, position: 'random', conn: 'keepalive', transfer: 'get-10m' });
    }
  }
  return w;
}

async function versions(): Promise<Record<string, string>> {
  const v = async (cmd: string, args: string[]) => {
    try {
      const { execFile } = await import('node:child_process');
      return await new Promise<string>((resolve) =>
        execFile(cmd, args, { timeout: 10_000 }, (_e, out, err) => resolve(`${out}${err}`.trim().split('\n')[0] ?? '')),
      );
    } catch {
      return 'unknown';
    }
  };
  // BENCH_COMMIT names the commit when the tree is an export without .git
  // (not KPR_*: kpr rejects unknown KPR_ variables).
  const head = (await run('git', ['-C', repoRoot(), 'rev-parse', 'HEAD'], { allowFail: true })).trim();
  const dirty = head ? ((await run('git', ['-C', repoRoot(), 'status', '--porcelain'], { allowFail: true })).trim() ? 'yes' : 'no') : 'unknown (not a git checkout)';
  return {
    kernel: (await v('uname', ['-r'])) || 'unknown',
    node: process.version,
    wrk: await v('wrk', ['-v']),
    nginx: await v('nginx', ['-v']),
    iptables: await v('iptables', ['--version']),
    nft: await v('nft', ['--version']),
    kprCommit: head || process.env.BENCH_COMMIT || 'unknown',
    kprDirty: dirty,
  };
}

export interface BenchResults {
  meta: Record<string, unknown>;
  dp: DpCell[];
  cp: CpCell[];
  s5: S5Result[];
  /** S9: kpr's controller at 100k-Service scale (S4's cells) */
  s9: CpCell[];
}

export async function runBench(o: BenchOptions, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<BenchResults> {
  const started = new Date();
  const id = `kb${process.pid % 100000}`;
  const lab = new BenchLab(id, 4, cpuPlan(cpus().length), o.family);
  const res: BenchResults = {
    meta: {
      started: started.toISOString(),
      load: { start: loadavg() },
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryMB: Math.round(totalmem() / 2 ** 20) },
      versions: await versions(),
      options: o,
      method: {
        client: `wrk -t3 -c${o.connections} pinned to CPU ${lab.cpus.client}, in the node namespace and a child cgroup (kpr-ct: the cgroup with kpr's hooks); direct: each wrk thread to its own backend pod IP; kpr-tc and direct-pod: the client runs in a client pod instead, since tc NAT starts flows on ingress only`,
        servers: `nginx-light, worker_processes 1, one per pod, pinned to CPU ${lab.cpus.server}; 3 backends for the target Service (+1 spare pod for S5)`,
        order: 'per Service count: all modes loaded inactive; each repetition runs every mode in turn (A B C D A B C D …); medians over repetitions',
        family:
          o.family === 6
            ? 'IPv6: VIPs in 2001:db8:f::/64, node 2001:db8::1, pods 2001:db8::11-14, client pod 2001:db8::15; kube-proxy rules through ip6tables-restore and an ip6 nftables table; kpr through connect6 / its IPv6 tc path'
            : 'IPv4',
        conntrack: 'the node namespace has kube-proxy rulesets loaded (inactive) during all data-plane runs, so conntrack is on for every mode alike; it is flushed between modes',
        iptablesBackend: 'the system iptables-restore (see versions.iptables)',
        s4kpr: 'kpr: a child process running ManifestSource -> ObjectStore -> Controller -> Reconciler against real pinned maps (no hooks); wall/CPU from the process itself, peak RSS = its maxRSS',
        s4baselines: 'iptables-restore / nft -f of pre-rendered input in a fresh namespace; wall from spawn to exit, CPU and peak RSS from GNU time (10 ms CPU resolution); rule generation by kube-proxy itself is not counted',
        s5: 'kpr on a manifest directory; the target Service file is rewritten (rename) to add a spare backend; a probe in the kpr cgroup reconnects until that backend answers; latency = probe success - moment before the rename',
        s6: `wrk -t3 -c6 keep-alive, --timeout 10s, against static files on the backends' nginx (sendfile): GET 1 MiB, GET 10 MiB, and POST of a 1 MiB body to a location that discards it (wrk Lua sets wrk.method/wrk.body); Gbit/s = bytes read/s × 8 for GETs, requests/s × body × 8 for POSTs`,
        s8: `node probe (httpprobe latency), ${o.s8Connects} sequential connections per repetition, each from just before connect() to the first response byte; pinned to CPU ${lab.cpus.client}; p50/p99 over all samples of all repetitions`,
        s9: `kprsync (as S4) at ${o.s9Services} Services × ${o.s9Endpoints} endpoints, maps sized for it (nat_fe/svc_meta ≥ 1.25 × Services, nat_be ≥ 1.25 × backends); the load average at start and end is in meta.load`,
      },
    },
    dp: [],
    cp: [],
    s5: [],
    s9: [],
  };
  await withLab(lab, async () => {
    log(`kpr bench: lab ${id} up (node ns ${lab.nodeNs})`);
    const modes = await createModes(lab, o.modes);
    for (const m of modes) if (m.unavailable) log(`  mode ${m.name}: unavailable: ${m.unavailable}`);
    const wants = dataPlaneWants(o);
    if (wants.length) {
      log('data plane (S1-S3, S6, S8)');
      res.dp = await runDataPlane(
        lab,
        modes,
        {
          wants,
          durationS: o.durationS,
          repeat: o.repeat,
          connections: o.connections,
          latencyConnects: o.s8Connects,
          model: (services) =>
            buildModel({
              services,
              fillerEndpoints: o.fillerEndpoints,
              targetBackends: targetBackends(lab, 3),
              position: 'random',
              seed: o.seed,
              clusterCidr: lab.clusterCidr,
              family: o.family,
            }),
        },
        log,
      );
      // S2/S3 at one Service are S1's cells.
      if (o.scenarios.includes('S1') && o.sizes.includes(1)) {
        for (const c of res.dp.filter((x) => x.scenario === 'S1')) {
          if (o.scenarios.includes('S2') && c.conn === 'close') res.dp.push({ ...c, scenario: 'S2' });
          if (o.scenarios.includes('S3') && c.conn === 'keepalive') res.dp.push({ ...c, scenario: 'S3' });
        }
        const order = (c: DpCell) => `${c.scenario}|${String(c.services).padStart(6, '0')}|${c.position}|${c.conn}|${o.modes.indexOf(c.mode)}`;
        res.dp.sort((a, b) => order(a).localeCompare(order(b)));
      }
    }
    const npWants = nodePortWants(o);
    if (npWants.length && o.nodePortModes.length) {
      log('NodePort from an external client (S7, S6 NodePort rows), two-node lab');
      const np = new NodePortLab(`np${process.pid % 100000}`, lab.cpus);
      lab.extraLabs.add(np);
      try {
        await np.setup();
        const cells = await runDataPlane(
          np,
          createNodePortModes(np, o.nodePortModes),
          { wants: npWants, durationS: o.durationS, repeat: o.repeat, connections: o.connections, model: (n) => np.model(n, o.fillerEndpoints, o.seed) },
          log,
        );
        res.dp.push(...cells);
      } finally {
        lab.extraLabs.delete(np);
        await np.destroy();
      }
    }
    if (o.scenarios.includes('S4')) {
      log('control plane (S4)');
      const sizes = o.sizes.filter((n) => n >= 1000);
      res.cp = await runControlPlane(lab, { sizes: sizes.length ? sizes : [1000], endpoints: o.s4Endpoints, repeat: o.s4Repeat, systems: ['kpr', 'iptables-restore', 'nft'] }, log);
    }
    if (o.scenarios.includes('S5')) {
      log('programming latency (S5)');
      for (const m of modes.filter((x) => x.name === 'kpr-ct' || x.name === 'kpr-tc')) {
        res.s5.push(await runS5(lab, m, { services: o.s5Services, changes: o.s5Changes, fillerEndpoints: o.fillerEndpoints, seed: o.seed, timeoutMs: 10_000 }, log));
      }
    }
    if (o.scenarios.includes('S9')) {
      log('control-plane scale (S9)');
      res.s9 = await runS9(lab, { services: o.s9Services, endpoints: o.s9Endpoints, repeat: o.s4Repeat }, log);
    }
  });
  res.meta.finished = new Date().toISOString();
  res.meta.load = { start: (res.meta.load as { start: number[] } | undefined)?.start, end: loadavg() };
  res.meta.elapsedS = Math.round((Date.now() - started.getTime()) / 1000);
  return res;
}

export async function writeResults(res: BenchResults, out: string): Promise<string> {
  await mkdir(out, { recursive: true });
  const md = markdown(res);
  await writeFile(join(out, 'results.md'), md);
  await writeFile(join(out, 'results.json'), JSON.stringify(res, null, 2) + '\n');
  for (const [name, svg] of Object.entries(charts(res))) await writeFile(join(out, name), svg);
  return md;
}

export const benchCommand: CommandModule<{}, BenchArgs> = {
  command: 'bench',
  describe: 'benchmark kpr against kube-proxy iptables/nftables modes and direct pod access (wrk, netns lab)',
  builder: (y: Argv<{}>) =>
    y.options({
      scenarios: { type: 'string', default: 'S1,S2,S3,S4,S5', describe: `scenarios to run (${SCENARIOS.join(',')})` },
      services: { type: 'string', default: '1,1000,10000', describe: 'Service counts for S2/S3 (S4 uses those >= 1000)' },
      'include-50k': { type: 'boolean', default: false, describe: 'add 50000 Services (slow: minutes per baseline load)' },
      modes: { type: 'string', default: MODE_NAMES.join(','), describe: `modes (${MODE_NAMES.join(',')})` },
      'nodeport-modes': {
        type: 'string',
        default: NODEPORT_MODE_NAMES.join(','),
        describe: `S7's and S6's NodePort modes on the two-node lab (${NODEPORT_MODE_NAMES.join(',')})`,
      },
      duration: { type: 'number', default: 3, describe: 'seconds per wrk run' },
      repeat: { type: 'number', default: 2, describe: 'repetitions (modes alternate within each)' },
      connections: { type: 'number', default: 30, describe: 'wrk connections (over 3 threads)' },
      'filler-endpoints': { type: 'number', default: 2, describe: 'endpoints per non-target Service in S1-S3 and S5' },
      's4-endpoints': { type: 'number', default: 10, describe: 'endpoints per Service in S4' },
      's4-repeat': { type: 'number', default: 1, describe: 'repetitions of S4 (each kpr run also repeats its incremental changes 3 times)' },
      's5-services': { type: 'number', describe: 'Services present during S5 (default 10000 if measured, else the largest count)' },
      's5-changes': { type: 'number', default: 20, describe: 'backend changes measured in S5' },
      's8-connects': { type: 'number', default: 500, describe: 'sequential connections per mode and repetition in S8' },
      's9-services': { type: 'number', default: 100_000, describe: 'Services in S9 (control-plane scale)' },
      's9-endpoints': { type: 'number', default: 10, describe: 'endpoints per Service in S9' },
      seed: { type: 'number', default: 1, describe: "seed for the target's random position" },
      'ip-family': {
        type: 'number',
        default: 4,
        choices: [4, 6],
        describe: `address family of the data-plane runs: 6 measures ${IPV6_SCENARIOS.join(',')} over IPv6 (ip6tables-restore, an ip6 nftables table, kpr's IPv6 paths)`,
      },
      out: { type: 'string', default: 'bench-results', describe: 'output directory (results.md, results.json, S*.svg)' },
    }) as unknown as Argv<BenchArgs>,
  handler: async (a) => {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('kpr bench needs root (namespaces, iptables, BPF)');
    const o = parseBenchArgs(a);
    const res = await runBench(o);
    const md = await writeResults(res, o.out);
    process.stdout.write(md);
    process.stderr.write(`kpr bench: results in ${o.out}/ (results.md, results.json, charts) after ${res.meta.elapsedS as number} s\n`);
  },
};

export type { Conn, Position };
