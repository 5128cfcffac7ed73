/**
 * The Controller's own logic, with in-memory maps and mocked timers: failed
 * writes are retried with capped exponential backoff (reset after a
 * success), the first sync is a full one that removes adopted entries
 * nobody wants, later syncs touch only what changed, and the periodic full
 * resync repairs entries changed behind kpr's back.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Controller } from '../../src/controller/controller.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import { ObjectStore } from '../../src/controller/store.js';
import { natRows } from '../../src/inspect/nat.js';
import { createLogger } from '../../src/log.js';
import { memoryNatMaps } from '../helpers/memmaps.js';
import { service, slice } from '../../src/lab/objects.js';

function world(t: TestContext, opts: { resyncIntervalMs?: number } = {}) {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const store = new ObjectStore();
  const maps = memoryNatMaps();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  // The Controller's calls into the reconciler (not the reconciler's calls into itself).
  const calls: string[] = [];
  let depth = 0;
  // The Controller plans (then executes) what syncAll and apply do in one call.
  const asked = { planAll: 'syncAll', plan: 'apply', adopt: 'adopt' } as const;
  for (const m of ['planAll', 'plan', 'adopt'] as const) {
    const orig = reconciler[m].bind(reconciler) as (...a: unknown[]) => unknown;
    (reconciler as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      if (depth === 0) calls.push(asked[m]);
      depth++;
      try {
        return orig(...a);
      } finally {
        depth--;
      }
    };
  }
  const controller = new Controller({ store, reconciler, log: createLogger('fatal'), retryMinMs: 100, retryMaxMs: 400, resyncIntervalMs: opts.resyncIntervalMs ?? 0 });
  t.after(() => controller.stop());
  const add = (name: string, vip: string, ips: string[]) => {
    store.upsert('Service', service(name, { clusterIP: vip }));
    store.upsert('EndpointSlice', slice(`${name}-1`, name, ips.map((ip) => ({ ip }))));
  };
  const rows = () => natRows(maps).map((r) => `${r.frontend.addr}:${r.frontend.port} ${r.backends.map((b) => b.addr).join(',')}`);
  return { store, maps, reconciler, controller, calls, add, rows, tick: (ms: number) => t.mock.timers.tick(ms) };
}

const markSynced = (store: ObjectStore) => {
  store.markSynced('Service');
  store.markSynced('EndpointSlice');
};

test('failed writes are retried with capped exponential backoff, and the backoff restarts after a success', (t) => {
  const w = world(t);
  w.add('a', '198.18.0.1', ['192.0.2.1']);
  markSynced(w.store);
  w.maps.fe.failWrites = 'EIO';
  w.controller.start();
  w.tick(0);
  assert.equal(w.calls.length, 1, 'the first sync ran');
  assert.match(w.controller.status().lastError ?? '', /update failed/);
  // Attempts at +100, +200, +400, +400 (capped).
  const gaps: number[] = [];
  let since = 0;
  for (let ms = 0; ms < 1100; ms += 10) {
    const before = w.calls.length;
    w.tick(10);
    since += 10;
    if (w.calls.length > before) (gaps.push(since), (since = 0));
  }
  assert.deepEqual(gaps, [100, 200, 400, 400]);
  // The map works again: the next retry writes it, and then nothing is pending.
  w.maps.fe.failWrites = undefined;
  w.tick(400);
  assert.deepEqual(w.rows(), ['198.18.0.1:80 192.0.2.1']);
  const s = w.controller.status();
  assert.equal(s.lastError, undefined);
  assert.equal(s.pending, 0);
  const settled = w.calls.length;
  w.tick(5000);
  assert.equal(w.calls.length, settled, 'no retries once written');
  // A new failure starts again from the minimum delay.
  w.maps.fe.failWrites = 'EIO';
  w.add('b', '198.18.0.2', ['192.0.2.2']);
  w.tick(0);
  const failedAt = w.calls.length;
  w.tick(99);
  assert.equal(w.calls.length, failedAt);
  w.tick(1);
  assert.equal(w.calls.length, failedAt + 1, 'retried after retryMinMs, not after the last (capped) delay');
});

test('the first sync is full (removes what is pinned but not wanted); later ones apply only the change', (t) => {
  const w = world(t);
  // Entries a previous kpr left for a Service that no longer exists.
  const old = new Reconciler(w.maps);
  old.adopt();
  const stale = new ObjectStore();
  stale.upsert('Service', service('gone', { clusterIP: '198.18.0.9' }));
  stale.upsert('EndpointSlice', slice('gone-1', 'gone', [{ ip: '192.0.2.9' }]));
  markSynced(stale);
  const prev = new Controller({ store: stale, reconciler: old, log: createLogger('fatal') });
  prev.start();
  w.tick(0);
  prev.stop();
  assert.deepEqual(w.rows(), ['198.18.0.9:80 192.0.2.9']);

  w.reconciler.adopt();
  w.calls.length = 0;
  w.add('a', '198.18.0.1', ['192.0.2.1']);
  // Nothing is written before the sources sync.
  w.controller.start();
  w.tick(0);
  assert.deepEqual(w.calls, []);
  markSynced(w.store);
  w.tick(0);
  assert.deepEqual(w.calls, ['syncAll']);
  assert.deepEqual(w.rows(), ['198.18.0.1:80 192.0.2.1']);
  w.add('b', '198.18.0.2', ['192.0.2.2']);
  w.tick(0);
  assert.deepEqual(w.calls, ['syncAll', 'apply']);
  assert.deepEqual(w.rows(), ['198.18.0.1:80 192.0.2.1', '198.18.0.2:80 192.0.2.2']);
});

test('the periodic full resync re-reads the maps and repairs entries changed behind its back', (t) => {
  const w = world(t, { resyncIntervalMs: 1000 });
  w.add('a', '198.18.0.1', ['192.0.2.1', '192.0.2.2']);
  markSynced(w.store);
  w.controller.start();
  w.tick(0);
  const good = w.rows();
  assert.deepEqual(good, ['198.18.0.1:80 192.0.2.1,192.0.2.2']);
  // Someone deletes a frontend and a backend entry (bpftool, a buggy tool, a crash mid-write).
  const [fe] = w.maps.fe.dump()[0] as [Buffer, Buffer];
  w.maps.fe.delete(fe);
  const [be] = w.maps.be.dump()[0] as [Buffer, Buffer];
  w.maps.be.delete(be);
  assert.notDeepEqual(w.rows(), good);
  w.calls.length = 0;
  w.tick(999);
  assert.deepEqual(w.calls, [], 'not before the interval');
  w.tick(1);
  w.tick(0);
  assert.deepEqual(w.calls, ['adopt', 'syncAll'], 're-read, then a full sync');
  assert.deepEqual(w.rows(), good);
  // After the repair, changes are incremental again.
  w.add('b', '198.18.0.2', ['192.0.2.3']);
  w.tick(0);
  assert.deepEqual(w.calls, ['adopt', 'syncAll', 'apply']);
});

test('a full sync where two Services give a port the same name programs it once, from the later Service', async () => {
  // "x/s" port "p:q" and "x/s:p" port "q" are both "x/s:p:q/TCP". The
  // round's ports are a map by name (first place, last value); a full sync
  // that plans ports as it translates must keep that, not write both.
  const store = new ObjectStore();
  const maps = memoryNatMaps();
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const controller = new Controller({ store, reconciler, log: createLogger('fatal'), resyncIntervalMs: 0 });
  const add = (name: string, vip: string, port: string, ip: string) => {
    store.upsert('Service', service(name, { ns: 'x', clusterIP: vip, ports: [{ name: port, port: 80, protocol: 'TCP', targetPort: 8080 }] }));
    store.upsert('EndpointSlice', slice(`${name}-1`, name, [{ ip }], [{ name: port, port: 8080, protocol: 'TCP' }], { ns: 'x' }));
  };
  add('s', '198.18.0.1', 'p:q', '192.0.2.1');
  add('s:p', '198.18.0.2', 'q', '192.0.2.2');
  add('t', '198.18.0.3', 'http', '192.0.2.3');
  controller.start();
  markSynced(store);
  await controller.whenIdle();
  controller.stop();
  assert.deepEqual(
    natRows(maps).map((r) => [r.service, r.frontend.addr, r.backends.map((b) => b.addr)]),
    [
      ['x/s:p:q/TCP', '198.18.0.2', ['192.0.2.2']],
      ['x/t:http/TCP', '198.18.0.3', ['192.0.2.3']],
    ],
  );
});
