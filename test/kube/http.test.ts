import assert from 'node:assert/strict';
import { createServer as createNetServer } from 'node:net';
import { test } from 'node:test';
import { pino } from 'pino';
import { goTime, HttpServer, parseAddress, type HealthState } from '../../src/http/server.js';
import { Metrics } from '../../src/metrics.js';
import { service, slice } from '../../src/lab/objects.js';
import { harness, metricValue, waitFor, type Harness } from '../helpers/kubeharness.js';
import { TcAttacher } from '../../src/datapath/tc-attach.js';
import { ServiceHealthServers } from '../../src/health/service-health.js';
import type { Datapath } from '../../src/datapath/datapath.js';
import { memoryNatMaps } from '../helpers/memmaps.js';

const listen = (addr: string) => parseAddress(addr, 'healthz-bind-address');

const log = pino({ level: 'silent' });

async function get(addr: string, path: string): Promise<{ status: number; body: string; type: string | null }> {
  const r = await fetch(`http://${addr}${path}`);
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
}

function fakeState(over: Partial<HealthState> = {}): HealthState {
  return {
    pendingSince: () => undefined,
    lastUpdated: () => undefined,
    synced: () => true,
    sourcesSynced: () => true,
    sourceHealthy: () => ({ healthy: true }),
    nodeEligible: () => true,
    ...over,
  };
}

async function serve(state: HealthState, opts: { now?: () => number } = {}) {
  const metrics = new Metrics();
  const http = new HttpServer({
    healthzAddress: listen('127.0.0.1:0'),
    metricsAddress: undefined,
    healthTimeoutMs: 60_000,
    state,
    metrics,
    log,
    ...(opts.now ? { now: opts.now } : {}),
  });
  await http.start();
  return { http, metrics };
}

test('goTime prints what Go prints for a UTC time.Time', () => {
  assert.equal(goTime(Date.UTC(2025, 0, 2, 3, 4, 5, 670)), '2025-01-02 03:04:05.67 +0000 UTC');
  assert.equal(goTime(Date.UTC(2025, 0, 2, 3, 4, 5)), '2025-01-02 03:04:05 +0000 UTC');
  assert.equal(goTime(undefined), '0001-01-01 00:00:00 +0000 UTC');
});

test('/healthz follows kube-proxy: 200 until a queued change is older than healthTimeout, then 503', async () => {
  let now = Date.UTC(2025, 5, 1, 12, 0, 0);
  let pending: number | undefined;
  const last = now - 1000;
  const { http, metrics } = await serve(fakeState({ pendingSince: () => pending, lastUpdated: () => last }), { now: () => now });
  try {
    const addr = http.bound.healthz!;
    let r = await get(addr, '/healthz');
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/json');
    const body = JSON.parse(r.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ['lastUpdated', 'currentTime', 'nodeEligible']);
    assert.equal(body.lastUpdated, body.currentTime, 'healthy: lastUpdated reads as now');
    assert.equal(body.currentTime, '2025-06-01 12:00:00 +0000 UTC');
    assert.equal(body.nodeEligible, true);

    pending = now;
    now += 59_000;
    assert.equal((await get(addr, '/healthz')).status, 200, 'queued, not late yet');
    now += 1_000;
    r = await get(addr, '/healthz');
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { lastUpdated: string }).lastUpdated, goTime(last));
    assert.equal((await get(addr, '/livez')).status, 503);
    assert.equal(await metricValue(metrics, 'kpr_proxy_healthz_total', { code: '503' }), 1);
    assert.equal(await metricValue(metrics, 'kpr_proxy_healthz_total', { code: '200' }), 2);
  } finally {
    await http.stop();
  }
});

test('a node being deleted makes /healthz 503 but not /livez', async () => {
  const { http } = await serve(fakeState({ nodeEligible: () => false }));
  try {
    const r = await get(http.bound.healthz!, '/healthz');
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { nodeEligible: boolean }).nodeEligible, false);
    assert.equal((await get(http.bound.healthz!, '/livez')).status, 200);
  } finally {
    await http.stop();
  }
});

