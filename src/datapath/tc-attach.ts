/**
 * Keeps kpr's tc programs on the right devices: host-facing devices named by
 * --devices, and pod veths matching --workload-ifaces, attached as they
 * appear. `ip monitor link` wakes us on changes; a slow poll backs it up in
 * case the monitor dies. A veth that goes away takes its filters with it, so
 * detaching is the kernel's job; we only forget it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../log.js';
import type { Datapath } from './datapath.js';
import { listLinks } from '../util/netdev.js';
import type { TcRole } from './names.js';

function globToRegExp(glob: string): RegExp {
  const esc = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}

export interface TcAttachOptions {
  devices: string[];
  workloadIfaces?: string | undefined;
  log: Logger;
  pollMs?: number;
}

export class TcAttacher {
  /** ifindex -> name, of what we attached */
  private attached = new Map<number, string>();
  private monitor: ChildProcess | undefined;
  private poller: NodeJS.Timeout | undefined;
  private pending: Promise<void> = Promise.resolve();
  private readonly workload: RegExp | undefined;
  private stopped = false;

  constructor(
    private readonly dp: Datapath,
    private readonly opts: TcAttachOptions,
  ) {
    this.workload = opts.workloadIfaces ? globToRegExp(opts.workloadIfaces) : undefined;
  }

  roleOf(ifname: string): TcRole | undefined {
    if (this.opts.devices.includes(ifname)) return 'host';
    if (this.workload?.test(ifname)) return 'pod';
    return undefined;
  }

  /** Attach to every matching device now; re-attaching replaces programs atomically. */
  async start(): Promise<void> {
    const links = await listLinks();
    for (const d of this.opts.devices) {
      if (!links.some((l) => l.ifname === d)) throw new Error(`--devices: no interface named ${d} in this network namespace`);
    }
    await this.sync(true);
    // The periodic scan also retries devices whose attach failed.
    this.poller = setInterval(() => this.kick(), this.opts.pollMs ?? 5000);
    this.poller.unref();
    if (!this.workload) return;
    this.monitor = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.monitor.stdout?.on('data', () => this.kick());
    this.monitor.on('exit', () => {
      if (!this.stopped) this.opts.log.warn('ip monitor exited; relying on the periodic scan for new veths');
    });
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.monitor?.kill();
    if (this.poller) clearInterval(this.poller);
    return this.pending;
  }

  /** --devices interfaces without our programs (an attach failed): readiness waits for them. */
  missingDevices(): string[] {
    const have = new Set(this.attached.values());
    return this.opts.devices.filter((d) => !have.has(d));
  }

  attachedNames(): string[] {
    return [...this.attached.values()].sort();
  }

  private kick(): void {
    this.pending = this.pending.then(() => this.sync(false)).catch((err) => this.opts.log.error({ err }, 'tc attach scan failed'));
  }

  private async sync(all: boolean): Promise<void> {
    if (this.stopped && !all) return;
    const links = await listLinks();
    const present = new Set(links.map((l) => l.ifindex));
    for (const idx of [...this.attached.keys()]) {
      if (!present.has(idx)) {
        this.opts.log.info({ iface: this.attached.get(idx) }, 'interface gone; its tc filters went with it');
        this.attached.delete(idx);
      }
    }
    for (const link of links) {
      const role = this.roleOf(link.ifname);
      if (!role) continue;
      if (!all && this.attached.get(link.ifindex) === link.ifname) continue;
      try {
        this.dp.attachTc(link.ifname, role);
        this.attached.set(link.ifindex, link.ifname);
        this.opts.log.info({ iface: link.ifname, role }, 'tc programs attached');
      } catch (err) {
        // A veth may vanish between listing and attaching.
        this.opts.log.warn({ iface: link.ifname, err: (err as Error).message }, 'tc attach failed; will retry');
      }
    }
  }
}
