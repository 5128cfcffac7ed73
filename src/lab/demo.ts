/**
 * `kpr demo`: a two-node lab (namespaces, pods, an external client, one kpr
 * per node), then each kind of Service traffic with real sockets, what
 * `kpr inspect` shows, and a full teardown (also on failure or ^C).
 * Dual-stack by default; `--ip-family 6` builds an IPv6-only lab.
 */
import { Lab, LAB_EXT_IP, LAB_EXT_IP2, LAB_EXT_IP6, type LabNode, type LabProbe } from './cluster.js';
import { defaultLabManifest, labDualStackObjects, labIpv6OnlyObjects, LAB_VIP6_DS } from './manifest.js';

export interface DemoOptions {
  /** The lab's name (namespaces <name>-...); default demo<pid>. */
  name?: string;
  /** `--ip-family`: dual-stack (the default), or IPv6 only. */
  ipFamily?: 'dual' | '6';
}

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

function show(r: LabProbe): string {
  const parts = [`ok ${r.ok}`];
  if (Object.keys(r.pods).length) parts.push(`answered by ${JSON.stringify(r.pods)}`);
  if (Object.keys(r.seenAs).length) parts.push(`backends saw the client as ${Object.keys(r.seenAs).join(', ')}`);
  if (Object.keys(r.peers).length) parts.push(`the client saw the peer as ${Object.keys(r.peers).join(', ')}`);
  if (Object.keys(r.errors).length) parts.push(`errors ${JSON.stringify(r.errors)}`);
  return parts.join('\n   ') + '\n';
}

type Check = (name: string, ok: boolean) => void;

/** Exit status 1 when a check failed. */
export async function runDemo(opts: DemoOptions = {}): Promise<void> {
  const ipv6Only = opts.ipFamily === '6';
  const lab = new Lab({ name: opts.name ?? `demo${process.pid % 1000}`, nodes: 2, podsPerNode: 2, ipv6Only });
  const checks: Array<[string, boolean]> = [];
  const check: Check = (name, ok) => {
    checks.push([name, ok]);
    process.stdout.write(`   ${ok ? 'OK' : 'FAILED'}: ${name}\n`);
  };
  const onSignal = () => process.stderr.write('\ninterrupted: tearing down\n');
  process.once('SIGINT', onSignal);
  try {
    await (ipv6Only ? ipv6OnlyDemo(lab, check) : dualStackDemo(lab, check));

    const n1 = lab.nodes[0]!;
    say(`kpr inspect nat (node 1; * = local backend)`);
    process.stdout.write(await lab.kprCli(n1, ['inspect', 'nat', '--pin-path', n1.pinPath]));
    say('kpr inspect ct (node 1)');
    process.stdout.write((await lab.kprCli(n1, ['inspect', 'ct', '--pin-path', n1.pinPath])).split('\n').slice(0, 12).join('\n') + '\n');

    const failed = checks.filter(([, ok]) => !ok);
    say(failed.length ? `demo FAILED: ${failed.map(([n]) => n).join('; ')}` : `demo OK (${checks.length} checks)`);
    if (failed.length) process.exitCode = 1;
  } finally {
    say('tearing down');
    await lab.down();
    process.off('SIGINT', onSignal);
  }
}

