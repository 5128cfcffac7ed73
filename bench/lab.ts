/**
 * The benchmark's lab: NodeTopology's node namespace with pods on veths,
 * nginx in each pod, a device that carries the VIP range inside the
 * node namespace (so netfilter's DNAT has a route to start from; nothing
 * leaves the namespaces), and two child cgroups: one with kpr's
 * connect-time hooks, one without, so every mode's client runs in a child
 * cgroup of the same shape.
 *
 * With family 6 the topology is dual-stack and everything measured uses
 * IPv6: pods 2001:db8::11-14, the client pod 2001:db8::15, the node
 * 2001:db8::1, VIPs in 2001:db8:f::/64 (no DAD, no route out).
 *
 * destroy() removes everything, whatever state a run left; installExitHandlers
 * makes SIGINT/SIGTERM do the same.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup } from 'kpr';
import { createChildCgroup, NODE_IP, NODE_IP6, NodeTopology, type Pod, removeCgroup, run, Teardown } from 'kpr/lab';
import type { KprProcess } from './kpr.js';
import type { IpFamily } from './model.js';
import { startNginx, type NginxHandle } from './nginx.js';

export const VIP_DEV = 'kpr-vip';
export const VIP_PEER = 'kpr-vip-sink';
export const VIP_RANGE = '198.18.0.0/15';
export const VIP_RANGE6 = '2001:db8:f::/64';
export const POD_PORT = 8080;
/** The client pod (for modes whose data path acts on packets from pods: kpr-tc). */
export const CLIENT_POD_IP = '192.0.2.15';
export const CLIENT_POD_IP6 = '2001:db8::15';
export const CLIENT_HOST_IFACE = 'vethcl';
/** Covers the pods (192.0.2.11-14) but not the node (192.0.2.1): host-network clients get masqueraded, as on a real node. */
export const CLUSTER_CIDR = '192.0.2.8/29';
/** The same for IPv6: 2001:db8::10-17 holds the pods (::11-::14) and the client pod (::15), not the node (::1). */
export const CLUSTER_CIDR6 = '2001:db8::10/125';

export interface CpuPlan {
  client: string;
  server: string;
}

/** Backends on one CPU, the client on another (with 2 cores: 0 and 1). */
export function cpuPlan(cpus: number): CpuPlan {
  return cpus >= 2 ? { server: '0', client: '1' } : { server: '0', client: '0' };
}

export class BenchLab {
  readonly topo: NodeTopology;
  dir = '';
  cgKpr = '';
  cgClient = '';
  nginx: NginxHandle[] = [];
  readonly kprs = new Set<KprProcess>();
  readonly pinPaths = new Set<string>();
  private destroyed = false;
  private clientCreated = false;
  /** Namespaces scenarios create for a while (S4's), removed here too if a signal cuts them short. */
  readonly extraNetns = new Set<string>();
  /** Other labs a scenario builds for a while (S7's two-node lab): torn down here too on a signal. */
  readonly extraLabs = new Set<{ destroy(): Promise<void> }>();

  constructor(
    readonly id: string,
    readonly podCount: number,
    readonly cpus: CpuPlan,
    /** The family the data-plane scenarios measure (6: the topology is dual-stack). */
    readonly family: IpFamily = 4,
  ) {
    this.topo = new NodeTopology(id, podCount, POD_PORT, family === 6 ? 'dual' : 'ipv4');
  }

  /** A pod's address in the measured family. */
  podIp(pod: Pod): string {
    if (this.family === 4) return pod.ip;
    if (!pod.ip6) throw new Error(`${pod.name} has no IPv6 address`);
    return pod.ip6;
  }

  get clusterCidr(): string {
    return this.family === 6 ? CLUSTER_CIDR6 : CLUSTER_CIDR;
  }

  get clientNs(): string {
    return `${this.id}-cl`;
  }

  get nodeNs(): string {
    return this.topo.nodeNs;
  }

  get pods(): Pod[] {
    return this.topo.pods;
  }

  pinPath(tag: string): string {
    const p = `/sys/fs/bpf/kprb-${this.id}-${tag}`;
    this.pinPaths.add(p);
    return p;
  }

