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
const host = arg('host', '0.0.0.0');
const port = Number(arg('port'));

const tcp = createServer((sock) => {
  sock.on('error', () => sock.destroy());
  sock.end(`${name} ${sock.remoteAddress}:${sock.remotePort}\n`);
});
tcp.listen(port, host);

const udp = createSocket('udp4');
udp.on('message', (msg, rinfo) => {
  udp.send(`${name} ${rinfo.address}:${rinfo.port}\n`, rinfo.port, rinfo.address);
});
udp.bind(port, host);

// HTTP on another port, for load generators such as wrk.
const httpPort = process.argv.includes('--http-port') ? Number(arg('http-port')) : undefined;
// Bulk transfers on a third: the client sends "<download> <upload>\n" and
// <upload> bytes; the pod answers "<name> <client> <bytes received>\n" and
// then <download> bytes. Large enough to be sent as GSO/GRO segments.
const bulkPort = process.argv.includes('--bulk-port') ? Number(arg('bulk-port')) : undefined;
const servers = 2 + (httpPort ? 1 : 0) + (bulkPort ? 1 : 0);
let ready = 0;
const up = () => {
  if (++ready === servers) process.stdout.write(`ready ${name}\n`);
};
tcp.on('listening', up);
udp.on('listening', up);
if (httpPort) {
  const http = createHttpServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`${name} ${req.socket.remoteAddress}\n`);
  });
  http.keepAliveTimeout = 5000;
  http.listen(httpPort, host, up);
}
if (bulkPort) {
  const MAX = 64 << 20;
  const bulk = createServer((sock) => {
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
  bulk.listen(bulkPort, host, up);
}
process.on('SIGTERM', () => process.exit(0));
