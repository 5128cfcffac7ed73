/**
 * Aborting connected sockets that kpr sent to a backend which has since left
 * its Service (the BPF side is bpf/sock_destroy.bpf.c).
 *
 * Order matters: the controller calls reap() only after the backend is gone
 * from the NAT maps, so the application's reconnect cannot land on it again.
 *
 * The kernel's UDP and TCP socket iterators walk the network namespace of the
 * thread that opens them. Sockets of pods live in the pods' namespaces, so a
 * run opens the iterator once in every network namespace that a process of
 * the hooked cgroup (or its descendants) lives in, found via cgroup.procs and
 * /proc/PID/ns/net, deduplicated by namespace inode.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { bpf, type BpfObject } from './addon.js';
import { decodeSockDestroyRecs, encodeSockDestroyKey, type SockDestroyRec } from './codec.js';
import { SOCK_DESTROY_OBJECT, SOCK_DESTROY_PROGRAMS, type MapSizes } from './names.js';
import { mapMaxEntries } from './datapath.js';
import { BpfMap } from './bpf-map.js';
import { versionedPinPaths } from './migrate.js';
import { bpfObjectPath } from '../util/paths.js';
import type { RemovedBackend } from '../controller/reconciler.js';
import { addrFamily } from '../util/ip.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

export interface SockDestroyOptions {
  pinPath: string;
  /** Sizes the maps were pinned with (the object declares them too). */
  sizes: MapSizes;
  /** The cgroup whose hooks kpr owns: its processes' namespaces are walked. */
  cgroup: string;
  /** Also abort TCP connections (default: they drain, as with kube-proxy). */
  tcp: boolean;
  log: Logger;
  metrics?: Metrics | undefined;
  /** Object file override (tests use a missing one to exercise the fallback). */
  objectPath?: string;
}

export interface ReapReport {
  destroyed: SockDestroyRec[];
  namespaces: number;
  /** Namespaces the iterator could not be run in (the process went away, ...). */
  errors: Array<{ netns: string; message: string }>;
}

/** Network namespaces of the processes in a cgroup subtree: one /proc path per namespace. */
function netnsOfCgroup(cgroup: string, denied?: { count: number; first?: string }): string[] {
  const seen = new Map<string, string>();
  const walk = (dir: string) => {
    let procs: string[] = [];
    try {
      procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    } catch {
      return; // removed while we walked
    }
    for (const pid of procs) {
      const path = `/proc/${pid}/ns/net`;
      try {
        const st = statSync(path);
        const id = `${st.dev}:${st.ino}`;
        if (!seen.has(id)) seen.set(id, path);
      } catch (err) {
        // Exited: nothing to do. Anything else (EACCES without
        // CAP_SYS_PTRACE) hides a namespace whose sockets stay connected.
        const code = (err as NodeJS.ErrnoException).code;
        if (denied && code !== 'ENOENT' && code !== 'ESRCH') {
          denied.count++;
          denied.first ??= `${code ?? 'error'} on ${path}`;
        }
      }
    }
    let entries: string[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(dir, e));
  };
  walk(cgroup);
  return [...seen.values()];
}

export class SockDestroyer {
  private constructor(
    private readonly opts: SockDestroyOptions,
    private readonly obj: BpfObject | undefined,
    private readonly targets: BpfMap | undefined,
    /** kpr_sock_destroy_be6: IPv6 backends (slots in kpr_v6_sk_lb) */
    private readonly targets6?: BpfMap | undefined,
  ) {}

  /**
   * Load the iterators. A kernel without BPF socket iterators or
   * bpf_sock_destroy (before 6.5) fails here: kpr then runs without socket
   * destruction, logs it once and counts it under reason="unsupported".
   */
  static open(opts: SockDestroyOptions): SockDestroyer {
    try {
      const obj = bpf.openObject(opts.objectPath ?? bpfObjectPath(SOCK_DESTROY_OBJECT), {
        pinRoot: opts.pinPath,
        maxEntries: mapMaxEntries(opts.sizes),
        pinPaths: versionedPinPaths(opts.pinPath),
      });
      return new SockDestroyer(
        opts,
        obj,
        new BpfMap('kpr_sock_destroy_be', obj.mapFd('kpr_sock_destroy_be')),
        new BpfMap('kpr_sock_destroy_be6', obj.mapFd('kpr_sock_destroy_be6')),
      );
    } catch (err) {
      opts.log.warn(
        { err: (err as Error).message.split('\n')[0] },
        'socket iterators unavailable (kernel 6.5+ needed for bpf_sock_destroy): connected sockets to removed backends will not be aborted',
      );
      opts.metrics?.socketDestroyErrors.inc({ reason: 'unsupported' });
      return new SockDestroyer(opts, undefined, undefined);
    }
  }

  get available(): boolean {
    return this.obj !== undefined;
  }

  /** Abort the connected sockets kpr sent to these backends. */
  reap(removed: RemovedBackend[]): ReapReport {
    const report: ReapReport = { destroyed: [], namespaces: 0, errors: [] };
    const { obj, targets, targets6 } = this;
    const wanted = removed.filter((r) => r.proto === 'UDP' || (this.opts.tcp && r.proto === 'TCP'));
    if (!obj || !targets || !targets6 || wanted.length === 0) return report;
    // Each family's backends in its own target map (the key holds the address).
    const entries = wanted.map((r): [BpfMap, Buffer] => [
      addrFamily(r.addr) === 4 ? targets : targets6,
      encodeSockDestroyKey({ svcId: r.svcId, addr: r.addr, port: r.port }),
    ]);
    const progs: string[] = [SOCK_DESTROY_PROGRAMS.udp];
    if (wanted.some((r) => r.proto === 'TCP')) progs.push(SOCK_DESTROY_PROGRAMS.tcp);
    try {
      for (const [m, k] of entries) m.update(k, Buffer.alloc(4));
      const denied = { count: 0 } as { count: number; first?: string };
      const namespaces = netnsOfCgroup(this.opts.cgroup, denied);
      report.namespaces = namespaces.length;
      if (denied.first) report.errors.push({ netns: this.opts.cgroup, message: `${denied.first} (and ${denied.count - 1} more processes): their namespaces were not walked` });
      for (const ns of namespaces) {
        for (const prog of progs) {
          try {
            report.destroyed.push(...decodeSockDestroyRecs(bpf.iterRead(obj.progFd(prog), ns)));
          } catch (err) {
            report.errors.push({ netns: ns, message: (err as Error).message });
          }
        }
      }
    } finally {
      for (const [m, k] of entries) m.delete(k);
    }
    const m = this.opts.metrics;
    for (const d of report.destroyed) {
      if (d.err === 0) m?.socketsDestroyed.inc({ proto: d.proto === 6 ? 'TCP' : 'UDP' });
      else m?.socketDestroyErrors.inc({ reason: 'destroy' });
    }
    // A process that exits between the walk and the read is not an error worth counting.
    for (const e of report.errors) if (!/ENOENT|ESRCH/.test(e.message)) m?.socketDestroyErrors.inc({ reason: 'iterate' });
    return report;
  }

  close(): void {
    // The map fd belongs to the object.
    this.obj?.close();
  }
}
