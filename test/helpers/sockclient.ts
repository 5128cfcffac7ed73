/**
 * Socket clients (and a long-lived TCP server) for the socket-state tests.
 * Each mode is bounded in count and time, and prints one JSON line per event
 * as it happens: {"t": ms since epoch, ...}. The test reads them live, so it
 * can act on what the client sees (e.g. remove the backend it talks to).
 *
 *   echo-server HOST PORT NAME         keep TCP connections; answer each line with NAME
 *   udp-server HOST PORTS NAME         answer datagrams on each of PORTS (a,b,c) with NAME
 *   udp-multi VIP PORTS ROUNDS         one unconnected UDP socket, one datagram to each of PORTS per round
 *   hold-tcp VIP PORT N                N TCP connections open at once, then getpeername on each
 *   hold-udp VIP PORT N                N connected UDP sockets open at once, one exchange each, then getpeername
 *   udp-conv VIP PORT COUNT INTERVAL   one unconnected UDP socket, COUNT datagrams
 *   udp-connected VIP PORT MS INTERVAL one connected UDP socket for MS; on an error, reconnect
 *   tcp-echo VIP PORT MS INTERVAL      one TCP connection to an echo-server for MS, until it fails
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';

const [mode, host = '', portStr = '0', a3 = '1', a4 = '0'] = process.argv.slice(2);
const port = Number(portStr);
const emit = (ev: Record<string, unknown>) => process.stdout.write(JSON.stringify({ t: Date.now(), ...ev }) + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** An IPv6 destination (or bind address) needs an AF_INET6 socket. */
const UDP = host.includes(':') ? 'udp6' : 'udp4';
const podOf = (msg: Buffer | string) => msg.toString().trim().split(' ')[0] ?? '?';

/** Socket errors that arrive between exchanges (an abort while we sleep), kept for the next one. */
const pendingErr = new WeakMap<UdpSocket, string>();
function track(sock: UdpSocket): UdpSocket {
  sock.on('error', (err: NodeJS.ErrnoException) => {
    if (sock.listenerCount('error') === 1) pendingErr.set(sock, err.code ?? 'ERROR');
  });
  return sock;
}

/** One datagram exchange on a socket; resolves with the reply and its source, or an error code. */
function exchange(sock: UdpSocket, to?: [number, string], timeoutMs = 1000): Promise<{ pod?: string; from?: string; err?: string }> {
  const early = pendingErr.get(sock);
  if (early) {
    pendingErr.delete(sock);
    return Promise.resolve({ err: early });
  }
  return new Promise((resolve) => {
    const done = (r: { pod?: string; from?: string; err?: string }) => {
      clearTimeout(timer);
      sock.off('message', onMsg);
      sock.off('error', onErr);
      resolve(r);
    };
    const onMsg = (msg: Buffer, rinfo: { address: string; port: number }) => done({ pod: podOf(msg), from: `${rinfo.address}:${rinfo.port}` });
    const onErr = (err: NodeJS.ErrnoException) => done({ err: err.code ?? 'ERROR' });
    const timer = setTimeout(() => done({ err: 'ETIMEDOUT' }), timeoutMs);
    sock.on('message', onMsg);
    sock.on('error', onErr);
    const cb = (err: Error | null) => {
      if (err) done({ err: (err as NodeJS.ErrnoException).code ?? 'ERROR' });
    };
    if (to) sock.send('x', to[0], to[1], cb);
    else sock.send('x', cb);
  });
}

function udpConnect(sock: UdpSocket): Promise<string | undefined> {
  return new Promise((resolve) => sock.connect(port, host, (err?: Error) => resolve(err ? ((err as NodeJS.ErrnoException).code ?? 'ERROR') : undefined)));
}

async function holdTcp(n: number): Promise<void> {
  const socks: Socket[] = [];
  const errors: Record<string, number> = {};
  await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<void>((resolve) => {
        // Half-open: the server's FIN must not close our side before we ask.
        const s = connect({ host, port, allowHalfOpen: true });
        socks.push(s);
        s.on('connect', () => resolve());
        s.on('error', (e: NodeJS.ErrnoException) => {
          errors[e.code ?? 'ERROR'] = (errors[e.code ?? 'ERROR'] ?? 0) + 1;
          resolve();
        });
      }),
    ),
  );
  // Every socket is alive now; only now ask each for its peer.
  const peers: Record<string, number> = {};
  for (const s of socks) {
    const p = `${s.remoteAddress}:${s.remotePort}`;
    peers[p] = (peers[p] ?? 0) + 1;
  }
  emit({ peers, errors, open: socks.filter((s) => !s.destroyed).length });
  for (const s of socks) s.destroy();
}

