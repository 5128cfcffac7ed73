import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { MetricValueWithName } from 'prom-client';
import { service, slice } from '../../src/lab/objects.js';
import { harness, metricValue, natView, totalWrites, waitFor, type Harness } from '../helpers/kubeharness.js';

function svc(name: string, vip: string, extra: Record<string, unknown> = {}) {
  return { ...service(name, { clusterIP: vip }), ...extra };
}

function sl(name: string, svcName: string, ips: string[], annotations?: Record<string, string>) {
  return slice(name, svcName, ips.map((ip) => ({ ip, ready: true })), undefined, annotations ? { annotations } : {});
}

async function withHarness(opts: Parameters<typeof harness>[0], fn: (h: Harness) => Promise<void>): Promise<void> {
  const h = await harness(opts);
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

test('initial sync of 10k Services and their slices programs every frontend', async () => {
  const seed: Array<Record<string, unknown>> = [];
  for (let i = 0; i < 10_000; i++) {
    const vip = `198.18.${i >> 8}.${i & 255}`;
    seed.push(svc(`s${i}`, vip), sl(`s${i}-abc`, `s${i}`, [`203.0.113.${(i % 250) + 1}`]));
  }
  await withHarness({ seed }, async (h) => {
    await waitFor('all frontends', () => h.maps.fe.dump().length === 10_000, 60_000);
    const view = natView(h.maps);
    assert.deepEqual(view['198.18.0.0:80'], ['203.0.113.1:8080']);
    assert.deepEqual(view['198.18.39.15:80'], [`203.0.113.${(9999 % 250) + 1}:8080`]);
    assert.equal(await metricValue(h.metrics, 'kpr_watch_lists_total', { resource: 'services' }), 1);
  });
});

test('adds, changes and deletes through the watch reach the maps', async () => {
  await withHarness({ seed: [svc('web', '198.18.0.10'), sl('web-1', 'web', ['203.0.113.1'])] }, async (h) => {
    await waitFor('web', () => natView(h.maps)['198.18.0.10:80']?.length === 1);

    h.api.apply(svc('api', '198.18.0.11'));
    h.api.apply(sl('api-1', 'api', ['203.0.113.5', '203.0.113.6']));
    await waitFor('api added', () => natView(h.maps)['198.18.0.11:80']?.length === 2);

    h.api.apply(sl('web-1', 'web', ['203.0.113.2', '203.0.113.3']));
    await waitFor('web changed', () => natView(h.maps)['198.18.0.10:80']?.join() === '203.0.113.2:8080,203.0.113.3:8080');

    h.api.delete('EndpointSlice', 'default', 'api-1');
    await waitFor('api slice gone', () => natView(h.maps)['198.18.0.11:80']?.length === 0);
    h.api.delete('Service', 'default', 'web');
    await waitFor('web gone', () => natView(h.maps)['198.18.0.10:80'] === undefined);
    assert.deepEqual(Object.keys(natView(h.maps)), ['198.18.0.11:80']);

    // Every watch asked for a server-side timeout and kube-proxy's selector.
    const watches = h.api.requests.filter((r) => r.watch && r.path !== '/api/v1/nodes');
    assert.ok(watches.length >= 2);
    for (const w of watches) {
      assert.ok(Number(w.query.get('timeoutSeconds')) > 0, 'timeoutSeconds on every watch');
      assert.equal(w.query.get('labelSelector'), '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless');
    }
  });
});

test('a Service that gains the service-proxy-name label is removed', async () => {
  await withHarness({ seed: [svc('web', '198.18.0.10'), sl('web-1', 'web', ['203.0.113.1'])] }, async (h) => {
    await waitFor('web', () => natView(h.maps)['198.18.0.10:80']?.length === 1);
    const labelled = service('web', { clusterIP: '198.18.0.10', labels: { 'service.kubernetes.io/service-proxy-name': 'other' } });
    h.api.apply(labelled);
    await waitFor('web gone', () => natView(h.maps)['198.18.0.10:80'] === undefined);
  });
});

test('after a 410 Gone the source re-lists and applies deletions it never saw', async () => {
  const seed = [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1']), svc('b', '198.18.0.2'), sl('b-1', 'b', ['203.0.113.2'])];
  await withHarness({ seed }, async (h) => {
    await waitFor('a and b', () => Object.keys(natView(h.maps)).length === 2);
    h.api.applySilently(() => {
      h.api.delete('Service', 'default', 'a');
      h.api.delete('EndpointSlice', 'default', 'a-1');
      h.api.apply(svc('c', '198.18.0.3'));
      h.api.apply(sl('c-1', 'c', ['203.0.113.3']));
    });
    // Nothing told us yet: the maps still show a.
    assert.ok(natView(h.maps)['198.18.0.1:80']);
    h.api.closeWatches(); // the re-watch from the old resourceVersion gets ERROR 410
    await waitFor('re-list applied', () => {
      const v = natView(h.maps);
      return v['198.18.0.1:80'] === undefined && v['198.18.0.3:80']?.length === 1 && v['198.18.0.2:80']?.length === 1;
    });
    assert.ok((await metricValue(h.metrics, 'kpr_watch_lists_total', { resource: 'services' })) >= 2);
    assert.ok((await metricValue(h.metrics, 'kpr_watch_lists_total', { resource: 'endpointslices' })) >= 2);
  });
});

test('a BOOKMARK moves the resourceVersion on, so compaction does not force a re-list', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])] }, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    // Unrelated churn moves the server's resourceVersion past what we saw.
    h.api.apply({ kind: 'Node', apiVersion: 'v1', metadata: { name: 'other-node' } });
    h.api.bookmark();
    await new Promise((r) => setTimeout(r, 100));
    h.api.compact();
    h.api.closeWatches();
    h.api.apply(sl('a-1', 'a', ['203.0.113.9']));
    await waitFor('change after re-watch', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.9:8080');
    assert.equal(await metricValue(h.metrics, 'kpr_watch_lists_total', { resource: 'services' }), 1);
    assert.equal(await metricValue(h.metrics, 'kpr_watch_lists_total', { resource: 'endpointslices' }), 1);
  });
});

