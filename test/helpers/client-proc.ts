/**
 * A test/helpers/sockclient.ts process in a namespace (and cgroup), whose
 * JSON event lines can be awaited as they come.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { nodeArgv, wrapArgv } from '../../src/lab/exec.js';
import { repoRoot } from '../../src/util/paths.js';

export const CLIENT = join(repoRoot(), 'test', 'helpers', 'sockclient.ts');

export type Ev = { t: number; sent?: number; pod?: string; from?: string; err?: string; connect?: string; done?: boolean; closed?: boolean; [k: string]: unknown };

/** A client process whose JSON event lines can be awaited as they come. */
export class Client {
  readonly events: Ev[] = [];
  private readonly proc: ChildProcess;
  private readonly exited: Promise<unknown>;
  private waiters: Array<() => void> = [];
  stderr = '';

  constructor(where: { netns: string; cgroup?: string }, args: string[]) {
    const [cmd, a] = wrapArgv(process.execPath, [...nodeArgv(CLIENT), ...args], where);
    this.proc = spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.proc.stdout?.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) this.events.push(JSON.parse(line) as Ev);
        else if (line === 'ready') this.events.push({ t: Date.now(), ready: true });
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.proc.stderr?.on('data', (d) => (this.stderr += d.toString()));
    this.exited = once(this.proc, 'exit');
  }

  async waitFor(pred: (evs: Ev[]) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > end || this.proc.exitCode !== null) {
        if (pred(this.events)) return;
        throw new Error(`client: no ${what}; events ${JSON.stringify(this.events.slice(-20))} stderr ${this.stderr}`);
      }
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), new Promise((r) => setTimeout(r, 100))]);
    }
  }

  async done(): Promise<Ev[]> {
    await this.exited;
    return this.events;
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}