async function holdUdp(n: number): Promise<void> {
  const socks: UdpSocket[] = [];
  const errors: Record<string, number> = {};
  const pods: Record<string, number> = {};
  const from: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const s = createSocket(UDP);
    socks.push(s);
    const err = await udpConnect(s);
    if (err) errors[err] = (errors[err] ?? 0) + 1;
  }
  for (const s of socks) {
    const r = await exchange(s);
    if (r.err) errors[r.err] = (errors[r.err] ?? 0) + 1;
    if (r.pod) pods[r.pod] = (pods[r.pod] ?? 0) + 1;
    if (r.from) from[r.from] = (from[r.from] ?? 0) + 1;
  }
  const peers: Record<string, number> = {};
  for (const s of socks) {
    let p = 'none';
    try {
      const r = s.remoteAddress();
      p = `${r.address}:${r.port}`;
    } catch {
      /* not connected */
    }
    peers[p] = (peers[p] ?? 0) + 1;
  }
  emit({ peers, pods, from, errors });
  for (const s of socks) s.close();
}

async function udpConv(count: number, interval: number): Promise<void> {
  const s = createSocket(UDP);
  for (let i = 0; i < count; i++) {
    // When it was sent: the backend is chosen then, whenever the reply comes.
    const sent = Date.now();
    emit({ sent, ...(await exchange(s, [port, host])) });
    if (interval) await sleep(interval);
  }
  s.close();
}

async function udpConnected(ms: number, interval: number): Promise<void> {
  const s = track(createSocket(UDP));
  const end = Date.now() + ms;
  let err = await udpConnect(s);
  emit({ connect: err ?? 'ok' });
  while (Date.now() < end) {
    const r = await exchange(s, undefined, 500);
    emit(r);
    if (r.err && r.err !== 'ETIMEDOUT') {
      // What an application does after an error: connect again.
      try {
        s.disconnect();
      } catch {
        /* the kernel already disconnected it */
      }
      err = await udpConnect(s);
      emit({ connect: err ?? 'ok' });
    }
    await sleep(interval);
  }
  s.close();
  emit({ done: true });
}

async function tcpEcho(ms: number, interval: number): Promise<void> {
  const s = connect({ host, port });
  const end = Date.now() + ms;
  let failed = false;
  s.on('connect', () => emit({ connect: 'ok', peer: `${s.remoteAddress}:${s.remotePort}` }));
  s.on('data', (d) => {
    for (const line of d.toString().split('\n').filter(Boolean)) emit({ pod: line });
  });
  s.on('error', (e: NodeJS.ErrnoException) => {
    failed = true;
    emit({ err: e.code ?? 'ERROR' });
  });
  let ending = false;
  s.on('close', () => {
    failed = true;
    if (!ending) emit({ closed: true });
  });
  while (!failed && Date.now() < end) {
    s.write('x\n');
    await sleep(interval);
  }
  ending = true;
  s.destroy();
  emit({ done: true });
}

async function udpMulti(ports: number[], rounds: number): Promise<void> {
  const s = createSocket(UDP);
  for (let r = 0; r < rounds; r++) for (const p of ports) emit({ port: p, ...(await exchange(s, [p, host])) });
  s.close();
}

function udpServer(ports: number[], name: string): void {
  let up = 0;
  for (const p of ports) {
    const s = createSocket(UDP);
    s.on('message', (_m, rinfo) => s.send(`${name}\n`, rinfo.port, rinfo.address));
    s.bind(p, host, () => {
      if (++up === ports.length) process.stdout.write('ready\n');
    });
  }
  process.on('SIGTERM', () => process.exit(0));
}

function echoServer(name: string): void {
  const srv = createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.on('data', (d) => {
      for (const _ of d.toString().split('\n').filter(Boolean)) sock.write(`${name}\n`);
    });
  });
  srv.listen(port, host, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
}

switch (mode) {
  case 'echo-server':
    echoServer(a3);
    break;
  case 'udp-server':
    udpServer(portStr.split(',').map(Number), a3);
    break;
  case 'udp-multi':
    await udpMulti(portStr.split(',').map(Number), Number(a3));
    break;
  case 'hold-tcp':
    await holdTcp(Number(a3));
    break;
  case 'hold-udp':
    await holdUdp(Number(a3));
    break;
  case 'udp-conv':
    await udpConv(Number(a3), Number(a4));
    break;
  case 'udp-connected':
    await udpConnected(Number(a3), Number(a4));
    break;
  case 'tcp-echo':
    await tcpEcho(Number(a3), Number(a4));
    break;
  default:
    throw new Error(`sockclient: unknown mode ${mode}`);
}