test('streams the server closes are re-opened, but not in a tight loop', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])] }, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    h.api.closeWatches();
    h.api.apply(sl('a-1', 'a', ['203.0.113.2']));
    await waitFor('change after re-watch', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.2:8080');

    h.api.closeWatchesAtOnce = true;
    const before = h.api.requests.filter((r) => r.watch).length;
    h.api.closeWatches();
    await new Promise((r) => setTimeout(r, 1000));
    const during = h.api.requests.filter((r) => r.watch).length - before;
    // Unguarded, the informer re-watches thousands of times a second.
    assert.ok(during < 40, `${during} watches in 1 s against a server that closes them at once`);
    assert.ok(during >= 2, 'it keeps trying');

    h.api.closeWatchesAtOnce = false;
    h.api.apply(sl('a-1', 'a', ['203.0.113.3']));
    await waitFor('change after recovery', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.3:8080');
  });
});

test('a reset connection restarts the informer, which catches up', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])] }, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    await waitFor('watches open', () => h.api.watchCount() === 2);
    h.api.resetConnections();
    h.api.apply(sl('a-1', 'a', ['203.0.113.2']));
    await waitFor('change after restart', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.2:8080');
    assert.ok((await metricValue(h.metrics, 'kpr_watch_errors_total')) >= 1);
    assert.ok((await metricValue(h.metrics, 'kpr_watch_restarts_total')) >= 1);
  });
});

test('a stalled watch is noticed by the watchdog and replaced', async () => {
  const opts = { seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])], source: { watchTimeoutSeconds: 1, watchdogGraceMs: 300 } };
  await withHarness(opts, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    await waitFor('watches open', () => h.api.watchCount() === 2);
    h.api.stallWatches();
    h.api.apply(sl('a-1', 'a', ['203.0.113.2']));
    await waitFor('change after the watchdog', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.2:8080');
    assert.ok(h.logs.some((l) => String(l.msg).includes('outlived its server-side timeout')));
    assert.ok((await metricValue(h.metrics, 'kpr_watch_errors_total', { resource: 'endpointslices' })) >= 1);
  });
});

