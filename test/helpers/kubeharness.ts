/** The real store, controller and reconciler on in-memory maps, fed by a KubeSource from a FakeApiServer. */
import { KubeConfig } from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { Controller } from '../../src/controller/controller.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { ObjectStore } from '../../src/controller/store.js';
import { decodeNatBeKey, decodeNatBeVal, decodeNatFeKey, decodeNatFeVal } from '../../src/datapath/codec.js';
import { NAT_BE_LOCAL_BASE } from '../../src/model/types.js';
import { Metrics } from '../../src/metrics.js';
import { KubeSource, type KubeSourceOptions } from '../../src/sources/kube.js';
import { FakeApiServer } from './apiserver.js';
import { memoryNatMaps } from './memmaps.js';

export type Maps = ReturnType<typeof memoryNatMaps>;

/** frontend "vip:port" -> backend "addr:port" list in ordinal order */
export function natView(m: Maps): Record<string, string[]> {
  const bes = new Map<number, string[]>();
  for (const [k, v] of m.be.dump()) {
    const key = decodeNatBeKey(k);
    if (key.ordinal >= NAT_BE_LOCAL_BASE) continue; // the cluster set only
    const val = decodeNatBeVal(v);
    const arr = bes.get(key.id) ?? [];
    arr[key.ordinal] = `${val.addr}:${val.port}`;
    bes.set(key.id, arr);
  }
  const out: Record<string, string[]> = {};
  for (const [k, v] of m.fe.dump()) {
    const key = decodeNatFeKey(k);
    const val = decodeNatFeVal(v);
    out[`${key.addr}:${key.port}`] = (bes.get(val.id) ?? []).slice(0, val.count).sort();
  }
  return out;
}

export function totalWrites(m: Maps): number {
  return m.fe.writes + m.be.writes + m.meta.writes;
}

/** Poll until pred() holds; bounded, so a broken test fails instead of hanging. */
export async function waitFor(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export async function metricValue(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  if (!m) return 0;
  let sum = 0;
  for (const v of m.values as Array<{ value: number; labels: Record<string, unknown>; metricName?: string }>) {
    if (v.metricName && v.metricName !== name && !v.metricName.endsWith('_count')) continue;
    if (Object.entries(labels).every(([k, x]) => v.labels[k] === x)) sum += v.value;
  }
  return sum;
}

export interface Harness {
  api: FakeApiServer;
  maps: Maps;
  store: ObjectStore;
  controller: Controller;
  source: KubeSource;
  metrics: Metrics;
  log: Logger;
  logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export async function harness(
  o: {
    seed?: Array<Record<string, unknown>>;
    before?: (api: FakeApiServer) => void;
    source?: Partial<KubeSourceOptions>;
    nodeName?: string;
    resyncIntervalMs?: number;
    /** Maps left by an earlier run (pinned maps across a restart); adopted first. */
    maps?: Maps;
    /** Do not wait for the source's first attempt. */
    noWait?: boolean;
  } = {},
): Promise<Harness> {
  const api = new FakeApiServer();
  await api.start();
  if (o.seed) api.seed(o.seed);
  o.before?.(api);
  const kc = new KubeConfig();
  kc.loadFromOptions(api.kubeconfig());
  const logs: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: 'debug' },
    { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) },
  );
  const maps = o.maps ?? memoryNatMaps();
  const store = new ObjectStore();
  const metrics = new Metrics();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const controller = new Controller({
    store,
    reconciler,
    log,
    metrics,
    translate: { nodeName: o.nodeName },
    resyncIntervalMs: o.resyncIntervalMs ?? 0,
    retryMinMs: 10,
    retryMaxMs: 100,
  });
  controller.start();
  const source = new KubeSource({
    kubeConfig: kc,
    log,
    metrics,
    nodeName: o.nodeName,
    backoffMinMs: 20,
    backoffMaxMs: 200,
    quickCloseMs: 200,
    ...o.source,
  });
  const h: Harness = {
    api,
    maps,
    store,
    controller,
    source,
    metrics,
    log,
    logs,
    async close() {
      await source.stop();
      controller.stop();
      await api.stop();
    },
  };
  try {
    const started = source.start(store);
    if (!o.noWait) await started;
  } catch (err) {
    await h.close();
    throw err;
  }
  return h;
}
