import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DsrPeers, dsrPeerEntries } from '../../src/controller/dsr-peers.js';

test('dsrPeerEntries: flag CIDRs and node addresses, normalised, IPv4 only, no duplicates', () => {
  assert.deepEqual(
    dsrPeerEntries(['198.51.100.0/24', '203.0.113.7/16'], ['198.51.100.11', '192.0.2.5', '2001:db8::1', 'not-an-ip', '192.0.2.5']),
    ['192.0.2.5/32', '198.51.100.0/24', '198.51.100.11/32', '203.0.0.0/16'],
  );
  assert.deepEqual(dsrPeerEntries([], []), []);
});

test('DsrPeers: setNodeAddresses replaces the node part and keeps the flag part', () => {
  const written: string[][] = [];
  const peers = new DsrPeers(['198.51.100.0/28'], (e) => written.push(e));
  peers.setNodeAddresses(['192.0.2.1', '192.0.2.2']);
  peers.setNodeAddresses(['192.0.2.2']);
  assert.deepEqual(written, [
    ['192.0.2.1/32', '192.0.2.2/32', '198.51.100.0/28'],
    ['192.0.2.2/32', '198.51.100.0/28'],
  ]);
});
