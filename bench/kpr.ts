/**
 * kpr as the benchmark runs it: `kpr run` as a child process (compiled or
 * under tsx, following what this module runs as), with its JSON log lines
 * collected so the bench can wait for "synced" and count syncs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { cleanup, ownScript } from 'kpr';
import { nodeArgv, run } from 'kpr/lab';

/** kpr's own CLI entry, compiled or not. */
export function cliScript(): string {
  return ownScript('cli');
}

/** A sibling bench script, compiled or not, as this module runs. */
export function benchScript(name: string): string {
  const self = new URL(import.meta.url);
  return fileURLToPath(new URL(self.pathname.endsWith('.js') ? `./${name}.js` : `./${name}.ts`, self));
}

/** Which of these `kpr run` flags the CLI does not know (from its --help). */
export async function missingRunFlags(flags: string[]): Promise<string[]> {
  const help = await run(process.execPath, [...nodeArgv(cliScript()), 'run', '--help'], { allowFail: true, timeoutMs: 60_000 });
  if (!help) return flags;
  return flags.filter((f) => !help.includes(f));
}

export interface SyncLine {
  full: boolean;
  services: number;
  writes: number;
  deletes: number;
  failed: number;
  ms: number;
  /** when we read the line (epoch ms) */
  seenAt: number;
}

export class KprProcess {
  proc: ChildProcess | undefined;
  log = '';
  syncs: SyncLine[] = [];
  private waiters: Array<() => void> = [];

  constructor(
    readonly pinPath: string,
    readonly args: string[],
    /** Run inside this netns (for tc programs on its devices). */
    readonly netns?: string,
  ) {}

  start(): void {
    // No listeners: the bench's kpr instances must not open ports (in the
    // root namespace, or colliding with each other).
    const argv = [
      ...nodeArgv(cliScript()),
      'run',
      '--pin-path',
      this.pinPath,
      '--resync-interval',
      '0',
      '--healthz-bind-address=',
      '--metrics-bind-address=',
      '--healthcheck-bind-address=',
      ...this.args,
    ];
    // nsenter rather than `ip netns exec`, which remounts /sys and would hide
    // bpffs and the cgroup2 mount from kpr.
    const p = this.netns
      ? spawn('nsenter', [`--net=/run/netns/${this.netns}`, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    let buf = '';
    const onData = (d: Buffer) => {
      const text = d.toString();
      // Keep the log bounded: only the tail matters for error reports.
      this.log = (this.log + text).slice(-20_000);
      buf += text;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.includes('"synced"')) continue;
        try {
          const j = JSON.parse(line) as Partial<SyncLine> & { msg?: string };
          if (j.msg !== 'synced') continue;
          this.syncs.push({
            full: !!j.full,
            services: j.services ?? 0,
            writes: j.writes ?? 0,
            deletes: j.deletes ?? 0,
            failed: j.failed ?? 0,
            ms: j.ms ?? 0,
            seenAt: Date.now(),
          });
          for (const w of this.waiters.splice(0)) w();
        } catch {
          /* not a JSON line */
        }
      }
    };
    p.stdout?.on('data', onData);
    p.stderr?.on('data', onData);
    p.on('exit', () => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  get running(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Wait (bounded) until the n-th "synced" line (1-based) has arrived with no failures. */
  async waitSyncs(n: number, timeoutMs: number): Promise<SyncLine> {
    const end = Date.now() + timeoutMs;
    while (this.syncs.length < n) {
      if (!this.running) throw new Error(`kpr exited (${this.proc?.exitCode ?? this.proc?.signalCode}) before syncing:\n${this.log}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`kpr did not sync within ${timeoutMs} ms:\n${this.log.slice(-4000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const s = this.syncs[n - 1] as SyncLine;
    if (s.failed > 0) throw new Error(`kpr sync had ${s.failed} failed writes:\n${this.log.slice(-4000)}`);
    return s;
  }

  /** SIGTERM and wait; the pinned data path stays (cleanup() removes it). */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || !this.running) return;
    const exited = once(p, 'exit');
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }

  /**
   * Stop, then `kpr cleanup` where kpr ran: tc filters live on devices of
   * that namespace, and cleanup only sees the devices of its own.
   */
  async stopAndCleanup(): Promise<void> {
    await this.stop();
    if (this.netns) {
      await run('nsenter', [`--net=/run/netns/${this.netns}`, process.execPath, ...nodeArgv(cliScript()), 'cleanup', '--pin-path', this.pinPath], {
        timeoutMs: 60_000,
      });
    }
    await cleanup(this.pinPath);
  }
}
