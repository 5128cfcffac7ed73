/**
 * A one-node kpr lab for integration tests: namespaces with pods, a child
 * cgroup for the client, a private pin path, a manifest directory, and kpr
 * itself as a child process (so restarts are real process restarts).
 * teardown() removes all of it, by name, whatever state the test left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { cleanup, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows, type NatRow } from '../../src/inspect/nat.js';
import { nodeArgv, runIn, spawnIn } from '../../src/lab/exec.js';
import { labScript, NodeTopology, type TopologyFamily } from '../../src/lab/topology.js';
import { createChildCgroup, removeCgroup } from '../../src/util/cgroup.js';
import { repoRoot } from '../../src/util/paths.js';
import type { ProbeResult } from '../../src/lab/probe-result.js';
import { Teardown } from '../../src/lab/teardown.js';

export type { ProbeResult } from '../../src/lab/probe-result.js';

export class Harness {
  readonly topo: NodeTopology;
  readonly pinPath: string;
  cgroup = '';
  dir = '';
  kpr: ChildProcess | undefined;
  kprLog = '';

  constructor(readonly id: string, pods = 3, opts: { family?: TopologyFamily } = {}) {
    this.topo = new NodeTopology(id, pods, 8080, opts.family ?? 'ipv4');
    this.pinPath = `/sys/fs/bpf/kpr-test-${id}`;
  }

  async setup(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `kpr-${this.id}-`));
    this.cgroup = await createChildCgroup(`kpr-test-${this.id}`);
    await this.topo.create();
    await this.topo.startServers();
  }

  /** Atomic (write a dotfile, rename): kpr must never read a half-written, or empty, file. */
  async writeManifest(file: string, objects: unknown[]): Promise<void> {
    const tmp = join(this.dir, `.${file}.tmp`);
    await writeFile(tmp, objects.map((o) => stringify(o)).join('---\n'));
    await rename(tmp, join(this.dir, file));
  }

  async writeRaw(file: string, text: string): Promise<void> {
    await writeFile(join(this.dir, file), text);
  }

  async removeManifest(file: string): Promise<void> {
    await rm(join(this.dir, file), { force: true });
  }

  /** Where kpr reads Services from. */
  protected sourceArgs(): string[] {
    return ['--manifests', this.dir];
  }

  startKpr(extra: string[] = []): void {
    const cli = join(repoRoot(), 'src', 'cli.ts');
    this.kpr = spawn(
      process.execPath,
      [
        ...nodeArgv(cli),
        'run',
        ...this.sourceArgs(),
        '--pin-path',
        this.pinPath,
        '--cgroup',
        this.cgroup,
        '--resync-interval',
        '0',
        // This kpr runs in the root netns: fixed ports would collide with
        // any other kpr there (a parallel test run, a real install).
        '--healthz-bind-address',
        '127.0.0.1:0',
        '--metrics-bind-address',
        '127.0.0.1:0',
        ...extra,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.kpr.stdout?.on('data', (d) => (this.kprLog += d.toString()));
    this.kpr.stderr?.on('data', (d) => (this.kprLog += d.toString()));
  }

  async stopKpr(): Promise<number | null> {
    const p = this.kpr;
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
    const exited = once(p, 'exit');
    p.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    return code;
  }

  nat(): NatRow[] {
    return withPinnedMaps(this.pinPath, natRows);
  }

  /** Poll the pinned maps until cond holds (bounded). */
  async waitNat(cond: (rows: NatRow[]) => boolean, what: string, timeoutMs = 20_000): Promise<NatRow[]> {
    const end = Date.now() + timeoutMs;
    let last: NatRow[] = [];
    while (Date.now() < end) {
      try {
        last = this.nat();
        if (cond(last)) return last;
      } catch {
        /* maps not pinned yet */
      }
      if (this.kpr && this.kpr.exitCode !== null) throw new Error(`kpr exited (${this.kpr.exitCode}) while waiting for ${what}:\n${this.kprLog}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}; maps: ${JSON.stringify(last)}\nkpr log:\n${this.kprLog}`);
  }

  probeArgs(args: string[]): [string, string[]] {
    return [process.execPath, [...nodeArgv(labScript('probe')), ...args]];
  }

  /** Run the probe client in the node namespace, inside the test cgroup. */
  async probe(args: string[], inCgroup = true): Promise<ProbeResult> {
    const [cmd, a] = this.probeArgs(args);
    const out = await runIn({ netns: this.topo.nodeNs, ...(inCgroup ? { cgroup: this.cgroup } : {}) }, cmd, a, { timeoutMs: 120_000 });
    return JSON.parse(out) as ProbeResult;
  }

  /** Start a probe in the background; resolves with its summary. */
  probeInBackground(args: string[]): Promise<ProbeResult> {
    const [cmd, a] = this.probeArgs(args);
    const p = spawnIn({ netns: this.topo.nodeNs, cgroup: this.cgroup }, cmd, a);
    let out = '';
    p.stdout?.on('data', (d) => (out += d.toString()));
    return once(p, 'exit').then(() => JSON.parse(out) as ProbeResult);
  }

  async teardown(): Promise<void> {
    const t = new Teardown();
    const step = (fn: () => Promise<unknown>) => t.step(fn);
    await step(() => this.stopKpr());
    await step(() => cleanup(this.pinPath));
    await step(() => this.topo.destroy());
    await step(() => removeCgroup(this.cgroup));
    await step(() => rm(this.dir, { recursive: true, force: true }));
    t.finish('teardown');
  }
}
