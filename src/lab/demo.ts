/**
 * `kpr demo`: a node namespace with three pods, kpr started on a manifest,
 * real TCP and UDP traffic through a ClusterIP from a client in a child
 * cgroup, `kpr inspect nat`, then a full teardown (also on failure or ^C).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { nodeArgv, run, runIn } from './exec.js';
import { labScript, NodeTopology } from './topology.js';
import { createChildCgroup, removeCgroup } from '../util/cgroup.js';

const VIP = '198.18.0.10';

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

export function demoManifest(topo: NodeTopology, ready: number): string {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'hello', namespace: 'demo' },
    spec: {
      clusterIP: VIP,
      ports: [
        { name: 'tcp', port: 80, protocol: 'TCP', targetPort: topo.port },
        { name: 'udp', port: 53, protocol: 'UDP', targetPort: topo.port },
      ],
    },
  };
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'hello-1', namespace: 'demo', labels: { 'kubernetes.io/service-name': 'hello' } },
    addressType: 'IPv4',
    ports: [
      { name: 'tcp', port: topo.port, protocol: 'TCP' },
      { name: 'udp', port: topo.port, protocol: 'UDP' },
    ],
    endpoints: topo.pods.slice(0, ready).map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: 'demo-node' })),
  };
  return [svc, slice].map((o) => stringify(o)).join('---\n');
}

export async function runDemo(): Promise<void> {
  const id = `kd${process.pid % 100000}`;
  const topo = new NodeTopology(id, 3);
  const pinPath = `/sys/fs/bpf/kpr-demo-${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'kpr-demo-'));
  const manifest = join(dir, 'services.yaml');
  const cli = labScript('../cli');
  let cgroup: string | undefined;
  let kpr: ChildProcess | undefined;
  const kprCmd = (args: string[]) => run(process.execPath, [...nodeArgv(cli), ...args]);
  const interrupted = () => process.stderr.write('\ninterrupted: tearing down\n');
  process.once('SIGINT', interrupted);
  try {
    say('building a node namespace with 3 pods (192.0.2.11-13), each running a TCP+UDP server');
    await topo.create();
    await topo.startServers();
    cgroup = await createChildCgroup(`kpr-demo-${process.pid}`);

    say(`writing ${manifest}: Service demo/hello, ClusterIP ${VIP}, TCP 80 and UDP 53 -> pods:8080`);
    await writeFile(manifest, demoManifest(topo, 3));

    say(`starting kpr run (pin path ${pinPath}, hooks on ${cgroup})`);
    kpr = spawn(process.execPath, [...nodeArgv(cli), 'run', '--manifests', manifest, '--pin-path', pinPath, '--cgroup', cgroup, '--log-level', 'warn'], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await waitFor(async () => (await kprCmd(['inspect', 'nat', '--pin-path', pinPath, '--json']).catch(() => '[]')).includes('192.0.2.13'));

    const probe = async (args: string[]) =>
      JSON.parse(await runIn({ netns: topo.nodeNs, cgroup }, process.execPath, [...nodeArgv(labScript('probe')), ...args])) as {
        ok: number;
        pods: Record<string, number>;
        peers: Record<string, number>;
        errors: Record<string, number>;
      };

    say(`30 TCP connections to ${VIP}:80 from a client in the kpr cgroup`);
    const tcp = await probe(['tcp', VIP, '80', '--count', '30']);
    process.stdout.write(`answered by: ${JSON.stringify(tcp.pods)}\ngetpeername said: ${JSON.stringify(tcp.peers)}\n`);

    say(`30 UDP datagrams to ${VIP}:53`);
    const udp = await probe(['udp', VIP, '53', '--count', '30']);
    process.stdout.write(`answered by: ${JSON.stringify(udp.pods)}\nreplies came from: ${JSON.stringify(udp.peers)}\n`);

    say('kpr inspect nat');
    process.stdout.write(await kprCmd(['inspect', 'nat', '--pin-path', pinPath]));

    say('scaling to zero ready endpoints: connect() now fails at once with ECONNREFUSED');
    await writeFile(manifest, demoManifest(topo, 0));
    await waitFor(async () => !(await kprCmd(['inspect', 'nat', '--pin-path', pinPath, '--json'])).includes('192.0.2.11'));
    const refused = await probe(['tcp', VIP, '80', '--count', '3']);
    process.stdout.write(`errors: ${JSON.stringify(refused.errors)}\n`);
    process.stdout.write(await kprCmd(['inspect', 'nat', '--pin-path', pinPath]));

    const good = tcp.ok === 30 && Object.keys(tcp.pods).length === 3 && udp.ok === 30 && (refused.errors.ECONNREFUSED ?? 0) === 3;
    say(good ? 'demo OK' : 'demo FAILED: see above');
    if (!good) process.exitCode = 1;
  } finally {
    say('tearing down');
    if (kpr && kpr.exitCode === null) {
      const exited = once(kpr, 'exit');
      kpr.kill('SIGTERM');
      await exited;
    }
    await kprCmd(['cleanup', '--pin-path', pinPath]).then((o) => process.stdout.write(o)).catch((e) => process.stderr.write(String(e)));
    await topo.destroy();
    if (cgroup) await removeCgroup(cgroup);
    await rm(dir, { recursive: true, force: true });
    process.off('SIGINT', interrupted);
  }
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out waiting for kpr to program the maps');
}
