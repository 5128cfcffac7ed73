import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DsrPeers, dsr6Allowed, dsrPeerEntries, neighbourPeers, PeerNeighbours } from '../../src/controller/dsr-peers.js';
import { parseCidr, type IpCidr } from '../../src/util/ip.js';

/** Flag values as the CLI hands them over: parsed once. */
const cidrs = (...v: string[]): IpCidr[] => v.map((c) => parseCidr(c, true)!);
const text = (entries: IpCidr[]) => entries.map((c) => `${c.addr}/${c.len}`);

test('dsrPeerEntries: flag CIDRs and node addresses of both families, normalised, no duplicates, IPv4 first', () => {
  assert.deepEqual(
    text(dsrPeerEntries(cidrs('198.51.100.0/24', '203.0.113.7/16', '2001:db8:0:9::5/64'), ['198.51.100.11', '192.0.2.5', '2001:db8::1', 'not-an-ip', '192.0.2.5', '2001:db8:0::1'])),
    ['192.0.2.5/32', '198.51.100.0/24', '198.51.100.11/32', '203.0.0.0/16', '2001:db8:0:9::/64', '2001:db8::1/128'],
  );
  assert.deepEqual(text(dsrPeerEntries([], [])), []);
});

test('DsrPeers: setNodeAddresses replaces the node part and keeps the flag part', () => {
  const written: string[][] = [];
  const peers = new DsrPeers(cidrs('198.51.100.0/28'), (e) => written.push(text(e)));
  peers.setNodeAddresses(['192.0.2.1', '192.0.2.2', '2001:db8::2']);
  peers.setNodeAddresses(['192.0.2.2']);
  assert.deepEqual(written, [
    ['192.0.2.1/32', '192.0.2.2/32', '198.51.100.0/28', '2001:db8::2/128'],
    ['192.0.2.2/32', '198.51.100.0/28'],
  ]);
});

test('DsrPeers: a restart keeps the pinned peers until a source lists the Nodes, then drops the ones gone', () => {
  const written: string[][] = [];
  const peers = new DsrPeers(cidrs('198.51.100.0/28'), (e) => written.push(text(e)), cidrs('192.0.2.1', '192.0.2.9', '2001:db8::9'));
  peers.setOwnAddresses(['192.0.2.2']);
  peers.setNodeAddresses(['192.0.2.2', '192.0.2.1']);
  assert.deepEqual(written, [
    ['192.0.2.1/32', '192.0.2.2/32', '192.0.2.9/32', '198.51.100.0/28', '2001:db8::9/128'],
    ['192.0.2.1/32', '192.0.2.2/32', '198.51.100.0/28'],
  ]);
});

test('neighbourPeers: IPv6 single nodes other than this one; prefixes and IPv4 need no entry', () => {
  assert.deepEqual(neighbourPeers(cidrs('2001:db8::1', '2001:db8::2', '2001:db8:0:9::/64', '192.0.2.1'), ['2001:db8:0:0::1']), ['2001:db8::2']);
});

test('PeerNeighbours: managed entries for the next hop towards each peer on kpr devices; removed with their peer, failures reported', async () => {
  const calls: string[] = [];
  const errors: string[] = [];
  const routes: Record<string, { dev: string; gateway?: string }> = {
    '2001:db8::2': { dev: 'eth0' },
    '2001:db8::4': { dev: 'other' },
    '2001:db8::5': { dev: 'eth0' },
  };
  const n = new PeerNeighbours(
    {
      routeTo: async (a) => routes[a],
      set: async (a, d) => {
        if (a === '2001:db8::5') throw new Error('EPERM');
        calls.push(`set ${a} ${d}`);
      },
      del: async (a, d) => void calls.push(`del ${a} ${d}`),
      list: async () => [],
    },
    (a, e) => errors.push(`${a}: ${String(e)}`),
  );
  await n.sync(['2001:db8::2', '2001:db8::4', '2001:db8::5'], ['eth0']);
  assert.deepEqual(calls, ['set 2001:db8::2 eth0'], 'off kpr devices: none');
  assert.deepEqual(errors, ['2001:db8::5: Error: EPERM']);
  await n.sync(['2001:db8::2'], ['eth0']);
  assert.equal(calls.length, 1, 'an entry held is not rewritten');
  await n.sync([], ['eth0']);
  assert.deepEqual(calls, ['set 2001:db8::2 eth0', 'del 2001:db8::2 eth0']);
  assert.deepEqual([...n.entries()], []);
});

