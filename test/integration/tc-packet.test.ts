/**
 * The tc programs under BPF_PROG_TEST_RUN: crafted packets in, rewritten
 * headers, checksums and conntrack entries out. Includes malformed and
 * unusual packets; none may crash, be mis-NATed or be rejected by the
 * verifier (loading the object proves the last).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { bpf } from '../../src/datapath/addon.js';
import { CT_F_CLIENT_IS_A, CT_F_DSR, CT_F_SNAT, CT_FWD, CT_REV, CT_TCP_ACK, CT_TCP_RST, CT_TCP_SYN, decodeCtVal, encodeCtKey, encodeCtVal } from '../../src/datapath/codec.js';
import type { Datapath } from '../../src/datapath/datapath.js';
import { cleanup } from '../../src/datapath/pinned.js';
import { Reconciler } from '../../src/controller/reconciler.js';
import type { DesiredServicePort } from '../../src/model/types.js';
import { service, slice } from '../../src/lab/objects.js';
import { ICMP, icmpMessage, packet, parse, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, tcpTimestamp, UDP } from '../helpers/packet.js';
import { requireRoot } from '../helpers/privileged.js';
import { clearMap, ctEntries, desiredPorts, runProg, syncedDatapath, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT } from '../helpers/tc-fixture.js';
import { Worker } from 'node:worker_threads';
import { addonPath } from '../../src/datapath/addon.js';

const NODE = '198.51.100.1';
const CLIENT = '198.51.100.100';
const POD = '192.0.2.11';
const LOCAL_BE = '192.0.2.20';
const REMOTE_BE = '192.0.2.66';

let dp: Datapath | undefined;
const pin = `/sys/fs/bpf/kpr-test-pkt-${process.pid}`;
let skipped = false;

function desired(): Map<string, DesiredServicePort> {
  const objs: Array<[unknown, unknown[]]> = [
    // ClusterIP + NodePort, one local and one remote backend
    [
      service('web', { type: 'NodePort', clusterIP: '198.18.0.10', ports: [{ name: 'http', port: 80, nodePort: 30080 }, { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 }] }),
      [slice('web-1', 'web', [{ ip: LOCAL_BE, node: 'n1' }, { ip: REMOTE_BE, node: 'n2' }], [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }])],
    ],
    // remote-only backend, eTP=Local
    [
      service('local', { type: 'NodePort', clusterIP: '198.18.0.11', ports: [{ name: 'http', port: 80, nodePort: 30081 }], extra: { externalTrafficPolicy: 'Local' } }),
      [slice('local-1', 'local', [{ ip: REMOTE_BE, node: 'n2' }])],
    ],
    // no endpoints
    [service('empty', { clusterIP: '198.18.0.12', ports: [{ name: 'http', port: 80 }, { name: 'u', port: 53, protocol: 'UDP' }] }), []],
    // single remote backend (deterministic choice), UDP too
    [
      service('one', { clusterIP: '198.18.0.13', ports: [{ name: 'http', port: 80 }, { name: 'u', port: 53, protocol: 'UDP', targetPort: 8080 }] }),
      [slice('one-1', 'one', [{ ip: REMOTE_BE, node: 'n2' }], [{ name: 'http', port: 8080 }, { name: 'u', port: 8080, protocol: 'UDP' }])],
    ],
  ];
  // a second VIP whose only backend is the one of 'one'
  objs.push([
    service('two', { clusterIP: '198.18.0.16', ports: [{ name: 'http', port: 80 }] }),
    [slice('two-1', 'two', [{ ip: REMOTE_BE, node: 'n2' }], [{ name: 'http', port: 8080 }])],
  ]);
  objs.push([
    service('sticky', { clusterIP: '198.18.0.15', ports: [{ name: 'http', port: 80 }], extra: { sessionAffinity: 'ClientIP' } }),
    [slice('sticky-1', 'sticky', [{ ip: LOCAL_BE }, { ip: REMOTE_BE }, { ip: '192.0.2.67' }, { ip: '192.0.2.68' }])],
  ]);
  const lb = service('lb', { type: 'LoadBalancer', clusterIP: '198.18.0.14', ports: [{ name: 'http', port: 80, nodePort: 30082 }], extra: { loadBalancerSourceRanges: ['203.0.113.0/24'] } });
  (lb as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: '198.18.100.1' }] } };
  objs.push([lb, [slice('lb-1', 'lb', [{ ip: REMOTE_BE, node: 'n2' }])]]);
  // the same, with the node's own address inside a range
  const lbNode = service('lbnode', { type: 'LoadBalancer', clusterIP: '198.18.0.17', ports: [{ name: 'http', port: 80, nodePort: 30083 }], extra: { loadBalancerSourceRanges: ['203.0.113.0/24', '198.51.100.0/28'] } });
  (lbNode as { status?: unknown }).status = { loadBalancer: { ingress: [{ ip: '198.18.100.2' }] } };
  objs.push([lbNode, [slice('lbnode-1', 'lbnode', [{ ip: REMOTE_BE, node: 'n2' }])]]);

  // NodePort with one remote backend: DSR's deterministic case
  objs.push([
    service('dsr', { type: 'NodePort', clusterIP: '198.18.0.18', ports: [{ name: 'http', port: 80, nodePort: 30084 }] }),
    [slice('dsr-1', 'dsr', [{ ip: REMOTE_BE, node: 'n2' }], [{ name: 'http', port: 8080 }])],
  ]);

  return desiredPorts(objs, [NODE]);
}

const NODEPORT_SNAT = 0;
const NODEPORT_DSR = 1;
const config = (nodeportMode: number) => ({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: nodeportMode });

function run(prog: string, pkt: Buffer) {
  return runProg(dp!, prog, pkt, parse);
}

const ctNow = () => ctEntries(dp!.maps.ct);
const clearCt = () => clearMap(dp!.maps.ct);

describe('tc programs under BPF_PROG_TEST_RUN', () => {
  before(async (t) => {
    if (!requireRoot(t as unknown as import('node:test').TestContext)) {
      skipped = true;
      return;
    }
    dp = await syncedDatapath(pin, desired());
    dp.writeConfig(config(NODEPORT_SNAT));
    dp.setNodeIPs([NODE]);
  });
  after(async () => {
    dp?.close();
    await cleanup(pin);
  });

  test('NodePort from outside: DNAT to a backend, SNAT to the node, valid checksums, FWD+REV entries', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const { retval, out } = run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: TCP, sport: 45000, dport: 30080, tcpFlags: TCP_SYN }));
    assert.ok([TC_ACT_OK, TC_ACT_REDIRECT].includes(retval), `retval ${retval}`);
    assert.ok([LOCAL_BE, REMOTE_BE].includes(out.dst), out.dst);
    assert.equal(out.dport, 8080);
    assert.equal(out.src, NODE);
    assert.equal(out.ipCsumOk, true);
    assert.equal(out.l4CsumOk, true);
    const ct = ctNow();
    assert.equal(ct.length, 2);
    const fwd = ct.find((e) => e.val.type === CT_FWD)!;
    const rev = ct.find((e) => e.val.type === CT_REV)!;
    assert.equal(fwd.val.natAddr, out.dst);
    assert.equal(fwd.val.natSaddr, NODE);
    assert.equal(fwd.val.natSport, out.sport);
    assert.deepEqual([rev.val.natAddr, rev.val.natPort, rev.val.natSaddr, rev.val.natSport], [NODE, 30080, CLIENT, 45000]);

    // the reply is reverse-NATed back to the client, from the NodePort
    const reply = run('kpr_from_host', packet({ src: out.dst, dst: NODE, proto: TCP, sport: 8080, dport: out.sport, tcpFlags: TCP_SYN | TCP_ACK }));
    assert.deepEqual([reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport], [NODE, 30080, CLIENT, 45000]);
    assert.equal(reply.out.ipCsumOk, true);
    assert.equal(reply.out.l4CsumOk, true);
    assert.equal(reply.out.ttl, reply.retval === TC_ACT_REDIRECT ? 63 : 64);

    // later packets of the flow go to the same backend
    const again = run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: TCP, sport: 45000, dport: 30080, tcpFlags: TCP_ACK }));
    assert.deepEqual([again.out.dst, again.out.sport], [out.dst, out.sport]);
    assert.equal(ctNow().length, 2);
  });

  test('an SNAT port held by a closed TCP flow is taken over; a live one is not, and the closed flow cannot reach the new one', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    // One SNAT port, so the second flow must either reclaim it or fail.
    dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61000, flags: 0 });
    try {
      const syn = (sport: number) => run('kpr_from_host', packet({ src: CLIENT, dst: '198.18.0.13', proto: TCP, sport, dport: 80, tcpFlags: TCP_SYN }));
      const first = syn(46000);
      assert.deepEqual([first.out.src, first.out.sport, first.out.dst], [NODE, 61000, REMOTE_BE]);

      const before = dp!.readStats();
      assert.equal(syn(46001).retval, TC_ACT_SHOT, 'the port is held by a live flow');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 1);

      // The first flow is reset: its port is free again.
      run('kpr_from_host', packet({ src: CLIENT, dst: '198.18.0.13', proto: TCP, sport: 46000, dport: 80, tcpFlags: TCP_RST | TCP_ACK }));
      const second = syn(46001);
      assert.deepEqual([second.out.src, second.out.sport, second.out.dst], [NODE, 61000, REMOTE_BE], "the closed flow's port is reused");
      const flows = ctNow().filter((e) => e.val.type === CT_FWD);
      assert.deepEqual(flows.map((e) => [e.val.natSaddr, e.val.natSport]), [[NODE, 61000]], "the closed flow's FWD entry is gone");

      // A straggler of the closed flow is not translated onto the new flow's port.
      const late = run('kpr_from_host', packet({ src: CLIENT, dst: '198.18.0.13', proto: TCP, sport: 46000, dport: 80, tcpFlags: TCP_ACK }));
      assert.ok(late.retval === TC_ACT_SHOT || !(late.out.src === NODE && late.out.sport === 61000), JSON.stringify(late.out));
      const reply = run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_SYN | TCP_ACK }));
      assert.deepEqual([reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport], ['198.18.0.13', 80, CLIENT, 46001]);
    } finally {
      dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: 0 });
    }
  });

  test('an SNAT port closed by FINs stays taken for another client (the backend may hold TIME_WAIT); the same client reopening its tuple gets it back', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61000, flags: 0 });
    try {
      const VIP = '198.18.0.13';
      const fromClient = (sport: number, tcpFlags: number) => run('kpr_from_host', packet({ src: CLIENT, dst: VIP, proto: TCP, sport, dport: 80, tcpFlags }));
      const first = fromClient(46100, TCP_SYN);
      assert.deepEqual([first.out.src, first.out.sport, first.out.dst], [NODE, 61000, REMOTE_BE]);
      // The backend closes first (it will hold TIME_WAIT), then the client.
      run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_FIN | TCP_ACK }));
      fromClient(46100, TCP_FIN | TCP_ACK);

      const before = dp!.readStats();
      assert.equal(fromClient(46101, TCP_SYN).retval, TC_ACT_SHOT, 'another client must not land on a tuple the backend may hold in TIME_WAIT');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 1);

      const again = fromClient(46100, TCP_SYN);
      assert.deepEqual([again.out.src, again.out.sport, again.out.dst], [NODE, 61000, REMOTE_BE], 'the same client tuple reuses its SNAT port');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 1);
      const reply = run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_SYN | TCP_ACK }));
      assert.deepEqual([reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport], [VIP, 80, CLIENT, 46100]);
      assert.equal(ctNow().length, 2, 'the reopened flow replaced both entries of the closed one');
    } finally {
      dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: 0 });
    }
  });

  test('an SNAT port closed by FINs goes to another client only if its SYN carries a timestamp newer than any the old client sent once closing (RFC 6191)', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61000, flags: 0 });
    try {
      const VIP = '198.18.0.13';
      const fromClient = (sport: number, tcpFlags: number, ts?: number) =>
        run('kpr_from_host', packet({ src: CLIENT, dst: VIP, proto: TCP, sport, dport: 80, tcpFlags, ...(ts === undefined ? {} : { tcpOptions: tcpTimestamp(ts) }) }));
      const first = fromClient(46200, TCP_SYN, 1000);
      assert.equal(first.out.sport, 61000);
      fromClient(46200, TCP_ACK, 2000);
      // The backend closes first and will hold TIME_WAIT with the client's
      // last timestamp: 6000, from the segment after the client's FIN.
      run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_FIN | TCP_ACK }));
      fromClient(46200, TCP_FIN | TCP_ACK, 5000);
      fromClient(46200, TCP_ACK, 6000);

      const before = dp!.readStats();
      assert.equal(fromClient(46201, TCP_SYN).retval, TC_ACT_SHOT, 'no timestamp: TIME_WAIT would judge by sequence numbers, which kpr does not keep');
      assert.equal(fromClient(46202, TCP_SYN, 5500).retval, TC_ACT_SHOT, 'older than the last timestamp: PAWS would reject it');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 2);

      const next = fromClient(46203, TCP_SYN, 6001);
      assert.deepEqual([next.out.src, next.out.sport, next.out.dst], [NODE, 61000, REMOTE_BE], 'a newer timestamp passes TIME_WAIT: the port is reused');
      const reply = run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_SYN | TCP_ACK }));
      assert.deepEqual([reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport], [VIP, 80, CLIENT, 46203]);
      assert.equal(ctNow().length, 2, 'the old flow is gone, its FWD entry too');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 2);
    } finally {
      dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: 0 });
    }
  });

  test('client closes first: its SNAT port goes to a newer timestamp only after the client\'s last ACK (before it the backend sits in LAST_ACK)', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61000, flags: 0 });
    try {
      const VIP = '198.18.0.13';
      const fromClient = (sport: number, tcpFlags: number, ts: number) =>
        run('kpr_from_host', packet({ src: CLIENT, dst: VIP, proto: TCP, sport, dport: 80, tcpFlags, tcpOptions: tcpTimestamp(ts) }));
      assert.equal(fromClient(46210, TCP_SYN, 1000).out.sport, 61000);
      fromClient(46210, TCP_FIN | TCP_ACK, 5000);
      run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: 61000, tcpFlags: TCP_FIN | TCP_ACK }));

      const before = dp!.readStats();
      assert.equal(fromClient(46211, TCP_SYN, 7000).retval, TC_ACT_SHOT, 'the backend has not had the last ACK yet');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 1);
      fromClient(46210, TCP_ACK, 5001);
      const next = fromClient(46212, TCP_SYN, 7000);
      assert.deepEqual([next.out.src, next.out.sport, next.out.dst], [NODE, 61000, REMOTE_BE], 'after the last ACK the backend is CLOSED');
      assert.equal(dp!.readStats().tc_snat_no_port - before.tc_snat_no_port, 1);
    } finally {
      dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: 0 });
    }
  });

  test('a nearly full SNAT range still yields its one free port (the walk covers a small range whole)', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61063, flags: 0 });
    try {
      const FREE = 61037;
      for (let port = 61000; port <= 61063; port++) {
        if (port === FREE) continue;
        // A live masqueraded flow of some other client on each other port.
        const key = encodeCtKey({ proto: TCP, addrA: REMOTE_BE, portA: 8080, addrB: NODE, portB: port });
        const rev = { type: CT_REV, flags: CT_F_SNAT, tcpClient: CT_TCP_SYN | CT_TCP_ACK, tcpServer: CT_TCP_SYN | CT_TCP_ACK, svcId: 0, created: 1n, lastSeen: 1n, natAddr: '198.18.0.13', natSaddr: '198.51.100.101', natPort: 80, natSport: port, beOrdinal: 0 };
        dp!.maps.ct.update(key, encodeCtVal(rev));
      }
      const before = dp!.readStats();
      for (let i = 0; i < 3; i++) {
        const { out } = run('kpr_from_host', packet({ src: CLIENT, dst: '198.18.0.13', proto: TCP, sport: 46300 + i, dport: 80, tcpFlags: TCP_SYN }));
        if (i === 0) assert.deepEqual([out.src, out.sport, out.dst], [NODE, FREE, REMOTE_BE], 'the last free port is found');
      }
      const after = dp!.readStats();
      assert.equal(after.tc_fwd_new - before.tc_fwd_new, 1);
      assert.equal(after.tc_snat_no_port - before.tc_snat_no_port, 2, 'a full range is counted, not silently dropped');
    } finally {
      dp!.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 61100, flags: 0 });
    }
  });

  test('ClusterIP from a pod: DNAT only, the client address is kept', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const { out } = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40001, dport: 80, tcpFlags: TCP_SYN }));
    assert.deepEqual([out.src, out.sport, out.dst, out.dport], [POD, 40001, REMOTE_BE, 8080]);
    assert.equal(out.l4CsumOk, true);
    const reply = run('kpr_from_host', packet({ src: REMOTE_BE, dst: POD, proto: TCP, sport: 8080, dport: 40001, tcpFlags: TCP_SYN | TCP_ACK }));
    assert.deepEqual([reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport], ['198.18.0.13', 80, POD, 40001]);
    assert.equal(reply.out.l4CsumOk, true);
  });

  test('one client port reaching two VIPs that share a backend: the second flow is masqueraded, replies come from the VIP asked', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const before = dp!.readStats();
    const first = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40100, dport: 80, tcpFlags: TCP_SYN }));
    assert.deepEqual([first.out.src, first.out.sport, first.out.dst, first.out.dport], [POD, 40100, REMOTE_BE, 8080]);
    const second = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.16', proto: TCP, sport: 40100, dport: 80, tcpFlags: TCP_SYN }));
    assert.deepEqual([second.out.src, second.out.dst, second.out.dport], [NODE, REMOTE_BE, 8080], 'the tuple is taken: SNAT to the node');
    assert.ok(second.out.sport >= 61000 && second.out.sport <= 61100, `port from the SNAT range: ${second.out.sport}`);
    assert.equal(dp!.readStats().tc_ct_collision - before.tc_ct_collision, 1);
    assert.equal(ctNow().length, 4, 'two flows, two entries each');

    const r1 = run('kpr_from_host', packet({ src: REMOTE_BE, dst: POD, proto: TCP, sport: 8080, dport: 40100, tcpFlags: TCP_SYN | TCP_ACK }));
    assert.deepEqual([r1.out.src, r1.out.sport, r1.out.dst, r1.out.dport], ['198.18.0.13', 80, POD, 40100]);
    const r2 = run('kpr_from_host', packet({ src: REMOTE_BE, dst: NODE, proto: TCP, sport: 8080, dport: second.out.sport, tcpFlags: TCP_SYN | TCP_ACK }));
    assert.deepEqual([r2.out.src, r2.out.sport, r2.out.dst, r2.out.dport], ['198.18.0.16', 80, POD, 40100]);
    assert.equal(r2.out.l4CsumOk, true);
  });

  test('first packet of a flow whose REV entry another CPU already wrote: one consistent pair, no SNAT', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const before = dp!.readStats();
    // What a CPU a step ahead on this same SYN leaves before its FWD insert.
    const key = encodeCtKey({ proto: TCP, addrA: POD, portA: 40200, addrB: REMOTE_BE, portB: 8080 });
    const rev = { type: CT_REV, flags: CT_F_CLIENT_IS_A, tcpClient: CT_TCP_SYN, tcpServer: 0, svcId: 0, created: 1n, lastSeen: 1n, natAddr: '198.18.0.13', natSaddr: POD, natPort: 80, natSport: 40200, beOrdinal: 0 };
    dp!.maps.ct.update(key, encodeCtVal(rev));
    const { out } = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40200, dport: 80, tcpFlags: TCP_SYN }));
    assert.deepEqual([out.src, out.sport, out.dst, out.dport], [POD, 40200, REMOTE_BE, 8080]);
    const ct = ctNow();
    assert.equal(ct.length, 2);
    const fwd = ct.find((e) => e.val.type === CT_FWD)!;
    const r = ct.find((e) => e.val.type === CT_REV)!;
    assert.deepEqual([fwd.val.natAddr, fwd.val.natPort, fwd.val.natSaddr], [REMOTE_BE, 8080, '0.0.0.0']);
    assert.deepEqual([r.val.natAddr, r.val.natPort, r.val.natSaddr, r.val.natSport], ['198.18.0.13', 80, POD, 40200]);
    assert.equal(dp!.readStats().tc_ct_collision - before.tc_ct_collision, 0);
  });

  test('two CPUs racing on the first packet of each flow: one FWD and one matching REV per flow, no orphan', async (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const before = dp!.readStats();
    const FLOWS = 3000;
    // 198.18.0.10 has two backends: racers that pick different ones would
    // each leave a REV entry, and the loser's must go.
    const packets = Array.from({ length: FLOWS }, (_, i) =>
      packet({ src: POD, dst: '198.18.0.10', proto: TCP, sport: 20000 + i, dport: 80, tcpFlags: TCP_SYN }),
    );
    const sync = new SharedArrayBuffer(4);
    const workers = [0, 1].map(
      () =>
        new Worker(new URL('../helpers/race-worker.mjs', import.meta.url), {
          workerData: { addon: addonPath(), fd: dp!.tcProgFd('kpr_from_pod'), packets, sync },
        }),
    );
    await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => w.on('exit', () => resolve()).on('error', reject))));
    const races = dp!.readStats().tc_ct_race - before.tc_ct_race;
    t.diagnostic(`${FLOWS} flows, ${races} lost races resolved`);
    const byPort = new Map<number, { fwd: number; rev: number; fwdBackend?: string; revBackends: string[] }>();
    for (const { key, val } of ctNow()) {
      const clientPort = key.addrA === POD ? key.portA : key.portB;
      const e = byPort.get(clientPort) ?? { fwd: 0, rev: 0, revBackends: [] };
      if (val.type === CT_FWD) {
        e.fwd++;
        e.fwdBackend = val.natAddr;
      } else {
        e.rev++;
        e.revBackends.push(key.addrA === POD ? key.addrB : key.addrA);
      }
      byPort.set(clientPort, e);
    }
    assert.equal(byPort.size, FLOWS);
    for (const [p, e] of byPort) {
      assert.deepEqual([e.fwd, e.rev], [1, 1], `flow from port ${p}: ${JSON.stringify(e)}`);
      assert.deepEqual(e.revBackends, [e.fwdBackend], `flow from port ${p}: REV is at the FWD's backend`);
    }
    assert.ok(races > 0, 'the workers did race on some first packets (otherwise this test proves nothing)');
  });

  test('a UDP flow whose backend is removed moves to a live one on its next datagram, without leaving a second FWD', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const dgram = () => run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: UDP, sport: 40999, dport: 30053, payload: Buffer.from('q') }));
    const first = dgram().out;
    assert.ok([LOCAL_BE, REMOTE_BE].includes(first.dst));
    const d = desired();
    const web = d.get([...d.keys()].find((k) => k.includes('web') && k.includes('dns'))!)!;
    const r = new Reconciler(dp!.maps);
    r.adopt();
    const without = new Map(d);
    without.set(web.name, { ...web, backends: web.backends.filter((b) => b.addr !== first.dst) });
    assert.deepEqual(r.syncAll(without).failed, []);
    try {
      const next = dgram().out;
      assert.notEqual(next.dst, first.dst, 'the removed backend no longer gets the flow');
      assert.equal(ctNow().filter((e) => e.val.type === CT_FWD).length, 1);
      assert.equal(dgram().out.dst, next.dst, 'and the flow stays on its new backend');
    } finally {
      assert.deepEqual(r.syncAll(d).failed, []);
    }
  });

  test('a reset flow of another VIP leaves its tuple free: the new flow takes it over without SNAT', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const key = encodeCtKey({ proto: TCP, addrA: POD, portA: 40300, addrB: REMOTE_BE, portB: 8080 });
    const old = { type: CT_REV, flags: CT_F_CLIENT_IS_A, tcpClient: CT_TCP_SYN, tcpServer: CT_TCP_RST, svcId: 0, created: 1n, lastSeen: 1n, natAddr: '198.18.0.16', natSaddr: POD, natPort: 80, natSport: 40300, beOrdinal: 0 };
    dp!.maps.ct.update(key, encodeCtVal(old));
    const { out } = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40300, dport: 80, tcpFlags: TCP_SYN }));
    assert.deepEqual([out.src, out.sport, out.dst], [POD, 40300, REMOTE_BE]);
    const r = decodeCtVal(dp!.maps.ct.lookup(key)!);
    assert.deepEqual([r.natAddr, r.tcpServer], ['198.18.0.13', 0]);
  });

  test('a closed flow\'s translated tuple reused by a direct connection (connect-time or to the backend itself): its replies are not reverse-NATed', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const before = dp!.readStats();
    const fromPod = (dst: string, dport: number, tcpFlags: number) => run('kpr_from_pod', packet({ src: POD, dst, proto: TCP, sport: 40400, dport, tcpFlags }));
    const fromBe = (tcpFlags: number) => run('kpr_from_host', packet({ src: REMOTE_BE, dst: POD, proto: TCP, sport: 8080, dport: 40400, tcpFlags }));
    assert.equal(fromPod('198.18.0.13', 80, TCP_SYN).out.dst, REMOTE_BE);
    assert.equal(fromBe(TCP_SYN | TCP_ACK).out.src, '198.18.0.13');
    // a second connection straight to the backend while the VIP flow lives: the flow is kept
    assert.equal(fromPod(REMOTE_BE, 8080, TCP_SYN).out.dst, REMOTE_BE);
    assert.equal(fromBe(TCP_ACK).out.src, '198.18.0.13', 'the live flow still answers from the VIP');
    fromPod('198.18.0.13', 80, TCP_FIN | TCP_ACK);
    fromBe(TCP_FIN | TCP_ACK);
    fromPod('198.18.0.13', 80, TCP_ACK);

    const syn = fromPod(REMOTE_BE, 8080, TCP_SYN);
    assert.equal(syn.retval, TC_ACT_OK);
    assert.deepEqual([syn.out.src, syn.out.sport, syn.out.dst, syn.out.dport], [POD, 40400, REMOTE_BE, 8080]);
    assert.equal(dp!.readStats().tc_ct_rev_closed - before.tc_ct_rev_closed, 1);
    const synAck = fromBe(TCP_SYN | TCP_ACK);
    assert.deepEqual([synAck.out.src, synAck.out.sport], [REMOTE_BE, 8080], 'the reply keeps the backend\'s address');
    assert.equal(ctNow().filter((e) => e.val.type === CT_REV).length, 0);

    // the client reopening its VIP tuple later still gets a fresh NATed flow
    const again = fromPod('198.18.0.13', 80, TCP_SYN);
    assert.deepEqual([again.out.src, again.out.dst], [POD, REMOTE_BE]);
    assert.equal(fromBe(TCP_SYN | TCP_ACK).out.src, '198.18.0.13');
  });

  test('DSR: the backend\'s FIN is never seen, so a SYN after the client\'s FIN opens a new flow (here in SNAT mode, as after a mode switch)', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const before = dp!.readStats();
    const fromClient = (tcpFlags: number) => run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: TCP, sport: 45500, dport: 30084, tcpFlags }));
    try {
      dp!.writeConfig(config(NODEPORT_DSR));
      const syn = fromClient(TCP_SYN);
      assert.deepEqual([syn.out.src, syn.out.dst, syn.out.dport], [CLIENT, REMOTE_BE, 8080], 'DSR keeps the client address');
      assert.equal(dp!.readStats().tc_dsr_fwd - before.tc_dsr_fwd, 1);
      assert.equal(fromClient(TCP_ACK).out.src, CLIENT);
      // a retransmitted SYN of the open flow stays on it
      assert.equal(fromClient(TCP_SYN).out.src, CLIENT);
      fromClient(TCP_FIN | TCP_ACK);
      fromClient(TCP_ACK);

      dp!.writeConfig(config(NODEPORT_SNAT));
      const reopen = fromClient(TCP_SYN);
      assert.deepEqual([reopen.out.src, reopen.out.dst], [NODE, REMOTE_BE], 'the reused tuple is a new, masqueraded flow');
      const fwd = ctNow().filter((e) => e.val.type === CT_FWD);
      assert.equal(fwd.length, 1);
      assert.equal(fwd[0]!.val.flags & CT_F_DSR, 0);
    } finally {
      dp!.writeConfig(config(NODEPORT_SNAT));
    }
  });

  test('a pod reaching itself through its Service is masqueraded (hairpin)', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const { out } = run('kpr_from_pod', packet({ src: REMOTE_BE, dst: '198.18.0.13', proto: TCP, sport: 40002, dport: 80 }));
    assert.equal(out.dst, REMOTE_BE);
    assert.equal(out.src, NODE);
  });

  test('UDP without a checksum keeps 0; with one it stays valid', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const a = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: UDP, sport: 5000, dport: 53, udpNoChecksum: true, payload: Buffer.from('hi') }));
    assert.equal(a.out.dst, REMOTE_BE);
    assert.equal(a.out.raw.readUInt16BE(14 + 20 + 6), 0);
    const b = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: UDP, sport: 5001, dport: 53, payload: Buffer.from('hello') }));
    assert.equal(b.out.l4CsumOk, true);
  });

  test('eTP=Local with no local endpoint drops external traffic, but not pod traffic', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const ext = run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: TCP, sport: 45001, dport: 30081 }));
    assert.equal(ext.retval, TC_ACT_SHOT);
    assert.equal(ctNow().length, 0);
    const pod = run('kpr_from_pod', packet({ src: POD, dst: NODE, proto: TCP, sport: 45002, dport: 30081 }));
    assert.equal(pod.out.dst, REMOTE_BE);
  });

  test('a Service without endpoints is rejected: TCP gets a RST, UDP ICMP port-unreachable, from the VIP', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const syn = packet({ src: POD, dst: '198.18.0.12', proto: TCP, sport: 41000, dport: 80, tcpFlags: TCP_SYN });
    const rst = run('kpr_from_pod', syn);
    assert.equal(rst.retval, TC_ACT_REDIRECT);
    assert.deepEqual([rst.out.src, rst.out.sport, rst.out.dst, rst.out.dport], ['198.18.0.12', 80, POD, 41000]);
    assert.equal(rst.out.tcpFlags, TCP_RST | TCP_ACK);
    assert.equal(rst.out.raw.readUInt32BE(14 + 20 + 8), syn.readUInt32BE(14 + 20 + 4) + 1, 'acks the SYN');
    assert.equal(rst.out.ipCsumOk, true);
    assert.equal(rst.out.l4CsumOk, true);
    assert.deepEqual(rst.out.raw.subarray(0, 6), syn.subarray(6, 12), 'back to the sender');

    const orig = packet({ src: POD, dst: '198.18.0.12', proto: UDP, sport: 41000, dport: 53, payload: Buffer.from('abcdefgh') });
    const { retval, out } = run('kpr_from_pod', orig);
    assert.equal(retval, TC_ACT_REDIRECT);
    assert.equal(out.proto, ICMP);
    assert.deepEqual([out.src, out.dst], ['198.18.0.12', POD]);
    assert.equal(out.ipCsumOk, true);
    assert.deepEqual([out.icmp?.type, out.icmp?.code, out.icmp?.csumOk], [3, 3, true]);
    assert.deepEqual([out.icmp?.inner.src, out.icmp?.inner.dst, out.icmp?.inner.sport, out.icmp?.inner.dport], [POD, '198.18.0.12', 41000, 53]);
    assert.deepEqual(out.raw.subarray(0, 6), orig.subarray(6, 12));
    assert.equal(ctNow().length, 0);
  });

  test('loadBalancerSourceRanges: outside dropped, inside served', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const denied = run('kpr_from_host', packet({ src: CLIENT, dst: '198.18.100.1', proto: TCP, sport: 45003, dport: 80 }));
    assert.equal(denied.retval, TC_ACT_SHOT);
    const allowed = run('kpr_from_host', packet({ src: '203.0.113.7', dst: '198.18.100.1', proto: TCP, sport: 45004, dport: 80 }));
    assert.equal(allowed.out.dst, REMOTE_BE);
  });

  test('loadBalancerSourceRanges judge the node by its source, as kube-proxy: the LB IP looped back only when the node is inside', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    let sport = 45005;
    for (const [vip, nodeInside] of [['198.18.100.1', false], ['198.18.100.2', true]] as const) {
      for (const src of [NODE, vip]) {
        const r = run('kpr_from_host', packet({ src, dst: vip, proto: TCP, sport: sport++, dport: 80, tcpFlags: TCP_SYN }));
        if (nodeInside) assert.equal(r.out.dst, REMOTE_BE, `${vip} from ${src}`);
        else assert.equal(r.retval, TC_ACT_SHOT, `${vip} from ${src}`);
      }
    }
  });

  test('truncated and non-IPv4 packets pass untouched', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const full = packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40003, dport: 80 });
    // (the kernel's test runner refuses IPv4 frames shorter than an IP header)
    for (const len of [34, 40, 44, 53]) {
      const cut = Buffer.from(full.subarray(0, len));
      const r = bpf.progTestRun(dp!.tcProgFd('kpr_from_pod'), cut);
      assert.equal(r.retval, TC_ACT_OK, `len ${len}`);
      assert.deepEqual(r.data, cut, `len ${len} was modified`);
    }
    // an IHL that claims options the frame does not have
    const badIhl = Buffer.from(full.subarray(0, 54));
    badIhl[14] = 0x4f;
    assert.deepEqual(bpf.progTestRun(dp!.tcProgFd('kpr_from_pod'), badIhl).data, badIhl);
    const arp = Buffer.from(full);
    arp.writeUInt16BE(0x0806, 12);
    assert.deepEqual(bpf.progTestRun(dp!.tcProgFd('kpr_from_pod'), arp).data, arp);
    assert.equal(ctNow().length, 0);
  });

  test('IP options shift the L4 header; NAT still lands on the right bytes', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const opts = Buffer.from([0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
    const { out } = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40004, dport: 80, ipOptions: opts }));
    assert.equal(out.ihl, 24);
    assert.deepEqual([out.dst, out.dport, out.sport], [REMOTE_BE, 8080, 40004]);
    assert.equal(out.ipCsumOk, true);
    assert.equal(out.l4CsumOk, true);
  });

  test('fragments: the first is NATed by ports, later ones by the remembered ports', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const dgram = packet({ src: POD, dst: '198.18.0.13', proto: UDP, sport: 5002, dport: 53, payload: Buffer.alloc(40, 7) }).subarray(34);
    const first = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: UDP, l4: dgram.subarray(0, 24), moreFragments: true, id: 77 }));
    assert.deepEqual([first.out.dst, first.out.dport], [REMOTE_BE, 8080]);
    assert.equal(first.out.ipCsumOk, true);
    const later = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: UDP, l4: dgram.subarray(24), fragOffset: 3, id: 77 }));
    assert.equal(later.out.dst, REMOTE_BE);
    assert.equal(later.out.ipCsumOk, true);
    // the payload of a later fragment is never touched
    assert.deepEqual(later.out.raw.subarray(34), dgram.subarray(24));
    // a later fragment whose first fragment was never seen is left alone
    const orphan = packet({ src: POD, dst: '198.18.0.13', proto: UDP, l4: dgram.subarray(24), fragOffset: 3, id: 78 });
    assert.deepEqual(run('kpr_from_pod', orphan).data, orphan);
  });

  test('an ICMP error about a NATed flow is translated back to the client', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: UDP, sport: 5003, dport: 53, payload: Buffer.from('q') }));
    // The backend answers port-unreachable, quoting client -> backend.
    const quoted = packet({ src: POD, dst: REMOTE_BE, proto: UDP, sport: 5003, dport: 8080, payload: Buffer.from('q') }).subarray(14, 14 + 28);
    const { out } = run('kpr_from_host', packet({ src: REMOTE_BE, dst: POD, proto: ICMP, l4: icmpMessage(3, 3, 0, quoted) }));
    assert.deepEqual([out.src, out.dst], ['198.18.0.13', POD]);
    assert.equal(out.ipCsumOk, true);
    assert.equal(out.icmp?.csumOk, true);
    assert.deepEqual([out.icmp?.inner.src, out.icmp?.inner.dst, out.icmp?.inner.sport, out.icmp?.inner.dport], [POD, '198.18.0.13', 5003, 53]);
    assert.equal(out.icmp?.inner.ipCsumOk, true);
  });

  test('an ICMP frag-needed about a NodePort reply (from a hop towards the client) reaches the backend as if about backend -> node', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const router = '203.0.113.1';
    const { out } = run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: TCP, sport: 45300, dport: 30080, tcpFlags: TCP_SYN }));
    // The reply as the node sent it on, quoted by a router on the client's
    // path, which sends the error to the reply's source: the NodePort address.
    const quoted = packet({ src: NODE, dst: CLIENT, proto: TCP, sport: 30080, dport: 45300, tcpFlags: TCP_ACK }).subarray(14, 14 + 28);
    const before = dp!.readStats();
    const r = run('kpr_from_host', packet({ src: router, dst: NODE, proto: ICMP, l4: icmpMessage(3, 4, 1280, quoted) }));
    assert.ok([TC_ACT_OK, TC_ACT_REDIRECT].includes(r.retval), `retval ${r.retval}`);
    assert.deepEqual([r.out.src, r.out.dst], [router, out.dst], 'sent to the backend');
    assert.equal(r.out.ipCsumOk, true);
    assert.deepEqual([r.out.icmp?.type, r.out.icmp?.code, r.out.icmp?.mtu, r.out.icmp?.csumOk], [3, 4, 1280, true]);
    const inner = r.out.icmp?.inner;
    assert.deepEqual([inner?.src, inner?.sport, inner?.dst, inner?.dport], [out.dst, 8080, NODE, out.sport], 'quotes backend -> SNAT address');
    assert.equal(inner?.ipCsumOk, true);
    assert.equal(dp!.readStats().tc_icmp_err - before.tc_icmp_err, 1);
    // Sent by the client itself: it comes from the SNAT address, as the backend knows its peer.
    const fromClient = run('kpr_from_host', packet({ src: CLIENT, dst: NODE, proto: ICMP, l4: icmpMessage(3, 3, 0, quoted) }));
    assert.deepEqual([fromClient.out.src, fromClient.out.dst], [NODE, out.dst]);
    assert.equal(fromClient.out.ipCsumOk, true);
    assert.equal(fromClient.out.icmp?.csumOk, true);
  });

  test('TCP RST or FIN alone never opens a flow; on a known flow they are NATed', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const rst = packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40005, dport: 80, tcpFlags: TCP_RST });
    assert.deepEqual(run('kpr_from_pod', rst).data, rst);
    assert.equal(ctNow().length, 0);
    run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40006, dport: 80, tcpFlags: TCP_SYN }));
    const fin = run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.13', proto: TCP, sport: 40006, dport: 80, tcpFlags: TCP_FIN | TCP_ACK }));
    assert.equal(fin.out.dst, REMOTE_BE);
    const rev = ctNow().find((e) => e.val.type === CT_REV)!;
    assert.equal(rev.val.tcpClient & 0x04, 0x04, 'FIN recorded from the client');
  });

  test('sessionAffinity ClientIP: new flows of one client reuse its backend', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const backends = new Set<string>();
    for (let port = 42000; port < 42020; port++) {
      backends.add(run('kpr_from_pod', packet({ src: POD, dst: '198.18.0.15', proto: TCP, sport: port, dport: 80 })).out.dst);
    }
    assert.equal(backends.size, 1, [...backends].join(','));
    // another client gets its own (random) pick, and keeps it too
    const other = new Set<string>();
    for (let port = 42000; port < 42010; port++) {
      other.add(run('kpr_from_pod', packet({ src: '192.0.2.99', dst: '198.18.0.15', proto: TCP, sport: port, dport: 80 })).out.dst);
    }
    assert.equal(other.size, 1);
  });

  test('non-TCP/UDP traffic and non-Service addresses are untouched', (t) => {
    if (skipped) return t.skip('not root');
    clearCt();
    const direct = packet({ src: POD, dst: REMOTE_BE, proto: TCP, sport: 40007, dport: 8080 });
    assert.deepEqual(run('kpr_from_pod', direct).data, direct);
    const echo = packet({ src: POD, dst: '198.18.0.13', proto: ICMP, l4: Buffer.from([8, 0, 0xf7, 0xff, 0, 0, 0, 0]) });
    assert.deepEqual(run('kpr_from_pod', echo).data, echo);
    assert.equal(ctNow().length, 0);
  });
});
