/**
 * The kube-proxy baselines: their structure against real iptables-save
 * output (test/fixtures/bench, from clusters in the wild), and, as root, that
 * the rules really forward: client in the node namespace -> VIP -> pod, with
 * iptables-restore / nft run inside that namespace only.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { renderIptables, renderIptablesPartial, renderIptablesServicesChain, iptablesHooks } from '../../src/bench/iptables.js';
import { BenchLab, CLUSTER_CIDR, cpuPlan, withLab } from '../../src/bench/lab.js';
import { buildModel, fillerService, type BenchModel, type BenchService } from '../../src/bench/model.js';
import { createModes } from '../../src/bench/modes.js';
import { renderNftables, renderNftAddService, renderNftChangeEndpoints } from '../../src/bench/nftables.js';
import { checkMode, httpCount, targetBackends } from '../../src/bench/scenarios.js';
import { run } from '../../src/lab/exec.js';
import { requireRoot } from '../helpers/privileged.js';

const seed = readFileSync(new URL('../fixtures/bench/kube-proxy-iptables-save.txt', import.meta.url), 'utf8').split('\n');

/** Services shaped like the ones in the seed. */
const redis: BenchService = {
  namespace: 'redis',
  name: 'redis',
  portName: 'client',
  vip: '10.96.7.210',
  port: 6379,
  protocol: 'TCP',
  backends: ['10.244.1.5', '10.244.2.7', '10.244.3.9', '10.244.4.11', '10.244.5.216', '10.244.6.3'].map((ip) => ({ ip, port: 6379 })),
};
const hub: BenchService = { namespace: 'jhub', name: 'hub', portName: '', vip: '10.109.183.27', port: 8081, protocol: 'TCP', backends: [] };
const rabbit: BenchService = {
  namespace: 'rabbitmq',
  name: 'rabbitmq',
  portName: 'http',
  vip: '10.96.40.1',
  port: 15672,
  protocol: 'TCP',
  nodePort: 30376,
  backends: [{ ip: '10.244.2.20', port: 15672 }],
};
const seedModel: BenchModel = { services: [redis, hub, rabbit], targetIndex: 0, clusterCidr: '10.244.0.0/16' };

/** Older kube-proxy versions omit some comments; compare rules without them. */
const noComment = (l: string) => l.replace(/ -m comment --comment "[^"]*"/g, '');

test('iptables: KUBE-SERVICES, REJECT and KUBE-NODEPORTS rules are kube-proxy\'s, byte for byte', () => {
  const out = renderIptables(seedModel).split('\n');
  for (const want of [
    '-A KUBE-SERVICES -d 10.96.7.210/32 -p tcp -m comment --comment "redis/redis:client cluster IP" -m tcp --dport 6379 -j KUBE-SVC-X65RDOJUUA3VPRY4',
    '-A KUBE-SERVICES -d 10.109.183.27/32 -p tcp -m comment --comment "jhub/hub: has no endpoints" -m tcp --dport 8081 -j REJECT --reject-with icmp-port-unreachable',
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "rabbitmq/rabbitmq:http" -m tcp --dport 30376 -j KUBE-MARK-MASQ',
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "rabbitmq/rabbitmq:http" -m tcp --dport 30376 -j KUBE-SVC-35VHXOLOORONIWYJ',
  ]) {
    assert.ok(seed.includes(want), `fixture has: ${want}`);
    assert.ok(out.includes(want), `renderer lacks: ${want}`);
  }
  // The REJECT lives in the filter table, the Service jumps in nat.
  const text = renderIptables(seedModel);
  assert.ok(text.indexOf('REJECT') < text.indexOf('*nat'));
  assert.ok(text.indexOf('KUBE-SVC-X65RDOJUUA3VPRY4') > text.indexOf('*nat'));
});

test('iptables: endpoint chains mark and DNAT like the seed; the Service chain ends unconditionally', () => {
  const out = renderIptables(seedModel).split('\n').map(noComment);
  assert.ok(out.includes(noComment(seed.find((l) => l.startsWith('-A KUBE-SEP-BAPRIFMT5YYOA3WI -s'))!)));
  assert.ok(out.includes(noComment(seed.find((l) => l.startsWith('-A KUBE-SEP-BAPRIFMT5YYOA3WI -p'))!)));
  const svc = out.filter((l) => l.startsWith('-A KUBE-SVC-X65RDOJUUA3VPRY4 ') && l.includes('KUBE-SEP-'));
  assert.equal(svc.length, 6);
  assert.match(svc[0]!, /--probability 0\.16667 /);
  assert.match(svc[4]!, /--probability 0\.50000 /);
  assert.doesNotMatch(svc[5]!, /statistic/);
  // Every jump target is declared.
  const declared = new Set(out.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]));
  for (const l of out.filter((x) => x.startsWith('-A '))) {
    const target = / -j (KUBE-[A-Z0-9-]+)/.exec(l)?.[1];
    if (target) assert.ok(declared.has(target), `undeclared chain ${target}`);
  }
});

