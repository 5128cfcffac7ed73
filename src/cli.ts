#!/usr/bin/env node
/**
 * kpr command line. Configuration comes from flags, a YAML file (--config)
 * and KPR_* environment variables; flags win over the environment, which
 * wins over the file. Unknown keys and invalid values stop start-up.
 */
import { readFileSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { parse as parseYaml } from 'yaml';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { startDaemon } from './daemon.js';
import { DEFAULT_MAP_SIZES } from './datapath/layout.js';
import { cleanup, withPinnedMaps } from './datapath/loader.js';
import { maglevMemoryProblem } from './datapath/maglev-tables.js';
import { DEFAULT_MAGLEV_TABLE_SIZE, LB_ALGORITHMS, tableSizeProblem, type LbAlgorithm } from './model/maglev.js';
import { parseAddress } from './http/server.js';
import { formatNatRows, natRows } from './inspect/nat.js';
import { ctRows, formatCtRows } from './inspect/ct.js';
import { formatEndpointReport, inspectEndpoints } from './inspect/endpoints.js';
import { benchCommand } from './bench/command.js';
import { benchMaglevCommand } from './bench/maglev.js';
import { createLogger } from './log.js';

const DEFAULT_PIN_PATH = '/sys/fs/bpf/kpr';

function portRange(name: string, v: unknown): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(String(v));
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new Error(`--${name} must look like 30000-32767, got ${JSON.stringify(v)}`);
  return [lo, hi];
}