  async setup(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `kpr-bench-${this.id}-`));
    this.cgKpr = await createChildCgroup(`kprb-${this.id}-kpr`);
    this.cgClient = await createChildCgroup(`kprb-${this.id}-cli`);
    await this.topo.create();
    const n = this.nodeNs;
    // A veth pair whose far end stays in the node namespace (this kernel has
    // no dummy driver). Forwarding is off there, so a packet to a VIP that
    // nothing translated dies at the peer instead of going anywhere.
    await run('ip', ['-n', n, 'link', 'add', VIP_DEV, 'type', 'veth', 'peer', 'name', VIP_PEER]);
    await run('ip', ['-n', n, 'link', 'set', VIP_DEV, 'up']);
    await run('ip', ['-n', n, 'link', 'set', VIP_PEER, 'up']);
    await run('ip', ['-n', n, 'route', 'add', VIP_RANGE, 'dev', VIP_DEV]);
    if (this.family === 6) await run('ip', ['-n', n, '-6', 'route', 'add', VIP_RANGE6, 'dev', VIP_DEV]);
    // A connection per request from one client address: give it the whole
    // port range (this namespace only).
    await run('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000']);
    await run('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
    await this.createClientPod();
    for (const pod of this.pods) {
      this.nginx.push(
        await startNginx({ baseDir: this.dir, name: pod.name, netns: pod.netns, ip: this.podIp(pod), port: POD_PORT, cpu: this.cpus.server }),
      );
    }
  }

  /**
   * A client pod on a veth into the node namespace, like the backend pods.
   * kpr's tc programs only start flows on ingress (from a pod or a
   * host-facing device), so a tc-only client must be a pod. Routes cover the
   * lab's ranges only; no default route anywhere.
   */
  private async createClientPod(): Promise<void> {
    const n = this.nodeNs;
    const c = this.clientNs;
    await run('ip', ['netns', 'add', c]);
    this.clientCreated = true;
    // Addresses usable at once, the link-local one too (before the veth exists).
    if (this.family === 6) await run('ip', ['netns', 'exec', c, 'sysctl', '-q', '-w', 'net.ipv6.conf.default.accept_dad=0']);
    await run('ip', ['-n', n, 'link', 'add', CLIENT_HOST_IFACE, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
    await run('ip', ['-n', n, 'link', 'set', CLIENT_HOST_IFACE, 'up']);
    await run('ip', ['-n', n, 'route', 'add', `${CLIENT_POD_IP}/32`, 'dev', CLIENT_HOST_IFACE]);
    for (const [k, v] of [
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
    ]) {
      await run('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', `${k}=${v}`]);
    }
    await run('ip', ['-n', c, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', c, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', c, 'addr', 'add', `${CLIENT_POD_IP}/32`, 'dev', 'eth0']);
    await run('ip', ['-n', c, 'route', 'add', `${NODE_IP}/32`, 'dev', 'eth0']);
    await run('ip', ['-n', c, 'route', 'add', '192.0.2.0/24', 'via', NODE_IP, 'dev', 'eth0']);
    await run('ip', ['-n', c, 'route', 'add', VIP_RANGE, 'via', NODE_IP, 'dev', 'eth0']);
    await run('ip', ['netns', 'exec', c, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000']);
    await run('ip', ['netns', 'exec', c, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
    if (this.family === 6) await this.clientPod6();
    // Backend pods only know the node's address: teach them the way back to the client pod.
    for (const pod of this.pods) {
      await run('ip', ['-n', pod.netns, 'route', 'add', `${CLIENT_POD_IP}/32`, 'via', NODE_IP, 'dev', 'eth0']);
      // nginx closes first with "Connection: close", so TIME_WAIT piles up
      // on the server side; a client port reused within 60 s then meets it
      // and the SYN stalls for a 1 s retransmit. The usual load-test
      // setting: no TIME_WAIT buckets in the backend namespaces (all modes alike).
      await run('ip', ['netns', 'exec', pod.netns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_max_tw_buckets=0']);
    }
  }

  /**
   * The client pod's IPv6 side, as NodeTopology does it for the backend
   * pods: the node forwards IPv6 and answers neighbour solicitations for its
   * own address on the client's veth; routes cover the lab's ranges only.
   */
  private async clientPod6(): Promise<void> {
    const n = this.nodeNs;
    const c = this.clientNs;
    await run('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1']);
    await run('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', `net.ipv6.conf.${CLIENT_HOST_IFACE}.proxy_ndp=1`]);
    await run('ip', ['-n', n, '-6', 'neigh', 'add', 'proxy', NODE_IP6, 'dev', CLIENT_HOST_IFACE]);
    await run('ip', ['-n', n, '-6', 'route', 'add', `${CLIENT_POD_IP6}/128`, 'dev', CLIENT_HOST_IFACE]);
    await run('ip', ['-n', c, '-6', 'addr', 'add', `${CLIENT_POD_IP6}/128`, 'dev', 'eth0', 'nodad']);
    await run('ip', ['-n', c, '-6', 'route', 'add', `${NODE_IP6}/128`, 'dev', 'eth0']);
    await run('ip', ['-n', c, '-6', 'route', 'add', CLUSTER_CIDR6, 'via', NODE_IP6, 'dev', 'eth0']);
    await run('ip', ['-n', c, '-6', 'route', 'add', VIP_RANGE6, 'via', NODE_IP6, 'dev', 'eth0']);
    for (const pod of this.pods) await run('ip', ['-n', pod.netns, '-6', 'route', 'add', `${CLIENT_POD_IP6}/128`, 'via', NODE_IP6, 'dev', 'eth0']);
  }

  /** Flush the node namespace's conntrack table (between modes, so no NAT binding outlives its mode). */
  async flushConntrack(): Promise<void> {
    await run('ip', ['netns', 'exec', this.nodeNs, 'conntrack', '-F'], { allowFail: true });
    if (this.family === 6) await run('ip', ['netns', 'exec', this.nodeNs, 'conntrack', '-F', '-f', 'ipv6'], { allowFail: true });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const t = new Teardown();
    const step = (fn: () => Promise<unknown>) => t.step(fn);
    for (const l of this.extraLabs) await step(() => l.destroy());
    for (const k of this.kprs) await step(() => k.stop());
    for (const p of this.pinPaths) await step(() => cleanup(p));
    for (const n of this.nginx) await step(() => n.stop());
    await step(() => this.topo.destroy());
    if (this.clientCreated) await step(() => run('ip', ['netns', 'del', this.clientNs]));
    for (const ns of this.extraNetns) await run('ip', ['netns', 'del', ns], { allowFail: true });
    if (this.cgKpr) await step(() => removeCgroup(this.cgKpr));
    if (this.cgClient) await step(() => removeCgroup(this.cgClient));
    if (this.dir) await step(() => rm(this.dir, { recursive: true, force: true }));
    t.finish('bench teardown');
  }
}

/**
 * Run fn with lab set up, and tear the lab down afterwards whatever
 * happens, including SIGINT/SIGTERM (then the process exits 130/143).
 */
export async function withLab<T>(lab: BenchLab, fn: () => Promise<T>): Promise<T> {
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`kpr bench: ${sig}, removing the lab\n`);
    lab.destroy().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await lab.setup();
    return await fn();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await lab.destroy();
  }
}
