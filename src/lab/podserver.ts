/**
 * A pod's server for the lab, demo and tests: TCP and UDP on one port,
 * answering with the pod's name and the client address it saw, so a test can
 * tell which backend served it and whether the source was preserved.
 */
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';

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
const servers = httpPort ? 3 : 2;
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
process.on('SIGTERM', () => process.exit(0));
