/**
 * The conntrack expiry scan: what it removes, and that it leaves the event
 * loop free while it walks a full-size (500k entries) map: the daemon runs
 * it on a thread of its own (ConntrackScanThread).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startDaemon } from '../../src/daemon.js';
import { ConntrackScanner } from '../../src/datapath/conntrack.js';
import { ConntrackExpiry, ConntrackScanThread, type ThreadScanResult } from '../../src/datapath/conntrack-thread.js';
import { CT6_KEY_SIZE, CT6_VAL_SIZE, CT_F_SNAT, CT_FWD, CT_REV, CT_KEY_SIZE, CT_TCP_ACK, CT_TCP_FIN, CT_TCP_SYN, CT_VAL_SIZE, ctKeyFor, encodeCtKey, encodeCtVal, type CtVal } from '../../src/datapath/codec.js';
import type { KVMap } from '../../src/datapath/kvmap.js';
import { MemoryMap } from '../helpers/memmaps.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { cleanup } from '../../src/datapath/pinned.js';
import { DEFAULT_MAP_SIZES } from '../../src/datapath/names.js';
import { requireRoot } from '../helpers/privileged.js';

const S = 1_000_000_000n;
const NOW = 10_000n * S;
const VIP = '198.18.0.1';

function val(type: number, lastSeen: bigint, o: Partial<CtVal> = {}): Buffer {
  return encodeCtVal({
    type, flags: 0, tcpClient: 0, tcpServer: 0, svcId: 1, created: 0n, lastSeen,
    natAddr: '0.0.0.0', natSaddr: '0.0.0.0', natPort: 0, natSport: 0, beOrdinal: 0, ...o,
  });
}

/** A UDP flow i: its FWD (client -> VIP) and REV (client <-> backend) entries; idle 1 s or, if stale, since boot. */
function flow(i: number, stale: boolean, now = NOW): Array<[Buffer, Buffer]> {
  const client = `192.0.2.${i % 250}`;
  const cport = 10_000 + Math.floor(i / 250);
  const backend = `203.0.113.${(i % 200) + 1}`;
  const seen = stale ? 0n : now - S;
  return [
    [encodeCtKey(ctKeyFor(17, client, cport, VIP, 80)), val(CT_FWD, seen, { natAddr: backend, natPort: 8080 })],
    [encodeCtKey(ctKeyFor(17, client, cport, backend, 8080)), val(CT_REV, seen, { natAddr: VIP, natPort: 80, natSaddr: client, natSport: cport })],
  ];
}

function fill(map: KVMap, flows: number, stale: (i: number) => boolean, now = NOW): void {
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  for (let i = 0; i < flows; i++) for (const [k, v] of flow(i, stale(i), now)) (keys.push(k), values.push(v));
  map.updateBatch(keys, values);
}

test('conntrack scan: a stale flow goes as a pair, a live one stays, an orphan FWD lives by its own clock', async () => {
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 1024);
  fill(ct, 4, (i) => i % 2 === 0);
  // orphans: a FWD whose REV was evicted; one stale, one fresh
  ct.update(encodeCtKey(ctKeyFor(17, '198.51.100.1', 1000, VIP, 80)), val(CT_FWD, 0n));
  ct.update(encodeCtKey(ctKeyFor(17, '198.51.100.2', 1000, VIP, 80)), val(CT_FWD, NOW - S));
  const r = await new ConntrackScanner(ct, undefined, () => NOW).scan(3);
  assert.deepEqual(r, { scanned: 10, expired: 5, fwd: 3, rev: 2 });
  assert.equal(ct.dump().length, 5);
});