test('/metrics is on the metrics address only, unless both addresses are the same', async () => {
  const m = new Metrics();
  // Find a free port for healthz, so the two addresses differ as strings.
  const h = new HttpServer({ healthzAddress: listen('127.0.0.1:0'), metricsAddress: undefined, healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
  await h.start();
  const port = Number(h.bound.healthz!.split(':')[1]);
  await h.stop();
  const split = new HttpServer({ healthzAddress: listen(`127.0.0.1:${port}`), metricsAddress: listen('127.0.0.1:0'), healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
  await split.start();
  try {
    assert.equal((await get(split.bound.healthz!, '/metrics')).status, 404);
    const r = await get(split.bound.metrics!, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.body, /kpr_watch_restarts_total/);
    assert.match(r.body, /kpr_sync_proxy_rules_duration_seconds/);
  } finally {
    await split.stop();
  }
  const same = new HttpServer({ healthzAddress: listen('127.0.0.1:0'), metricsAddress: listen('127.0.0.1:0'), healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
  await same.start();
  try {
    assert.equal(same.bound.healthz, same.bound.metrics);
    assert.equal((await get(same.bound.healthz!, '/metrics')).status, 200);
    assert.equal((await get(same.bound.healthz!, '/healthz')).status, 200);
  } finally {
    await same.stop();
  }
});

test('/readyz: not before the sync; through an API outage it stays 200 (as kube-proxy) and says degraded', async () => {
  const h = await harness({
    seed: [service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '203.0.113.1', ready: true }])],
    before: (api) => api.failLists.set('EndpointSlice', 2),
    nodeName: 'node-1',
    noWait: true,
  });
  const http = new HttpServer({
    healthzAddress: listen('127.0.0.1:0'),
    metricsAddress: undefined,
    healthTimeoutMs: 60_000,
    metrics: h.metrics,
    log,
    state: harnessState(h),
  });
  await http.start();
  try {
    const addr = http.bound.healthz!;
    const first = await get(addr, '/readyz');
    assert.equal(first.status, 503);
    assert.equal((JSON.parse(first.body) as { firstSyncDone: boolean }).firstSyncDone, false);
    await waitFor('ready', async () => (await get(addr, '/readyz')).status === 200);

    await h.api.stop();
    await waitFor('outage noticed', () => !h.source.status().healthy);
    const during = await get(addr, '/readyz');
    assert.equal(during.status, 200, 'every node NotReady at once helps nobody: the maps keep serving');
    const r = JSON.parse(during.body) as { apiServerReachable: boolean; message: string; degraded: { sourceUnhealthy: boolean } };
    assert.equal(r.apiServerReachable, false);
    assert.equal(r.degraded.sourceUnhealthy, true);
    assert.ok(r.message.length > 0);
    assert.equal((await get(addr, '/healthz')).status, 200, 'the data path is fine: no restart wanted');
    assert.equal((await get(addr, '/livez')).status, 200);

    await h.api.restart();
    await waitFor('healthy again', async () => (JSON.parse((await get(addr, '/readyz')).body) as { degraded?: unknown }).degraded === undefined);

    // kube-proxy's nodeEligible: a Node with a deletionTimestamp.
    h.api.apply({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'node-1', deletionTimestamp: '2025-01-01T00:00:00Z' } });
    await waitFor('node not eligible', async () => (await get(addr, '/healthz')).status === 503);
    h.api.apply({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'node-1' }, spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await get(addr, '/healthz')).status, 503);
    h.api.apply({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'node-1' }, spec: {} });
    await waitFor('node eligible', async () => (await get(addr, '/healthz')).status === 200);
  } finally {
    await http.stop();
    await h.close();
  }
});

function harnessState(h: Harness, over: Partial<HealthState> = {}): HealthState {
  return {
    pendingSince: () => h.controller.status().pendingSince,
    lastUpdated: () => h.controller.status().lastSyncAt,
    synced: () => h.controller.status().synced,
    sourcesSynced: () => h.store.isSynced(),
    sourceHealthy: () => h.source.status(),
    nodeEligible: () => h.source.isNodeEligible(),
    mapFull: () => h.controller.status().mapFull,
    ...over,
  };
}

