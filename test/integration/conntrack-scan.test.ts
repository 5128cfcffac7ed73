/**
 * The conntrack expiry scan: what it removes, and that it leaves the event
 * loop free while it walks a full-size (500k entries) map.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ConntrackScanner } from '../../src/controller/conntrack.js';
import { CT_FWD, CT_REV, CT_KEY_SIZE, CT_VAL_SIZE, ctKeyFor, encodeCtKey, encodeCtVal, type CtVal } from '../../src/datapath/codec.js';
import { MemoryMap, type KVMap } from '../../src/datapath/kvmap.js';
import { cleanup, Datapath } from '../../src/datapath/loader.js';
import { DEFAULT_MAP_SIZES } from '../../src/datapath/layout.js';
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
function flow(i: number, stale: boolean): Array<[Buffer, Buffer]> {
  const client = `192.0.2.${i % 250}`;
  const cport = 10_000 + Math.floor(i / 250);
  const backend = `203.0.113.${(i % 200) + 1}`;
  const seen = stale ? 0n : NOW - S;
  return [
    [encodeCtKey(ctKeyFor(17, client, cport, VIP, 80)), val(CT_FWD, seen, { natAddr: backend, natPort: 8080 })],
    [encodeCtKey(ctKeyFor(17, client, cport, backend, 8080)), val(CT_REV, seen, { natAddr: VIP, natPort: 80, natSaddr: client, natSport: cport })],
  ];
}

function fill(map: KVMap, flows: number, stale: (i: number) => boolean): void {
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  for (let i = 0; i < flows; i++) for (const [k, v] of flow(i, stale(i))) (keys.push(k), values.push(v));
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

/*
 * The event-loop lag is measured and printed, not asserted: on this shared
 * 2-core machine (load average ~15 while measured) the wall-clock lag is
 * dominated by being descheduled, so a p99 <= 20 ms bound could not be
 * shown either way here (issue 12, point 7 stays open on that).
 */
test('conntrack scan of 500k entries reads in batches, yields, and expires exactly the stale half', { timeout: 300_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const pinPath = `/sys/fs/bpf/kpr-test-ctscan-${process.pid}`;
  t.after(() => cleanup(pinPath));
  const dp = await Datapath.open(pinPath, DEFAULT_MAP_SIZES);
  try {
    const flows = 250_000;
    fill(dp.maps.ct, flows, (i) => i % 2 === 0);
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    // Ticks of a 1 ms timer that ran while the scan was in progress: a scan that never yields gets none.
    let yields = 0;
    const ticker = setInterval(() => yields++, 1);
    const started = process.hrtime.bigint();
    const r = await new ConntrackScanner(dp.maps.ct, undefined, () => NOW).scan();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    clearInterval(ticker);
    h.disable();
    const p99 = h.percentile(99) / 1e6;
    const max = h.max / 1e6;
    process.stdout.write(`# ct scan of ${r.scanned} entries: ${ms.toFixed(0)} ms, event-loop lag p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms\n`);
    assert.deepEqual(r, { scanned: 2 * flows, expired: flows, fwd: flows / 2, rev: flows / 2 });
    assert.equal([...dp.maps.ct.chunks(4096)].reduce((n, c) => n + c.length, 0), flows);
    assert.ok(yields > 10, `the scan yielded to the event loop (${yields} timer ticks ran during it)`);
  } finally {
    dp.close();
  }
});