test('conntrack scan of kpr_v6_ct: the same rules over IPv6 entries, a stale flow goes as a pair', async () => {
  const ct = new MemoryMap('kpr_v6_ct', CT6_KEY_SIZE, CT6_VAL_SIZE, 1024);
  const VIP6 = '2001:db8:f::1';
  const v6 = (type: number, lastSeen: bigint, o: Partial<CtVal>) => val(type, lastSeen, { natAddr: '::', natSaddr: '::', ...o });
  for (const [i, stale] of [[1, true], [2, false]] as const) {
    const client = `2001:db8::${i}`;
    // The client sorts after the backend for one flow and before it for the
    // other: the FWD key the scan derives must order both ends as ctKeyFor.
    const backend = i === 1 ? '2001:db8::ff' : '2001:db8::';
    const seen = stale ? 0n : NOW - S;
    // A FWD entry idle past its own timeout stays while its REV is alive
    // (only the backend talks): found through the key the scan derives.
    ct.update(encodeCtKey(ctKeyFor(17, client, 5000, VIP6, 53)), v6(CT_FWD, 0n, { natAddr: backend, natPort: 5353 }));
    ct.update(encodeCtKey(ctKeyFor(17, client, 5000, backend, 5353)), v6(CT_REV, seen, { natAddr: VIP6, natPort: 53, natSaddr: client, natSport: 5000 }));
  }
  const r = await new ConntrackScanner(ct, undefined, () => NOW).scan();
  assert.deepEqual(r, { scanned: 4, expired: 2, fwd: 1, rev: 1 });
  assert.ok(ct.dump().every(([k]) => k.length === CT6_KEY_SIZE));
  assert.equal(ct.dump().length, 2);
});

test('conntrack scan: a masqueraded TCP flow closed by FINs keeps its SNAT port through TIME_WAIT; an unmasqueraded one goes after the FIN timeout', async () => {
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 1024);
  const closed = CT_TCP_SYN | CT_TCP_ACK | CT_TCP_FIN;
  const client = '198.51.100.7';
  const backend = '203.0.113.9';
  const add = (cport: number, idleS: bigint, snat: boolean) => {
    const flags = snat ? CT_F_SNAT : 0;
    const node = snat ? '198.51.100.11' : client;
    const sport = snat ? cport + 20_000 : cport;
    ct.update(encodeCtKey(ctKeyFor(6, client, cport, VIP, 80)), val(CT_FWD, NOW - idleS * S, { flags, natAddr: backend, natPort: 8080, natSaddr: snat ? node : '0.0.0.0', natSport: snat ? sport : 0 }));
    ct.update(
      encodeCtKey(ctKeyFor(6, node, sport, backend, 8080)),
      val(CT_REV, NOW - idleS * S, { flags, tcpClient: closed, tcpServer: closed, natAddr: VIP, natPort: 80, natSaddr: client, natSport: cport }),
    );
  };
  add(40001, 60n, true); // the backend may still be in TIME_WAIT: stays
  add(40002, 66n, true); // past TIME_WAIT: goes
  add(40003, 60n, false); // no SNAT port to protect: goes after tcpFinWait
  const r = await new ConntrackScanner(ct, undefined, () => NOW).scan();
  assert.equal(r.expired, 4);
  // nat_sport: the REV entry's is the client's port, the FWD entry's the SNAT port
  const left = ct.dump().map(([, v]) => v.readUInt16LE(34));
  assert.deepEqual(left.sort(), [40001, 60001], 'only the flow within TIME_WAIT is left, both entries');
});

/*
 * The event-loop lag is printed, not asserted (no timed performance
 * assertions; on this shared machine wall-clock lag is dominated by being
 * descheduled). `kpr bench-ct` measures it; what is asserted here is the
 * structure that keeps it low: the scan runs on another thread, through its
 * own descriptor of the pinned map, while the main loop keeps turning.
 */
test('conntrack scan of 500k entries runs on its own thread and expires exactly the stale half', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const pinPath = `/sys/fs/bpf/kpr-test-ctscan-12ops-${process.pid}`;
  t.after(() => cleanup(pinPath));
  const dp = await Datapath.open(pinPath, DEFAULT_MAP_SIZES);
  let thread: ConntrackScanThread | undefined;
  try {
    const flows = 250_000;
    // The thread reads the kernel's monotonic clock (process.hrtime is the same clock).
    fill(dp.maps.ct, flows, (i) => i % 2 === 0, process.hrtime.bigint());
    thread = await ConntrackScanThread.start(join(pinPath, dp.maps.ct.name));
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const started = process.hrtime.bigint();
    const r = await thread.scan();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    clearInterval(ticker);
    h.disable();
    process.stdout.write(
      `# ct scan of ${r.scanned} entries on thread ${r.threadId}: ${ms.toFixed(0)} ms, main loop lag p99 ${(h.percentile(99) / 1e6).toFixed(1)} ms, max ${(h.max / 1e6).toFixed(1)} ms\n`,
    );
    const { threadId } = await import('node:worker_threads');
    assert.notEqual(r.threadId, threadId, 'the scan ran on another thread');
    assert.deepEqual({ scanned: r.scanned, expired: r.expired, fwd: r.fwd, rev: r.rev }, { scanned: 2 * flows, expired: flows, fwd: flows / 2, rev: flows / 2 });
    assert.equal([...dp.maps.ct.chunks(4096)].reduce((n, c) => n + c.length, 0), flows);
    assert.ok(ticks > 10, `the main loop kept turning during the scan (${ticks} timer ticks ran)`);
  } finally {
    await thread?.close();
    dp.close();
  }
});