test('API server down: the maps keep their state, readiness reports it, and the source catches up', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])] }, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    assert.equal(h.source.status().healthy, true);
    const snapshot = JSON.stringify(natView(h.maps));
    await h.api.stop();
    await waitFor('outage noticed', () => !h.source.status().healthy);
    assert.match(h.source.status().message ?? '', /EndpointSlice|Service/);
    assert.equal(await metricValue(h.metrics, 'kpr_api_server_reachable'), 0);
    // Changes pile up on the server while nobody can reach it.
    h.api.apply(sl('a-1', 'a', ['203.0.113.7']));
    h.api.apply(svc('b', '198.18.0.2'));
    h.api.apply(sl('b-1', 'b', ['203.0.113.8']));
    await waitFor('a few failed retries', async () => (await metricValue(h.metrics, 'kpr_watch_restarts_total')) >= 4);
    assert.equal(JSON.stringify(natView(h.maps)), snapshot, 'maps unchanged during the outage');

    await h.api.restart();
    await waitFor('caught up', () => {
      const v = natView(h.maps);
      return v['198.18.0.1:80']?.join() === '203.0.113.7:8080' && v['198.18.0.2:80']?.join() === '203.0.113.8:8080';
    });
    await waitFor('healthy again', () => h.source.status().healthy);
    assert.equal(await metricValue(h.metrics, 'kpr_api_server_reachable'), 1);
  });
});

test('nothing is written until both Services and EndpointSlices have listed', async () => {
  const opts = {
    seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])],
    before: (api: Harness['api']) => api.failLists.set('EndpointSlice', 3),
  };
  await withHarness(opts, async (h) => {
    await waitFor('services listed', () => h.store.counts().services === 1);
    await waitFor('slice list failures', async () => (await metricValue(h.metrics, 'kpr_watch_errors_total', { resource: 'endpointslices' })) >= 2);
    assert.equal(totalWrites(h.maps), 0, 'no write before both kinds synced');
    assert.equal(h.controller.status().synced, false);
    await waitFor('synced', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
  });
});

test('a restart while the API server is down writes nothing; once it is back only changes are written', async () => {
  const seed = [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1']), svc('b', '198.18.0.2'), sl('b-1', 'b', ['203.0.113.2'])];
  const first = await harness({ seed });
  let maps;
  try {
    await waitFor('first run synced', () => Object.keys(natView(first.maps)).length === 2);
    maps = first.maps;
  } finally {
    await first.close();
  }
  const snapshot = JSON.stringify(natView(maps));
  const writesBefore = totalWrites(maps);

  // Second run on the same (pinned) maps, against an API server that refuses connections.
  const h = await harness({ maps, seed, before: (api) => void api.stop() });
  try {
    await waitFor('failed attempts', async () => (await metricValue(h.metrics, 'kpr_watch_errors_total')) >= 4);
    assert.equal(totalWrites(maps), writesBefore);
    assert.equal(JSON.stringify(natView(maps)), snapshot);
    assert.equal(h.source.status().healthy, false);

    await h.api.restart();
    await h.controller.whenIdle();
    await waitFor('synced', () => h.controller.status().synced);
    assert.equal(JSON.stringify(natView(maps)), snapshot);
    assert.equal(totalWrites(maps), writesBefore, 'an unchanged cluster costs no writes');
  } finally {
    await h.close();
  }
});

test('a malformed object is skipped, named in the log and counted; the rest is programmed', async () => {
  const bad = svc('broken', '198.18.0.9');
  (bad.spec as { ports: unknown[] }).ports = [{ name: 'http', port: 'eighty', protocol: 'TCP' }];
  await withHarness({ seed: [bad, svc('ok', '198.18.0.1'), sl('ok-1', 'ok', ['203.0.113.1'])] }, async (h) => {
    await waitFor('ok', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    assert.equal(natView(h.maps)['198.18.0.9:80'], undefined);
    assert.ok((await metricValue(h.metrics, 'kpr_skipped_objects_total', { kind: 'Service', reason: 'invalid' })) >= 1);
    assert.ok(h.logs.some((l) => l.object === 'Service default/broken' && l.level === 40));

    const badSlice = sl('ok-2', 'ok', ['203.0.113.2']);
    (badSlice.endpoints as Array<{ addresses: unknown[] }>)[0]!.addresses = ['not-an-ip'];
    h.api.apply(badSlice);
    await waitFor('bad slice counted', async () => (await metricValue(h.metrics, 'kpr_skipped_objects_total', { kind: 'EndpointSlice' })) >= 1);
    assert.deepEqual(natView(h.maps)['198.18.0.1:80'], ['203.0.113.1:8080']);
  });
});

test('network programming latency is measured from the last-change-trigger-time annotation', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1')] }, async (h) => {
    await waitFor('synced', () => h.controller.status().synced);
    const trigger = new Date(Date.now() - 5000).toISOString().replace(/\.\d+Z$/, 'Z');
    h.api.apply(sl('a-1', 'a', ['203.0.113.1'], { 'endpoints.kubernetes.io/last-change-trigger-time': trigger }));
    await waitFor('programmed', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    // a histogram's values carry the series name (prom-client's type leaves it out)
    const hist = (await h.metrics.registry.getSingleMetric('kpr_network_programming_duration_seconds')!.get()).values as MetricValueWithName<string>[];
    const count = hist.find((v) => v.metricName === 'kpr_network_programming_duration_seconds_count')?.value;
    const sum = hist.find((v) => v.metricName === 'kpr_network_programming_duration_seconds_sum')?.value ?? 0;
    assert.equal(count, 1);
    assert.ok(sum >= 4 && sum < 120, `latency ${sum} s`);
    const le5 = hist.find((v) => v.metricName?.endsWith('_bucket') && v.labels.le === 2.5)?.value;
    assert.equal(le5, 0, 'a 5 s old trigger is not in the 2.5 s bucket');
  });
});

