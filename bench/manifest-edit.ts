/**
 * Manifests at scale (issue 12, point 9): one object edited in a manifest
 * directory of `services` Services x `endpoints` endpoints, YAML or JSON,
 * spread over `files` files; how long until the controller has synced it,
 * and the process's RSS. Run as its own process, so the RSS is kpr's alone:
 *
 *   node --expose-gc --import tsx bench/manifest-edit.ts --format yaml --services 10000 --endpoints 10 --files 1 --repeat 5
 *
 * The pieces are the ones `kpr run` wires (ManifestSource with its watch ->
 * ObjectStore -> Controller -> Reconciler -> freshly pinned maps, removed
 * afterwards). Each edit moves one endpoint of one Service to a new address
 * and replaces the file atomically (write + rename), as kubectl-style tools
 * and the tests do; latency is from just before the rename to the end of
 * the controller's sync that covered that Service. Prints one JSON object.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { cleanup, Controller, Datapath, DEFAULT_MAP_SIZES, ManifestSource, ObjectStore, Reconciler, serviceKey } from 'kpr';
import { FILLER_NS, fillerService, serviceObject, sliceObjects } from './model.js';

function flag(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : dflt;
  if (v === undefined) throw new Error(`manifest-edit: --${name} is required`);
  return v;
}
const format = flag('format', 'yaml');
if (format !== 'yaml' && format !== 'json') throw new Error('--format yaml|json');
const services = Number(flag('services', '10000'));
const endpoints = Number(flag('endpoints', '10'));
const files = Number(flag('files', '1'));
const repeat = Number(flag('repeat', '5'));

/** Per Service, the text of its objects in the file's format. */
function objectsText(objs: unknown[]): string[] {
  return objs.map((o) => (format === 'json' ? JSON.stringify(o) : stringify(o)));
}
const SEP = format === 'json' ? ',\n' : '---\n';
function fileText(parts: string[][]): string {
  const all = parts.flat();
  return format === 'json' ? `{"apiVersion":"v1","kind":"List","items":[\n${all.join(SEP)}\n]}\n` : all.join(SEP);
}
const serviceText = (s: ReturnType<typeof fillerService>) => objectsText([serviceObject(s), ...sliceObjects(s)]).join(SEP);
const ext = format === 'json' ? 'json' : 'yaml';
const perFile = Math.ceil(services / files);
const given = process.argv.indexOf('--dir');
if (given < 0) {
  // Write the files here, then measure in a fresh process: the garbage of
  // generating them would otherwise count in kpr's RSS.
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-edit-'));
  try {
    await generate(dir);
    const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1), '--dir', dir], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
} else {
  await measure(process.argv[given + 1] as string);
}

async function generate(dir: string): Promise<void> {
  for (let f = 0; f < files; f++) {
    const parts: string[][] = [];
    for (let i = f * perFile; i < Math.min(services, (f + 1) * perFile); i++) {
      const s = fillerService(i, endpoints);
      parts.push(objectsText([serviceObject(s), ...sliceObjects(s)]));
    }
    await writeFile(join(dir, `svc-${f}.${ext}`), fileText(parts));
  }
}

async function measure(dir: string): Promise<void> {
  const pinPath = `/sys/fs/bpf/kpr-bench-manifest-${process.pid}`;
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const rssBeforeKpr = process.memoryUsage().rss;

  const synced: Array<{ at: number; keys: Set<string> }> = [];
  let onSync: (() => void) | undefined;
  const log = pino({ level: 'warn' });
  const fe = Math.max(65536, Math.ceil(services * 1.25));
  const sizes = { ...DEFAULT_MAP_SIZES, natFe: fe, svcMeta: fe, natBe: Math.max(262144, Math.ceil(services * endpoints * 1.25)) };
  /** Program loads can fail with EAGAIN while other loads hog the verifier's memory: retry a few times. */
  async function openDatapath(): Promise<Datapath> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await Datapath.open(pinPath, sizes);
      } catch (err) {
        if ((err as { code?: string }).code !== 'EAGAIN' || attempt === 5) throw err;
        await cleanup(pinPath);
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
}
const dp = await openDatapath();
const result: Record<string, unknown> = { format, services, endpoints, files };
try {
  const reconciler = new Reconciler(dp.maps);
  reconciler.adopt();
  const store = new ObjectStore();
  const controller = new Controller({
    store, reconciler, log, resyncIntervalMs: 0,
    afterSync: (keys) => {
      synced.push({ at: performance.now(), keys });
      onSync?.();
    },
  });
  const source = new ManifestSource({ path: dir, log, pollMs: 3_600_000 });
  const t0 = performance.now();
  controller.start();
  await source.start(store);
  await controller.whenIdle();
  result.firstLoadMs = Math.round(performance.now() - t0);
  result.maxRssAfterFirstLoadMB = Math.round(process.resourceUsage().maxRSS / 1024);
  gc?.();
  const rssBase = process.memoryUsage().rss;
  const mu = process.memoryUsage();
  result.heapAfterFirstLoadMB = { heapUsed: Math.round(mu.heapUsed / 1048576), heapTotal: Math.round(mu.heapTotal / 1048576), external: Math.round(mu.external / 1048576) };
  // The edits' own peak: the process's peak so far is the first load's.
  let peakDuringEdits = 0;
  const sampler = setInterval(() => (peakDuringEdits = Math.max(peakDuringEdits, process.memoryUsage().rss)), 5);
  const edits: number[] = [];
  /** CPU time of the process over each edit: the work done, apart from waiting for a CPU on a busy machine */
  const editCpu: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const i = Math.floor(((r + 0.5) * services) / repeat);
    const f = Math.floor(i / perFile);
    const s = fillerService(i, endpoints);
    const before = serviceText(s);
    const b = s.backends[0];
    if (b) s.backends[0] = { ip: `198.51.100.${(r % 250) + 1}`, port: b.port };
    const file = join(dir, `svc-${f}.${ext}`);
    // The bench keeps no copy of the files: its memory would count as kpr's.
    const old = await readFile(file, 'utf8');
    if (!old.includes(before)) throw new Error(`${s.name} not found in ${file}`);
    await writeFile(join(dir, `.svc-${f}.tmp`), old.replace(before, serviceText(s)));
    // No gc() here: its background sweeping would be counted in the edit's CPU time.
    const key = serviceKey(FILLER_NS, s.name);
    const done = new Promise<void>((resolve) => {
      onSync = () => {
        if (synced.some((x) => x.keys.has(key))) resolve();
      };
    });
    synced.length = 0;
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    await rename(join(dir, `.svc-${f}.tmp`), file);
    await done;
    edits.push(+(performance.now() - start).toFixed(1));
    const cpu = process.cpuUsage(cpu0);
    editCpu.push(+((cpu.user + cpu.system) / 1000).toFixed(1));
    const ip = store.slicesFor(key).flatMap((sl) => sl.endpoints.flatMap((e) => e.addresses));
    if (!ip.includes(`198.51.100.${(r % 250) + 1}`)) throw new Error(`edit ${r} of ${key} not in the store`);
  }
  clearInterval(sampler);
  controller.stop();
  await source.stop();
  Object.assign(result, {
    editMs: edits,
    editCpuMs: editCpu,
    rssBeforeKprMB: Math.round(rssBeforeKpr / 1048576),
    rssSteadyMB: gc ? Math.round(rssBase / 1048576) : null,
    rssPeakDuringEditsMB: Math.round(peakDuringEdits / 1048576),
    maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  });
} finally {
    dp.close();
    await cleanup(pinPath);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}
