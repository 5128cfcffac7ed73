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
import { labScript } from './topology.js';
import { ownScript } from '../util/paths.js';
import type { ProbeResult } from './probe-result.js';
import { Teardown } from './teardown.js';
import { cgroup2Mount, removeCgroup } from '../util/cgroup.js';

export interface LabPod {
  name: string;
  netns: string;
  ip: string;
  hostIface: string;
}

export interface LabNode {
  name: string;
  netns: string;
  ip: string;
  podCidr: string;
  pods: LabPod[];
  pinPath: string;
  cgroup: string;
}

export interface LabSpec {
  name: string;
  nodes: number;
  podsPerNode: number;
}

export const LAB_CLUSTER_CIDR = '192.0.2.0/24';
export const LAB_EXT_IP = '198.51.100.100';
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
    this.fabricNs = `${spec.name}-fabric`;
    this.extNs = `${spec.name}-ext`;
    this.stateDir = join(stateRoot, spec.name);
    this.cgroupRoot = join(cgroup2Mount(), `kpr-lab-${spec.name}`);
    for (let k = 1; k <= spec.nodes; k++) {
      const base = 64 * (k - 1);
      const node: LabNode = {
        name: `n${k}`,
        netns: `${spec.name}-n${k}`,
        ip: `198.51.100.${10 + k}`,
        podCidr: `192.0.2.${base}/26`,
        pods: [],
        pinPath: `/sys/fs/bpf/kpr-lab-${spec.name}-n${k}`,
        cgroup: join(this.cgroupRoot, `n${k}`),
      };
      for (let j = 1; j <= spec.podsPerNode; j++) {
        node.pods.push({ name: `n${k}-pod${j}`, netns: `${spec.name}-n${k}-p${j}`, ip: `192.0.2.${base + 10 + j}`, hostIface: `lxc${j}` });
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
    return [this.fabricNs, this.extNs, ...this.nodes.flatMap((n) => [n.netns, ...n.pods.map((p) => p.netns)])];
  }

  /** Build the topology and start pods (not kpr). */
  async create(): Promise<void> {
    await mkdir(this.stateDir, { recursive: true });
    await mkdir(this.cgroupRoot, { recursive: true });
    await ip(['netns', 'add', this.fabricNs]);
    const fab = (args: string[]) => ip(['-n', this.fabricNs, ...args]);
    await fab(['link', 'add', 'br0', 'type', 'bridge']);
    await fab(['link', 'set', 'br0', 'up']);
    await fab(['link', 'set', 'lo', 'up']);

    const plug = async (ns: string, port: string, addr: string) => {
      await ip(['netns', 'add', ns]);
      await fab(['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0']);
      await fab(['link', 'set', 'eth0', 'netns', ns]);
      await fab(['link', 'set', port, 'master', 'br0']);
      await fab(['link', 'set', port, 'up']);
      const n = (args: string[]) => ip(['-n', ns, ...args]);
      await n(['link', 'set', 'lo', 'up']);
      await n(['link', 'set', 'eth0', 'up']);
      await n(['addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    };

    for (const node of this.nodes) {
      await plug(node.netns, `p-${node.name}`, node.ip);
      const n = (args: string[]) => ip(['-n', node.netns, ...args]);
      const sysctl = (key: string, v: string) => runIn({ netns: node.netns }, 'sysctl', ['-q', '-w', `${key}=${v}`]);
      await sysctl('net.ipv4.ip_forward', '1');
      await sysctl('net.ipv4.conf.all.rp_filter', '0');
      await sysctl('net.ipv4.conf.default.rp_filter', '0');
      await sysctl('net.ipv4.conf.eth0.rp_filter', '0');
      await sysctl('net.ipv4.conf.all.send_redirects', '0');
      for (const other of this.nodes) {
        if (other !== node) await n(['route', 'add', other.podCidr, 'via', other.ip, 'dev', 'eth0']);
      }
      await mkdir(node.cgroup, { recursive: true });
      for (const pod of node.pods) {
        await ip(['netns', 'add', pod.netns]);
        // The node already has an eth0: create the pod end under a temporary name.
        const tmp = `tmp${pod.hostIface}`;
        await n(['link', 'add', pod.hostIface, 'type', 'veth', 'peer', 'name', tmp]);
        await n(['link', 'set', tmp, 'netns', pod.netns]);
        await ip(['-n', pod.netns, 'link', 'set', tmp, 'name', 'eth0']);
        await n(['addr', 'add', '169.254.1.1/32', 'dev', pod.hostIface]);
        await n(['link', 'set', pod.hostIface, 'up']);
        await n(['route', 'add', `${pod.ip}/32`, 'dev', pod.hostIface]);
        const p = (args: string[]) => ip(['-n', pod.netns, ...args]);
        await p(['link', 'set', 'lo', 'up']);
        await p(['link', 'set', 'eth0', 'up']);
        await p(['addr', 'add', `${pod.ip}/32`, 'dev', 'eth0']);
        await p(['route', 'add', '169.254.1.1/32', 'dev', 'eth0']);
        await p(['route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
      }
    }
    await plug(this.extNs, 'p-ext', LAB_EXT_IP);
    // A second client address, in another network, for source-range tests.
    await ip(['-n', this.extNs, 'addr', 'add', `${LAB_EXT_IP2}/32`, 'dev', 'eth0']);
    for (const node of this.nodes) await ip(['-n', node.netns, 'route', 'add', `${LAB_EXT_IP2}/32`, 'via', LAB_EXT_IP]);
    // External and LB addresses are routed to node 1, like an upstream router would.
    await ip(['-n', this.extNs, 'route', 'add', '198.18.0.0/15', 'via', this.nodes[0]!.ip]);
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
        const args = ['--name', pod.name, '--host', pod.ip, '--port', String(POD_PORT), '--http-port', String(POD_HTTP_PORT), '--bulk-port', String(POD_BULK_PORT)];
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

  /** Start kpr on every node (inside the node's netns, not its mount ns). */
  async startKpr(node: LabNode, extra: string[] = []): Promise<number> {
    const cli = ownScript('cli');
    const args = [
      '--net=' + `/run/netns/${node.netns}`,
      process.execPath,
      ...nodeArgv(cli),
      'run',
      '--manifests',
      this.manifestPath,
      '--pin-path',
      node.pinPath,
      '--cgroup',
      node.cgroup,
      '--node-name',
      node.name,
      '--devices',
      'eth0',
      '--workload-ifaces',
      'lxc*',
      '--cluster-cidr',
      LAB_CLUSTER_CIDR,
      '--resync-interval',
      '30',
      ...extra,
    ];
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
    const out = await this.exec(where, process.execPath, [...nodeArgv(labScript('probe')), ...args], 120_000);
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

/** A lab node as the kubelet would register it: zone label and InternalIP. */
export function labNode(node: LabNode, zone: string | undefined): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: node.name, labels: { 'kubernetes.io/hostname': node.name, ...(zone ? { 'topology.kubernetes.io/zone': zone } : {}) } },
    status: { addresses: [{ type: 'InternalIP', address: node.ip }, { type: 'Hostname', address: node.name }] },
  };
}

/** The manifest `lab up` writes when there is none: one Service per behaviour. */
export function defaultLabManifest(lab: Lab): unknown[] {
  const ep = (pods: LabPod[], node: string) => pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: node }));
  const allEndpoints = lab.nodes.flatMap((n) => ep(n.pods, n.name));
  const n2 = lab.nodes[1] ?? lab.nodes[0]!;
  const ports = [
    { name: 'tcp', port: 80, protocol: 'TCP', targetPort: POD_PORT },
    { name: 'udp', port: 53, protocol: 'UDP', targetPort: POD_PORT },
  ];
  const slicePorts = [
    { name: 'tcp', port: POD_PORT, protocol: 'TCP' },
    { name: 'udp', port: POD_PORT, protocol: 'UDP' },
  ];
  const svc = (name: string, spec: Record<string, unknown>, status?: unknown) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'lab' },
    spec: { ports, ...spec },
    ...(status ? { status } : {}),
  });
  const slice = (svcName: string, endpoints: unknown[]) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svcName}-1`, namespace: 'lab', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: 'IPv4',
    ports: slicePorts,
    endpoints,
  });
  const np = (base: number) => [
    { ...ports[0], nodePort: base },
    { ...ports[1], nodePort: base + 1 },
  ];
  return [
    // Nodes, one zone each, so topology hints have something to match.
    ...lab.nodes.map((n, i) => labNode(n, `zone-${String.fromCharCode(97 + i)}`)),
    svc('web', { type: 'NodePort', clusterIP: '198.18.0.10', ports: np(30080) }),
    slice('web', allEndpoints),
    // eTP=Local, endpoints only on node 2: node 1 must drop, node 2 keeps the client IP
    svc('local', { type: 'NodePort', clusterIP: '198.18.0.11', externalTrafficPolicy: 'Local', healthCheckNodePort: 32100, ports: np(30090) }),
    slice('local', ep(n2.pods, n2.name)),
    // iTP=Local: pods only reach endpoints on their own node
    svc('itp', { clusterIP: '198.18.0.12', internalTrafficPolicy: 'Local' }),
    slice('itp', allEndpoints),
    // no endpoints: REJECT
    svc('empty', { type: 'NodePort', clusterIP: '198.18.0.13', ports: np(30100) }),
    // externalIP and a LoadBalancer IP restricted to one source range
    // sessionAffinity: ClientIP: one client, one backend
    svc('sticky', { type: 'NodePort', clusterIP: '198.18.0.16', sessionAffinity: 'ClientIP', ports: np(30120) }),
    slice('sticky', allEndpoints),
    svc('ext', { clusterIP: '198.18.0.14', externalIPs: ['198.18.1.14'] }),
    slice('ext', allEndpoints),
    svc(
      'lb',
      { type: 'LoadBalancer', clusterIP: '198.18.0.15', loadBalancerSourceRanges: ['203.0.113.0/24'], ports: np(30110) },
      { loadBalancer: { ingress: [{ ip: '198.18.1.15' }] } },
    ),
    slice('lb', allEndpoints),
  ];
}