/** Validates an IPv4 CIDR and returns it as "network/len" (host bits cleared). */
function ipv4Cidr(name: string, v: string): string {
  try {
    const [addr, len] = ipaddr.parseCIDR(v);
    if (addr.kind() !== 'ipv4') throw new Error('not IPv4');
    return `${ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${len}`).toString()}/${len}`;
  } catch {
    throw new Error(`--${name} must be an IPv4 CIDR like 10.244.0.0/16, got ${JSON.stringify(v)}`);
  }
}

function positiveInt(name: string, v: unknown): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

const pinPathOption = {
  'pin-path': { type: 'string', default: DEFAULT_PIN_PATH, describe: 'bpffs directory for kpr maps and links' },
} as const;

const RUN_OPTIONS = {
  ...pinPathOption,
  manifests: { type: 'string', describe: 'Service/EndpointSlice YAML file or directory (watched)' },
  kubeconfig: { type: 'string', describe: 'watch the Kubernetes API with this kubeconfig (out of cluster)' },
  'in-cluster': {
    type: 'boolean',
    describe: 'watch the Kubernetes API with the pod service account (the default when KUBERNETES_SERVICE_HOST is set and no other source is given)',
  },
  cgroup: { type: 'string', describe: 'cgroup v2 directory for connect-time hooks (default: the cgroup2 root)' },
  'connect-time-lb': { type: 'boolean', default: true, describe: 'attach the connect-time (socket) load balancer' },
  'destroy-tcp-to-removed-backends': {
    type: 'boolean',
    default: false,
    describe: 'abort (RST) connect-time-balanced TCP connections to a backend that leaves its Service, instead of letting them drain',
  },
  'node-name': { type: 'string', describe: 'this node; endpoints on it are local (required with the Kubernetes API)' },
  'map-size-nat-fe': { type: 'number', default: DEFAULT_MAP_SIZES.natFe, describe: 'max frontends (kpr_v4_nat_fe)' },
  'map-size-nat-be': { type: 'number', default: DEFAULT_MAP_SIZES.natBe, describe: 'max backends (kpr_v4_nat_be)' },
  'map-size-sk-nat': {
    type: 'number',
    default: DEFAULT_MAP_SIZES.skNat,
    describe: 'max overflow socket revNAT entries (kpr_v4_sk_nat, LRU; only for sockets talking to more than 4 Service ports)',
  },
  'map-size-svc-meta': { type: 'number', default: DEFAULT_MAP_SIZES.svcMeta, describe: 'max Service ports (kpr_svc_meta)' },
  'map-size-ct': { type: 'number', default: DEFAULT_MAP_SIZES.ct, describe: 'max conntrack entries (kpr_v4_ct, LRU; two per NATed flow)' },
  devices: { type: 'string', array: true, describe: 'host-facing devices for per-packet NAT (NodePort, externalIPs, LB IPs)' },
  'workload-ifaces': { type: 'string', describe: 'glob of pod veths for per-packet NAT, e.g. "lxc*"; attached as they appear' },
  'node-ip': { type: 'string', array: true, describe: 'node addresses for NodePort and SNAT (default: the addresses of --devices)' },
  'cluster-cidr': { type: 'string', describe: 'pod network; other sources reaching a ClusterIP are masqueraded, as kube-proxy does' },
  'nodeport-range': { type: 'string', default: '30000-32767', describe: 'valid NodePort range' },
  'nodeport-addresses': {
    type: 'string',
    array: true,
    describe: 'node addresses that serve NodePorts, as kube-proxy --nodeport-addresses: IPv4 CIDRs and/or "primary" (the first --node-ip); default: every node address',
  },
  'snat-port-range': { type: 'string', default: '61000-65535', describe: 'source ports for masqueraded flows (keep it outside ip_local_port_range)' },
  'nodeport-mode': {
    type: 'string',
    default: 'snat',
    choices: ['snat', 'dsr', 'hybrid'],
    describe: 'NodePort/external traffic to a backend on another node: snat, dsr (direct server return) or hybrid (DSR for TCP, SNAT for UDP); the kpr.io/nodeport-mode annotation overrides it per Service',
  },
  'lb-algorithm': {
    type: 'string',
    default: 'random',
    choices: LB_ALGORITHMS,
    describe: 'backend choice for NodePort, externalIP and LoadBalancer traffic: random, or maglev (consistent hashing: the same flow gets the same backend on every node); the kpr.io/lb-algorithm annotation overrides it per Service',
  },
  'maglev-table-size': {
    type: 'number',
    default: DEFAULT_MAGLEV_TABLE_SIZE,
    describe: 'slots per Maglev table, a prime between 251 and 131071; keep it above 100 x the largest backend count',
  },
  'map-size-maglev': { type: 'number', default: DEFAULT_MAP_SIZES.maglev, describe: 'max Service ports with a Maglev table (kpr_v4_maglev)' },
  'maglev-memory-limit': {
    type: 'number',
    default: 1024,
    describe: 'MiB of kernel memory the Maglev tables may take at most (map-size-maglev x maglev-table-size x 4 bytes); start-up refuses more',
  },
  'dsr-optout-cidrs': { type: 'string', array: true, describe: 'clients in these CIDRs get SNAT instead of DSR' },
  'cluster-node-ips': {
    type: 'string',
    array: true,
    describe: 'addresses or CIDRs of the cluster nodes allowed to send this node DSR requests (with Node objects\' addresses); others\' DSR options are dropped',
  },
  'ct-scan-interval': { type: 'number', default: 10, describe: 'seconds between conntrack expiry scans (0 = off)' },
  'healthcheck-bind-address': {
    type: 'string',
    default: '0.0.0.0',
    describe: 'address for healthCheckNodePort listeners of externalTrafficPolicy=Local Services (empty = off)',
  },
  'resync-interval': { type: 'number', default: 60, describe: 'seconds between full re-reads and repairs of the maps (0 = off)' },
  'watch-timeout': {
    type: 'number',
    default: 300,
    describe: 'server-side timeout of each API watch, in seconds; a watch still open 30 s past it is replaced',
  },
  'api-unreachable-retry-max': {
    type: 'number',
    default: 2,
    describe: 'longest wait, in seconds (jittered), between retries while the API server refuses or resets connections; bounds catch-up after an outage',
  },
  'healthz-bind-address': { type: 'string', default: '0.0.0.0:10256', describe: '/healthz, /livez and /readyz (HOST:PORT; empty = off)' },
  'metrics-bind-address': {
    type: 'string',
    default: '127.0.0.1:10249',
    describe: '/metrics, plus the health paths (HOST:PORT; empty = off; equal to the healthz address = one server)',
  },
  'log-level': {
    type: 'string',
    default: 'info',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'],
    describe: 'log level',
  },
  // The data path loader reads KPR_ADDON_PATH; declared so that variable is known.
  'addon-path': { type: 'string', hidden: true, describe: 'native addon (kpr_bpf.node) to load' },
} as const;

const RUN_KEYS = new Set<string>([...Object.keys(RUN_OPTIONS), 'config']);

/** A YAML mapping whose keys are `kpr run` flag names; anything else stops start-up. */
function loadConfigFile(path: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8')) as unknown;
  } catch (err) {
    throw new Error(`config file ${path}: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`config file ${path}: must be a YAML mapping of flag names to values`);
  const unknown = Object.keys(doc).filter((k) => !RUN_KEYS.has(k));
  if (unknown.length) {
    throw new Error(`config file ${path}: unknown key(s) ${unknown.join(', ')}; keys are the flag names of kpr run: ${[...RUN_KEYS].sort().join(', ')}`);
  }
  return doc as Record<string, unknown>;
}

