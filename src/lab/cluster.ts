/**
 * `kpr lab`: a small cluster in network namespaces.
 *
 *   <name>-fabric   a bridge, the "physical" network (198.51.100.0/24)
 *   <name>-n1..nN   nodes: eth0 on the fabric (198.51.100.1k), a routed pod
 *                   subnet 192.0.2.(64*(k-1))/26, one kpr each
 *   <name>-nK-pJ    pods on veths (host side lxcJ, gateway 169.254.1.1),
 *                   each running podserver on TCP+UDP 8080
 *   <name>-ext      an external client on the fabric (198.51.100.100, and
 *                   203.0.113.10 as a second source for source-range tests)
 *
 * Dual-stack, with IPv6 only inside 2001:db8::/48: the fabric is
 * 2001:db8:0:100::/64 (node k ::1k, the client ::100), node k's pods are
 * 2001:db8:0:k::1j behind a link-local gateway fe80::1, IPv6 VIPs sit in
 * 2001:db8:f::/64 and are routed to node 1 as the IPv4 ones. Addresses are
 * added without duplicate address detection, so they work at once.
 *
 * ipv6Only (`kpr lab up --ip-family 6`): no IPv4 address anywhere (the
 * LabNode/LabPod `ip` and LabNode `podCidr` fields are empty), kpr given
 * the IPv6 pod prefix only: an IPv6-only cluster.
 *
 * pathMtu: a router <name>-rtr on the fabric (198.51.100.200,
 * 2001:db8:0:100::200) through which node 1 reaches node 2's pods and the
 * external client; its routes to them have this MTU while every link stays
 * at 1500, so a large packet from node 1 to either draws a real ICMP
 * "fragmentation needed" or ICMPv6 Packet Too Big from the router, as a
 * smaller-MTU hop on the path does. The endpoints' own MTUs (and TCP's
 * MSS) do not see it.
 *
 * routed (IPv6-only labs): nodes 2 and 3 sit on a second link,
 * 2001:db8:0:200::/64 (node k ::1k, a bridge br1 in the fabric namespace),
 * joined to the fabric by a router <name>-rtr (2001:db8:0:100::200 and
 * 2001:db8:0:200::200) that routes every node's pod prefix: the nodes are
 * in different subnets, each other's traffic always crosses the router.
 *
 * Nothing is connected to the root namespace, so there is no route out.
 * Each node's kpr has its own pin path, its own child cgroup for its pods'
 * connect-time hooks, and tc programs on eth0 and the lxc* veths.
 * Processes are started detached with their pids in the state directory,
 * so `lab up` returns and `lab down` (or a test's teardown) stops exactly
 * those processes.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ip, nodeArgv, run, runIn, wrapArgv } from './exec.js';
import { defaultLabManifest } from './manifest.js';
import { labScript } from './topology.js';
import { ownScript } from '../util/paths.js';
import { PROBE_DEFAULTS, type ProbeResult } from './probe-result.js';
import { Teardown } from './teardown.js';
import { cgroup2Mount, removeCgroup } from '../util/cgroup.js';

export interface LabPod {
  name: string;
  netns: string;
  ip: string;
  ip6: string;
  hostIface: string;
}

export interface LabNode {
  name: string;
  netns: string;
  /** Empty in an IPv6-only lab, as is LabPod's. */
  ip: string;
  ip6: string;
  /** The node's IPv4 pod subnet; empty in an IPv6-only lab. */
  podCidr: string;
  podCidr6: string;
  pods: LabPod[];
  pinPath: string;
  cgroup: string;
}

export interface LabSpec {
  name: string;
  nodes: number;
  podsPerNode: number;
  /** Only IPv6 addresses on nodes, pods and the client. */
  ipv6Only?: boolean;
  /** A router with this route MTU between node 1 and both node 2's pods and the client (see above). */
  pathMtu?: number;
  /** Nodes 2 and 3 on a second link, behind a router (see above); IPv6-only labs. */
  routed?: boolean;
}