test('PeerNeighbours: a rolled-back start removes the entries it added, not those an earlier kpr left', async () => {
  const calls: string[] = [];
  const n = new PeerNeighbours(
    {
      routeTo: async () => ({ dev: 'eth0' }),
      set: async (a, d) => void calls.push(`set ${a} ${d}`),
      del: async (a, d) => void calls.push(`del ${a} ${d}`),
      list: async () => [{ addr: '2001:db8::2', dev: 'eth0' }],
    },
    (a, e) => assert.fail(`${a}: ${String(e)}`),
  );
  n.startJournal();
  // Not awaited: the rollback waits for the syncs queued before it.
  void n.sync(['2001:db8::2', '2001:db8::3', '2001:db8::4'], ['eth0']);
  void n.sync(['2001:db8::2', '2001:db8::3'], ['eth0']);
  await n.rollbackJournal();
  assert.deepEqual(calls, ['set 2001:db8::2 eth0', 'set 2001:db8::3 eth0', 'set 2001:db8::4 eth0', 'del 2001:db8::4 eth0', 'del 2001:db8::3 eth0']);
  assert.deepEqual([...n.entries()], [['2001:db8::2', 'eth0']]);

  // A committed start keeps what it added.
  calls.length = 0;
  n.startJournal();
  await n.sync(['2001:db8::2', '2001:db8::5'], ['eth0']);
  n.commitJournal();
  await n.rollbackJournal();
  assert.deepEqual(calls, ['set 2001:db8::5 eth0']);
});

test('PeerNeighbours: a peer behind a router gets the entry of the gateway its route names, shared by every peer behind it', async () => {
  const calls: string[] = [];
  const routes: Record<string, { dev: string; gateway?: string }> = {
    '2001:db8:0:100::11': { dev: 'eth0', gateway: '2001:db8:0:200::200' },
    '2001:db8:0:100::12': { dev: 'eth0', gateway: '2001:db8:0:200:0:0:0:200' },
    '2001:db8:0:300::13': { dev: 'eth0', gateway: 'fe80::1' },
  };
  const n = new PeerNeighbours(
    { routeTo: async (a) => routes[a], set: async (a, d) => void calls.push(`set ${a} ${d}`), del: async (a, d) => void calls.push(`del ${a} ${d}`), list: async () => [] },
    (a, e) => assert.fail(`${a}: ${String(e)}`),
  );
  await n.sync(['2001:db8:0:100::11', '2001:db8:0:100::12', '2001:db8:0:300::13'], ['eth0']);
  assert.deepEqual(calls, ['set 2001:db8:0:200::200 eth0', 'set fe80::1 eth0'], 'one entry per next hop');
  assert.deepEqual([...n.entries()].sort(), [['2001:db8:0:200::200', 'eth0'], ['fe80::1', 'eth0']]);
  await n.sync(['2001:db8:0:100::12'], ['eth0']);
  assert.deepEqual(calls.slice(2), ['del fe80::1 eth0'], 'the router entry stays while a peer behind it does');
  await n.sync([], ['eth0']);
  assert.deepEqual(calls.slice(3), ['del 2001:db8:0:200::200 eth0']);
});

test('dsr6Allowed: an IPv6 peer other than this node, single or a prefix', () => {
  assert.equal(dsr6Allowed(cidrs('192.0.2.1', '2001:db8::1'), ['2001:db8::1']), false, 'only itself');
  assert.equal(dsr6Allowed(cidrs('192.0.2.1', '2001:db8::1', '2001:db8::2'), ['2001:db8::1']), true);
  assert.equal(dsr6Allowed(cidrs('2001:db8::/64'), ['2001:db8::1']), true);
  assert.equal(dsr6Allowed([], []), false);
});