test('iptables: partial restore rewrites the top-level chains and only the changed Service', () => {
  const changed = { ...redis, backends: redis.backends.slice(1) };
  const m = { ...seedModel, services: [changed, hub, rabbit] };
  const p = renderIptablesPartial(m, [changed], ['KUBE-SEP-OLD']);
  assert.match(p, /^:KUBE-SERVICES - \[0:0\]$/m);
  assert.match(p, /^-A KUBE-SVC-X65RDOJUUA3VPRY4 /m);
  assert.doesNotMatch(p, /KUBE-SVC-35VHXOLOORONIWYJ - \[0:0\]/); // rabbitmq's chains are untouched
  assert.match(p, /^-X KUBE-SEP-OLD$/m);
  assert.match(renderIptablesServicesChain(m), /^\*nat\n:KUBE-SERVICES - \[0:0\]\n-A KUBE-SERVICES -d 10\.96\.7\.210/);
  assert.match(iptablesHooks('-D'), /^-D OUTPUT .* -j KUBE-SERVICES$/m);
});

test('nftables: verdict map on daddr . proto . dport, numgen over endpoint chains', () => {
  const t = renderNftables(seedModel);
  assert.match(t, /add map ip kube-proxy service-ips \{ type ipv4_addr \. inet_proto \. inet_service : verdict ;/);
  assert.match(t, /add rule ip kube-proxy services ip daddr \. meta l4proto \. th dport vmap @service-ips/);
  assert.match(t, /add element ip kube-proxy service-ips \{ 10\.96\.7\.210 \. tcp \. 6379 : goto service-[A-Z2-7]{8}-redis\/redis\/tcp\/client \}/);
  assert.match(t, /numgen random mod 6 vmap \{ 0 : goto endpoint-[A-Z2-7]{8}-redis\/redis\/tcp\/client__10\.244\.1\.5\/6379 ,/);
  assert.match(t, /add element ip kube-proxy no-endpoint-services \{ 10\.109\.183\.27 \. tcp \. 8081 : goto reject-chain \}/);
  assert.match(t, /add element ip kube-proxy service-nodeports \{ tcp \. 30376 : goto external-/);
  // NodePort traffic is masqueraded before the service chain (the reply from another node must come back here).
  assert.match(t, /add rule ip kube-proxy external-\S+ jump mark-for-masquerade/);
  assert.match(t, /add rule ip kube-proxy external-\S+ goto service-/);
  // Endpoint chains are defined before the map that jumps to them.
  assert.ok(t.indexOf('add chain ip kube-proxy endpoint-') < t.indexOf('numgen'));
  const chg = renderNftChangeEndpoints(seedModel, redis, { ...redis, backends: redis.backends.slice(1) });
  assert.match(chg, /delete chain ip kube-proxy endpoint-[A-Z2-7]{8}-redis\/redis\/tcp\/client__10\.244\.1\.5\/6379/);
  assert.match(renderNftAddService(seedModel, fillerService(5, 2)), /add element ip kube-proxy service-ips \{ 198\.18\.1\.5 \. tcp \. 80 :/);
});

test('the baselines load in a namespace and forward node -> VIP -> every pod; off means off', async (t) => {
  if (!requireRoot(t)) return;
  const lab = new BenchLab(`kr${process.pid % 10000}`, 4, cpuPlan(2));
  const rootBefore = await run('iptables-save', [], { allowFail: true });
  const nftBefore = await run('nft', ['list', 'tables']);
  await withLab(lab, async () => {
    const modes = await createModes(lab, ['iptables', 'nftables']);
    // 50 Services, the target in the middle: the rules must pick the right one.
    const model = buildModel({ services: 50, fillerEndpoints: 2, targetBackends: targetBackends(lab, 3), position: 'random', seed: 3, clusterCidr: CLUSTER_CIDR });
    for (const m of modes) {
      await m.load(model);
      await m.activate();
      const c = await checkMode(lab, m, model, 90);
      assert.ok(c.passed, `${m.name}: ${JSON.stringify(c)}`);
      for (const n of Object.values(c.pods)) assert.ok(n >= 10, `${m.name}: uneven ${JSON.stringify(c.pods)}`);
      await m.deactivate();
      // Switched off, nothing translates the VIP any more.
      const off = await httpCount(lab, lab.nodeNs, lab.cgClient, model.services[model.targetIndex]!.vip, 80, 2);
      assert.equal(off.ok, 0, `${m.name} still forwards when off`);
      await m.unload();
    }
    // Round trip through the kernel: iptables-save prints the stored
    // probabilities exactly as in the seed's 6-endpoint Service chain.
    const file = `${lab.dir}/seed.rules`;
    await writeFile(file, renderIptables(seedModel));
    await run('ip', ['netns', 'exec', lab.nodeNs, 'iptables-restore', file]);
    const saved = await run('ip', ['netns', 'exec', lab.nodeNs, 'iptables-save', '-t', 'nat']);
    const probs = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('-A KUBE-SVC-X65RDOJUUA3VPRY4 ') && l.includes('--probability'))
        .map((l) => /--probability (\S+)/.exec(l)![1]);
    assert.deepEqual(probs(saved), ['0.16667000018', '0.20000000019', '0.25000000000', '0.33332999982', '0.50000000000']);
    assert.deepEqual(probs(saved).sort(), probs(seed.join('\n')).sort());
  });
  const rootAfter = await run('iptables-save', [], { allowFail: true });
  const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).join('\n');
  assert.equal(strip(rootAfter), strip(rootBefore), 'the root namespace ruleset changed');
  assert.equal(await run('nft', ['list', 'tables']), nftBefore, 'the root namespace nft tables changed');
});
