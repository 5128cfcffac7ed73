/**
 * The modes under test. Each can be loaded for a Service model while
 * inactive, then switched on and off cheaply, so the benchmark can
 * alternate modes (A B A B …) without reloading 10k-Service rulesets
 * between runs. A mode that cannot run here says why (`unavailable`) and is
 * reported as such, never with made-up numbers.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_IP, NODE_IP6, run } from 'kpr/lab';
import { iptablesHooks, iptablesRestoreCommand, renderIptables, renderIptablesServicesChain } from './iptables.js';
import { KprProcess, missingRunFlags } from './kpr.js';
import { CLIENT_HOST_IFACE, CLUSTER_CIDR, CLUSTER_CIDR6, VIP_DEV, type BenchLab } from './lab.js';
import { familyOf, manifestJson, targetOf, type BenchModel, type BenchService, type IpFamily } from './model.js';
import { NFT_TABLE, nftHooks, nftTableFamily, renderNftables } from './nftables.js';

export const MODE_NAMES = ['direct', 'iptables', 'nftables', 'kpr-ct', 'direct-pod', 'kpr-tc'] as const;
/** S7's modes (and S6's NodePort rows), on the two-node lab: see nodeport.ts. */
export const NODEPORT_MODE_NAMES = ['np-direct', 'np-iptables', 'np-nftables', 'kpr-snat', 'kpr-dsr'] as const;
export type NodePortModeName = (typeof NODEPORT_MODE_NAMES)[number];

/**
 * The no-translation reference of each mode: the same client position
 * talking straight to a pod. kpr-tc's client is a pod (tc NAT starts flows
 * on ingress only), so it compares with direct-pod.
 */
export const DIRECT_REF: Record<string, string> = {
  'kpr-tc': 'direct-pod',
  'direct-pod': 'direct-pod',
  ...Object.fromEntries(NODEPORT_MODE_NAMES.map((n) => [n, 'np-direct'])),
};
/** The kube-proxy iptables run each mode is compared with. */
export const IPTABLES_REF: Record<string, string> = Object.fromEntries(NODEPORT_MODE_NAMES.map((n) => [n, 'np-iptables']));
export type ModeName = (typeof MODE_NAMES)[number] | NodePortModeName;

export interface Mode {
  readonly name: ModeName;
  /** Why this mode cannot run here; undefined when it can. */
  unavailable?: string | undefined;
  /** Program the model, inactive. */
  load(model: BenchModel): Promise<void>;
  /** The model's order changed (the target moved in KUBE-SERVICES). */
  reorder(model: BenchModel): Promise<void>;
  activate(): Promise<void>;
  deactivate(): Promise<void>;
  unload(): Promise<void>;
  /** Where the client connects: one address, or (direct) one per backend. */
  target(model: BenchModel): { host: string; port: number; spread?: string[] };
  /** The cgroup the client runs in. */
  cgroup(): string;
  /** The namespace the client runs in. */
  clientNs(): string;
  /** Backends a client of this mode must reach. */
  expectedPods(model: BenchModel): string[];
  /** What to add to a failed check's report (e.g. the end of kpr's log). */
  diagnose?(): Promise<string>;
}

const podsOf = (lab: BenchLab, s: BenchService) =>
  s.backends.map((b) => lab.pods.find((p) => p.ip === b.ip || p.ip6 === b.ip)?.name).filter((n): n is string => !!n);

/** In the node namespace: iptables-restore / nft read a file (never the root namespace). */
export async function inNode(lab: BenchLab, cmd: string, args: string[], timeoutMs = 600_000): Promise<string> {
  return run('ip', ['netns', 'exec', lab.nodeNs, cmd, ...args], { timeoutMs });
}