test('a full map is degraded, not dead: gauge and /readyz detail, one log line, /livez 200, retries are not full re-reads', { timeout: 30_000 }, async () => {
  const eps = (n: number) => [{ ip: `203.0.113.${n}`, ready: true }, { ip: `203.0.113.${n + 100}`, ready: true }];
  const h = await harness({
    seed: [
      service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', eps(1)),
      service('b', { clusterIP: '198.18.0.2' }), slice('b-1', 'b', eps(2)),
      service('c', { clusterIP: '198.18.0.3' }), slice('c-1', 'c', eps(3)),
    ],
    maps: memoryNatMaps({ be: 5 }), // room for two Services' backends, not three
    resyncIntervalMs: 300,
  });
  const http = new HttpServer({ healthzAddress: listen('127.0.0.1:0'), metricsAddress: undefined, healthTimeoutMs: 300, metrics: h.metrics, log, state: harnessState(h) });
  await http.start();
  try {
    const addr = http.bound.healthz!;
    await waitFor('first sync', () => h.controller.status().synced);
    await new Promise((r) => setTimeout(r, 1500)); // several resyncs and many retries
    assert.equal(await metricValue(h.metrics, 'kpr_bpf_map_full_service_ports', { map: 'kpr_v4_nat_be' }), 1);
    const ready = await get(addr, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual((JSON.parse(ready.body) as { degraded: unknown }).degraded, { mapFull: { kpr_v4_nat_be: 1 } });
    assert.equal((await get(addr, '/livez')).status, 200, 'a full map is not a reason to restart kpr');
    assert.equal((await get(addr, '/healthz')).status, 200);
    const fullLines = h.logs.filter((l) => /is full/.test(String(l.msg)));
    assert.equal(fullLines.length, 1, 'logged once per period, not on every retry');
    const syncs = h.logs.filter((l) => l.msg === 'synced');
    const fullSyncs = syncs.filter((l) => l.full === true).length;
    assert.ok(syncs.length - fullSyncs >= 5, `retries are incremental (${fullSyncs} full of ${syncs.length})`);
    assert.ok(fullSyncs <= 8, `only the resync timer asks for full syncs (${fullSyncs} full of ${syncs.length})`);

    // room again: b goes away, the waiting Service fits, degraded clears
    h.api.delete('Service', 'default', 'b');
    await waitFor('gauge back to 0', async () => (await metricValue(h.metrics, 'kpr_bpf_map_full_service_ports', { map: 'kpr_v4_nat_be' })) === 0);
    assert.equal((JSON.parse((await get(addr, '/readyz')).body) as { degraded?: unknown }).degraded, undefined);
  } finally {
    await http.stop();
    await h.close();
  }
});

test('/readyz waits for the tc programs: an attach that keeps failing is not ready, and is retried', { timeout: 30_000 }, async () => {
  let fail = true;
  const attachedTo: string[] = [];
  const dp = {
    attachTc(ifname: string) {
      if (fail) throw new Error('EPERM: operation not permitted (no CAP_NET_ADMIN)');
      attachedTo.push(ifname);
    },
  } as unknown as Datapath;
  const tc = new TcAttacher(dp, { devices: ['lo'], workloadIfaces: undefined, log, pollMs: 50 });
  await tc.start();
  const { http } = await serve(
    fakeState({
      dataPathAttached: () => {
        const missing = tc.missingDevices();
        return missing.length ? { attached: false, message: `not attached to ${missing.join(', ')}` } : { attached: true };
      },
    }),
  );
  try {
    const addr = http.bound.healthz!;
    const r = await get(addr, '/readyz');
    assert.equal(r.status, 503);
    assert.equal((JSON.parse(r.body) as { dataPathAttached: boolean }).dataPathAttached, false);
    fail = false;
    await waitFor('ready once attached', async () => (await get(addr, '/readyz')).status === 200);
    assert.deepEqual(attachedTo, ['lo']);
  } finally {
    await tc.stop();
    await http.stop();
  }
});

test('a healthCheckNodePort listener that cannot bind is retried on a timer, not re-created on every sync', { timeout: 20_000 }, async () => {
  const taken = createNetServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const port = (taken.address() as { port: number }).port;
  const lines: Array<Record<string, unknown>> = [];
  const capture = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const servers = new ServiceHealthServers({ host: '127.0.0.1', log: capture, proxyHealthy: () => true, retryMs: 300 });
  const targets = new Map([[port, { namespace: 'default', name: 'a', localEndpoints: 1 }]]);
  const failures = () => lines.filter((l) => /listener failed/.test(String(l.msg))).length;
  try {
    servers.update(targets);
    await waitFor('bind failure', () => failures() === 1);
    for (let i = 0; i < 20; i++) {
      servers.update(targets); // syncs in quick succession
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(failures(), 1, 'not re-created by each sync');
    assert.deepEqual(servers.ports(), []);
    await new Promise<void>((r) => taken.close(() => r()));
    await new Promise((r) => setTimeout(r, 350));
    servers.update(targets); // the retry period is over: try again, now it binds
    await waitFor('listening', async () => (await fetch(`http://127.0.0.1:${port}/`).then((r) => r.status, () => 0)) === 200);
    assert.equal(failures(), 1);
    assert.deepEqual(servers.ports(), [port]);
  } finally {
    servers.close();
    taken.close();
  }
});
