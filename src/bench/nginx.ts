/**
 * nginx from Debian as the benchmark backend, one per pod namespace, with
 * our own minimal configuration in a temporary directory (never the system
 * nginx or its config). It answers every request with the pod's name, so a
 * check can count which backends were reached.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, spawnIn } from '../lab/exec.js';

export function nginxConfig(o: { dir: string; name: string; ip: string; port: number }): string {
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
  server {
    listen ${o.ip}:${o.port} backlog=4096;
    location / {
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
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig({ dir, name: o.name, ip: o.ip, port: o.port }));
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
