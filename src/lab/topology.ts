/**
 * A one-node topology in network namespaces: a node namespace with pods on
 * veths, each pod running podserver. Addresses come from 192.0.2.0/24
 * ('ipv4'), 2001:db8::/48 ('ipv6', where no namespace gets an IPv4
 * address), or both ('dual'); no namespace has a route out. destroy()
 * removes everything it made, by name, even after a partial create.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { ip, nodeArgv, spawnIn } from './exec.js';
import { ownScript } from '../util/paths.js';

/** Which address families the node and its pods get. */
export type TopologyFamily = 'ipv4' | 'dual' | 'ipv6';

export interface Pod {
  name: string;
  netns: string;
  /** Empty in an IPv6-only topology. */
  ip: string;
  /** The pod's IPv6 address, unless the topology is IPv4-only. */
  ip6?: string;
  proc?: ChildProcess;
}

export const NODE_IP = '192.0.2.1';
export const NODE_IP6 = '2001:db8::1';

/** The lab's own scripts (podserver, probe), compiled or not. */
export function labScript(name: string): string {
  return ownScript(`lab/${name}`);
}

export class NodeTopology {
  readonly nodeNs: string;
  readonly pods: Pod[] = [];
  private created: string[] = [];

  constructor(
    readonly prefix: string,
    private readonly podCount: number,
    readonly port = 8080,
    readonly family: TopologyFamily = 'ipv4',
  ) {
    if (!/^[a-z0-9-]{1,11}$/.test(prefix)) throw new Error(`topology prefix must be short [a-z0-9-]: ${prefix}`);
    this.nodeNs = `${prefix}-node`;
  }

  get hasV4(): boolean {
    return this.family !== 'ipv6';
  }

  get hasV6(): boolean {
    return this.family !== 'ipv4';
  }

  async create(): Promise<void> {
    await ip(['netns', 'add', this.nodeNs]);
    this.created.push(this.nodeNs);
    const inNode = (args: string[]) => ip(['-n', this.nodeNs, ...args]);
    await inNode(['link', 'set', 'lo', 'up']);
    if (this.hasV4) await inNode(['addr', 'add', `${NODE_IP}/32`, 'dev', 'lo']);
    // nodad: the address is usable at once, not tentative for a second.
    if (this.hasV6) await inNode(['addr', 'add', `${NODE_IP6}/128`, 'dev', 'lo', 'nodad']);
    for (let i = 0; i < this.podCount; i++) {
      const pod: Pod = { name: `pod-${i + 1}`, netns: `${this.prefix}-p${i + 1}`, ip: this.hasV4 ? `192.0.2.${11 + i}` : '' };
      await ip(['netns', 'add', pod.netns]);
      this.created.push(pod.netns);
      const host = `veth${i + 1}`;
      // Create the pair inside the node namespace, then move one end.
      await inNode(['link', 'add', host, 'type', 'veth', 'peer', 'name', 'eth0']);
      await inNode(['link', 'set', 'eth0', 'netns', pod.netns]);
      await inNode(['link', 'set', host, 'up']);
      const inPod = (args: string[]) => ip(['-n', pod.netns, ...args]);
      await inPod(['link', 'set', 'lo', 'up']);
      await inPod(['link', 'set', 'eth0', 'up']);
      if (this.hasV4) {
        await inNode(['route', 'add', `${pod.ip}/32`, 'dev', host]);
        await inPod(['addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
        await inPod(['route', 'add', `${NODE_IP}/32`, 'dev', 'eth0']);
      }
      if (this.hasV6) {
        pod.ip6 = `2001:db8::${11 + i}`;
        await inPod(['-6', 'addr', 'add', `${pod.ip6}/128`, 'dev', 'eth0', 'nodad']);
        await inPod(['-6', 'route', 'add', `${NODE_IP6}/128`, 'dev', 'eth0']);
        await inNode(['-6', 'route', 'add', `${pod.ip6}/128`, 'dev', host]);
        // IPv6 answers neighbour solicitations only for the asking
        // interface's own addresses (IPv4 ARP answers for any local one):
        // the node proxies its lo address on the pod's veth, which the
        // kernel does only on an interface that forwards, as a router's.
        await ip(['netns', 'exec', this.nodeNs, 'sysctl', '-qw', `net.ipv6.conf.${host}.forwarding=1`, `net.ipv6.conf.${host}.proxy_ndp=1`]);
        await inNode(['-6', 'neigh', 'add', 'proxy', NODE_IP6, 'dev', host]);
      }
      this.pods.push(pod);
    }
  }

  /** Start podserver in every pod and wait until each is listening. */
  async startServers(): Promise<void> {
    const script = labScript('podserver');
    await Promise.all(
      this.pods.map(async (pod) => {
        const proc = spawnIn({ netns: pod.netns }, process.execPath, [
          ...nodeArgv(script),
          '--name',
          pod.name,
          ...(pod.ip ? ['--host', pod.ip] : []),
          '--port',
          String(this.port),
          ...(pod.ip6 ? ['--host6', pod.ip6] : []),
        ]);
        pod.proc = proc;
        let out = '';
        proc.stdout?.on('data', (d) => (out += d.toString()));
        const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
        while (!out.includes('ready')) {
          const [ended] = await Promise.race([once(proc.stdout!, 'data'), once(proc, 'exit').then(() => [true])]);
          if (ended === true) throw new Error(`podserver ${pod.name} exited before it was ready`);
        }
        clearTimeout(timer);
      }),
    );
  }

  async stopServer(pod: Pod): Promise<void> {
    if (!pod.proc || pod.proc.exitCode !== null) return;
    const exited = once(pod.proc, 'exit');
    pod.proc.kill('SIGTERM');
    await exited;
  }

  async destroy(): Promise<void> {
    for (const pod of this.pods) {
      try {
        await this.stopServer(pod);
      } catch {
        pod.proc?.kill('SIGKILL');
      }
    }
    for (const ns of this.created.reverse()) await ip(['netns', 'del', ns], { allowFail: true });
    this.created = [];
  }
}
