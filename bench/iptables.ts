/**
 * The iptables baseline: the model rendered in kube-proxy's iptables-mode
 * layout, as iptables-restore input.
 *
 *   nat OUTPUT/PREROUTING -> KUBE-SERVICES -> KUBE-SVC-<hash> -> KUBE-SEP-<hash> (DNAT)
 *   KUBE-SVC picks an endpoint with "-m statistic --mode random --probability 1/(n-i)"
 *   traffic from outside the cluster CIDR is marked by KUBE-MARK-MASQ and
 *   masqueraded in KUBE-POSTROUTING; NodePorts go through KUBE-NODEPORTS,
 *   reached by the last rule of KUBE-SERVICES;
 *   a Service without endpoints is a REJECT in the filter table's KUBE-SERVICES.
 *
 * The hook rules (jumps from the built-in chains) are rendered separately so
 * the benchmark can switch the ruleset on and off without reloading it.
 *
 * An IPv6 model renders kube-proxy's IPv6 proxier's rules, for
 * ip6tables-restore: /128 host masks, "[ip]:port" endpoints (in the chain
 * hashes too), icmp6-port-unreachable, and no NodePorts on ::1.
 */
import { familyOf, hostBits, hostPort, servicePortName, type BenchModel, type BenchService, type IpFamily } from './model.js';
import { sepChain, svcChain } from './chainnames.js';

const MASQ_MARK = '0x4000/0x4000';

/** The restore command of a family's ruleset. */
export function iptablesRestoreCommand(family: IpFamily): 'iptables-restore' | 'ip6tables-restore' {
  return family === 6 ? 'ip6tables-restore' : 'iptables-restore';
}