export const LAB_CLUSTER_CIDR = '192.0.2.0/24';
/** The pods' IPv6 prefixes (2001:db8:0:k::/64) are all inside it; the fabric is not. */
export const LAB_CLUSTER_CIDR6 = '2001:db8::/56';
export const LAB_EXT_IP = '198.51.100.100';
export const LAB_EXT_IP6 = '2001:db8:0:100::100';
/** The pathMtu router's fabric addresses. */
export const LAB_RTR_IP = '198.51.100.200';
export const LAB_RTR_IP6 = '2001:db8:0:100::200';
/** The routed lab's second link, and its router's address there. */
export const LAB_LINK2_CIDR6 = '2001:db8:0:200::/64';
export const LAB_RTR2_IP6 = '2001:db8:0:200::200';
const LAB_LINK1_CIDR6 = '2001:db8:0:100::/64';
/** IPv6 Service addresses, routed to node 1 by the external client. */
export const LAB_VIP6_CIDR = '2001:db8:f::/64';
/** The pods' IPv6 gateway on every node: a link-local address of the host-side veth. */
const POD_GW6 = 'fe80::1';
/** The external client's second address, inside the LB Service's source range. */
export const LAB_EXT_IP2 = '203.0.113.10';
export const POD_PORT = 8080;
/** Each pod also serves HTTP here, for wrk. */
export const POD_HTTP_PORT = 8081;
/** And bulk transfers here (probe.ts `bulk` mode). */
export const POD_BULK_PORT = 8082;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Lab {
  readonly nodes: LabNode[] = [];
  readonly fabricNs: string;
  readonly extNs: string;
  /** The pathMtu router's namespace, when the lab has one. */
  readonly rtrNs: string | undefined;
  readonly stateDir: string;
  readonly cgroupRoot: string;

  constructor(
    readonly spec: LabSpec,
    stateRoot = '/run/kpr-lab',
  ) {
    if (!/^[a-z][a-z0-9]{0,7}$/.test(spec.name)) throw new Error(`lab name must be 1-8 lowercase letters/digits: ${spec.name}`);
    if (spec.nodes < 1 || spec.nodes > 3 || spec.podsPerNode < 1 || spec.podsPerNode > 8) {
      throw new Error('a lab has 1-3 nodes and 1-8 pods per node');
    }
    if (spec.pathMtu !== undefined && (spec.nodes < 2 || spec.pathMtu < 1280 || spec.pathMtu >= 1500)) {
      throw new Error('pathMtu needs 2 nodes and an MTU of 1280-1499');
    }
    if (spec.routed && (spec.nodes < 2 || !spec.ipv6Only || spec.pathMtu !== undefined)) {
      throw new Error('routed needs 2 or 3 nodes, ipv6Only and no pathMtu');
    }
    const v4 = !spec.ipv6Only;
    this.fabricNs = `${spec.name}-fabric`;
    this.extNs = `${spec.name}-ext`;
    this.rtrNs = spec.pathMtu === undefined && !spec.routed ? undefined : `${spec.name}-rtr`;
    this.stateDir = join(stateRoot, spec.name);
    this.cgroupRoot = join(cgroup2Mount(), `kpr-lab-${spec.name}`);
    for (let k = 1; k <= spec.nodes; k++) {
      const base = 64 * (k - 1);
      const node: LabNode = {
        name: `n${k}`,
        netns: `${spec.name}-n${k}`,
        ip: v4 ? `198.51.100.${10 + k}` : '',
        ip6: `2001:db8:0:${spec.routed && k > 1 ? 200 : 100}::${10 + k}`,
        podCidr: v4 ? `192.0.2.${base}/26` : '',
        podCidr6: `2001:db8:0:${k}::/64`,
        pods: [],
        pinPath: `/sys/fs/bpf/kpr-lab-${spec.name}-n${k}`,
        cgroup: join(this.cgroupRoot, `n${k}`),
      };
      for (let j = 1; j <= spec.podsPerNode; j++) {
        node.pods.push({
          name: `n${k}-pod${j}`,
          netns: `${spec.name}-n${k}-p${j}`,
          ip: v4 ? `192.0.2.${base + 10 + j}` : '',
          ip6: `2001:db8:0:${k}::${10 + j}`,
          hostIface: `lxc${j}`,
        });
      }
      this.nodes.push(node);
    }
  }

  get manifestPath(): string {
    return join(this.stateDir, 'services.yaml');
  }

  allPods(): LabPod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  private async namespaces(): Promise<string[]> {
    return [this.fabricNs, this.extNs, ...(this.rtrNs ? [this.rtrNs] : []), ...this.nodes.flatMap((n) => [n.netns, ...n.pods.map((p) => p.netns)])];
  }

  /** Build the topology and start pods (not kpr). */
  async create(): Promise<void> {
    await mkdir(this.stateDir, { recursive: true });
    await mkdir(this.cgroupRoot, { recursive: true });
    // No duplicate address detection in any namespace of the lab: its
    // addresses are unique by construction, and a tentative address would
    // not answer for a second.
    const noDad = async (ns: string) => {
      await runIn({ netns: ns }, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0']);
      await runIn({ netns: ns }, 'sysctl', ['-q', '-w', 'net.ipv6.conf.default.accept_dad=0']);
    };
    await ip(['netns', 'add', this.fabricNs]);
    await noDad(this.fabricNs);
    const fab = (args: string[]) => ip(['-n', this.fabricNs, ...args]);
    await fab(['link', 'add', 'br0', 'type', 'bridge']);
    await fab(['link', 'set', 'br0', 'up']);
    await fab(['link', 'set', 'lo', 'up']);

    if (this.spec.routed) {
      await fab(['link', 'add', 'br1', 'type', 'bridge']);
      await fab(['link', 'set', 'br1', 'up']);
    }
    /** A namespace's `dev` on a fabric bridge (created with the namespace unless it exists). */
    const plug = async (ns: string, port: string, addr: string, addr6: string, at: { bridge?: string; dev?: string } = {}) => {
      const dev = at.dev ?? 'eth0';
      if (dev === 'eth0') {
        await ip(['netns', 'add', ns]);
        await noDad(ns);
      }
      await fab(['link', 'add', port, 'type', 'veth', 'peer', 'name', dev]);
      await fab(['link', 'set', dev, 'netns', ns]);
      await fab(['link', 'set', port, 'master', at.bridge ?? 'br0']);
      await fab(['link', 'set', port, 'up']);
      const n = (args: string[]) => ip(['-n', ns, ...args]);
      await n(['link', 'set', 'lo', 'up']);
      await n(['link', 'set', dev, 'up']);
      if (addr) await n(['addr', 'add', `${addr}/24`, 'dev', dev]);
      await n(['-6', 'addr', 'add', `${addr6}/64`, 'dev', dev, 'nodad']);
    };
    const v4 = !this.spec.ipv6Only;
    /** On the routed lab: the router's address on a node's link, its way to the other link. */
    const link2 = (node: LabNode) => node.ip6.startsWith('2001:db8:0:200:');
    const gw6 = (from: LabNode, to: LabNode) => (!this.spec.routed || link2(from) === link2(to) ? to.ip6 : link2(from) ? LAB_RTR2_IP6 : LAB_RTR_IP6);

    for (const node of this.nodes) {
      await plug(node.netns, `p-${node.name}`, node.ip, node.ip6, { bridge: this.spec.routed && link2(node) ? 'br1' : 'br0' });
      const n = (args: string[]) => ip(['-n', node.netns, ...args]);
      const sysctl = (key: string, v: string) => runIn({ netns: node.netns }, 'sysctl', ['-q', '-w', `${key}=${v}`]);
      await sysctl('net.ipv4.ip_forward', '1');
      await sysctl('net.ipv4.conf.all.rp_filter', '0');
      await sysctl('net.ipv4.conf.default.rp_filter', '0');
      await sysctl('net.ipv4.conf.eth0.rp_filter', '0');
      await sysctl('net.ipv4.conf.all.send_redirects', '0');
      await sysctl('net.ipv6.conf.all.forwarding', '1');
      for (const other of this.nodes) {
        if (other !== node) {
          if (v4) await n(['route', 'add', other.podCidr, 'via', other.ip, 'dev', 'eth0']);
          await n(['-6', 'route', 'add', other.podCidr6, 'via', gw6(node, other), 'dev', 'eth0']);
        }
      }
      if (this.spec.routed) {
        const [other, via] = link2(node) ? [LAB_LINK1_CIDR6, LAB_RTR2_IP6] : [LAB_LINK2_CIDR6, LAB_RTR_IP6];
        await n(['-6', 'route', 'add', other, 'via', via, 'dev', 'eth0']);
      }
      await mkdir(node.cgroup, { recursive: true });
      for (const pod of node.pods) {
        await ip(['netns', 'add', pod.netns]);
        await noDad(pod.netns);
        // The node already has an eth0: create the pod end under a temporary name.
        const tmp = `tmp${pod.hostIface}`;
        await n(['link', 'add', pod.hostIface, 'type', 'veth', 'peer', 'name', tmp]);
        await n(['link', 'set', tmp, 'netns', pod.netns]);
        await ip(['-n', pod.netns, 'link', 'set', tmp, 'name', 'eth0']);
        if (v4) await n(['addr', 'add', '169.254.1.1/32', 'dev', pod.hostIface]);
        await n(['link', 'set', pod.hostIface, 'up']);
        if (v4) await n(['route', 'add', `${pod.ip}/32`, 'dev', pod.hostIface]);
        await n(['-6', 'addr', 'add', `${POD_GW6}/64`, 'dev', pod.hostIface, 'nodad']);
        await n(['-6', 'route', 'add', `${pod.ip6}/128`, 'dev', pod.hostIface]);
        const p = (args: string[]) => ip(['-n', pod.netns, ...args]);
        await p(['link', 'set', 'lo', 'up']);
        await p(['link', 'set', 'eth0', 'up']);
        if (v4) {
          await p(['addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
          await p(['route', 'add', '169.254.1.1/32', 'dev', 'eth0']);
          await p(['route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
        }
        await p(['-6', 'addr', 'add', `${pod.ip6}/128`, 'dev', 'eth0', 'nodad']);
        await p(['-6', 'route', 'add', 'default', 'via', POD_GW6, 'dev', 'eth0']);
      }
    }
    await plug(this.extNs, 'p-ext', v4 ? LAB_EXT_IP : '', LAB_EXT_IP6);
    if (v4) {
      // A second client address, in another network, for source-range tests.
      await ip(['-n', this.extNs, 'addr', 'add', `${LAB_EXT_IP2}/32`, 'dev', 'eth0']);
      for (const node of this.nodes) await ip(['-n', node.netns, 'route', 'add', `${LAB_EXT_IP2}/32`, 'via', LAB_EXT_IP]);
      // External and LB addresses are routed to node 1, like an upstream router would.
      await ip(['-n', this.extNs, 'route', 'add', '198.18.0.0/15', 'via', this.nodes[0]!.ip]);
    }
    await ip(['-n', this.extNs, '-6', 'route', 'add', LAB_VIP6_CIDR, 'via', this.nodes[0]!.ip6]);
    if (this.rtrNs && this.spec.routed) await this.createLinkRouter(this.rtrNs, plug);
    else if (this.rtrNs) await this.createRouter(this.rtrNs, this.spec.pathMtu!, plug);
  }

  /** The routed lab's router between the fabric (eth0) and the second link (eth1), routing every pod prefix. */
  private async createLinkRouter(ns: string, plug: (ns: string, port: string, addr: string, addr6: string, at?: { bridge?: string; dev?: string }) => Promise<void>): Promise<void> {
    await plug(ns, 'p-rtr', '', LAB_RTR_IP6);
    await plug(ns, 'p-rtr2', '', LAB_RTR2_IP6, { bridge: 'br1', dev: 'eth1' });
    await runIn({ netns: ns }, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.forwarding=1']);
    for (const node of this.nodes) await ip(['-n', ns, '-6', 'route', 'add', node.podCidr6, 'via', node.ip6]);
    // The client reaches the second link through it (node 2's NodePorts).
    await ip(['-n', this.extNs, '-6', 'route', 'add', LAB_LINK2_CIDR6, 'via', LAB_RTR_IP6]);
  }

  /** The pathMtu router, and node 1's routes to node 2's pods and the client through it. */
  private async createRouter(ns: string, mtu: number, plug: (ns: string, port: string, addr: string, addr6: string) => Promise<void>): Promise<void> {
    const v4 = !this.spec.ipv6Only;
    await plug(ns, 'p-rtr', v4 ? LAB_RTR_IP : '', LAB_RTR_IP6);
    const sysctl = (key: string, v: string) => runIn({ netns: ns }, 'sysctl', ['-q', '-w', `${key}=${v}`]);
    await sysctl('net.ipv6.conf.all.forwarding', '1');
    if (v4) {
      await sysctl('net.ipv4.ip_forward', '1');
      for (const c of ['all', 'eth0']) {
        await sysctl(`net.ipv4.conf.${c}.rp_filter`, '0');
        // In and out of the same port: a redirect would only tell node 1 to go direct.
        await sysctl(`net.ipv4.conf.${c}.send_redirects`, '0');
        // Its own ICMP errors come back through it when node 1 translates
        // them for the client behind it: IPv4 would call that source martian.
        await sysctl(`net.ipv4.conf.${c}.accept_local`, '1');
      }
    }
    const [n1, n2] = this.nodes as [LabNode, LabNode];
    for (const node of this.nodes) {
      // Node 2's pods behind the small MTU; the way back to the others' is plain.
      const m = node === n2 ? ['mtu', String(mtu)] : [];
      if (v4) await ip(['-n', ns, 'route', 'add', node.podCidr, 'via', node.ip, 'dev', 'eth0', ...m]);
      await ip(['-n', ns, '-6', 'route', 'add', node.podCidr6, 'via', node.ip6, 'dev', 'eth0', ...m]);
    }
    if (v4) {
      await ip(['-n', ns, 'route', 'add', `${LAB_EXT_IP}/32`, 'dev', 'eth0', 'mtu', String(mtu)]);
      await ip(['-n', n1.netns, 'route', 'replace', n2.podCidr, 'via', LAB_RTR_IP, 'dev', 'eth0']);
      await ip(['-n', n1.netns, 'route', 'add', `${LAB_EXT_IP}/32`, 'via', LAB_RTR_IP, 'dev', 'eth0']);
    }
    await ip(['-n', ns, '-6', 'route', 'add', `${LAB_EXT_IP6}/128`, 'dev', 'eth0', 'mtu', String(mtu)]);
    await ip(['-n', n1.netns, '-6', 'route', 'replace', n2.podCidr6, 'via', LAB_RTR_IP6, 'dev', 'eth0']);
    await ip(['-n', n1.netns, '-6', 'route', 'add', `${LAB_EXT_IP6}/128`, 'via', LAB_RTR_IP6, 'dev', 'eth0']);
  }

  private async spawnDetached(tag: string, argv: [string, string[]]): Promise<number> {
    const log = openSync(join(this.stateDir, `${tag}.log`), 'a');
    const child = spawn(argv[0], argv[1], { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    const pid = child.pid;
    if (!pid) throw new Error(`could not start ${tag}`);
    await writeFile(join(this.stateDir, `${tag}.pid`), String(pid));
    return pid;
  }

  async startPods(): Promise<void> {
    const script = labScript('podserver');
    for (const node of this.nodes) {
      for (const pod of node.pods) {
        const args = ['--name', pod.name, ...(pod.ip ? ['--host', pod.ip] : []), '--host6', pod.ip6, '--port', String(POD_PORT), '--http-port', String(POD_HTTP_PORT), '--bulk-port', String(POD_BULK_PORT)];
        const argv = wrapArgv(process.execPath, [...nodeArgv(script), ...args], {
          netns: pod.netns,
          cgroup: node.cgroup,
        });
        await this.spawnDetached(`pod-${pod.name}`, argv);
      }
    }
    await this.waitFor(async () => {
      for (const pod of this.allPods()) {
        const log = await readFile(join(this.stateDir, `pod-${pod.name}.log`), 'utf8').catch(() => '');
        if (!log.includes('ready')) return false;
      }
      return true;
    }, 'pod servers');
  }

  /**
   * `kpr run`'s arguments for a node; paths as kpr sees them (a container
   * may mount them elsewhere). olderBuild: a kpr from before dual-stack
   * --cluster-cidr (the upgrade tests), given the IPv4 pod network only.
   */
  kprRunArgs(node: LabNode, at: { pinPath?: string; cgroup?: string; manifests?: string; olderBuild?: boolean } = {}): string[] {
    return [
      'run',
      '--manifests',
      at.manifests ?? this.manifestPath,
      '--pin-path',
      at.pinPath ?? node.pinPath,
      '--cgroup',
      at.cgroup ?? node.cgroup,
      '--node-name',
      node.name,
      '--devices',
      'eth0',
      '--workload-ifaces',
      'lxc*',
      '--cluster-cidr',
      this.spec.ipv6Only ? LAB_CLUSTER_CIDR6 : at.olderBuild ? LAB_CLUSTER_CIDR : `${LAB_CLUSTER_CIDR},${LAB_CLUSTER_CIDR6}`,
      '--resync-interval',
      '30',
    ];
  }

  /**
   * Start kpr on a node (inside the node's netns, not its mount ns). cli:
   * another build's entry point (the upgrade test runs an older kpr);
   * manifests: another source file than the lab's.
   */
  async startKpr(node: LabNode, extra: string[] = [], opts: { cli?: string; manifests?: string } = {}): Promise<number> {
    const cli = opts.cli ?? ownScript('cli');
    const args = ['--net=' + `/run/netns/${node.netns}`, process.execPath, ...nodeArgv(cli), ...this.kprRunArgs(node, { manifests: opts.manifests, olderBuild: opts.cli !== undefined }), ...extra];
    // nsenter, not `ip netns exec`: the latter remounts /sys and would hide
    // bpffs and the cgroup2 mount from kpr.
    return this.spawnDetached(`kpr-${node.name}`, ['nsenter', args]);
  }

  async stopKpr(node: LabNode): Promise<void> {
    await this.killTagged(`kpr-${node.name}`);
  }

  async kprLog(node: LabNode): Promise<string> {
    return readFile(join(this.stateDir, `kpr-${node.name}.log`), 'utf8').catch(() => '');
  }

  async writeManifest(objects: unknown[]): Promise<void> {
    const tmp = `${this.manifestPath}.tmp`;
    await writeFile(tmp, objects.map((o) => stringify(o)).join('---\n'));
    // rename, so kpr never reads half a file
    await run('mv', ['-f', tmp, this.manifestPath]);
  }

  async up(opts: { manifest?: unknown[]; kprArgs?: string[] } = {}): Promise<void> {
    await this.create();
    await this.startPods();
    if (opts.manifest) await this.writeManifest(opts.manifest);
    else if (!existsSync(this.manifestPath)) await this.writeManifest(defaultLabManifest(this));
    for (const node of this.nodes) await this.startKpr(node, opts.kprArgs);
  }

  /** Run a command in a namespace (optionally in a node's cgroup) and return stdout. */
  async exec(where: { netns: string; cgroup?: string }, cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
    return runIn(where, cmd, args, { timeoutMs });
  }

  /** The probe client, from a pod or the external client. */
  async probe(where: { netns: string; cgroup?: string }, args: string[]): Promise<LabProbe> {
    // The probe bounds itself by --duration (and --timeout per request): a
    // long loop on a loaded machine must not be killed before it reports.
    const flag = (name: string, dflt: number) => {
      const i = args.indexOf(name);
      return i >= 0 ? Number(args[i + 1]) : dflt;
    };
    const bound = flag('--duration', PROBE_DEFAULTS.durationMs) + flag('--timeout', PROBE_DEFAULTS.timeoutMs) + 30_000;
    const out = await this.exec(where, process.execPath, [...nodeArgv(labScript('probe')), ...args], Math.max(120_000, bound));
    return JSON.parse(out) as LabProbe;
  }

  /** kpr itself, run inside a node's netns (inspect, cleanup). */
  async kprCli(node: LabNode, args: string[]): Promise<string> {
    return run('nsenter', ['--net=' + `/run/netns/${node.netns}`, process.execPath, ...nodeArgv(ownScript('cli')), ...args], {
      timeoutMs: 60_000,
    });
  }

  private async killTagged(tag: string): Promise<void> {
    const pidFile = join(this.stateDir, `${tag}.pid`);
    const pid = Number(await readFile(pidFile, 'utf8').catch(() => 'NaN'));
    if (!Number.isInteger(pid) || pid <= 0) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      await rm(pidFile, { force: true });
      return;
    }
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        break;
      }
      await sleep(50);
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await rm(pidFile, { force: true });
  }

  async waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (await cond()) return;
      await sleep(100);
    }
    throw new Error(`lab: timed out waiting for ${what}`);
  }

  /**
   * The IPv4 addresses in the lab's namespaces, as `<netns> <dev> <cidr>`,
   * loopback's aside: none in an IPv6-only lab.
   */
  async ipv4Addresses(): Promise<string[]> {
    const out: string[] = [];
    for (const ns of await this.namespaces()) {
      for (const line of (await ip(['-n', ns, '-4', '-o', 'addr', 'show'])).split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f.length < 4 || f[1] === 'lo') continue;
        out.push(`${ns} ${f[1]} ${f[3]}`);
      }
    }
    return out;
  }

  async status(): Promise<string> {
    const lines: string[] = [];
    const existing = new Set((await ip(['netns', 'list'], { allowFail: true })).split('\n').map((l) => l.split(' ')[0]));
    lines.push(`lab ${this.spec.name}: state in ${this.stateDir}, manifest ${this.manifestPath}`);
    for (const ns of await this.namespaces()) lines.push(`  netns ${ns}: ${existing.has(ns) ? 'up' : 'missing'}`);
    if (existsSync(this.stateDir)) {
      for (const f of (await readdir(this.stateDir)).filter((f) => f.endsWith('.pid')).sort()) {
        const pid = Number(await readFile(join(this.stateDir, f), 'utf8'));
        let alive = false;
        try {
          process.kill(pid, 0);
          alive = true;
        } catch {
          /* not running */
        }
        lines.push(`  ${f.replace(/\.pid$/, '')}: pid ${pid} ${alive ? 'running' : 'not running'}`);
      }
    }
    return lines.join('\n') + '\n';
  }

  /** Tear everything down; safe to call on a partial lab. */
  async down(): Promise<void> {
    const t = new Teardown();
    const step = (fn: () => Promise<unknown>) => t.step(fn);
    for (const node of this.nodes) await step(() => this.stopKpr(node));
    for (const node of this.nodes) {
      if (existsSync(node.pinPath) && existsSync(`/run/netns/${node.netns}`)) {
        await step(() => this.kprCli(node, ['cleanup', '--pin-path', node.pinPath]));
      }
    }
    for (const pod of this.allPods()) await step(() => this.killTagged(`pod-${pod.name}`));
    for (const ns of (await this.namespaces()).reverse()) await ip(['netns', 'del', ns], { allowFail: true });
    for (const node of this.nodes) {
      // cleanup inside the netns failed or was skipped: unpin what is left
      if (existsSync(node.pinPath)) await step(() => rm(node.pinPath, { recursive: true, force: true }));
      await step(() => removeCgroup(node.cgroup));
    }
    await step(() => removeCgroup(this.cgroupRoot));
    await step(() => rm(this.stateDir, { recursive: true, force: true }));
    t.finish('lab teardown');
  }
}

export type LabProbe = ProbeResult;
