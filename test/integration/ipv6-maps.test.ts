/**
 * The IPv6 maps in the kernel: the reconciler writes a dual-stack Service
 * port into kpr_v4_* and kpr_v6_* under one id, `kpr inspect nat` and
 * `kpr inspect ct` read both families back, and bpftool prints the v6 maps
 * with field names (BTF).
 *
 * Creates only the pin path /sys/fs/bpf/kpr-v6maps-<pid>, removed after.
 * No packets are sent.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { CT_F_CLIENT_IS_A, CT_FWD, CT_REV, ctKeyFor, encodeCtKey, encodeCtVal } from '../../src/datapath/codec.js';
import type { Datapath } from '../../src/datapath/datapath.js';
import { cleanup } from '../../src/datapath/pinned.js';
import { ctRows } from '../../src/inspect/ct.js';
import { formatNatRows, natRows } from '../../src/inspect/nat.js';
import type { DesiredServicePort } from '../../src/model/types.js';
import { requireRoot } from '../helpers/privileged.js';
import { syncedDatapath } from '../helpers/tc-fixture.js';

const pin = `/sys/fs/bpf/kpr-v6maps-${process.pid}`;
let dp: Datapath | undefined;
let skipped = false;

const PORT: DesiredServicePort = {
  name: 'test/dual:http/TCP',
  service: 'test/dual',
  proto: 'TCP',
  frontends: [
    { addr: '198.18.0.10', port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags: 0, blackhole: false },
    { addr: '2001:db8:f::10', port: 80, proto: 6, srcAddr: '::', srcLen: 0, flags: 0, blackhole: false },
  ],
  backends: [
    { addr: '192.0.2.11', port: 8080, local: true },
    { addr: '2001:db8::11', port: 8080, local: true },
    { addr: '2001:db8::12', port: 8080, local: false },
  ],
  localBackends: [],
  affinityTimeout: 0,
};

before(async (t) => {
  if (!requireRoot(t as unknown as import('node:test').TestContext)) {
    skipped = true;
    return;
  }
  dp = await syncedDatapath(pin, new Map([[PORT.name, PORT]]));
});

after(async () => {
  dp?.close();
  await cleanup(pin);
});

test('inspect nat lists both families of a dual-stack Service port under one id and name', (t) => {
  if (skipped) return t.skip('not root');
  const rows = natRows(dp!.maps);
  assert.deepEqual(
    rows.map((r) => [r.family, r.frontend.addr, r.service, r.backends.map((b) => b.addr)]),
    [
      [4, '198.18.0.10', PORT.name, ['192.0.2.11']],
      [6, '2001:db8:f::10', PORT.name, ['2001:db8::11', '2001:db8::12']],
    ],
  );
  assert.equal(rows[0]!.id, rows[1]!.id);
  assert.match(formatNatRows(rows), /\[2001:db8:f::10\]:80\s+TCP\s+::\/0\s+test\/dual:http\/TCP\s+\d+\s+\[2001:db8::11\]:8080\* \[2001:db8::12\]:8080/);
});

test('bpftool prints kpr_v6_nat_fe and kpr_v6_nat_be with field names', (t) => {
  if (skipped) return t.skip('not root');
  const dump = (name: string) =>
    JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${pin}/${name}`], { encoding: 'utf8' })) as Array<{
      formatted?: { key: Record<string, unknown>; value: Record<string, unknown> };
    }>;
  const fe = dump('kpr_v6_nat_fe');
  assert.equal(fe.length, 1);
  assert.deepEqual(Object.keys(fe[0]!.formatted!.key), ['prefixlen', 'addr', 'port', 'proto', 'saddr', 'pad']);
  assert.equal(fe[0]!.formatted!.key.port, 80);
  assert.deepEqual(Object.keys(fe[0]!.formatted!.value), ['id', 'count', 'local', 'affinity_timeout', 'flags']);
  const be = dump('kpr_v6_nat_be');
  assert.equal(be.length, 2);
  assert.deepEqual(Object.keys(be[0]!.formatted!.value), ['addr', 'port', 'flags']);
  assert.equal(be[0]!.formatted!.value.port, 8080);
});

test('inspect ct reads kpr_v6_ct next to kpr_v4_ct', (t) => {
  if (skipped) return t.skip('not root');
  // A flow as the per-packet path records it: client -> VIP (FWD), client -> backend (REV).
  const now = BigInt(Math.round(Number(process.hrtime.bigint())));
  const client = '2001:db8::99';
  const fwdKey = ctKeyFor(6, client, 40000, '2001:db8:f::10', 80);
  const revKey = ctKeyFor(6, client, 40000, '2001:db8::11', 8080);
  const base = { tcpClient: 1, tcpServer: 3, svcId: 1, created: now, lastSeen: now, beOrdinal: 0 };
  dp!.maps.ct6.update(encodeCtKey(fwdKey), encodeCtVal({ ...base, type: CT_FWD, flags: fwdKey.addrA === client ? CT_F_CLIENT_IS_A : 0, natAddr: '2001:db8::11', natSaddr: '::', natPort: 8080, natSport: 0 }));
  dp!.maps.ct6.update(encodeCtKey(revKey), encodeCtVal({ ...base, type: CT_REV, flags: revKey.addrA === client ? CT_F_CLIENT_IS_A : 0, natAddr: '2001:db8:f::10', natSaddr: client, natPort: 80, natSport: 40000 }));
  const rows = ctRows(dp!.maps.ct, process.hrtime.bigint(), dp!.maps.ct6);
  assert.deepEqual(
    rows.map((r) => [r.proto, r.client, r.frontend, r.backend, r.entries]),
    [['TCP', '[2001:db8::99]:40000', '[2001:db8:f::10]:80', '[2001:db8::11]:8080', 'flow']],
  );
});
