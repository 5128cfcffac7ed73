/**
 * A client for the lab, demo and tests. It runs inside a netns (and a
 * cgroup, for the connect-time hooks), makes a bounded number of requests
 * within a bounded time, and prints one JSON summary: which pods answered,
 * the peer address the socket reported, the source address of UDP replies,
 * and errors by code.
 */
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { sendBytes } from './bulk.js';
import { PROBE_DEFAULTS, type ProbeResult } from './probe-result.js';

type Summary = ProbeResult;

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : dflt;
  if (v === undefined) throw new Error(`probe: --${name} is required`);
  return v;
}

const [mode, host, portStr] = process.argv.slice(2);
const port = Number(portStr);
const count = Number(arg('count', '1'));
const durationMs = Number(arg('duration', String(PROBE_DEFAULTS.durationMs)));
const intervalMs = Number(arg('interval', '0'));
const timeoutMs = Number(arg('timeout', String(PROBE_DEFAULTS.timeoutMs)));
const connected = process.argv.includes('--connected');
const trace = process.argv.includes('--trace');
const bindAddr = process.argv.includes('--bind') ? arg('bind') : undefined;
const bindPort = process.argv.includes('--bind-port') ? Number(arg('bind-port')) : undefined;
/** Stop early once this file exists (a test ends a loop when its scenario is over). */
const stopFile = process.argv.includes('--stop-file') ? arg('stop-file') : undefined;
/** UDP payload size, to test path MTU handling */
const size = process.argv.includes('--size') ? Number(arg('size')) : 5;
/** bulk mode: bytes to receive and to send per connection */
const download = Number(arg('download', '0'));
const upload = Number(arg('upload', '0'));

const s: Summary = { proto: mode ?? '', ok: 0, errors: {}, pods: {}, peers: {}, seenAs: {}, elapsedMs: 0 };
const inc = (m: Record<string, number>, k: string, detail = '') => {
  // with --trace, when each error happened: that says what caused it
  if (trace && m === s.errors) (s.errorTrace ??= []).push([Date.now(), k + detail]);
  m[k] = (m[k] ?? 0) + 1;
};

function record(reply: string, peer: string): void {
  const [pod, seen] = reply.trim().split(' ');
  if (trace) (s.trace ??= []).push([Date.now(), pod ?? '?']);
  s.ok++;
  inc(s.pods, pod ?? '?');
  inc(s.seenAs, (seen ?? '?').replace(/:\d+$/, ''));
  inc(s.peers, peer);
}

function tcpOnce(): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, ...(bindAddr ? { localAddress: bindAddr } : {}) });
    let data = '';
    let peer = '?';
    const started = Date.now();
    const timer = setTimeout(() => {
      // A timer that fires late means this process was starved of CPU: the
      // answer may have been waiting behind it. The trace says so.
      // Whether the handshake completed tells a lost SYN or SYN-ACK (the
      // data path) from a server that did not answer in time.
      const late = Date.now() - started - timeoutMs;
      const stage = peer === '?' ? 'no SYN-ACK' : 'connected, no reply';
      inc(s.errors, 'ETIMEDOUT', ` (${stage}, port ${sock.localPort ?? '?'}${late > 100 ? `, timer ${late} ms late` : ''})`);
      sock.destroy();
      resolve();
    }, timeoutMs);
    sock.on('connect', () => (peer = `${sock.remoteAddress}:${sock.remotePort}`));
    sock.on('data', (d) => (data += d.toString()));
    sock.on('end', () => {
      clearTimeout(timer);
      if (data) record(data, peer);
      else inc(s.errors, 'EMPTY');
      resolve();
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      inc(s.errors, err.code ?? 'ERROR');
      sock.destroy();
      resolve();
    });
  });
}

/** The body of a complete HTTP/1.1 response (Content-Length or chunked), else undefined. */
function http1Body(data: string): string | undefined {
  const head = data.indexOf('\r\n\r\n');
  if (head < 0) return undefined;
  const headers = data.slice(0, head);
  let rest = data.slice(head + 4);
  const len = /\r\ncontent-length: *(\d+)/i.exec(headers);
  if (len) return rest.length >= Number(len[1]) ? rest.slice(0, Number(len[1])) : undefined;
  if (!/\r\ntransfer-encoding: *chunked/i.test(headers)) return undefined;
  let body = '';
  for (;;) {
    const eol = rest.indexOf('\r\n');
    if (eol < 0) return undefined;
    const size = parseInt(rest.slice(0, eol), 16);
    if (Number.isNaN(size) || rest.length < eol + 2 + size + 2) return undefined;
    if (size === 0) return body;
    body += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

/**
 * One connection with a bounded life, for an exchange `run` drives: it calls
 * `fail` with an error code, or `ok` with the reply to record.
 */
function exchange(run: (sock: Socket, fail: (code: string) => void, ok: (reply: string) => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, ...(bindAddr ? { localAddress: bindAddr } : {}) });
    let peer = '?';
    const finish = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    };
    const fail = (code: string) => {
      inc(s.errors, code);
      finish();
    };
    const timer = setTimeout(() => fail('ETIMEDOUT'), timeoutMs);
    sock.on('connect', () => (peer = `${sock.remoteAddress}:${sock.remotePort}`));
    sock.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? 'ERROR'));
    run(sock, fail, (reply) => {
      record(reply, peer);
      finish();
    });
  });
}