test('conntrack scan thread: a map that is not there is an error at start, not a dead thread later', async (t) => {
  if (!requireRoot(t)) return;
  await assert.rejects(ConntrackScanThread.start(`/sys/fs/bpf/kpr-test-ctscan-12ops-${process.pid}-missing`), /ENOENT|No such file/);
});

test('a killed conntrack scan thread is replaced, and expiry goes on', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const pinPath = `/sys/fs/bpf/kpr-test-ctscan-12ops-kill-${process.pid}`;
  t.after(() => cleanup(pinPath));
  const dp = await Datapath.open(pinPath, DEFAULT_MAP_SIZES);
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(String((JSON.parse(l) as { msg: string }).msg)) });
  const scans: ThreadScanResult[] = [];
  let expiry: ConntrackExpiry | undefined;
  const count = () => [...dp.maps.ct.chunks(64)].reduce((n, c) => n + c.length, 0);
  const until = async (cond: () => boolean, what: string) => {
    const end = Date.now() + 20_000;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    expiry = await ConntrackExpiry.start({ path: join(pinPath, dp.maps.ct.name), everyMs: 100, log, onScan: (r) => scans.push(r) });
    fill(dp.maps.ct, 10, (i) => i % 2 === 0, process.hrtime.bigint());
    await until(() => count() === 10, 'the first stale flows expired');
    const first = expiry.current;
    const killedId = scans.at(-1)?.threadId;
    await first.terminate();
    assert.equal(first.alive, false);
    // New stale flows after the kill: only a replacement thread can expire them.
    const at = process.hrtime.bigint();
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    for (let i = 100; i < 110; i++) for (const [k, v] of flow(i, true, at)) (keys.push(k), values.push(v));
    dp.maps.ct.updateBatch(keys, values);
    assert.equal(count(), 30);
    await until(() => count() === 10, 'the stale flows added after the kill expired');
    assert.notEqual(expiry.current, first, 'a new thread');
    assert.ok(expiry.current.alive);
    assert.notEqual(scans.at(-1)?.threadId, killedId, 'the scans after the kill ran on another thread');
    assert.ok(lines.some((l) => /conntrack scan thread is gone; starting a new one/.test(l)), 'the replacement is logged');
  } finally {
    await expiry?.stop();
    dp.close();
  }
});

test('kpr run expires stale flows on its scan thread and counts them', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const pinPath = `/sys/fs/bpf/kpr-test-ctscan-12ops-run-${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'kpr-ctscan-'));
  await writeFile(join(dir, 'svc.yaml'), '');
  t.after(async () => {
    await cleanup(pinPath).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  const d = await startDaemon({
    manifests: dir, pinPath, connectTimeLb: false, sizes: DEFAULT_MAP_SIZES, resyncIntervalMs: 0, log: pino({ level: 'silent' }),
    healthzAddress: undefined, metricsAddress: undefined, healthCheckAddress: '', ctScanIntervalMs: 100,
  });
  try {
    fill(d.datapath.maps.ct, 10, (i) => i % 2 === 0, process.hrtime.bigint());
    const end = Date.now() + 30_000;
    const count = () => [...d.datapath.maps.ct.chunks(64)].reduce((n, c) => n + c.length, 0);
    while (count() > 10 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.equal(count(), 10, 'the 5 stale flows (10 entries) are gone, the 5 live ones stay');
    // The thread's deletions show in the map before its scan reports back.
    const expired = async () => (await d.metrics.conntrackExpired.get()).values[0]?.value ?? 0;
    while ((await expired()) < 10 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await expired(), 10);
    const entries = Object.fromEntries((await d.metrics.conntrackEntries.get()).values.map((v) => [v.labels.type, v.value]));
    assert.deepEqual(entries, { fwd: 5, rev: 5 });
  } finally {
    await d.stop();
  }
});
