/**
 * nginx from Debian as the benchmark backend, one per pod namespace, with
 * our own minimal configuration in a temporary directory (never the system
 * nginx or its config). It answers every request with the pod's name, so a
 * check can count which backends were reached. For S6's transfers it also
 * serves static files of TRANSFER_SIZES bytes (/files/<name>, sendfile) and
 * takes POST bodies up to 2 MB on /upload, answering 200 without storing
 * them (nginx reads and discards the body for `return`).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, open, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { run, spawnIn } from 'kpr/lab';
import { hostPort } from './model.js';

/** S6's response files: name -> size in bytes. */
export const TRANSFER_SIZES: Record<string, number> = { '1m': 1 << 20, '10m': 10 << 20 };
/** The largest POST body /upload takes. */
export const UPLOAD_MAX = '2m';

/**
 * The static files, written once per lab (all pods serve the same bytes).
 * nginx's workers drop root, so the files and every directory above them
 * must be readable by others (the lab's mkdtemp directory is 0700).
 */
export async function writeTransferFiles(www: string): Promise<void> {
  await chmod(dirname(www), 0o711);
  await mkdir(www, { recursive: true, mode: 0o755 });
  const chunk = Buffer.alloc(1 << 20, 0x61);
  for (const [name, size] of Object.entries(TRANSFER_SIZES)) {
    const path = join(www, name);
    if (existsSync(path)) continue;
    const fh = await open(path, 'w', 0o644);
    try {
      for (let n = 0; n < size; n += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, size - n));
    } finally {
      await fh.close();
    }
  }
}

export function nginxConfig(o: { dir: string; name: string; ip: string; port: number; www: string }): string {
  const d = o.dir;
  return `# kpr bench backend ${o.name}: generated, lives in ${d}
worker_processes 1;
daemon off;
master_process on;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path ${d}/body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  sendfile on;
  tcp_nopush on;
  server {
    listen ${hostPort(o.ip, o.port)} backlog=4096;
    location / {
      add_header X-Pod ${o.name};
      return 200 "${o.name}\\n";
    }
    location /files/ {
      alias ${o.www}/;
      add_header X-Pod ${o.name};
    }
    location = /upload {
      client_max_body_size ${UPLOAD_MAX};
      client_body_buffer_size ${UPLOAD_MAX};
      # Read the whole body before answering: \`return\` alone answers
      # first and discards the body after, and wrk then writes its next
      # request into the unsent rest of the body (the connection stalls).
      # A mirror with mirror_request_body reads the body in the precontent
      # phase; the static handler then finds no file "upload" (404, or 405
      # for a POST to a file), and error_page turns that into the answer.
      mirror /sink;
      mirror_request_body on;
      root ${o.www};
      log_not_found off;
      error_page 404 405 =200 @uploaded;
    }
    location = /sink {
      internal;
      return 204;
    }
    location @uploaded {
      add_header X-Pod ${o.name};
      return 200 "${o.name}\\n";
    }
  }
}
`;
}

export interface NginxHandle {
  name: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Wait until ip:port accepts a TCP connection from inside netns (bounded). */
async function waitListening(netns: string, ip: string, port: number, timeoutMs: number, proc: ChildProcess): Promise<void> {
  const end = Date.now() + timeoutMs;
  // The check runs in the pod's namespace with a tiny node one-liner: the
  // backend listens on the pod IP only.
  const script = `const s=require('net').connect(${port},'${ip}');s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),500)`;
  while (Date.now() < end) {
    if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode} before listening`);
    if (await probeOnce(netns, script)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx on ${ip}:${port} did not start listening within ${timeoutMs} ms`);
}

async function probeOnce(netns: string, script: string): Promise<boolean> {
  try {
    await run('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { timeoutMs: 2000 });
    return true;
  } catch {
    return false;
  }
}

export async function startNginx(o: { baseDir: string; name: string; netns: string; ip: string; port: number; cpu?: string }): Promise<NginxHandle> {
  const dir = join(o.baseDir, `nginx-${o.name}`);
  await mkdir(dir, { recursive: true });
  const www = join(o.baseDir, 'www');
  await writeTransferFiles(www);
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig({ dir, name: o.name, ip: o.ip, port: o.port, www }));
  // ip netns exec and taskset both exec in place, so proc.pid is nginx's master.
  const args = ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')];
  const proc = o.cpu ? spawnIn({ netns: o.netns }, 'taskset', ['-c', o.cpu, 'nginx', ...args]) : spawnIn({ netns: o.netns }, 'nginx', args);
  let stderr = '';
  proc.stderr?.on('data', (d) => (stderr += d.toString()));
  proc.stdout?.resume();
  try {
    await waitListening(o.netns, o.ip, o.port, 10_000, proc);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`);
  }
  return {
    name: o.name,
    proc,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = once(proc, 'exit');
      proc.kill('SIGTERM'); // nginx: fast shutdown; the master stops its worker
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