/**
 * kpr reads only its own KPR_* names. Another one (a typo, a variable some
 * other tool sets, KPR_PORT injected for a Service named "kpr") must not
 * stop kpr: it is dropped before yargs, whose strict mode would reject it
 * as an unknown flag, and named in a warning once the logger exists.
 */
function dropUnknownEnv(env: NodeJS.ProcessEnv): string[] {
  const envName = (k: string) => 'KPR_' + k.toUpperCase().replace(/-/g, '_');
  const known = new Set([...RUN_KEYS].map(envName));
  const unknown = Object.keys(env).filter((k) => k.startsWith('KPR_') && !known.has(k));
  for (const k of unknown) delete env[k];
  return unknown;
}

function runOptions(y: Argv) {
  // env and config only for run: `kubectl exec … kpr inspect nat` in a pod
  // whose env sets KPR_NODE_NAME must not trip over it.
  return y
    .env('KPR')
    .config('config', 'YAML config file (keys are flag names)', loadConfigFile)
    .options(RUN_OPTIONS)
    .check((a) => {
      for (const k of ['map-size-nat-fe', 'map-size-nat-be', 'map-size-sk-nat', 'map-size-svc-meta', 'map-size-ct', 'map-size-maglev']) positiveInt(k, a[k]);
      const m = Number(a['maglev-table-size']);
      const badSize = tableSizeProblem(m);
      if (badSize) throw new Error(`--maglev-table-size ${badSize}`);
      const memory = positiveInt('maglev-memory-limit', a['maglev-memory-limit']) * 2 ** 20;
      const tooBig = maglevMemoryProblem(Number(a['map-size-maglev']), m, memory);
      if (tooBig) throw new Error(tooBig);
      portRange('nodeport-range', a['nodeport-range']);
      portRange('snat-port-range', a['snat-port-range']);
      if (a['cluster-cidr'] !== undefined) ipv4Cidr('cluster-cidr', a['cluster-cidr']);
      for (const c of a['dsr-optout-cidrs'] ?? []) ipv4Cidr('dsr-optout-cidrs', c);
      for (const c of a['nodeport-addresses'] ?? []) if (c !== 'primary') ipv4Cidr('nodeport-addresses', c);
      for (const c of a['cluster-node-ips'] ?? []) ipv4Cidr('cluster-node-ips', c.includes('/') ? c : `${c}/32`);
      for (const addr of a['node-ip'] ?? []) if (!ipaddr.IPv4.isValidFourPartDecimal(addr)) throw new Error(`--node-ip ${addr} is not an IPv4 address`);
      if (!Number.isFinite(a['ct-scan-interval']) || (a['ct-scan-interval'] as number) < 0) {
        throw new Error('--ct-scan-interval must be a number of seconds >= 0');
      }
      if (!Number.isFinite(a['resync-interval']) || (a['resync-interval'] as number) < 0) {
        throw new Error('--resync-interval must be a number of seconds >= 0');
      }
      positiveInt('watch-timeout', a['watch-timeout']);
      if (!Number.isFinite(a['api-unreachable-retry-max']) || (a['api-unreachable-retry-max'] as number) <= 0) {
        throw new Error('--api-unreachable-retry-max must be a number of seconds > 0');
      }
      for (const k of ['healthz-bind-address', 'metrics-bind-address'] as const) if (a[k]) parseAddress(a[k], k);
      const sources = [a.manifests && '--manifests', a.kubeconfig && '--kubeconfig', a['in-cluster'] && '--in-cluster'].filter(Boolean);
      if (sources.length > 1) throw new Error(`give one source, not ${sources.join(' and ')}`);
      if (sources.length === 0 && !process.env.KUBERNETES_SERVICE_HOST) {
        throw new Error('a source is required: --manifests PATH, --kubeconfig PATH or --in-cluster');
      }
      if (!a.manifests && !a['node-name']) {
        throw new Error('--node-name is required with the Kubernetes API (in a pod: env KPR_NODE_NAME from spec.nodeName)');
      }
      return true;
    });
}

