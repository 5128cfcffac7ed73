/**
 * A container without a container engine: runc runs one process from an OCI
 * bundle, with the capabilities and the seccomp profile a kubelet would ask
 * for. The root filesystem is the host's own /usr and /etc, read-only, or
 * an image's root filesystem (deploy/build-image.sh, then `buildah mount`),
 * read-only too; the network namespace is one a test created, so the
 * container sees only what the test gave it. Used to check kpr's least-privilege deployment
 * (deploy/seccomp-kpr.json, deploy/no-sys-admin) for real.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** A seccomp profile as Docker, containerd and the kubelet read it (deploy/seccomp-kpr.json). */
export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  syscalls: Array<{
    names: string[];
    action: string;
    errnoRet?: number;
    args?: unknown[];
    includes?: { caps?: string[] };
    excludes?: { caps?: string[] };
  }>;
}

/**
 * The OCI form of a profile for a container holding `caps`: a rule with
 * `includes.caps` applies only when the container holds one of them, one
 * with `excludes.caps` only when it holds none, as the runtimes resolve
 * them when they build the container's spec.
 */
export function ociSeccomp(p: SeccompProfile, caps: string[]): object {
  const held = (list?: string[]) => (list ?? []).some((c) => caps.includes(c));
  const syscalls = p.syscalls
    .filter((s) => (s.includes?.caps ? held(s.includes.caps) : true) && !held(s.excludes?.caps))
    .map((s) => ({ names: s.names, action: s.action, ...(s.errnoRet !== undefined ? { errnoRet: s.errnoRet } : {}), ...(s.args ? { args: s.args } : {}) }));
  return {
    defaultAction: p.defaultAction,
    ...(p.defaultErrnoRet !== undefined ? { defaultErrnoRet: p.defaultErrnoRet } : {}),
    ...(p.architectures ? { architectures: p.architectures } : {}),
    syscalls,
  };
}

export interface ContainerSpec {
  args: string[];
  cwd: string;
  env?: string[];
  /** CAP_* names: bounding, effective and permitted alike, as a kubelet sets them for uid 0. */
  caps: string[];
  /** Docker-format profile; none means unconfined. */
  seccomp?: SeccompProfile;
  /** The network namespace to join (/run/netns/NAME). */
  netns: string;
  /** Extra bind mounts: host source -> container destination. */
  binds: Array<{ source: string; dest: string; readonly: boolean }>;
}

/** One bundle directory with its state root, so nothing is shared with another runc user. */
export class RuncBundle {
  readonly bundle: string;
  readonly stateRoot: string;
  private seq = 0;

  /** imageRootfs: an image's root filesystem to run in; none: the host's /usr and /etc. */
  constructor(readonly dir: string, readonly idPrefix: string, readonly imageRootfs?: string) {
    this.bundle = join(dir, 'bundle');
    this.stateRoot = join(dir, 'runc-state');
  }

  async create(): Promise<void> {
    await mkdir(this.bundle, { recursive: true });
    await mkdir(this.stateRoot, { recursive: true });
    if (this.imageRootfs) return;
    const rootfs = join(this.bundle, 'rootfs');
    await mkdir(rootfs, { recursive: true });
    // Debian's merged /usr: the top-level directories are links into it.
    for (const l of ['bin', 'sbin', 'lib', 'lib64']) await symlink(`usr/${l}`, join(rootfs, l)).catch(() => undefined);
  }

  config(spec: ContainerSpec, cgroupsPath: string): object {
    const ro = (source: string, dest: string) => ({ destination: dest, type: 'bind', source, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
    return {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid: 0, gid: 0 },
        args: spec.args,
        env: ['PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin', 'HOME=/tmp', ...(spec.env ?? [])],
        cwd: spec.cwd,
        capabilities: { bounding: spec.caps, effective: spec.caps, permitted: spec.caps },
        noNewPrivileges: true,
      },
      root: { path: this.imageRootfs ?? 'rootfs', readonly: true },
      hostname: 'kpr',
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=262144k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        ...(this.imageRootfs ? [] : [ro('/usr', '/usr'), ro('/etc', '/etc')]),
        ...spec.binds.map((b) => ({ destination: b.dest, type: 'bind', source: b.source, options: ['rbind', b.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'] })),
      ],
      linux: {
        // A pid namespace is left out on purpose: the DaemonSet runs with
        // hostPID, and kpr reads /proc/PID/ns/net of the pods' processes.
        namespaces: [{ type: 'mount' }, { type: 'ipc' }, { type: 'uts' }, { type: 'network', path: spec.netns }],
        cgroupsPath,
        ...(spec.seccomp ? { seccomp: ociSeccomp(spec.seccomp, spec.caps) } : {}),
        maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    };
  }

  private async prepare(spec: ContainerSpec): Promise<string> {
    const id = `${this.idPrefix}-${++this.seq}`;
    // Relative: under runc's own cgroups, so the test's limits still hold.
    await writeFile(join(this.bundle, 'config.json'), JSON.stringify(this.config(spec, id), null, 2));
    return id;
  }

  /** Run to completion; stdout and stderr together, with the exit code. */
  async run(spec: ContainerSpec, timeoutMs = 60_000): Promise<{ code: number | null; out: string }> {
    const p = await this.start(spec);
    const timer = setTimeout(() => void this.kill(p.id), timeoutMs);
    const code = await p.exited;
    clearTimeout(timer);
    await this.delete(p.id);
    return { code, out: p.output() };
  }

  /** Start in the background (runc in the foreground, as our child). */
  async start(spec: ContainerSpec): Promise<{ id: string; proc: ChildProcess; exited: Promise<number | null>; output: () => string }> {
    const id = await this.prepare(spec);
    const proc = spawn('runc', ['--root', this.stateRoot, 'run', '--bundle', this.bundle, id], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout?.on('data', (d) => (out += d.toString()));
    proc.stderr?.on('data', (d) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    return { id, proc, exited, output: () => out };
  }

  /** The container's process on the host (runc state). */
  async pid(id: string): Promise<number> {
    const { stdout } = await execFileP('runc', ['--root', this.stateRoot, 'state', id]);
    return (JSON.parse(stdout) as { pid: number }).pid;
  }

  async kill(id: string): Promise<void> {
    await execFileP('runc', ['--root', this.stateRoot, 'kill', id, 'KILL']).catch(() => undefined);
  }

  async delete(id: string): Promise<void> {
    await execFileP('runc', ['--root', this.stateRoot, 'delete', '--force', id]).catch(() => undefined);
  }

  /** Every container this bundle started, then the directory itself. */
  async destroy(): Promise<void> {
    for (let i = 1; i <= this.seq; i++) await this.delete(`${this.idPrefix}-${i}`);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** CapEff and Seccomp of a process, from /proc/PID/status. */
export async function procSecurity(pid: number): Promise<{ capEff: bigint; seccomp: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => status.match(new RegExp(`^${name}:\\s*(\\S+)`, 'm'))?.[1] ?? '';
  return { capEff: BigInt(`0x${field('CapEff')}`), seccomp: Number(field('Seccomp')) };
}

/** Capability numbers (linux/capability.h) for the ones these tests name. */
export const CAP_NUMBERS: Record<string, number> = { CAP_NET_ADMIN: 12, CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 };

export function capMask(caps: string[]): bigint {
  return caps.reduce((m, c) => m | (1n << BigInt(CAP_NUMBERS[c] ?? -1)), 0n);
}
