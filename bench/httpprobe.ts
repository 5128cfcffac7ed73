/**
 * HTTP client for the benchmark's checks (not its load: that is wrk).
 * Runs inside the node namespace (and a cgroup) as its own process.
 *
 *   httpprobe count HOST PORT --count N [--timeout MS]
 *       N requests, each on a new connection; prints {"ok","errors","pods"}
 *       where pods counts the pod names the backends answered with.
 *   httpprobe latency HOST PORT --count N [--timeout MS] [--duration MS]
 *       N sequential requests, each on a new connection; for each, the time
 *       from just before connect() to the first response byte, in ms
 *       (sub-ms). Prints {"samplesMs":[...],"errors":{...}}. Bounded by
 *       count and --duration.
 *   httpprobe watch HOST PORT
 *       reads lines "want POD DEADLINE_MS" on stdin; for each, connects again
 *       and again until POD answers (or the deadline passes) and prints
 *       {"pod","at","tries"} with `at` on the epoch clock in ms (sub-ms), so
 *       the parent can subtract the moment it changed the manifest.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const [mode, host, portStr] = process.argv.slice(2);
const port = Number(portStr);
function flag(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
}
const timeoutMs = Number(flag('timeout', '2000'));
const now = () => performance.timeOrigin + performance.now();

/** One request on a new connection: the body (pod name) or an error code, and when its first byte came. */
function once(): Promise<{ pod?: string; error?: string; firstByteMs?: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let firstByteMs: number | undefined;
    const sock = connect({ host: host as string, port });
    let data = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ error: 'ETIMEDOUT' });
    }, timeoutMs);
    sock.on('connect', () => sock.write(`GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`));
    sock.on('data', (d) => {
      firstByteMs ??= performance.now() - t0;
      data += d.toString();
    });
    sock.on('end', () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.\d (\d+)/.exec(data)?.[1];
      const body = data.split('\r\n\r\n')[1]?.trim();
      if (status !== '200' || !body) resolve({ error: `HTTP_${status ?? 'NONE'}` });
      else resolve({ pod: body, ...(firstByteMs !== undefined ? { firstByteMs } : {}) });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ error: err.code ?? 'ERROR' });
    });
  });
}

if (mode === 'count') {
  const count = Number(flag('count', '10'));
  const s = { ok: 0, errors: {} as Record<string, number>, pods: {} as Record<string, number> };
  const end = Date.now() + Number(flag('duration', '30000'));
  for (let i = 0; i < count && Date.now() < end; i++) {
    const r = await once();
    if (r.pod) {
      s.ok++;
      s.pods[r.pod] = (s.pods[r.pod] ?? 0) + 1;
    } else if (r.error) s.errors[r.error] = (s.errors[r.error] ?? 0) + 1;
  }
  process.stdout.write(JSON.stringify(s) + '\n');
} else if (mode === 'latency') {
  const count = Number(flag('count', '100'));
  const end = Date.now() + Number(flag('duration', '30000'));
  const s = { samplesMs: [] as number[], errors: {} as Record<string, number> };
  for (let i = 0; i < count && Date.now() < end; i++) {
    const r = await once();
    if (r.pod && r.firstByteMs !== undefined) s.samplesMs.push(Math.round(r.firstByteMs * 1000) / 1000);
    else if (r.error) s.errors[r.error] = (s.errors[r.error] ?? 0) + 1;
  }
  process.stdout.write(JSON.stringify(s) + '\n');
} else if (mode === 'watch') {
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, pod, deadline] = line.trim().split(' ');
    if (cmd !== 'want' || !pod) continue;
    const until = Number(deadline);
    let tries = 0;
    let at: number | undefined;
    while (now() < until) {
      tries++;
      const r = await once();
      if (r.pod === pod) {
        at = now();
        break;
      }
    }
    process.stdout.write(JSON.stringify({ pod, at: at ?? null, tries }) + '\n');
  }
} else {
  process.stderr.write('usage: httpprobe count|latency|watch HOST PORT ...\n');
  process.exit(2);
}
