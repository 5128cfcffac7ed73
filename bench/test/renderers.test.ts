/**
 * The kube-proxy baselines: their structure against real iptables-save
 * output (bench/test/fixtures, from clusters in the wild), and, as root, that
 * the rules really forward: client in the node namespace -> VIP -> pod, with
 * iptables-restore / nft run inside that namespace only.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { sepChain, svcChain } from '../chainnames.js';
import { renderIptables, renderIptablesPartial, renderIptablesServicesChain, iptablesHooks } from '../iptables.js';
import { BenchLab, CLUSTER_CIDR, CLUSTER_CIDR6, cpuPlan, withLab } from '../lab.js';
import { buildModel, fillerService, serviceObject, sliceObjects, type BenchModel, type BenchService } from '../model.js';
import { createModes } from '../modes.js';
import { nftHooks, renderNftables, renderNftAddService, renderNftChangeEndpoints } from '../nftables.js';
import { checkMode, httpCount, targetBackends } from '../scenarios.js';
import { run } from '../../src/lab/exec.js';
import { requireRoot } from '../../test/helpers/privileged.js';

const seed = readFileSync(new URL('./fixtures/kube-proxy-iptables-save.txt', import.meta.url), 'utf8').split('\n');

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

/** The seed's Services again, with IPv6 addresses (2001:db8::/32 only), as kube-proxy's IPv6 proxier sees them. */
const v6 = (i: number) => `2001:db8::${(0x100 + i).toString(16)}`;
const redis6: BenchService = { ...redis, vip: '2001:db8:f::7d2', backends: redis.backends.map((b, i) => ({ ip: v6(i), port: b.port })) };
const hub6: BenchService = { ...hub, vip: '2001:db8:f::1b' };
const rabbit6: BenchService = { ...rabbit, vip: '2001:db8:f::401', backends: [{ ip: '2001:db8::220', port: 15672 }] };
const seedModel6: BenchModel = { family: 6, services: [redis6, hub6, rabbit6], targetIndex: 0, clusterCidr: '2001:db8::/56' };

test('iptables IPv6: /128 masks, [ip]:port endpoints (in the SEP hash too), icmp6 REJECT, no NodePorts on ::1', () => {
  const out = renderIptables(seedModel6).split('\n');
  const spn = 'redis/redis:client';
  // The Service chain's name does not depend on the family (the proxiers use separate tables).
  const svc = svcChain(spn, 'TCP');
  assert.equal(svc, 'KUBE-SVC-X65RDOJUUA3VPRY4');
  const sep = sepChain(spn, 'TCP', '[2001:db8::100]:6379');
  for (const want of [
    `-A KUBE-SERVICES -d 2001:db8:f::7d2/128 -p tcp -m comment --comment "${spn} cluster IP" -m tcp --dport 6379 -j ${svc}`,
    `-A ${svc} ! -s 2001:db8::/56 -d 2001:db8:f::7d2/128 -p tcp -m comment --comment "${spn} cluster IP" -m tcp --dport 6379 -j KUBE-MARK-MASQ`,
    `-A ${svc} -m comment --comment "${spn} -> [2001:db8::100]:6379" -m statistic --mode random --probability 0.16667 -j ${sep}`,
    `-A ${sep} -s 2001:db8::100/128 -m comment --comment "${spn}" -j KUBE-MARK-MASQ`,
    `-A ${sep} -p tcp -m comment --comment "${spn}" -m tcp -j DNAT --to-destination [2001:db8::100]:6379`,
    '-A KUBE-SERVICES -d 2001:db8:f::1b/128 -p tcp -m comment --comment "jhub/hub: has no endpoints" -m tcp --dport 8081 -j REJECT --reject-with icmp6-port-unreachable',
    '-A KUBE-SERVICES ! -d ::1/128 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    '-A KUBE-NODEPORTS -p tcp -m comment --comment "rabbitmq/rabbitmq:http" -m tcp --dport 30376 -j KUBE-SVC-35VHXOLOORONIWYJ',
  ]) {
    assert.ok(out.includes(want), `renderer lacks: ${want}`);
  }
  assert.notEqual(sep, sepChain(spn, 'TCP', '2001:db8::100:6379'), 'the bracketed form is hashed');
  assert.ok(!out.some((l) => / [\d.]+\/32 /.test(l) || l.includes('icmp-port-unreachable')), 'no IPv4 left in the IPv6 ruleset');
  assert.match(renderIptablesServicesChain(seedModel6), /\n-A KUBE-SERVICES ! -d ::1\/128 /);
  assert.match(renderIptablesPartial(seedModel6, [redis6]), /DNAT --to-destination \[2001:db8::100\]:6379/);
});