class Direct implements Mode {
  constructor(
    private readonly lab: BenchLab,
    readonly name: 'direct' | 'direct-pod' = 'direct',
  ) {}
  clientNs(): string {
    return this.name === 'direct' ? this.lab.nodeNs : this.lab.clientNs;
  }
  async load(): Promise<void> {}
  async reorder(): Promise<void> {}
  async activate(): Promise<void> {}
  async deactivate(): Promise<void> {}
  async unload(): Promise<void> {}
  /**
   * The client talks to the target's backends by pod IP: no Service
   * translation at all. wrk spreads its threads over the backends (one
   * address per thread), so the servers share the load as behind a VIP.
   */
  target(m: BenchModel) {
    const bs = targetOf(m).backends;
    const b = bs[0];
    if (!b) throw new Error('the target has no backend');
    return { host: b.ip, port: b.port, spread: bs.map((x) => x.ip) };
  }
  cgroup(): string {
    return this.lab.cgClient;
  }
  expectedPods(m: BenchModel): string[] {
    return podsOf(this.lab, targetOf(m));
  }
}

abstract class ViaVip {
  constructor(protected readonly lab: BenchLab) {}
  clientNs(): string {
    return this.lab.nodeNs;
  }
  target(m: BenchModel) {
    const t = targetOf(m);
    return { host: t.vip, port: t.port };
  }
  expectedPods(m: BenchModel): string[] {
    return podsOf(this.lab, targetOf(m));
  }
}

/** Where a kube-proxy ruleset is loaded: a node namespace, a scratch directory, and its conntrack. */
export interface RulesetHost {
  readonly dir: string;
  readonly netns: string;
  flushConntrack(): Promise<void>;
}

/**
 * kube-proxy's iptables rules in a node namespace, loaded once and switched
 * on and off by their hook rules (the ClusterIP mode and S7's NodePort mode).
 * An IPv6 model goes through ip6tables-restore, as kube-proxy's IPv6 proxier.
 */
export class IptablesRuleset {
  private family: IpFamily = 4;
  constructor(
    private readonly host: RulesetHost,
    private readonly prefix: string,
  ) {}
  private async restore(tag: string, text: string, noflush: boolean): Promise<void> {
    const f = join(this.host.dir, `${this.prefix}-${tag}.rules`);
    await writeFile(f, text);
    await run('ip', ['netns', 'exec', this.host.netns, iptablesRestoreCommand(this.family), ...(noflush ? ['--noflush'] : []), f], { timeoutMs: 600_000 });
  }
  async load(m: BenchModel): Promise<void> {
    this.family = familyOf(m);
    await this.restore('full', renderIptables(m), false);
  }
  async reorder(m: BenchModel): Promise<void> {
    await this.restore('services', renderIptablesServicesChain(m), true);
  }
  async activate(): Promise<void> {
    await this.restore('hooks-on', iptablesHooks('-A'), true);
  }
  async deactivate(): Promise<void> {
    await this.restore('hooks-off', iptablesHooks('-D'), true);
    await this.host.flushConntrack();
  }
  async unload(): Promise<void> {
    await this.restore('empty', '*filter\nCOMMIT\n*nat\nCOMMIT\n', false);
  }
}

/** kube-proxy's nftables table in a node namespace, switched by filling or emptying its base chains. */
export class NftablesRuleset {
  private loaded = false;
  private family: IpFamily = 4;
  constructor(
    private readonly host: RulesetHost,
    private readonly prefix: string,
  ) {}
  private async nft(args: string[]): Promise<void> {
    await run('ip', ['netns', 'exec', this.host.netns, 'nft', ...args], { timeoutMs: 600_000 });
  }
  private async file(tag: string, text: string): Promise<void> {
    const f = join(this.host.dir, `${this.prefix}-${tag}.nft`);
    await writeFile(f, text);
    await this.nft(['-f', f]);
  }
  async load(m: BenchModel): Promise<void> {
    this.family = familyOf(m);
    await this.file('full', renderNftables(m));
    this.loaded = true;
  }
  /** A verdict map has no order: moving the target changes nothing. */
  async reorder(): Promise<void> {}
  async activate(): Promise<void> {
    await this.file('hooks-on', nftHooks('on', this.family));
  }
  async deactivate(): Promise<void> {
    await this.file('hooks-off', nftHooks('off', this.family));
    await this.host.flushConntrack();
  }
  async unload(): Promise<void> {
    if (this.loaded) await this.nft(['delete', 'table', nftTableFamily(this.family), NFT_TABLE]);
    this.loaded = false;
  }
}

