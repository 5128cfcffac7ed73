/**
 * The options of `kpr run`: flags, their KPR_* environment variables and the
 * YAML config file (--config), each value parsed once by its coerce
 * function; runOptions() adds the checks that span several options.
 */
import { readFileSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { parse as parseYaml } from 'yaml';
import type { Argv } from 'yargs';
import { DEFAULT_MAP_SIZES } from './datapath/names.js';
import { maglevMemoryProblem } from './datapath/maglev-tables.js';
import { parseAddress } from './http/server.js';
import { DEFAULT_MAGLEV_TABLE_SIZE, LB_ALGORITHMS, tableSizeProblem } from './model/maglev.js';
import { parseIpv4Cidr, type Ipv4Cidr } from './util/ipv4.js';
import { parseCidr, type IpCidr } from './util/ip.js';

const DEFAULT_PIN_PATH = '/sys/fs/bpf/kpr';

/**
 * Option values are parsed once, by the options' coerce functions (yargs
 * applies them to flags, environment and config file alike); check() below
 * holds only what spans several options.
 */
function portRange(name: string, v: unknown): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(String(v));
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new Error(`--${name} must look like 30000-32767, got ${JSON.stringify(v)}`);
  return [lo, hi];
}

/** An IPv4 CIDR, host bits cleared; with bareAddress, an address alone is its /32. */
function ipv4Cidr(name: string, v: string, bareAddress = false): Ipv4Cidr {
  const c = bareAddress || v.includes('/') ? parseIpv4Cidr(v) : undefined;
  if (!c) throw new Error(`--${name} must be an IPv4 CIDR like 10.244.0.0/16, got ${JSON.stringify(v)}`);
  return c;
}

/** --cluster-cidr: at most one CIDR per family, as kube-proxy's dual-stack form. */
function clusterCidrs(v: string): { v4?: Ipv4Cidr; v6?: IpCidr } {
  const out: { v4?: Ipv4Cidr; v6?: IpCidr } = {};
  for (const part of v.split(',').map((x) => x.trim())) {
    if (!part.includes(':')) {
      if (out.v4) throw new Error(`--cluster-cidr takes one IPv4 CIDR at most, got ${JSON.stringify(v)}`);
      out.v4 = ipv4Cidr('cluster-cidr', part);
      continue;
    }
    const c = anyCidr('cluster-cidr', part);
    if (out.v6) throw new Error(`--cluster-cidr takes one IPv6 CIDR at most, got ${JSON.stringify(v)}`);
    out.v6 = c;
  }
  return out;
}

/** A CIDR of either family (network address and length), as parseCidr gives it. */
function anyCidr(name: string, v: string, bareAddress = false): IpCidr {
  const c = parseCidr(v, bareAddress);
  if (!c) throw new Error(`--${name} must be a CIDR like 10.244.0.0/16 or 2001:db8::/64, got ${JSON.stringify(v)}`);
  return c;
}

function ipAddress(name: string, v: string): string {
  if (!ipaddr.IPv4.isValidFourPartDecimal(v) && !ipaddr.IPv6.isValid(v)) throw new Error(`--${name} ${v} is not an IP address`);
  return v;
}

function positiveInt(name: string, v: unknown): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

export const pinPathOption = {
  'pin-path': { type: 'string', default: DEFAULT_PIN_PATH, describe: 'bpffs directory for kpr maps and links' },
} as const;

export const RUN_OPTIONS = {
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
  'node-ip': {
    type: 'string',
    array: true,
    describe: 'node addresses for NodePort and SNAT, either family or both: the first of each family is its SNAT source; a family without one has no NodePorts and no SNAT (default: the global addresses of --devices)',
    coerce: (v: string[]) => v.map((a) => ipAddress('node-ip', a)),
  },
  'cluster-cidr': {
    type: 'string',
    describe: 'pod network, one CIDR per family, comma-separated; other sources reaching a ClusterIP are masqueraded, as kube-proxy does',
    coerce: (v: string) => clusterCidrs(v),
  },
  'nodeport-range': {
    type: 'string',
    default: '30000-32767',
    describe: 'valid NodePort range',
    coerce: (v: string) => portRange('nodeport-range', v),
  },
  'nodeport-addresses': {
    type: 'string',
    array: true,
    describe: 'node addresses that serve NodePorts, as kube-proxy --nodeport-addresses: CIDRs of either family and/or "primary" (the first --node-ip of each family); default: every node address',
    coerce: (v: string[]) => v.map((c) => (c === 'primary' ? c : (anyCidr('nodeport-addresses', c), c))),
  },
  'snat-port-range': {
    type: 'string',
    default: '61000-65535',
    describe: 'source ports for masqueraded flows (keep it outside ip_local_port_range)',
    coerce: (v: string) => portRange('snat-port-range', v),
  },
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
  'map-size-maglev': { type: 'number', default: DEFAULT_MAP_SIZES.maglev, describe: 'max Service ports with a Maglev table, per family (kpr_v4_maglev, kpr_v6_maglev)' },
  'maglev-memory-limit': {
    type: 'number',
    default: 1024,
    describe: 'MiB of kernel memory the Maglev tables may take at most (2 families x map-size-maglev x maglev-table-size x 4 bytes); start-up refuses more',
  },
  'dsr-optout-cidrs': {
    type: 'string',
    array: true,
    describe: 'clients in these CIDRs, IPv4 or IPv6, get SNAT instead of DSR',
    coerce: (v: string[]) => v.map((c) => anyCidr('dsr-optout-cidrs', c)),
  },
  'cluster-node-ips': {
    type: 'string',
    array: true,
    describe: 'addresses or CIDRs, IPv4 or IPv6, of the cluster nodes allowed to send this node DSR requests (with Node objects\' addresses); others\' DSR options are dropped',
    coerce: (v: string[]) => v.map((c) => anyCidr('cluster-node-ips', c, true)),
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
  'healthz-bind-address': {
    type: 'string',
    default: '0.0.0.0:10256',
    describe: '/healthz, /livez and /readyz (HOST:PORT; empty = off)',
    coerce: (v: string) => (v ? parseAddress(v, 'healthz-bind-address') : undefined),
  },
  'metrics-bind-address': {
    type: 'string',
    default: '127.0.0.1:10249',
    describe: '/metrics, plus the health paths (HOST:PORT; empty = off; equal to the healthz address = one server)',
    coerce: (v: string) => (v ? parseAddress(v, 'metrics-bind-address') : undefined),
  },
  'log-level': {
    type: 'string',
    default: 'info',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'],
    describe: 'log level',
  },
  // datapath/addon.ts reads KPR_ADDON_PATH; declared so that variable is known.
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
export function dropUnknownEnv(env: NodeJS.ProcessEnv): string[] {
  const envName = (k: string) => 'KPR_' + k.toUpperCase().replace(/-/g, '_');
  const known = new Set([...RUN_KEYS].map(envName));
  const unknown = Object.keys(env).filter((k) => k.startsWith('KPR_') && !known.has(k));
  for (const k of unknown) delete env[k];
  return unknown;
}

export function runOptions(y: Argv) {
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
