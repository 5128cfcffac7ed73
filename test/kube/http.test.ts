import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { goTime, HttpServer, type HealthState } from '../../src/http/server.js';
import { Metrics } from '../../src/metrics.js';
import { service, slice } from '../helpers/objects.js';
import { harness, metricValue, waitFor } from '../helpers/kubeharness.js';

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
    healthzAddress: '127.0.0.1:0',
    metricsAddress: '',
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
  const h = new HttpServer({ healthzAddress: '127.0.0.1:0', metricsAddress: '', healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
  await h.start();
  const port = Number(h.bound.healthz!.split(':')[1]);
  await h.stop();
  const split = new HttpServer({ healthzAddress: `127.0.0.1:${port}`, metricsAddress: '127.0.0.1:0', healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
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
  const same = new HttpServer({ healthzAddress: '127.0.0.1:0', metricsAddress: '127.0.0.1:0', healthTimeoutMs: 1000, state: fakeState(), metrics: m, log });
  await same.start();
  try {
    assert.equal(same.bound.healthz, same.bound.metrics);
    assert.equal((await get(same.bound.healthz!, '/metrics')).status, 200);
    assert.equal((await get(same.bound.healthz!, '/healthz')).status, 200);
  } finally {
    await same.stop();
  }
});

test('/readyz: not before the sync, not during an API outage; /healthz stays up through the outage', async () => {
  const h = await harness({
    seed: [service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '203.0.113.1', ready: true }])],
    before: (api) => api.failLists.set('EndpointSlice', 2),
    nodeName: 'node-1',
    noWait: true,
  });
  const http = new HttpServer({
    healthzAddress: '127.0.0.1:0',
    metricsAddress: '',
    healthTimeoutMs: 60_000,
    metrics: h.metrics,
    log,
    state: {
      pendingSince: () => h.controller.status().pendingSince,
      lastUpdated: () => h.controller.status().lastSyncAt,
      synced: () => h.controller.status().synced,
      sourcesSynced: () => h.store.isSynced(),
      sourceHealthy: () => h.source.status(),
      nodeEligible: () => h.source.isNodeEligible(),
    },
  });
  await http.start();
  try {
    const addr = http.bound.healthz!;
    const first = await get(addr, '/readyz');
    assert.equal(first.status, 503);
    assert.equal((JSON.parse(first.body) as { firstSyncDone: boolean }).firstSyncDone, false);
    await waitFor('ready', async () => (await get(addr, '/readyz')).status === 200);

    await h.api.stop();
    await waitFor('not ready during the outage', async () => (await get(addr, '/readyz')).status === 503);
    const r = JSON.parse((await get(addr, '/readyz')).body) as { apiServerReachable: boolean; message: string };
    assert.equal(r.apiServerReachable, false);
    assert.ok(r.message.length > 0);
    assert.equal((await get(addr, '/healthz')).status, 200, 'the data path is fine: no restart wanted');

    await h.api.restart();
    await waitFor('ready again', async () => (await get(addr, '/readyz')).status === 200);

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
