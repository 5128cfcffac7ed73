/**
 * S4's kpr measurement, run as its own process so its CPU time and peak RSS
 * are the controller's alone: the same pieces `kpr run` wires together
 * (ManifestSource -> ObjectStore -> Controller -> Reconciler -> pinned maps),
 * minus attaching hooks, which is not part of programming a change.
 *
 *   kprsync --pin-path DIR --manifests DIR --repeat R
 *
 * Prints one JSON object: open (maps), load (YAML parse + store), full sync,
 * then R times "add one Service" and R times "change one endpoint", each with
 * wall ms and CPU ms; and the process's peak RSS.
 */
import { performance } from 'node:perf_hooks';
import { boundHeapGrowth, Controller, Datapath, DEFAULT_MAP_SIZES, ManifestSource, ObjectStore, Reconciler } from 'kpr';
import { pino } from 'pino';
import { fillerService, serviceObject, sliceObjects } from './model.js';

// As `kpr run` starts: the same heap growth, so the RSS measured is the daemon's.
boundHeapGrowth();

function flag(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) throw new Error(`kprsync: --${name} is required`);
  return v;
}

const pinPath = flag('pin-path');
const manifests = flag('manifests');
const repeat = Number(flag('repeat'));
const services = Number(flag('services'));
const endpoints = Number(flag('endpoints'));

interface Step {
  wallMs: number;
  cpuMs: number;
  writes?: number;
}

async function step(fn: () => Promise<unknown>): Promise<Step> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 };
}

// The controller's own account of each sync (the "synced" line kpr run
// logs: translate + map writes), captured instead of printed.
const syncedMs: number[] = [];
const log = pino(
  { level: 'info' },
  {
    write(line: string) {
      const j = JSON.parse(line) as { msg?: string; ms?: number };
      if (j.msg === 'synced' && typeof j.ms === 'number') syncedMs.push(j.ms);
    },
  },
);
const fe = Math.max(65536, Math.ceil(services * 1.25) + repeat + 8);
const sizes = { ...DEFAULT_MAP_SIZES, natFe: fe, svcMeta: fe, natBe: Math.max(262144, Math.ceil(services * endpoints * 1.25) + 64 * repeat) };

let datapath: Datapath | undefined;
const open = await step(async () => {
  datapath = await Datapath.open(pinPath, sizes);
});
const dp = datapath as unknown as Datapath;
const reconciler = new Reconciler(dp.maps);
reconciler.adopt();
const store = new ObjectStore();
const controller = new Controller({ store, reconciler, log, resyncIntervalMs: 0 });
const source = new ManifestSource({ path: manifests, log, pollMs: 3_600_000 });

// Parse + store first, with the controller not yet listening, so the two
// phases are timed apart; then the controller's first (full) sync.
const load = await step(() => source.start(store));
await source.stop();
const full = await step(async () => {
  controller.start();
  await controller.whenIdle();
});
const fullSyncedMs = syncedMs[syncedMs.length - 1] ?? null;
const rssAfterFull = process.resourceUsage().maxRSS;
// What the process keeps once the parse garbage is gone (needs --expose-gc).
const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
const rssSteadyKB = Math.round(process.memoryUsage().rss / 1024);

const add: Step[] = [];
const change: Step[] = [];
for (let r = 0; r < repeat; r++) {
  // A Service that was not there: a fresh index past the fillers.
  const s = fillerService(services + r, endpoints);
  add.push(
    await step(async () => {
      store.upsert('Service', serviceObject(s));
      for (const sl of sliceObjects(s)) store.upsert('EndpointSlice', sl);
      await controller.whenIdle();
    }),
  );
}
for (let r = 0; r < repeat; r++) {
  // One endpoint of an existing filler moves to a new address.
  const s = fillerService(r, endpoints);
  const b = s.backends[0];
  if (b) s.backends[0] = { ip: `198.51.100.${(r % 250) + 1}`, port: b.port };
  const slices = sliceObjects(s);
  change.push(
    await step(async () => {
      const first = slices[0];
      if (first) store.upsert('EndpointSlice', first);
      await controller.whenIdle();
    }),
  );
}
controller.stop();
dp.close();
process.stdout.write(
  JSON.stringify({
    open,
    load,
    full,
    fullSyncedMs,
    syncedMs,
    add,
    change,
    maxRssKB: process.resourceUsage().maxRSS,
    rssAfterFullKB: rssAfterFull,
    rssSteadyKB: gc ? rssSteadyKB : null,
    counts: reconciler.counts(),
  }) + '\n',
);
