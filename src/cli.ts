#!/usr/bin/env node
/**
 * kpr command line. Configuration comes from flags, a YAML file (--config)
 * and KPR_* environment variables; flags win over the environment, which
 * wins over the file. Unknown keys and invalid values stop start-up.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { startDaemon } from './daemon.js';
import { DEFAULT_MAP_SIZES } from './datapath/layout.js';
import { cleanup, openPinnedMaps } from './datapath/loader.js';
import { parseAddress } from './http/server.js';
import { formatNatRows, natRows } from './inspect/nat.js';
import { createLogger } from './log.js';

const DEFAULT_PIN_PATH = '/sys/fs/bpf/kpr';

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
  'node-name': { type: 'string', describe: 'this node; endpoints on it are local (required with the Kubernetes API)' },
  'map-size-nat-fe': { type: 'number', default: DEFAULT_MAP_SIZES.natFe, describe: 'max frontends (kpr_v4_nat_fe)' },
  'map-size-nat-be': { type: 'number', default: DEFAULT_MAP_SIZES.natBe, describe: 'max backends (kpr_v4_nat_be)' },
  'map-size-sk-nat': { type: 'number', default: DEFAULT_MAP_SIZES.skNat, describe: 'max socket revNAT entries (kpr_v4_sk_nat)' },
  'map-size-svc-meta': { type: 'number', default: DEFAULT_MAP_SIZES.svcMeta, describe: 'max Service ports (kpr_svc_meta)' },
  'resync-interval': { type: 'number', default: 60, describe: 'seconds between full re-reads and repairs of the maps (0 = off)' },
  'watch-timeout': {
    type: 'number',
    default: 300,
    describe: 'server-side timeout of each API watch, in seconds; a watch still open 30 s past it is replaced',
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
 * KPR_* variables must name a flag of kpr run: a typo would otherwise be
 * ignored silently. (In a pod, a Service named "kpr" would inject KPR_PORT
 * and friends; the DaemonSet sets enableServiceLinks: false.)
 */
function checkEnv(env: NodeJS.ProcessEnv): void {
  const envName = (k: string) => 'KPR_' + k.toUpperCase().replace(/-/g, '_');
  const known = new Set([...RUN_KEYS].map(envName));
  const unknown = Object.keys(env).filter((k) => k.startsWith('KPR_') && !known.has(k));
  if (unknown.length) {
    throw new Error(`unknown environment variable(s) ${unknown.join(', ')}; KPR_* variables set flags of kpr run: ${[...known].sort().join(', ')}`);
  }
}

function runOptions(y: Argv) {
  // env and config only for run: `kubectl exec … kpr inspect nat` in a pod
  // whose env sets KPR_NODE_NAME must not trip over it.
  return y
    .env('KPR')
    .config('config', 'YAML config file (keys are flag names)', loadConfigFile)
    .options(RUN_OPTIONS)
    .check((a) => {
      for (const k of ['map-size-nat-fe', 'map-size-nat-be', 'map-size-sk-nat', 'map-size-svc-meta']) positiveInt(k, a[k]);
      if (!Number.isFinite(a['resync-interval']) || (a['resync-interval'] as number) < 0) {
        throw new Error('--resync-interval must be a number of seconds >= 0');
      }
      positiveInt('watch-timeout', a['watch-timeout']);
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
  // Before yargs, whose strict mode would only say "Unknown argument: bogus".
  if (argv[0] === 'run') checkEnv(process.env);
  await yargs(argv)
    .scriptName('kpr')
    .command(
      'run',
      'run the controller: program the BPF data path from a source until SIGTERM',
      runOptions,
      async (a) => {
        if (a['addon-path']) process.env.KPR_ADDON_PATH = a['addon-path'];
        const log = createLogger(a['log-level']);
        const daemon = await startDaemon({
          manifests: a.manifests,
          kubeconfig: a.kubeconfig,
          // Inside a pod with no other source: the service account.
          inCluster: a['in-cluster'] ?? (!a.manifests && !a.kubeconfig && !!process.env.KUBERNETES_SERVICE_HOST),
          watchTimeoutSeconds: a['watch-timeout'],
          healthzAddress: a['healthz-bind-address'],
          metricsAddress: a['metrics-bind-address'],
          pinPath: a['pin-path'],
          cgroup: a.cgroup,
          connectTimeLb: a['connect-time-lb'],
          nodeName: a['node-name'],
          sizes: {
            natFe: a['map-size-nat-fe'],
            natBe: a['map-size-nat-be'],
            skNat: a['map-size-sk-nat'],
            svcMeta: a['map-size-svc-meta'],
          },
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
            const maps = openPinnedMaps(a['pin-path']);
            const rows = natRows(maps);
            process.stdout.write(a.json ? JSON.stringify(rows, null, 2) + '\n' : formatNatRows(rows));
          },
        )
        .demandCommand(1, 'name what to inspect: nat'),
    )
    .command(
      'cleanup',
      'detach and unpin everything kpr created under the pin path',
      (y) => y.options(pinPathOption),
      async (a) => {
        const r = await cleanup(a['pin-path']);
        process.stdout.write(
          `detached ${r.detached.length} link(s), unpinned ${r.unpinned.length} map(s) under ${a['pin-path']}` +
            (r.left.length ? `; left foreign entries: ${r.left.join(', ')}` : '') +
            '\n',
        );
      },
    )
    .command(
      'demo',
      'build a netns topology, run kpr on a manifest, send traffic through a ClusterIP, tear down',
      (y) => y,
      async () => {
        const { runDemo } = await import('./lab/demo.js');
        await runDemo();
      },
    )
    .demandCommand(1, 'give a command: run, inspect, cleanup or demo')
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