test('the periodic resync repairs an entry deleted behind our back', async () => {
  await withHarness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])], resyncIntervalMs: 100 }, async (h) => {
    await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
    const [k] = h.maps.fe.dump()[0]!;
    assert.ok(h.maps.fe.delete(k));
    assert.equal(natView(h.maps)['198.18.0.1:80'], undefined);
    await waitFor('repaired', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
  });
});

test('stop() is quiet: no spurious AbortError is reported', async () => {
  const h = await harness({ seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])] });
  await waitFor('watches open', () => h.api.watchCount() === 2);
  await h.close();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await metricValue(h.metrics, 'kpr_watch_errors_total'), 0);
  assert.ok(!h.logs.some((l) => String(l.msg).includes('failed')), JSON.stringify(h.logs.filter((l) => (l.level as number) >= 40)));
});

test('a wrong token is an outage, not a crash', async () => {
  const h = await harness({ seed: [svc('a', '198.18.0.1')], before: (api) => void (api.expectedToken = 'other') });
  try {
    await waitFor('unhealthy', () => !h.source.status().healthy);
    assert.match(h.source.status().message ?? '', /401|Unauthorized/);
    assert.equal(totalWrites(h.maps), 0);
  } finally {
    await h.close();
  }
});

test('after an outage long enough for the backoff to grow, a change made as the server returns is applied within 5 s', { timeout: 60_000 }, async () => {
  // Production backoff (500 ms doubling to 30 s); only the refused-connection cap bounds the wait.
  await withHarness(
    { seed: [svc('a', '198.18.0.1'), sl('a-1', 'a', ['203.0.113.1'])], source: { backoffMinMs: 500, backoffMaxMs: 30_000, unreachableBackoffMaxMs: 2000 } },
    async (h) => {
      await waitFor('a', () => natView(h.maps)['198.18.0.1:80']?.length === 1);
      await h.api.stop();
      // 16 s: uncapped, the waits would be 0.5, 1, 2, 4, 8, 16 s: the next try lands ~15 s after the server returns
      await new Promise((r) => setTimeout(r, 16_000));
      await h.api.restart();
      const back = Date.now();
      h.api.apply(sl('a-1', 'a', ['203.0.113.9']));
      await waitFor('change applied', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.9:8080', 15_000);
      const ms = Date.now() - back;
      h.log.info({ catchUpMs: ms }, 'catch-up after the outage');
      process.stdout.write(`# catch-up after a 16 s outage: ${ms} ms\n`);
      assert.ok(ms <= 5000, `applied ${ms} ms after the API server came back`);
      const waits = h.logs.filter((l) => typeof l.delayMs === 'number' && l.failures !== undefined).map((l) => l.delayMs as number);
      assert.ok(waits.length > 0 && Math.max(...waits) <= 2000, `retry waits capped: ${waits.join(', ')}`);
    },
  );
});