const nodeHost = (lab: BenchLab): RulesetHost => ({ dir: lab.dir, netns: lab.nodeNs, flushConntrack: () => lab.flushConntrack() });

class Iptables extends ViaVip implements Mode {
  readonly name = 'iptables';
  private readonly rules = new IptablesRuleset(nodeHost(this.lab), 'iptables');
  load = (m: BenchModel) => this.rules.load(m);
  reorder = (m: BenchModel) => this.rules.reorder(m);
  activate = () => this.rules.activate();
  deactivate = () => this.rules.deactivate();
  unload = () => this.rules.unload();
  cgroup(): string {
    return this.lab.cgClient;
  }
}

class Nftables extends ViaVip implements Mode {
  readonly name = 'nftables';
  private readonly rules = new NftablesRuleset(nodeHost(this.lab), 'nft');
  load = (m: BenchModel) => this.rules.load(m);
  reorder = () => this.rules.reorder();
  activate = () => this.rules.activate();
  deactivate = () => this.rules.deactivate();
  unload = () => this.rules.unload();
  cgroup(): string {
    return this.lab.cgClient;
  }
}

/** Write the manifest directory kpr reads: fillers and the target in separate files. */
export async function writeManifests(dir: string, m: BenchModel): Promise<void> {
  await mkdir(dir, { recursive: true });
  const t = targetOf(m);
  const fillers = m.services.filter((s) => s !== t);
  await writeAtomic(join(dir, 'fillers.json'), manifestJson(fillers));
  await writeAtomic(join(dir, 'target.json'), manifestJson([t]));
}

