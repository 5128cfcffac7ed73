/**
 * S7 (and S6's NodePort modes): NodePort from an external client, on the
 * two-node lab of src/lab/cluster.ts (fabric bridge, nodes n1 and n2, the
 * external client `ext`; nothing connected to the root namespace). The
 * target Service has one backend pod on the ingress node n1 and one on n2,
 * each running the benchmark's nginx; the client in `ext` connects to
 * n1's address and the NodePort.
 *
 *   np-direct    ext -> backend pod IPs, routed through their own nodes, no
 *                translation (the reference, DSR's especially)
 *   np-iptables  kube-proxy's iptables rules (KUBE-NODEPORTS) in n1
 *   np-nftables  kube-proxy's nftables table (nodeports chain) in n1
 *   kpr-snat     kpr on both nodes, --nodeport-mode snat
 *   kpr-dsr      kpr on both nodes, --nodeport-mode dsr
 *
 * The modes implement scenarios.ts's Mode, so runDataPlane alternates and
 * checks them exactly as it does the ClusterIP modes.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, LAB_CLUSTER_CIDR, type LabNode, removeCgroup, run } from 'kpr/lab';
import type { CpuPlan } from './lab.js';
import { buildModel, manifestJson, targetOf, type BenchModel } from './model.js';
import { IptablesRuleset, mapSizeArgs, NftablesRuleset, writeAtomic, type Mode, type NodePortModeName, type RulesetHost } from './modes.js';
import { startNginx, type NginxHandle } from './nginx.js';

export const NODE_PORT = 30080;
const BACKEND_PORT = 8080;

/** The lab, nginx in its pods, and a child cgroup without hooks for the client. */
export class NodePortLab {
  readonly lab: Lab;
  readonly nginx: NginxHandle[] = [];
  readonly kprNodes = new Set<LabNode>();
  clientCgroup = '';

  dir = '';
  private readonly stateRoot: string;

  constructor(
    readonly id: string,
    readonly cpus: CpuPlan,
  ) {
    this.stateRoot = join(tmpdir(), `kpr-bench-${id}-state`);
    this.lab = new Lab({ name: id, nodes: 2, podsPerNode: 1 }, this.stateRoot);
  }

  get n1(): LabNode {
    return this.lab.nodes[0]!;
  }

  /** kube-proxy's rulesets go into the ingress node; conntrack is flushed in both. */
  get ingressHost(): RulesetHost {
    const np = this;
    return {
      get dir() {
        return np.dir;
      },
      netns: this.n1.netns,
      flushConntrack: () => this.flushConntrack(),
    };
  }

  /** The target's backends: the pod on the ingress node and the pod on the other node. */
  get backends() {
    return this.lab.nodes.map((n) => ({ ip: n.pods[0]!.ip, port: BACKEND_PORT, name: n.pods[0]!.name }));
  }

