/**
 * `kpr demo`: a two-node lab (namespaces, pods, an external client, one kpr
 * per node), then each kind of Service traffic with real sockets, what
 * `kpr inspect` shows, and a full teardown (also on failure or ^C).
 */
import { Lab, LAB_EXT_IP, LAB_EXT_IP2, LAB_EXT_IP6, type LabNode, type LabProbe } from './cluster.js';
import { defaultLabManifest, labDualStackObjects, LAB_VIP6_DS } from './manifest.js';

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

export async function runDemo(): Promise<void> {
  const lab = new Lab({ name: `demo${process.pid % 1000}`, nodes: 2, podsPerNode: 2 });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const ext = { netns: lab.extNs };
  const checks: Array<[string, boolean]> = [];
  const check = (name: string, ok: boolean) => {
    checks.push([name, ok]);
    process.stdout.write(`   ${ok ? 'OK' : 'FAILED'}: ${name}\n`);
  };
  const onSignal = () => process.stderr.write('\ninterrupted: tearing down\n');
  process.once('SIGINT', onSignal);
  try {
    say(`building lab ${lab.spec.name}: 2 dual-stack nodes (${n1.ip} ${n1.ip6}, ${n2.ip} ${n2.ip6}), 2 pods each, an external client ${LAB_EXT_IP} ${LAB_EXT_IP6}`);
    await lab.up({ manifest: [...defaultLabManifest(lab), ...labDualStackObjects(lab)] });
    for (const node of lab.nodes) {
      await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`);
    }
    process.stdout.write(`   Services: ${lab.manifestPath}\n`);

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

    say('externalTrafficPolicy=Local (endpoints only on node 2)');
    r = await lab.probe(ext, ['tcp', n2.ip, '30090', '--count', '20']);
    process.stdout.write(`via node 2: ${show(r)}`);
    check('eTP=Local keeps the client address', r.seenAs[LAB_EXT_IP] === 20);
    r = await lab.probe(ext, ['tcp', n1.ip, '30090', '--count', '1', '--timeout', '700']);
    process.stdout.write(`via node 1: ${show(r)}`);
    check('eTP=Local drops on a node without local endpoints', r.ok === 0);
    const hc = await lab.probe(ext, ['http', `http://${n1.ip}:32100/`]);
    process.stdout.write(`healthCheckNodePort on node 1: ${JSON.stringify(hc.status)} ${hc.body}\n`);
    check('health check says 503 on node 1', hc.status?.['503'] === 1);

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
