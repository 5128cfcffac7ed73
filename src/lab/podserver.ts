/**
 * A pod's server for the lab, demo and tests: TCP and UDP on one port,
 * answering with the pod's name and the client address it saw, so a test can
 * tell which backend served it and whether the source was preserved.
 */
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { sendBytes } from './bulk.js';

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : dflt;
  if (v === undefined) throw new Error(`podserver: --${name} is required`);
  return v;
}

const name = arg('name');
const port = Number(arg('port'));

/** The pod's IPv6 address in a dual-stack lab: every server listens there too. */
const host6 = process.argv.includes('--host6') ? arg('host6') : undefined;
/** The pod's IPv4 address; an IPv6-only pod (--host6 alone) has none. */
const host = process.argv.includes('--host') || !host6 ? arg('host', '0.0.0.0') : undefined;
const hosts = [host, host6].filter((h): h is string => h !== undefined);

function serve(addr: string, type: 'udp4' | 'udp6') {
  const tcp = createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.end(`${name} ${sock.remoteAddress}:${sock.remotePort}\n`);
  });
  tcp.listen(port, addr);
  const udp = createSocket({ type, ipv6Only: type === 'udp6' });
  udp.on('message', (msg, rinfo) => {
    udp.send(`${name} ${rinfo.address}:${rinfo.port}\n`, rinfo.port, rinfo.address);
  });
  udp.bind(port, addr);
  tcp.on('listening', up);
  udp.on('listening', up);
}

// HTTP on another port, for load generators such as wrk.
const httpPort = process.argv.includes('--http-port') ? Number(arg('http-port')) : undefined;
// Bulk transfers on a third: the client sends "<download> <upload>\n" and
// <upload> bytes; the pod answers "<name> <client> <bytes received>\n" and
// then <download> bytes. Large enough to be sent as GSO/GRO segments.
const bulkPort = process.argv.includes('--bulk-port') ? Number(arg('bulk-port')) : undefined;
const servers = hosts.length * (2 + (httpPort ? 1 : 0) + (bulkPort ? 1 : 0));
let ready = 0;
function up() {
  if (++ready === servers) process.stdout.write(`ready ${name}\n`);
}
if (host) serve(host, 'udp4');
if (host6) serve(host6, 'udp6');
if (httpPort) {
  for (const h of hosts) {
    const http = createHttpServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(`${name} ${req.socket.remoteAddress}\n`);
    });
    http.keepAliveTimeout = 5000;
    http.listen(httpPort, h, up);
  }
}
if (bulkPort) {
  const MAX = 64 << 20;
  const bulk = () => createServer((sock) => {
    sock.on('error', () => sock.destroy());
    let head = '';
    let want = -1;
    let down = 0;
    let got = 0;
    const answer = () => {
      sock.write(`${name} ${sock.remoteAddress}:${sock.remotePort} ${got}\n`);
      sendBytes(sock, down, 0x62, () => sock.end());
    };
    sock.on('data', (d: Buffer) => {
      if (want < 0) {
        head += d.toString('latin1');
        const nl = head.indexOf('\n');
        if (nl < 0) return;
        const [a, b] = head.slice(0, nl).split(' ').map(Number);
        if (!Number.isInteger(a) || !Number.isInteger(b) || a! < 0 || b! < 0 || a! > MAX || b! > MAX) return void sock.destroy();
        down = a!;
        want = b!;
        got = head.length - nl - 1;
      } else got += d.length;
      if (got >= want) {
        sock.removeAllListeners('data');
        answer();
      }
    });
  });
  for (const h of hosts) bulk().listen(bulkPort, h, up);
}
process.on('SIGTERM', () => process.exit(0));