async function waitSynced(lab: Lab): Promise<void> {
  for (const node of lab.nodes) {
    await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`);
  }
  process.stdout.write(`   Services: ${lab.manifestPath}\n`);
}

/** Each Service behaviour on the dual-stack lab, IPv4 and IPv6. */
async function dualStackDemo(lab: Lab, check: Check): Promise<void> {
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  say(`building lab ${lab.spec.name}: 2 dual-stack nodes (${n1.ip} ${n1.ip6}, ${n2.ip} ${n2.ip6}), 2 pods each, an external client ${LAB_EXT_IP} ${LAB_EXT_IP6}`);
  await lab.up({ manifest: [...defaultLabManifest(lab), ...labDualStackObjects(lab)] });
  await waitSynced(lab);

  say('ClusterIP 198.18.0.10:80 from a pod in the kpr cgroup (connect-time load balancing)');
  let r = await lab.probe({ netns: n1.pods[1]!.netns, cgroup: n1.cgroup }, ['tcp', '198.18.0.10', '80', '--count', '40']);
  process.stdout.write(show(r));
  check('connect-time: all 4 pods answer, getpeername says the VIP', Object.keys(r.pods).length === 4 && r.peers['198.18.0.10:80'] === 40);

  say('ClusterIP from a pod outside the cgroup (per-packet NAT in tc)');
  r = await lab.probe({ netns: n2.pods[0]!.netns }, ['udp', '198.18.0.10', '53', '--count', '40']);
  process.stdout.write(show(r));
  check('tc: UDP replies come from the VIP', r.peers['198.18.0.10:53'] === 40);

  say(`NodePort ${n1.ip}:30080 from the external client (SNAT, the default)`);
  r = await lab.probe(ext, ['tcp', n1.ip, '30080', '--count', '40']);
  process.stdout.write(show(r));
  check('NodePort: backends on both nodes, they see the node address', Object.keys(r.pods).length === 4 && r.seenAs[n1.ip] === 40);

  say(`IPv6 ClusterIP [${LAB_VIP6_DS}]:80 from a pod outside the cgroup (per-packet NAT in tc)`);
  r = await lab.probe({ netns: n2.pods[0]!.netns }, ['tcp', LAB_VIP6_DS, '80', '--count', '40']);
  process.stdout.write(show(r));
  check('IPv6 ClusterIP via tc: all 4 pods answer, the peer is the VIP', Object.keys(r.pods).length === 4 && r.peers[`${LAB_VIP6_DS}:80`] === 40);

  say(`IPv6 NodePort [${n1.ip6}]:30140 from the external client (SNAT to the node's IPv6 address)`);
  r = await lab.probe(ext, ['tcp', n1.ip6, '30140', '--count', '40']);
  process.stdout.write(show(r));
  check('IPv6 NodePort: backends on both nodes, they see the node address', Object.keys(r.pods).length === 4 && r.seenAs[n1.ip6] === 40);

  await etpLocal(lab, check, n1.ip, n2.ip, LAB_EXT_IP, '');

  say('internalTrafficPolicy=Local: a node-1 pod reaches only node-1 endpoints');
  r = await lab.probe({ netns: n1.pods[0]!.netns }, ['tcp', '198.18.0.12', '80', '--count', '20']);
  process.stdout.write(show(r));
  check('iTP=Local stays on the node', Object.keys(r.pods).every((p) => p.startsWith('n1-')));

  say('a Service with no endpoints is rejected at once (TCP and UDP)');
  r = await lab.probe(ext, ['tcp', n1.ip, '30100', '--count', '2']);
  process.stdout.write(show(r));
  check('TCP refused', r.errors.ECONNREFUSED === 2);
  r = await lab.probe(ext, ['udp', n1.ip, '30101', '--count', '2', '--connected']);
  check('UDP refused', r.errors.ECONNREFUSED === 2);

  say('LoadBalancer 198.18.1.15 with loadBalancerSourceRanges 203.0.113.0/24');
  r = await lab.probe(ext, ['tcp', '198.18.1.15', '80', '--count', '1', '--timeout', '700']);
  process.stdout.write(`from ${LAB_EXT_IP}: ${show(r)}`);
  const allowed = await lab.probe(ext, ['tcp', '198.18.1.15', '80', '--count', '5', '--bind', LAB_EXT_IP2]);
  process.stdout.write(`from ${LAB_EXT_IP2}: ${show(allowed)}`);
  check('source ranges: outside dropped, inside served', r.ok === 0 && allowed.ok === 5);
}

/**
 * The IPv6-only lab: no IPv4 address on any node, pod or client; an IPv6
 * ClusterIP by both paths, an IPv6 NodePort on each node, and eTP=Local
 * with its health check, over IPv6.
 */
async function ipv6OnlyDemo(lab: Lab, check: Check): Promise<void> {
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  say(`building lab ${lab.spec.name}: 2 IPv6-only nodes (${n1.ip6}, ${n2.ip6}), 2 pods each, an external client ${LAB_EXT_IP6}`);
  await lab.up({ manifest: labIpv6OnlyObjects(lab) });
  await waitSynced(lab);
  const v4 = await lab.ipv4Addresses();
  process.stdout.write(`   IPv4 addresses in the lab (loopback aside): ${v4.length ? v4.join(', ') : 'none'}\n`);
  check('no IPv4 address on any node, pod or client', v4.length === 0);

  say(`IPv6 ClusterIP [${LAB_VIP6_DS}]:80 from a pod in the kpr cgroup (connect-time load balancing)`);
  let r = await lab.probe({ netns: n1.pods[1]!.netns, cgroup: n1.cgroup }, ['tcp', LAB_VIP6_DS, '80', '--count', '40']);
  process.stdout.write(show(r));
  check('connect-time: all 4 pods answer, getpeername says the VIP', Object.keys(r.pods).length === 4 && r.peers[`${LAB_VIP6_DS}:80`] === 40);

  say(`IPv6 ClusterIP [${LAB_VIP6_DS}]:53 over UDP from a pod outside the cgroup (per-packet NAT in tc)`);
  r = await lab.probe({ netns: n2.pods[0]!.netns }, ['udp', LAB_VIP6_DS, '53', '--count', '40']);
  process.stdout.write(show(r));
  check('tc: UDP replies come from the VIP', r.peers[`${LAB_VIP6_DS}:53`] === 40);

  for (const node of [n1, n2]) {
    say(`IPv6 NodePort [${node.ip6}]:30140 from the external client (SNAT to the node's IPv6 address)`);
    r = await lab.probe(ext, ['tcp', node.ip6, '30140', '--count', '40']);
    process.stdout.write(show(r));
    check(`IPv6 NodePort on ${node.name}: backends on both nodes, they see the node address`, Object.keys(r.pods).length === 4 && r.seenAs[node.ip6] === 40);
  }

  await etpLocal(lab, check, n1.ip6, n2.ip6, LAB_EXT_IP6, ' over IPv6');
}

/**
 * The eTP=Local Service (NodePort 30090, endpoints only on node 2,
 * healthCheckNodePort 32100) by the node addresses of one family.
 */
async function etpLocal(lab: Lab, check: Check, n1: string, n2: string, client: string, family: string): Promise<void> {
  const ext = { netns: lab.extNs };
  say(`externalTrafficPolicy=Local${family} (endpoints only on node 2)`);
  let r = await lab.probe(ext, ['tcp', n2, '30090', '--count', '20']);
  process.stdout.write(`via node 2: ${show(r)}`);
  check('eTP=Local keeps the client address', r.seenAs[client] === 20);
  r = await lab.probe(ext, ['tcp', n1, '30090', '--count', '1', '--timeout', '700']);
  process.stdout.write(`via node 1: ${show(r)}`);
  check('eTP=Local drops on a node without local endpoints', r.ok === 0);
  const hc = await lab.probe(ext, ['http', `http://${n1.includes(':') ? `[${n1}]` : n1}:32100/`]);
  process.stdout.write(`healthCheckNodePort on node 1: ${JSON.stringify(hc.status)} ${hc.body}\n`);
  check(`health check says 503 on node 1${family}`, hc.status?.['503'] === 1);
}