/**
 * One HTTP/1.1 request on a new connection that the server keeps alive: the
 * client reads the answer and closes first, so the server does not hold the
 * tuple in TIME_WAIT (tcpOnce's server closes first).
 */
function http1Once(): Promise<void> {
  return exchange((sock, fail, ok) => {
    let data = '';
    let body: string | undefined;
    sock.on('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`));
    sock.on('data', (d) => {
      data += d.toString();
      if (body === undefined && (body = http1Body(data)) !== undefined) sock.end();
    });
    sock.on('end', () => (body === undefined ? fail('EMPTY') : ok(body)));
  });
}

/** One bulk exchange: upload, then read the reply line and the download. */
function bulkOnce(): Promise<void> {
  return exchange((sock, fail, ok) => {
    const parts: Buffer[] = [];
    sock.on('connect', () => {
      sock.write(`${download} ${upload}\n`);
      sendBytes(sock, upload, 0x61);
    });
    sock.on('data', (d: Buffer) => parts.push(d));
    sock.on('end', () => {
      const all = Buffer.concat(parts);
      const nl = all.indexOf(0x0a);
      const line = nl < 0 ? '' : all.subarray(0, nl).toString();
      const received = Number(line.split(' ')[2]);
      if (nl < 0) return fail('EMPTY');
      if (received !== upload) return fail('SHORT_UPLOAD');
      if (all.length - nl - 1 !== download) return fail('SHORT_DOWNLOAD');
      ok(line);
    });
  });
}

let shared: ReturnType<typeof createSocket> | undefined;
/** An IPv6 destination (::ffff:a.b.c.d included) needs an AF_INET6 socket. */
const udpType = host?.includes(':') ? 'udp6' : 'udp4';

/** One socket for the whole run when the source port is fixed. */
async function udpSocket(): Promise<ReturnType<typeof createSocket>> {
  if (bindPort === undefined) {
    const sock = createSocket(udpType);
    if (bindAddr) await new Promise<void>((r) => sock.bind(0, bindAddr, r));
    return sock;
  }
  if (!shared) {
    shared = createSocket({ type: udpType, reuseAddr: true });
    await new Promise<void>((r) => shared!.bind(bindPort, bindAddr, r));
  }
  return shared;
}

function udpOnce(): Promise<void> {
  return udpSocket().then((sock) => udpExchange(sock));
}

function udpExchange(sock: ReturnType<typeof createSocket>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      sock.removeListener('message', onMessage);
      sock.removeListener('error', onError);
      if (sock !== shared) sock.close();
      resolve();
    };
    const timer = setTimeout(() => {
      inc(s.errors, 'ETIMEDOUT');
      done();
    }, timeoutMs);
    const onMessage = (msg: Buffer, rinfo: { address: string; port: number }) => {
      // rinfo comes from recvmsg: the hook should make it the Service address.
      let peer = `${rinfo.address}:${rinfo.port}`;
      if (connected) {
        const r = sock.remoteAddress();
        peer += ` peer=${r.address}:${r.port}`;
      }
      record(msg.toString(), peer);
      done();
    };
    const onError = (err: NodeJS.ErrnoException) => {
      inc(s.errors, err.code ?? 'ERROR');
      done();
    };
    sock.on('message', onMessage);
    sock.on('error', onError);
    if (connected) {
      // On failure the callback gets the error (ECONNREFUSED from the hook).
      sock.connect(port, host, (err?: Error) => {
        if (err) {
          inc(s.errors, (err as NodeJS.ErrnoException).code ?? 'ERROR');
          done();
        } else sock.send('hello');
      });
    } else {
      sock.send(size === 5 ? 'hello' : Buffer.alloc(size, 0x61), port, host);
    }
  });
}

async function httpOnce(): Promise<void> {
  // host is a full URL in http mode
  try {
    const res = await fetch(host ?? '', { signal: AbortSignal.timeout(timeoutMs) });
    s.body = await res.text();
    s.status ??= {};
    inc(s.status, String(res.status));
    s.ok++;
  } catch (err) {
    inc(s.errors, (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name);
  }
}

const start = Date.now();
for (let i = 0; i < count && Date.now() - start < durationMs && !(stopFile && existsSync(stopFile)); i++) {
  await (mode === 'udp' ? udpOnce() : mode === 'http' ? httpOnce() : mode === 'bulk' ? bulkOnce() : mode === 'http1' ? http1Once() : tcpOnce());
  if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
}
shared?.close();
s.elapsedMs = Date.now() - start;
process.stdout.write(JSON.stringify(s) + '\n');