export async function main(argv: string[]): Promise<void> {
  const ignoredEnv = argv[0] === 'run' ? dropUnknownEnv(process.env) : [];
  await yargs(argv)
    .scriptName('kpr')
    .command(
      'run',
      'run the controller: program the BPF data path from a source until SIGTERM',
      runOptions,
      async (a) => {
        if (a['addon-path']) process.env.KPR_ADDON_PATH = a['addon-path'];
        const log = createLogger(a['log-level']);
        if (ignoredEnv.length) log.warn({ ignored: ignoredEnv }, `ignoring environment variable(s) ${ignoredEnv.join(', ')}: not kpr settings`);
        const daemon = await startDaemon({
          manifests: a.manifests,
          kubeconfig: a.kubeconfig,
          // Inside a pod with no other source: the service account.
          inCluster: a['in-cluster'] ?? (!a.manifests && !a.kubeconfig && !!process.env.KUBERNETES_SERVICE_HOST),
          watchTimeoutSeconds: a['watch-timeout'],
          apiUnreachableRetryMaxMs: a['api-unreachable-retry-max'] * 1000,
          healthzAddress: a['healthz-bind-address'],
          metricsAddress: a['metrics-bind-address'],
          pinPath: a['pin-path'],
          cgroup: a.cgroup,
          connectTimeLb: a['connect-time-lb'],
          destroyTcpToRemovedBackends: a['destroy-tcp-to-removed-backends'],
          nodeName: a['node-name'],
          sizes: {
            natFe: a['map-size-nat-fe'],
            natBe: a['map-size-nat-be'],
            skNat: a['map-size-sk-nat'],
            svcMeta: a['map-size-svc-meta'],
            ct: a['map-size-ct'],
            maglev: a['map-size-maglev'],
          },
          lbAlgorithm: a['lb-algorithm'] as LbAlgorithm,
          maglevTableSize: a['maglev-table-size'],
          devices: a.devices,
          workloadIfaces: a['workload-ifaces'],
          nodeIPs: a['node-ip'],
          clusterCidr: a['cluster-cidr'] ? ipv4Cidr('cluster-cidr', a['cluster-cidr']) : undefined,
          nodePortRange: portRange('nodeport-range', a['nodeport-range']),
          nodePortAddresses: a['nodeport-addresses'],
          snatPortRange: portRange('snat-port-range', a['snat-port-range']),
          ctScanIntervalMs: a['ct-scan-interval'] * 1000,
          nodePortMode: a['nodeport-mode'] as 'snat' | 'dsr' | 'hybrid',
          dsrOptoutCidrs: (a['dsr-optout-cidrs'] ?? []).map((c) => ipv4Cidr('dsr-optout-cidrs', c)),
          clusterNodeCidrs: (a['cluster-node-ips'] ?? []).map((c) => ipv4Cidr('cluster-node-ips', c.includes('/') ? c : `${c}/32`)),
          healthCheckAddress: a['healthcheck-bind-address'],
          resyncIntervalMs: a['resync-interval'] * 1000,
          log,
        });
        await new Promise<void>((resolve) => {
          const stop = (signal: string) => {
            log.info({ signal }, 'stopping; the pinned data path stays in place');
            resolve();
          };
          process.once('SIGTERM', () => stop('SIGTERM'));
          process.once('SIGINT', () => stop('SIGINT'));
        });
        await daemon.stop();
      },
    )
    .command('inspect', 'look inside the data path', (y) =>
      y
        .command(
          'nat',
          'frontends with their Service names and backends',
          (z) => z.options({ ...pinPathOption, json: { type: 'boolean', default: false, describe: 'print JSON' } }),
          (a) => {
            const rows = withPinnedMaps(a['pin-path'], natRows);
            process.stdout.write(a.json ? JSON.stringify(rows, null, 2) + '\n' : formatNatRows(rows));
          },
        )
        .command(
          'ct',
          'conntrack: NATed flows with their state',
          (z) => z.options({ ...pinPathOption, json: { type: 'boolean', default: false, describe: 'print JSON' } }),
          (a) => {
            const rows = withPinnedMaps(a['pin-path'], (m) => ctRows(m.ct));
            process.stdout.write(a.json ? JSON.stringify(rows, null, 2) + '\n' : formatCtRows(rows));
          },
        )
        .command(
          'endpoints',
          'why each endpoint is in or out of the cluster and local sets on this node',
          (z) =>
            z.options({
              manifests: RUN_OPTIONS.manifests,
              kubeconfig: RUN_OPTIONS.kubeconfig,
              'node-name': { type: 'string', demandOption: true, describe: 'the node to select for' },
              json: { type: 'boolean', default: false, describe: 'print JSON' },
            }),
          async (a) => {
            const report = await inspectEndpoints({ manifests: a.manifests, kubeconfig: a.kubeconfig, nodeName: a['node-name'] });
            process.stdout.write(a.json ? JSON.stringify(report, null, 2) + '\n' : formatEndpointReport(report));
          },
        )
        .demandCommand(1, 'name what to inspect: nat, ct or endpoints'),
    )
    .command(
      'cleanup',
      'detach and unpin everything kpr created under the pin path',
      (y) => y.options(pinPathOption),
      async (a) => {
        const r = await cleanup(a['pin-path']);
        process.stdout.write(
          `detached ${r.detached.length} link(s), unpinned ${r.unpinned.length} map(s) under ${a['pin-path']}` +
            (r.tcDetached.length ? `, removed tc filters from ${r.tcDetached.join(', ')}` : '') +
            (r.left.length ? `; left foreign entries: ${r.left.join(', ')}` : '') +
            '\n',
        );
      },
    )
    .command(
      'lab <action>',
      'a small cluster in network namespaces: nodes, pods, an external client, one kpr per node',
      (y) =>
        y
          .positional('action', { choices: ['up', 'down', 'status'] as const, demandOption: true })
          .options({
            name: { type: 'string', default: 'kprlab', describe: 'lab name (namespaces are <name>-...)' },
            nodes: { type: 'number', default: 2, describe: 'nodes (1-3)' },
            pods: { type: 'number', default: 2, describe: 'pods per node (1-8)' },
          }),
      async (a) => {
        const { Lab } = await import('./lab/cluster.js');
        const lab = new Lab({ name: a.name, nodes: a.nodes, podsPerNode: a.pods });
        if (a.action === 'up') {
          try {
            await lab.up();
          } catch (err) {
            await lab.down().catch(() => undefined);
            throw err;
          }
          process.stdout.write(`lab ${a.name} is up; edit ${lab.manifestPath} to change Services\n` + (await lab.status()));
        } else if (a.action === 'down') {
          await lab.down();
          process.stdout.write(`lab ${a.name} removed\n`);
        } else process.stdout.write(await lab.status());
      },
    )
    .command(
      'demo',
      'build a lab, run kpr on every node, show each Service behaviour with real traffic, tear down',
      (y) => y,
      async () => {
        const { runDemo } = await import('./lab/demo.js');
        await runDemo();
      },
    )
    .command(benchCommand)
    .command(benchMaglevCommand)
    .demandCommand(1, 'give a command: run, inspect, cleanup, lab, demo or bench')
    .strict()
    .help()
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`kpr: ${msg}\n`);
      process.exit(2);
    })
    .parseAsync();
}

main(hideBin(process.argv)).catch((err: unknown) => {
  const e = err as Error & { code?: string };
  process.stderr.write(`kpr: ${e.message}\n`);
  process.exit(1);
});
