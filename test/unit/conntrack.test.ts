/**
 * The conntrack expiry scan against a fake clock: each state's timeout, the
 * creation grace, DSR's one-sided view, and FWD/REV pairing, by advancing
 * time and scanning again. The real-map, 500k-entry run is in
 * test/integration/conntrack-scan.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CT_F_DSR,
  CT_FWD,
  CT_KEY_SIZE,
  CT_REV,
  CT_TCP_ACK,
  CT_TCP_FIN,
  CT_TCP_RST,
  CT_TCP_SYN,
  CT_VAL_SIZE,
  ctKeyFor,
  decodeCtKey,
  encodeCtKey,
  encodeCtVal,
  type CtVal,
} from '../../src/datapath/codec.js';
import { ConntrackScanner, DEFAULT_CT_TIMEOUTS, fwdKeyOfRev, tcpState } from '../../src/datapath/conntrack.js';
import { MemoryMap } from '../helpers/memmaps.js';

const S = 1_000_000_000n;
const VIP = '198.18.0.10';
const BE = '203.0.113.7';

/** A clock the test moves by hand. */
class FakeClock {
  ns = 1_000n * S;
  now = () => this.ns;
  advance(seconds: number): void {
    this.ns += BigInt(Math.round(seconds * 1e9));
  }
}

function val(o: Partial<CtVal> & Pick<CtVal, 'type'>): Buffer {
  return encodeCtVal({
    flags: 0, tcpClient: 0, tcpServer: 0, svcId: 1, created: 0n, lastSeen: 0n,
    natAddr: '0.0.0.0', natSaddr: '0.0.0.0', natPort: 0, natSport: 0, beOrdinal: 0, ...o,
  });
}

/** One NATed flow from client:port to VIP:80 -> BE:8080, both entries stamped at `at`. */
function addFlow(ct: MemoryMap, proto: number, client: string, port: number, at: bigint, state: Partial<CtVal> = {}): { fwd: Buffer; rev: Buffer } {
  const fwd = encodeCtKey(ctKeyFor(proto, client, port, VIP, 80));
  const rev = encodeCtKey(ctKeyFor(proto, client, port, BE, 8080));
  ct.update(fwd, val({ type: CT_FWD, created: at, lastSeen: at, natAddr: BE, natPort: 8080, flags: state.flags ?? 0 }));
  ct.update(rev, val({ type: CT_REV, created: at, lastSeen: at, natAddr: VIP, natPort: 80, natSaddr: client, natSport: port, ...state }));
  return { fwd, rev };
}

const has = (ct: MemoryMap, k: Buffer) => ct.lookup(k) !== null;
const established = { tcpClient: CT_TCP_SYN | CT_TCP_ACK, tcpServer: CT_TCP_SYN | CT_TCP_ACK };

test('each TCP state and UDP expire after their own idle time, not before', async () => {
  const cases: Array<{ what: string; proto: number; state: Partial<CtVal>; timeout: number }> = [
    { what: 'syn-sent', proto: 6, state: { tcpClient: CT_TCP_SYN }, timeout: DEFAULT_CT_TIMEOUTS.tcpSynSent },
    { what: 'established', proto: 6, state: established, timeout: DEFAULT_CT_TIMEOUTS.tcpEstablished },
    { what: 'fin-wait', proto: 6, state: { ...established, tcpClient: established.tcpClient | CT_TCP_FIN }, timeout: DEFAULT_CT_TIMEOUTS.tcpFinWait },
    { what: 'reset', proto: 6, state: { ...established, tcpServer: established.tcpServer | CT_TCP_RST }, timeout: DEFAULT_CT_TIMEOUTS.tcpReset },
    { what: 'udp', proto: 17, state: {}, timeout: DEFAULT_CT_TIMEOUTS.udp },
    { what: 'other', proto: 1, state: {}, timeout: DEFAULT_CT_TIMEOUTS.other },
  ];
  for (const c of cases) {
    const clock = new FakeClock();
    const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 64);
    const f = addFlow(ct, c.proto, '192.0.2.10', 40000, clock.ns, c.state);
    const scanner = new ConntrackScanner(ct, DEFAULT_CT_TIMEOUTS, clock.now);
    clock.advance(c.timeout - 1);
    assert.deepEqual(await scanner.scan(), { scanned: 2, expired: 0, fwd: 1, rev: 1 }, `${c.what}: alive 1 s before its timeout`);
    clock.advance(2);
    assert.deepEqual(await scanner.scan(), { scanned: 2, expired: 2, fwd: 0, rev: 0 }, `${c.what}: gone 1 s after it`);
    assert.ok(!has(ct, f.fwd) && !has(ct, f.rev), c.what);
  }
});