/** Jumps from the built-in chains into kube-proxy's chains (iptables-restore --noflush input). */
export function iptablesHooks(op: '-A' | '-D'): string {
  return [
    '*filter',
    `${op} INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `${op} FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `${op} FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`,
    `${op} OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    'COMMIT',
    '*nat',
    `${op} PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `${op} OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `${op} POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * The probability as kube-proxy wrote it in the clusters the seeds come
 * from: 5 decimals (iptables stores a 32-bit fraction, so 0.16667 reads back
 * as 0.16667000018, which is what their iptables-save shows; checked in
 * bench/test/renderers.test.ts).
 */
export function probability(remaining: number): string {
  return (1 / remaining).toFixed(5);
}

function endpointKey(b: { ip: string; port: number }): string {
  return hostPort(b.ip, b.port);
}

/** KUBE-SERVICES rule(s) of one Service in the nat table. */
function natServicesRule(s: BenchService, out: string[]): void {
  if (s.backends.length === 0) return; // filter table REJECT instead
  const spn = servicePortName(s);
  const p = s.protocol.toLowerCase();
  out.push(`-A KUBE-SERVICES -d ${s.vip}/${hostBits(s.vip)} -p ${p} -m comment --comment "${spn} cluster IP" -m ${p} --dport ${s.port} -j ${svcChain(spn, s.protocol)}`);
}

/** The per-Service chains: declarations go to decl, rules to rules. */
function serviceChains(m: BenchModel, s: BenchService, decl: string[], rules: string[]): void {
  if (s.backends.length === 0) return;
  const spn = servicePortName(s);
  const p = s.protocol.toLowerCase();
  const svc = svcChain(spn, s.protocol);
  decl.push(`:${svc} - [0:0]`);
  rules.push(
    `-A ${svc} ! -s ${m.clusterCidr} -d ${s.vip}/${hostBits(s.vip)} -p ${p} -m comment --comment "${spn} cluster IP" -m ${p} --dport ${s.port} -j KUBE-MARK-MASQ`,
  );
  const n = s.backends.length;
  s.backends.forEach((b, i) => {
    const sep = sepChain(spn, s.protocol, endpointKey(b));
    const stat = i < n - 1 ? ` -m statistic --mode random --probability ${probability(n - i)}` : '';
    rules.push(`-A ${svc} -m comment --comment "${spn} -> ${endpointKey(b)}"${stat} -j ${sep}`);
  });
  for (const b of s.backends) {
    const sep = sepChain(spn, s.protocol, endpointKey(b));
    decl.push(`:${sep} - [0:0]`);
    rules.push(`-A ${sep} -s ${b.ip}/${hostBits(b.ip)} -m comment --comment "${spn}" -j KUBE-MARK-MASQ`);
    rules.push(`-A ${sep} -p ${p} -m comment --comment "${spn}" -m ${p} -j DNAT --to-destination ${endpointKey(b)}`);
  }
}

function nodePortRules(s: BenchService, out: string[]): void {
  if (!s.nodePort || s.backends.length === 0) return;
  const spn = servicePortName(s);
  const p = s.protocol.toLowerCase();
  out.push(`-A KUBE-NODEPORTS -p ${p} -m comment --comment "${spn}" -m ${p} --dport ${s.nodePort} -j KUBE-MARK-MASQ`);
  out.push(`-A KUBE-NODEPORTS -p ${p} -m comment --comment "${spn}" -m ${p} --dport ${s.nodePort} -j ${svcChain(spn, s.protocol)}`);
}

function filterTable(m: BenchModel, out: string[]): void {
  out.push('*filter');
  for (const c of ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS']) out.push(`:${c} - [0:0]`);
  for (const s of m.services) {
    if (s.backends.length > 0) continue;
    const p = s.protocol.toLowerCase();
    const reject = familyOf(m) === 6 ? 'icmp6-port-unreachable' : 'icmp-port-unreachable';
    out.push(
      `-A KUBE-SERVICES -d ${s.vip}/${hostBits(s.vip)} -p ${p} -m comment --comment "${servicePortName(s)} has no endpoints" -m ${p} --dport ${s.port} -j REJECT --reject-with ${reject}`,
    );
  }
  out.push('-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP');
  out.push(`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark ${MASQ_MARK} -j ACCEPT`);
  out.push('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT');
  out.push('COMMIT');
}

/** kube-proxy's IPv6 proxier never serves NodePorts on ::1 (it cannot work there). */
function nodePortsLast(m: BenchModel): string {
  const notLoopback = familyOf(m) === 6 ? ' ! -d ::1/128' : '';
  return `-A KUBE-SERVICES${notLoopback} -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`;
}

/**
 * The whole ruleset (both tables), as a full sync writes it. Without
 * --noflush, iptables-restore also empties the built-in chains, so with
 * `hooks` the jumps into kube-proxy's chains are included.
 */
export function renderIptables(m: BenchModel, opts: { hooks?: boolean } = {}): string {
  const out: string[] = [];
  filterTable(m, out);
  out.push('*nat');
  const decl = [':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules: string[] = [
    `-A KUBE-POSTROUTING -m mark ! --mark ${MASQ_MARK} -j RETURN`,
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  for (const s of m.services) natServicesRule(s, rules);
  rules.push(nodePortsLast(m));
  for (const s of m.services) nodePortRules(s, rules);
  for (const s of m.services) serviceChains(m, s, decl, rules);
  // Joined piecewise: 50k Services are far more lines than a spread call takes.
  let text = [out.join('\n'), decl.join('\n'), rules.join('\n'), 'COMMIT', ''].join('\n');
  if (opts.hooks) text = mergeHooks(text);
  return text;
}

/** Insert the hook rules into a full ruleset (before each table's COMMIT). */
function mergeHooks(text: string): string {
  const hooks = iptablesHooks('-A').split('\n');
  const byTable = new Map<string, string[]>();
  let cur = '';
  for (const l of hooks) {
    if (l.startsWith('*')) cur = l;
    else if (l.startsWith('-A')) byTable.set(cur, [...(byTable.get(cur) ?? []), l]);
  }
  const out: string[] = [];
  cur = '';
  for (const l of text.split('\n')) {
    if (l.startsWith('*')) cur = l;
    if (l === 'COMMIT') out.push(...(byTable.get(cur) ?? []));
    out.push(l);
  }
  return out.join('\n');
}

/**
 * kube-proxy's partial sync, for iptables-restore --noflush: the top-level
 * chains are always rewritten whole (KUBE-SERVICES, KUBE-NODEPORTS), plus
 * the chains of the changed Services, and -X for endpoint chains that went
 * away. Unchanged Services' chains are not mentioned, so they stay.
 */
export function renderIptablesPartial(m: BenchModel, changed: BenchService[], staleChains: string[] = []): string {
  const out: string[] = [];
  filterTable(m, out);
  out.push('*nat');
  const decl = [':KUBE-SERVICES - [0:0]', ':KUBE-NODEPORTS - [0:0]'];
  const rules: string[] = [];
  for (const s of m.services) natServicesRule(s, rules);
  rules.push(nodePortsLast(m));
  for (const s of m.services) nodePortRules(s, rules);
  for (const s of changed) serviceChains(m, s, decl, rules);
  // A chain must be empty to be deleted: declaring it flushes it first.
  for (const c of staleChains) decl.push(`:${c} - [0:0]`);
  return [out.join('\n'), decl.join('\n'), rules.join('\n'), ...staleChains.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
}

/** Endpoint chains of a Service (to find the ones a change removes). */
export function sepChainsOf(s: BenchService): string[] {
  const spn = servicePortName(s);
  return s.backends.map((b) => sepChain(spn, s.protocol, endpointKey(b)));
}

/** Only KUBE-SERVICES of the nat table, for moving the target between positions. */
export function renderIptablesServicesChain(m: BenchModel): string {
  const rules: string[] = [];
  for (const s of m.services) natServicesRule(s, rules);
  rules.push(nodePortsLast(m));
  return ['*nat', ':KUBE-SERVICES - [0:0]', rules.join('\n'), 'COMMIT', ''].join('\n');
}
