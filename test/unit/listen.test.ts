/**
 * Listener addresses: the IPv4 wildcard is bound dual-stack, as kube-proxy's
 * Go listeners bind it, so an IPv6-only node's health checks reach it.
 */
import assert from 'node:assert/strict';
import { connect, createServer } from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import { kernelHasIpv6, listenHost } from '../../src/util/listen.js';

test('0.0.0.0 becomes :: where the kernel has IPv6; every other host is bound as given', () => {
  assert.equal(listenHost('0.0.0.0', true), '::');
  assert.equal(listenHost('0.0.0.0', false), '0.0.0.0');
  for (const h of ['127.0.0.1', '::', '::1', '2001:db8::1', '198.51.100.1', 'localhost']) assert.equal(listenHost(h, true), h);
});

test('a listener on listenHost("0.0.0.0") answers on ::1 and on 127.0.0.1', async (t) => {
  if (!kernelHasIpv6()) return void t.skip('this kernel has no IPv6');
  const server = createServer((s) => s.end('ok'));
  server.listen(0, listenHost('0.0.0.0'));
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  try {
    for (const host of ['::1', '127.0.0.1']) {
      const sock = connect({ host, port });
      let data = '';
      sock.on('data', (d) => (data += d.toString()));
      await once(sock, 'end');
      assert.equal(data, 'ok', host);
    }
  } finally {
    server.close();
  }
});
