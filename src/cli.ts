#!/usr/bin/env node
/**
 * kpr command line. Configuration comes from flags, a YAML file (--config)
 * and KPR_* environment variables; flags win over the environment, which
 * wins over the file. Unknown keys and invalid values stop start-up.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import yargs, { type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { startDaemon } from './daemon.js';
import { cleanup, withPinnedMaps } from './datapath/pinned.js';
import type { LbAlgorithm } from './model/maglev.js';
import { formatNatRows, natRows } from './inspect/nat.js';
import { ctRows, formatCtRows } from './inspect/ct.js';
import { formatEndpointReport, inspectEndpoints } from './inspect/endpoints.js';
import { createLogger } from './log.js';
import { dropUnknownEnv, pinPathOption, RUN_OPTIONS, runOptions } from './run-options.js';
import { boundHeapGrowth } from './util/heap.js';
import { benchEntry } from './util/paths.js';

/**
 * `kpr bench`, `kpr bench-maglev` and `kpr bench-ct` live in bench/ of a source checkout, not
 * in the product: bench/index is imported only when one of them runs, and
 * otherwise they are only named, so --help lists them.
 */
async function benchCommands(command: string | undefined): Promise<CommandModule[]> {
  if (command === 'bench' || command === 'bench-maglev' || command === 'bench-ct') {
    const entry = benchEntry();
    if (!existsSync(entry)) throw new Error(`kpr ${command} needs a source checkout with the bench built (npm run build:bench): no ${entry}`);
    return ((await import(pathToFileURL(entry).href)) as { commands: CommandModule[] }).commands;
  }
  const named = (name: string, describe: string): CommandModule => ({ command: name, describe, handler: () => undefined });
  return [
    named('bench', 'benchmark kpr against kube-proxy iptables/nftables modes and direct pod access (source checkout: bench/README.md)'),
    named('bench-maglev', 'measure Maglev table builds, syncs and kernel memory (source checkout: bench/README.md)'),
    named('bench-ct', 'main-loop lag while the conntrack expiry scan walks a full map (source checkout: bench/README.md)'),
  ];
}

/**
 * `kpr lab up` and `kpr demo`: the lab's address families. yargs checks
 * the choice before any command touches the kernel.
 */
const labIpFamily = {
  'ip-family': {
    // a string, or yargs reads "6" as a number that no choice equals
    type: 'string' as const,
    choices: ['dual', '6'] as const,
    default: 'dual' as const,
    describe: 'dual: IPv4 and IPv6 on every node, pod and client; 6: IPv6 only (no IPv4 address anywhere)',
  },
};

export async function main(argv: string[]): Promise<void> {
  // Before the daemon allocates anything: the controller's RSS follows its live data.
  if (argv[0] === 'run') boundHeapGrowth();
  const ignoredEnv = argv[0] === 'run' ? dropUnknownEnv(process.env) : [];
  const bench = await benchCommands(argv[0]);
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
          clusterCidr: a['cluster-cidr']?.v4,
          clusterCidr6: a['cluster-cidr']?.v6,
          nodePortRange: a['nodeport-range'],
          nodePortAddresses: a['nodeport-addresses'],
          snatPortRange: a['snat-port-range'],
          ctScanIntervalMs: a['ct-scan-interval'] * 1000,
          nodePortMode: a['nodeport-mode'] as 'snat' | 'dsr' | 'hybrid',
          dsrOptoutCidrs: a['dsr-optout-cidrs'] ?? [],
          clusterNodeCidrs: a['cluster-node-ips'] ?? [],
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
            const rows = withPinnedMaps(a['pin-path'], (m) => ctRows(m.ct, undefined, m.ct6));
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
            (r.neighbours.length ? `, removed neighbour entries ${r.neighbours.join(', ')}` : '') +
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
            ...labIpFamily,
          }),
      async (a) => {
        const { Lab } = await import('./lab/cluster.js');
        const lab = new Lab({ name: a.name, nodes: a.nodes, podsPerNode: a.pods, ipv6Only: a['ip-family'] === '6' });
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
      (y) =>
        y.options({
          name: { type: 'string', describe: 'lab name, 1-8 lowercase letters/digits (default demo<pid>)' },
          ...labIpFamily,
        }),
      async (a) => {
        const { runDemo } = await import('./lab/demo.js');
        await runDemo({ name: a.name, ipFamily: a['ip-family'] });
      },
    )
    .command(bench)
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