test('iptables and nftables: the IPv6 ruleset has the IPv4 one\'s shape, line for line (one renderer per table, the family a parameter)', () => {
  const opts = { services: 40, fillerEndpoints: 2, position: 'random' as const, seed: 2 };
  const m4 = buildModel({ ...opts, targetBackends: [{ ip: '192.0.2.11', port: 8080 }], clusterCidr: CLUSTER_CIDR });
  const m6 = buildModel({ ...opts, targetBackends: [{ ip: '2001:db8::11', port: 8080 }], clusterCidr: CLUSTER_CIDR6, family: 6 });
  // Chains and rules are the same per line, up to the addresses and family words.
  const shape = (t: string) =>
    t
      .split('\n')
      .map((l) =>
        l
          .replace(/\[?(2001:db8[0-9a-f:]*|::1)\]?(\/\d{1,3}(?!\d))?/g, 'A')
          .replace(/2001\.db8[0-9a-f.]*/g, 'A')
          .replace(/\d+\.\d+\.\d+\.\d+(\/\d{1,3}(?!\d))?/g, 'A')
          .replace(/icmp6?-port/g, 'icmp-port')
          .replace(/\bip6\b/g, 'ip')
          .replace(/ipv[46]_addr/g, 'ipv4_addr')
          .replace(/(endpoint|service|external)-[A-Z2-7]{8}-/g, '$1-H-')
          .replace(/KUBE-(SVC|SEP)-[A-Z2-7]{16}/g, 'KUBE-$1-H')
          .replace(/ ! -d A/, ''),
      );
  assert.deepEqual(shape(renderIptables(m6, { hooks: true })), shape(renderIptables(m4, { hooks: true })));
  assert.deepEqual(shape(renderNftables(m6, { hooks: true })), shape(renderNftables(m4, { hooks: true })));
});

test('nftables IPv6: an ip6 table with ipv6_addr keys, ip6 matches and [ip]:port DNAT', () => {
  const t = renderNftables(seedModel6);
  assert.match(t, /^add table ip6 kube-proxy$/m);
  assert.match(t, /add map ip6 kube-proxy service-ips \{ type ipv6_addr \. inet_proto \. inet_service : verdict ;/);
  assert.match(t, /add map ip6 kube-proxy no-endpoint-services \{ type ipv6_addr \./);
  assert.match(t, /add rule ip6 kube-proxy services ip6 daddr \. meta l4proto \. th dport vmap @service-ips/);
  assert.match(t, /add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 jump nodeports/);
  assert.match(t, /add element ip6 kube-proxy service-ips \{ 2001:db8:f::7d2 \. tcp \. 6379 : goto service-[A-Z2-7]{8}-redis\/redis\/tcp\/client \}/);
  assert.match(t, /add rule ip6 kube-proxy service-\S+ ip6 daddr 2001:db8:f::7d2 tcp dport 6379 ip6 saddr != 2001:db8::\/56 jump mark-for-masquerade/);
  // nft identifiers take no ':': the readable part of an endpoint chain writes them as dots.
  assert.match(t, /add rule ip6 kube-proxy endpoint-[A-Z2-7]{8}-redis\/redis\/tcp\/client__2001\.db8\.\.100\/6379 ip6 saddr 2001:db8::100 jump mark-for-masquerade/);
  assert.match(t, /endpoint-\S+ meta l4proto tcp dnat to \[2001:db8::100\]:6379$/m);
  assert.match(t, /add element ip6 kube-proxy no-endpoint-services \{ 2001:db8:f::1b \. tcp \. 8081 : goto reject-chain \}/);
  assert.doesNotMatch(t, /\bip kube-proxy|ipv4_addr|ip daddr|ip saddr|127\.0\.0\.0/);
  assert.match(nftHooks('on', 6), /^add rule ip6 kube-proxy nat-output jump services$/m);
  assert.match(renderNftChangeEndpoints(seedModel6, redis6, { ...redis6, backends: redis6.backends.slice(1) }), /^delete chain ip6 kube-proxy endpoint-\S+__2001\.db8\.\.100\/6379$/m);
  assert.match(renderNftAddService(seedModel6, fillerService(5, 2, 6)), /add element ip6 kube-proxy service-ips \{ 2001:db8:f::1:5 \. tcp \. 80 :/);
});

test('model IPv6: VIPs in 2001:db8:f::/64 and endpoints in 2001:db8:0:ff::/64, canonical and unique; IPv6 slices; families never mix', () => {
  const m = buildModel({ services: 3000, fillerEndpoints: 2, targetBackends: [{ ip: '2001:db8::11', port: 8080 }], position: 'worst', clusterCidr: CLUSTER_CIDR6, family: 6 });
  assert.equal(m.family, 6);
  const vips = m.services.map((s) => s.vip);
  assert.equal(new Set(vips).size, vips.length);
  const vipNet = ipaddr.parseCIDR('2001:db8:f::/64');
  const epNet = ipaddr.parseCIDR('2001:db8:0:ff::/64');
  for (const v of vips) {
    const a = ipaddr.parse(v);
    assert.ok(a.kind() === 'ipv6' && a.match(vipNet), v);
    assert.equal(a.toString(), v, 'RFC 5952 text, as kpr reads it back');
  }
  for (const s of m.services.slice(0, -1)) for (const b of s.backends) assert.ok(ipaddr.parse(b.ip).match(epNet), b.ip);
  const t = m.services[m.targetIndex]!;
  assert.equal(t.vip, '2001:db8:f::10');
  assert.deepEqual((serviceObject(t).spec as { clusterIPs: string[] }).clusterIPs, ['2001:db8:f::10']);
  assert.deepEqual(sliceObjects(t).map((x) => x.addressType), ['IPv6']);
  assert.deepEqual(sliceObjects(m.services[0]!).map((x) => x.addressType), ['IPv6']);
  assert.throws(() => buildModel({ services: 2, fillerEndpoints: 1, targetBackends: [{ ip: '192.0.2.11', port: 8080 }], position: 'worst', clusterCidr: CLUSTER_CIDR6, family: 6 }), /not an IPv6/);
  assert.throws(() => buildModel({ services: 2, fillerEndpoints: 1, targetBackends: [], position: 'worst', clusterCidr: CLUSTER_CIDR6 }), /not an IPv4/);
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
