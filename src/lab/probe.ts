/**
 * A client for the lab, demo and tests. It runs inside a netns (and a
 * cgroup, for the connect-time hooks), makes a bounded number of requests
 * within a bounded time, and prints one JSON summary: which pods answered,
 * the peer address the socket reported, the source address of UDP replies,
 * and errors by code.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';

interface Summary {
  proto: string;
  ok: number;
  errors: Record<string, number>;
  /** pod name -> replies */
  pods: Record<string, number>;
  /** what getpeername / the reply source said -> count */
  peers: Record<string, number>;
  /** client address the pod saw -> count */
  seenAs: Record<string, number>;
  elapsedMs: number;
}

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : dflt;
  if (v === undefined) throw new Error(`probe: --${name} is required`);
  return v;
}

const [mode, host, portStr] = process.argv.slice(2);
const port = Number(portStr);
const count = Number(arg('count', '1'));
const durationMs = Number(arg('duration', '10000'));
const intervalMs = Number(arg('interval', '0'));
const timeoutMs = Number(arg('timeout', '2000'));
const connected = process.argv.includes('--connected');

const s: Summary = { proto: mode ?? '', ok: 0, errors: {}, pods: {}, peers: {}, seenAs: {}, elapsedMs: 0 };
const inc = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

function record(reply: string, peer: string): void {
  const [pod, seen] = reply.trim().split(' ');
  s.ok++;
  inc(s.pods, pod ?? '?');
  inc(s.seenAs, (seen ?? '?').replace(/:\d+$/, ''));
  inc(s.peers, peer);
}

function tcpOnce(): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    let data = '';
    let peer = '?';
    const timer = setTimeout(() => {
      inc(s.errors, 'ETIMEDOUT');
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

function udpOnce(): Promise<void> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    const done = () => {
      clearTimeout(timer);
      sock.close();
      resolve();
    };
    const timer = setTimeout(() => {
      inc(s.errors, 'ETIMEDOUT');
      done();
    }, timeoutMs);
    sock.on('message', (msg, rinfo) => {
      // rinfo comes from recvmsg: the hook should make it the Service address.
      let peer = `${rinfo.address}:${rinfo.port}`;
      if (connected) {
        const r = sock.remoteAddress();
        peer += ` peer=${r.address}:${r.port}`;
      }
      record(msg.toString(), peer);
      done();
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      inc(s.errors, err.code ?? 'ERROR');
      done();
    });
    if (connected) {
      // On failure the callback gets the error (ECONNREFUSED from the hook).
      sock.connect(port, host, (err?: Error) => {
        if (err) {
          inc(s.errors, (err as NodeJS.ErrnoException).code ?? 'ERROR');
          done();
        } else sock.send('hello');
      });
    } else {
      sock.send('hello', port, host);
    }
  });
}

const start = Date.now();
for (let i = 0; i < count && Date.now() - start < durationMs; i++) {
  await (mode === 'udp' ? udpOnce() : tcpOnce());
  if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
}
s.elapsedMs = Date.now() - start;
process.stdout.write(JSON.stringify(s) + '\n');
