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
import { formatNatRows, natRows } from './inspect/nat.js';
import { createLogger } from './log.js';

const DEFAULT_PIN_PATH = '/sys/fs/bpf/kpr';

function positiveInt(name: string, v: unknown): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function loadConfigFile(path: string): Record<string, unknown> {
  const doc = parseYaml(readFileSync(path, 'utf8')) as unknown;
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${path}: the config file must be a YAML mapping`);
  return doc as Record<string, unknown>;
}

const pinPathOption = {
  'pin-path': { type: 'string', default: DEFAULT_PIN_PATH, describe: 'bpffs directory for kpr maps and links' },
} as const;

function runOptions(y: Argv) {
  return y
    .options({
      ...pinPathOption,
      manifests: { type: 'string', describe: 'Service/EndpointSlice YAML file or directory (watched)' },
      cgroup: { type: 'string', describe: 'cgroup v2 directory for connect-time hooks (default: the cgroup2 root)' },
      'connect-time-lb': { type: 'boolean', default: true, describe: 'attach the connect-time (socket) load balancer' },
      'node-name': { type: 'string', describe: 'this node; endpoints on it are local' },
      'map-size-nat-fe': { type: 'number', default: DEFAULT_MAP_SIZES.natFe, describe: 'max frontends (kpr_v4_nat_fe)' },
      'map-size-nat-be': { type: 'number', default: DEFAULT_MAP_SIZES.natBe, describe: 'max backends (kpr_v4_nat_be)' },
      'map-size-sk-nat': { type: 'number', default: DEFAULT_MAP_SIZES.skNat, describe: 'max socket revNAT entries (kpr_v4_sk_nat)' },
      'map-size-svc-meta': { type: 'number', default: DEFAULT_MAP_SIZES.svcMeta, describe: 'max Service ports (kpr_svc_meta)' },
      'resync-interval': { type: 'number', default: 60, describe: 'seconds between full re-reads and repairs of the maps (0 = off)' },
      'log-level': {
        type: 'string',
        default: 'info',
        choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'],
        describe: 'log level',
      },
    })
    .check((a) => {
      for (const k of ['map-size-nat-fe', 'map-size-nat-be', 'map-size-sk-nat', 'map-size-svc-meta']) positiveInt(k, a[k]);
      if (!Number.isFinite(a['resync-interval']) || (a['resync-interval'] as number) < 0) {
        throw new Error('--resync-interval must be a number of seconds >= 0');
      }
      if (!a.manifests) throw new Error('a source is required: --manifests PATH');
      return true;
    });
}

export async function main(argv: string[]): Promise<void> {
  await yargs(argv)
    .scriptName('kpr')
    .env('KPR')
    .config('config', 'YAML config file (keys are flag names)', loadConfigFile)
    .command(
      'run',
      'run the controller: program the BPF data path from a source until SIGTERM',
      runOptions,
      async (a) => {
        const log = createLogger(a['log-level']);
        const daemon = await startDaemon({
          manifests: a.manifests,
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