/** Write then rename, so the watcher never reads half a file. Dot-files are ignored by kpr's manifest source. */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf('/'));
  const tmp = join(dir, `.${path.slice(dir.length + 1)}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, path);
}

export function mapSizeArgs(m: BenchModel): string[] {
  const backends = m.services.reduce((n, s) => n + s.backends.length, 0);
  const fe = Math.max(65536, Math.ceil(m.services.length * 1.25));
  const be = Math.max(262144, Math.ceil(backends * 1.25));
  return ['--map-size-nat-fe', String(fe), '--map-size-svc-meta', String(fe), '--map-size-nat-be', String(be)];
}

class KprConnectTime extends ViaVip implements Mode {
  readonly name = 'kpr-ct';
  kpr: KprProcess | undefined;
  readonly pin: string;
  constructor(lab: BenchLab) {
    super(lab);
    this.pin = lab.pinPath('ct');
  }
  get manifestDir(): string {
    return join(this.lab.dir, 'kpr-ct');
  }
  async load(m: BenchModel): Promise<void> {
    await this.unload();
    await writeManifests(this.manifestDir, m);
    const k = new KprProcess(this.pin, ['--manifests', this.manifestDir, '--cgroup', this.lab.cgKpr, ...mapSizeArgs(m)]);
    this.lab.kprs.add(k);
    this.kpr = k;
    k.start();
    await k.waitSyncs(1, 600_000);
  }
  async reorder(): Promise<void> {}
  /** The hooks only act on the kpr cgroup: nothing to switch. */
  async activate(): Promise<void> {}
  async deactivate(): Promise<void> {}
  async unload(): Promise<void> {
    if (this.kpr) {
      await this.kpr.stopAndCleanup();
      this.lab.kprs.delete(this.kpr);
      this.kpr = undefined;
    }
  }
  cgroup(): string {
    return this.lab.cgKpr;
  }
}

/** Flags tc-only mode needs from `kpr run` (per-packet tc NAT). */
export const TC_FLAGS = ['--devices', '--workload-ifaces'];

/**
 * kpr with connect-time LB off: every packet goes through tc NAT on the
 * devices. kpr runs only while the mode is active, and its pinned tc
 * programs are removed when it is switched off, so other modes never pass
 * through them.
 */
class KprTcOnly extends ViaVip implements Mode {
  readonly name = 'kpr-tc';
  unavailable: string | undefined;
  kpr: KprProcess | undefined;
  readonly pin: string;
  private model: BenchModel | undefined;
  constructor(lab: BenchLab) {
    super(lab);
    this.pin = lab.pinPath('tc');
  }
  async probe(): Promise<void> {
    const missing = await missingRunFlags(TC_FLAGS);
    if (missing.length) this.unavailable = `kpr run has no ${missing.join(', ')} flag (per-packet tc NAT is not built yet)`;
  }
  get manifestDir(): string {
    return join(this.lab.dir, 'kpr-tc');
  }
  async load(m: BenchModel): Promise<void> {
    this.model = m;
    await writeManifests(this.manifestDir, m);
  }
  async reorder(): Promise<void> {}
  async activate(): Promise<void> {
    if (!this.model) throw new Error('kpr-tc: load() first');
    const k = new KprProcess(
      this.pin,
      [
        '--manifests',
        this.manifestDir,
        '--connect-time-lb=false',
        // The node namespace's only non-pod device, and every pod veth
        // (backends veth1..N and the client pod's vethcl).
        '--devices',
        VIP_DEV,
        '--workload-ifaces',
        'veth*',
        // Both families, as on a dual-stack node: the lab's node has both.
        '--node-ip',
        NODE_IP,
        ...(this.lab.family === 6 ? ['--node-ip', NODE_IP6] : []),
        '--cluster-cidr',
        this.lab.family === 6 ? `${CLUSTER_CIDR},${CLUSTER_CIDR6}` : CLUSTER_CIDR,
        ...mapSizeArgs(this.model),
      ],
      this.lab.nodeNs,
    );
    this.lab.kprs.add(k);
    this.kpr = k;
    k.start();
    await k.waitSyncs(1, 600_000);
  }
  async deactivate(): Promise<void> {
    if (this.kpr) {
      await this.kpr.stopAndCleanup();
      this.lab.kprs.delete(this.kpr);
      this.kpr = undefined;
    }
    // kpr's tc filters outlive it; `kpr cleanup` in the node namespace
    // removes them, and whatever is left on our own devices goes with their
    // clsact qdisc (other modes must never pass through a stale program).
    for (const dev of [VIP_DEV, CLIENT_HOST_IFACE, ...this.lab.pods.map((_, i) => `veth${i + 1}`)]) {
      await run('ip', ['netns', 'exec', this.lab.nodeNs, 'tc', 'qdisc', 'del', 'dev', dev, 'clsact'], { allowFail: true });
    }
    await this.lab.flushConntrack();
  }
  async unload(): Promise<void> {
    await this.deactivate();
  }
  cgroup(): string {
    return this.lab.cgClient;
  }
  override clientNs(): string {
    return this.lab.clientNs;
  }
}

export async function createModes(lab: BenchLab, names: readonly ModeName[]): Promise<Mode[]> {
  const out: Mode[] = [];
  for (const n of names) {
    if (n === 'direct') out.push(new Direct(lab));
    else if (n === 'direct-pod') out.push(new Direct(lab, 'direct-pod'));
    else if (n === 'iptables') out.push(new Iptables(lab));
    else if (n === 'nftables') out.push(new Nftables(lab));
    else if (n === 'kpr-ct') out.push(new KprConnectTime(lab));
    else {
      const m = new KprTcOnly(lab);
      await m.probe();
      out.push(m);
    }
  }
  return out;
}