  async setup(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `kpr-bench-${this.id}-`));
    await this.lab.create();
    this.clientCgroup = join(this.lab.cgroupRoot, 'ext');
    await mkdir(this.clientCgroup, { recursive: true });
    // np-direct: the client reaches each pod through its own node, as a
    // router with the pod routes would send it (lab addresses only).
    for (const node of this.lab.nodes) await run('ip', ['-n', this.lab.extNs, 'route', 'add', node.podCidr, 'via', node.ip]);
    for (const node of this.lab.nodes) {
      for (const pod of node.pods) {
        this.nginx.push(await startNginx({ baseDir: this.dir, name: pod.name, netns: pod.netns, ip: pod.ip, port: BACKEND_PORT, cpu: this.cpus.server }));
        // As in the node lab: no server-side TIME_WAIT stalls on reused client ports.
        await run('ip', ['netns', 'exec', pod.netns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_max_tw_buckets=0']);
      }
    }
    await run('ip', ['netns', 'exec', this.lab.extNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000']);
    await run('ip', ['netns', 'exec', this.lab.extNs, 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
  }

  model(services: number, fillerEndpoints: number, seed: number): BenchModel {
    return buildModel({
      services,
      fillerEndpoints,
      targetBackends: this.backends.map(({ ip, port }) => ({ ip, port })),
      position: 'random',
      seed,
      clusterCidr: LAB_CLUSTER_CIDR,
      targetNodePort: NODE_PORT,
    });
  }

  async flushConntrack(): Promise<void> {
    for (const node of this.lab.nodes) await run('ip', ['netns', 'exec', node.netns, 'conntrack', '-F'], { allowFail: true });
  }

  /** Stop kpr and remove its tc programs and pins on every node; a failed cleanup is reported (the next mode would pass through stale state). */
  async stopKpr(): Promise<void> {
    const failed: string[] = [];
    for (const node of this.kprNodes) {
      await this.lab.stopKpr(node);
      // kpr's tc filters and pins outlive it: `kpr cleanup` inside the node.
      await this.lab.kprCli(node, ['cleanup', '--pin-path', node.pinPath]).catch((err: Error) => failed.push(`${node.name}: ${err.message.slice(-300)}`));
    }
    this.kprNodes.clear();
    if (failed.length) throw new Error(`kpr cleanup failed: ${failed.join('; ')}`);
  }

  async destroy(): Promise<void> {
    await this.stopKpr().catch(() => undefined);
    for (const n of this.nginx) await n.stop().catch(() => undefined);
    if (this.clientCgroup) await removeCgroup(this.clientCgroup).catch(() => undefined);
    await this.lab.down();
    await rm(this.stateRoot, { recursive: true, force: true });
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

abstract class NodePortMode {
  constructor(protected readonly np: NodePortLab) {}
  clientNs(): string {
    return this.np.lab.extNs;
  }
  cgroup(): string {
    return this.np.clientCgroup;
  }
  target(_m: BenchModel): { host: string; port: number; spread?: string[] } {
    return { host: this.np.n1.ip, port: NODE_PORT };
  }
  expectedPods(_m: BenchModel): string[] {
    return this.np.backends.map((b) => b.name);
  }
  async reorder(): Promise<void> {}
}

class NpDirect extends NodePortMode implements Mode {
  readonly name = 'np-direct';
  async load(): Promise<void> {}
  async activate(): Promise<void> {}
  async deactivate(): Promise<void> {}
  async unload(): Promise<void> {}
  override target(m: BenchModel) {
    const bs = targetOf(m).backends;
    return { host: bs[0]!.ip, port: BACKEND_PORT, spread: bs.map((b) => b.ip) };
  }
}

class NpIptables extends NodePortMode implements Mode {
  readonly name = 'np-iptables';
  private readonly rules = new IptablesRuleset(this.np.ingressHost, 'np-iptables');
  load = (m: BenchModel) => this.rules.load(m);
  activate = () => this.rules.activate();
  deactivate = () => this.rules.deactivate();
  unload = () => this.rules.unload();
}

class NpNftables extends NodePortMode implements Mode {
  readonly name = 'np-nftables';
  private readonly rules = new NftablesRuleset(this.np.ingressHost, 'np-nft');
  load = (m: BenchModel) => this.rules.load(m);
  activate = () => this.rules.activate();
  deactivate = () => this.rules.deactivate();
  unload = () => this.rules.unload();
}

/**
 * kpr on both nodes (n2 must answer DSR traffic itself). kpr runs only
 * while the mode is active and is cleaned up when it is switched off, so
 * the other modes never pass through its tc programs.
 */
class KprNodePort extends NodePortMode implements Mode {
  private model: BenchModel | undefined;
  constructor(
    np: NodePortLab,
    readonly name: 'kpr-snat' | 'kpr-dsr',
  ) {
    super(np);
  }
  async load(m: BenchModel): Promise<void> {
    this.model = m;
  }
  async activate(): Promise<void> {
    if (!this.model) throw new Error(`${this.name}: load() first`);
    const lab = this.np.lab;
    await writeAtomic(lab.manifestPath, manifestJson(this.model.services));
    const args = [
      '--nodeport-mode',
      this.name === 'kpr-dsr' ? 'dsr' : 'snat',
      // The backend node honours the DSR option only from a known node.
      '--cluster-node-ips',
      ...lab.nodes.map((n) => n.ip),
      ...mapSizeArgs(this.model),
    ];
    for (const node of lab.nodes) {
      const before = (await lab.kprLog(node)).split('"msg":"synced"').length;
      this.np.kprNodes.add(node);
      await lab.startKpr(node, args);
      await lab.waitFor(async () => (await lab.kprLog(node)).split('"msg":"synced"').length > before, `kpr on ${node.name}`, 600_000);
    }
  }
  async deactivate(): Promise<void> {
    await this.np.stopKpr();
    await this.np.flushConntrack();
  }
  /** The last lines of each node's kpr log: why a NodePort mode did not carry the check. */
  async diagnose(): Promise<string> {
    const out: string[] = [];
    for (const node of this.np.lab.nodes) {
      const lines = (await this.np.lab.kprLog(node)).trimEnd().split('\n').slice(-5);
      out.push(`kpr on ${node.name}:`, ...lines.map((l) => `  ${l.slice(0, 300)}`));
    }
    return out.join('\n');
  }
  async unload(): Promise<void> {
    await this.deactivate();
  }
}

export function createNodePortModes(np: NodePortLab, names: readonly NodePortModeName[]): Mode[] {
  return names.map((n) => {
    if (n === 'np-direct') return new NpDirect(np);
    if (n === 'np-iptables') return new NpIptables(np);
    if (n === 'np-nftables') return new NpNftables(np);
    return new KprNodePort(np, n);
  });
}