test('traffic keeps a flow alive: the idle time counts from the last packet', async () => {
  const clock = new FakeClock();
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 64);
  const f = addFlow(ct, 17, '192.0.2.10', 40000, clock.ns);
  const scanner = new ConntrackScanner(ct, DEFAULT_CT_TIMEOUTS, clock.now);
  for (let i = 0; i < 5; i++) {
    clock.advance(50);
    // the data path stamps last_seen on each packet
    const v = ct.lookup(f.rev) as Buffer;
    v.writeBigUInt64LE(clock.ns, 16);
    ct.update(f.rev, v);
    assert.equal((await scanner.scan()).expired, 0, `after ${(i + 1) * 50} s with traffic every 50 s`);
  }
  clock.advance(61);
  assert.equal((await scanner.scan()).expired, 2);
});

test('a new flow is never expired within the creation grace, even one stamped long ago', async () => {
  const clock = new FakeClock();
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 64);
  addFlow(ct, 6, '192.0.2.10', 40000, clock.ns, { lastSeen: 0n });
  const scanner = new ConntrackScanner(ct, DEFAULT_CT_TIMEOUTS, clock.now);
  clock.advance(DEFAULT_CT_TIMEOUTS.creationGrace - 1);
  assert.equal((await scanner.scan()).expired, 0);
  clock.advance(2);
  assert.equal((await scanner.scan()).expired, 2);
});

test('a DSR ingress node sees only the client: its ACK means established', async () => {
  assert.equal(tcpState({ flags: CT_F_DSR, tcpClient: CT_TCP_SYN, tcpServer: 0 }), 'syn-sent');
  assert.equal(tcpState({ flags: CT_F_DSR, tcpClient: CT_TCP_SYN | CT_TCP_ACK, tcpServer: 0 }), 'established');
  const clock = new FakeClock();
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 64);
  addFlow(ct, 6, '192.0.2.10', 40000, clock.ns, { flags: CT_F_DSR, tcpClient: CT_TCP_SYN | CT_TCP_ACK });
  const scanner = new ConntrackScanner(ct, DEFAULT_CT_TIMEOUTS, clock.now);
  clock.advance(DEFAULT_CT_TIMEOUTS.tcpSynSent + 1);
  assert.equal((await scanner.scan()).expired, 0, 'not held to the SYN-sent timeout');
});

test('a FWD entry lives by its REV entry while it exists, and by its own clock once alone', async () => {
  const clock = new FakeClock();
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 64);
  const f = addFlow(ct, 6, '192.0.2.10', 40000, clock.ns, established);
  const scanner = new ConntrackScanner(ct, DEFAULT_CT_TIMEOUTS, clock.now);
  // Past the FWD's own (SYN-sent) timeout: an established REV keeps it.
  clock.advance(DEFAULT_CT_TIMEOUTS.tcpSynSent + 5);
  assert.equal((await scanner.scan()).expired, 0);
  // The REV entry is evicted (LRU): the FWD now expires on its own idle time.
  ct.delete(f.rev);
  assert.deepEqual(await scanner.scan(), { scanned: 1, expired: 1, fwd: 0, rev: 0 });
});

test('the FWD key of a REV entry is the client <-> frontend tuple, in key order', () => {
  const rev = val({ type: CT_REV, natAddr: VIP, natPort: 80, natSaddr: '192.0.2.10', natSport: 40000 });
  assert.deepEqual(decodeCtKey(fwdKeyOfRev(6, rev)), ctKeyFor(6, '192.0.2.10', 40000, VIP, 80));
  // the client's address above the VIP's: the ends swap
  const rev2 = val({ type: CT_REV, natAddr: VIP, natPort: 80, natSaddr: '203.0.113.200', natSport: 1 });
  assert.deepEqual(decodeCtKey(fwdKeyOfRev(17, rev2)), ctKeyFor(17, '203.0.113.200', 1, VIP, 80));
});

test('the scan yields to the event loop between batches', async () => {
  const ct = new MemoryMap('kpr_v4_ct', CT_KEY_SIZE, CT_VAL_SIZE, 1024);
  const clock = new FakeClock();
  for (let i = 0; i < 40; i++) addFlow(ct, 17, '192.0.2.10', 40000 + i, clock.ns);
  // A batch reader that notes whether the event loop ran (a setImmediate fired) since the previous batch.
  let turns = 0;
  const ranBetween: boolean[] = [];
  const reader: MemoryMap = Object.assign(Object.create(ct) as MemoryMap, {
    *chunks(max: number) {
      for (const piece of ct.chunks(max)) {
        const before = turns;
        setImmediate(() => turns++);
        yield piece;
        ranBetween.push(turns > before);
      }
    },
  });
  const r = await new ConntrackScanner(reader, DEFAULT_CT_TIMEOUTS, clock.now).scan(8, 0);
  assert.equal(r.scanned, 80);
  assert.equal(ranBetween.length, 10);
  assert.ok(ranBetween.every(Boolean), `the loop turned after every batch: ${ranBetween.join(',')}`);
});
