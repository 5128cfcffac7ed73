/**
 * The nftables baseline: the model rendered in kube-proxy's nftables-mode
 * layout, as `nft -f` input (add/flush commands, one transaction).
 *
 *   table ip kube-proxy
 *     services:  ip daddr . meta l4proto . th dport vmap @service-ips
 *     service-ips: VIP . proto . port -> goto service-<hash>-ns/name/proto/port
 *     service-<...>: masquerade mark for traffic from outside the cluster CIDR,
 *                    then numgen random mod n vmap { i : goto endpoint-<...> }
 *     endpoint-<...>: dnat to ip:port
 *     no-endpoint-services: VIP . proto . port -> goto reject-chain (filter hook)
 *
 * Hook (base) chains are created empty and filled by nftHooks('on'), so the
 * benchmark can switch the ruleset on and off without reloading it.
 *
 * An IPv6 model renders kube-proxy's IPv6 proxier's table: `table ip6
 * kube-proxy`, ipv6_addr map keys, ip6 daddr/saddr matches, "[ip]:port"
 * DNAT targets and ::1 instead of 127.0.0.0/8; the layout is the same.
 */
import { familyOf, hostPort, type BenchModel, type BenchService, type IpFamily } from './model.js';
import { nftEndpointChain, nftExternalChain, nftServiceChain } from './chainnames.js';

export const NFT_TABLE = 'kube-proxy';

/** What differs between kube-proxy's IPv4 and IPv6 tables: the table family, the address match and the map key type. */
interface NftFamily {
  /** "ip kube-proxy" or "ip6 kube-proxy", as commands name the table */
  T: string;
  /** the payload expression's protocol: "ip daddr", "ip6 saddr" */
  nh: 'ip' | 'ip6';
  addrType: 'ipv4_addr' | 'ipv6_addr';
  loopback: string;
}

export function nftTableFamily(family: IpFamily): 'ip' | 'ip6' {
  return family === 6 ? 'ip6' : 'ip';
}

function nftFamily(family: IpFamily): NftFamily {
  const nh = nftTableFamily(family);
  return { T: `${nh} ${NFT_TABLE}`, nh, addrType: family === 6 ? 'ipv6_addr' : 'ipv4_addr', loopback: family === 6 ? '::1' : '127.0.0.0/8' };
}

function svcChainOf(s: BenchService): string {
  return nftServiceChain(s.namespace, s.name, s.portName, s.protocol);
}

function extChainOf(s: BenchService): string {
  return nftExternalChain(s.namespace, s.name, s.portName, s.protocol);
}

function epChainOf(s: BenchService, b: { ip: string; port: number }): string {
  return nftEndpointChain(s.namespace, s.name, s.portName, s.protocol, b.ip, b.port);
}

/** The fixed part: table, base chains (empty), helper chains and the maps. */
function skeleton(f: NftFamily, out: string[]): void {
  const { T, nh } = f;
  out.push(`add table ${T} { comment "rules for kube-proxy" ; }`);
  out.push(`add chain ${T} nat-prerouting { type nat hook prerouting priority dstnat ; }`);
  out.push(`add chain ${T} nat-output { type nat hook output priority -100 ; }`);
  out.push(`add chain ${T} nat-postrouting { type nat hook postrouting priority srcnat ; }`);
  out.push(`add chain ${T} filter-output { type filter hook output priority -110 ; }`);
  out.push(`add chain ${T} filter-forward { type filter hook forward priority -110 ; }`);
  for (const c of ['mark-for-masquerade', 'masquerading', 'services', 'nodeports', 'service-endpoints-check', 'reject-chain']) {
    out.push(`add chain ${T} ${c}`);
    out.push(`flush chain ${T} ${c}`);
  }
  out.push(`add rule ${T} mark-for-masquerade mark set mark or 0x4000`);
  out.push(`add rule ${T} masquerading mark and 0x4000 == 0 return`);
  out.push(`add rule ${T} masquerading mark set mark xor 0x4000`);
  out.push(`add rule ${T} masquerading masquerade fully-random`);
  out.push(`add rule ${T} reject-chain reject`);
  out.push(`add map ${T} service-ips { type ${f.addrType} . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`);
  out.push(`add map ${T} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`);
  out.push(`add map ${T} no-endpoint-services { type ${f.addrType} . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`);
  out.push(`add rule ${T} services ${nh} daddr . meta l4proto . th dport vmap @service-ips`);
  out.push(`add rule ${T} services fib daddr type local ${nh} daddr != ${f.loopback} jump nodeports`);
  out.push(`add rule ${T} nodeports meta l4proto . th dport vmap @service-nodeports`);
  out.push(`add rule ${T} service-endpoints-check ${nh} daddr . meta l4proto . th dport vmap @no-endpoint-services`);
}

/** Chains and rules of one Service (endpoint chains first: the vmap refers to them). */
function serviceChains(m: BenchModel, s: BenchService, out: string[]): void {
  if (s.backends.length === 0) return;
  const { T, nh } = nftFamily(familyOf(m));
  const p = s.protocol.toLowerCase();
  for (const b of s.backends) {
    const ep = epChainOf(s, b);
    out.push(`add chain ${T} ${ep}`);
    out.push(`flush chain ${T} ${ep}`);
    out.push(`add rule ${T} ${ep} ${nh} saddr ${b.ip} jump mark-for-masquerade`);
    out.push(`add rule ${T} ${ep} meta l4proto ${p} dnat to ${hostPort(b.ip, b.port)}`);
  }
  const svc = svcChainOf(s);
  out.push(`add chain ${T} ${svc}`);
  out.push(`flush chain ${T} ${svc}`);
  out.push(`add rule ${T} ${svc} ${nh} daddr ${s.vip} ${p} dport ${s.port} ${nh} saddr != ${m.clusterCidr} jump mark-for-masquerade`);
  const arms = s.backends.map((b, i) => `${i} : goto ${epChainOf(s, b)}`).join(' , ');
  out.push(`add rule ${T} ${svc} numgen random mod ${s.backends.length} vmap { ${arms} }`);
  if (s.nodePort) {
    // kube-proxy (externalTrafficPolicy: Cluster): traffic from outside
    // comes in through the external chain, which masquerades it so the
    // reply from a backend on another node returns through this node.
    const ext = extChainOf(s);
    out.push(`add chain ${T} ${ext}`);
    out.push(`flush chain ${T} ${ext}`);
    out.push(`add rule ${T} ${ext} jump mark-for-masquerade comment "masquerade traffic from external sources"`);
    out.push(`add rule ${T} ${ext} goto ${svc}`);
  }
}

function elements(m: BenchModel, s: BenchService, out: string[], op: 'add' | 'delete' = 'add'): void {
  const { T } = nftFamily(familyOf(m));
  const p = s.protocol.toLowerCase();
  if (s.backends.length === 0) {
    out.push(`${op} element ${T} no-endpoint-services { ${s.vip} . ${p} . ${s.port}${op === 'add' ? ' : goto reject-chain' : ''} }`);
    return;
  }
  out.push(`${op} element ${T} service-ips { ${s.vip} . ${p} . ${s.port}${op === 'add' ? ` : goto ${svcChainOf(s)}` : ''} }`);
  if (s.nodePort) out.push(`${op} element ${T} service-nodeports { ${p} . ${s.nodePort}${op === 'add' ? ` : goto ${extChainOf(s)}` : ''} }`);
}

/** A full sync: the whole table in one transaction (from empty, or replacing what is there). */
export function renderNftables(m: BenchModel, opts: { hooks?: boolean } = {}): string {
  const out: string[] = [];
  const f = nftFamily(familyOf(m));
  // "add table; delete table" empties any previous state inside the same transaction.
  out.push(`add table ${f.T}`, `delete table ${f.T}`);
  skeleton(f, out);
  for (const s of m.services) serviceChains(m, s, out);
  for (const s of m.services) elements(m, s, out);
  if (opts.hooks) out.push(nftHooks('on', familyOf(m)).trimEnd());
  return out.join('\n') + '\n';
}

/** Fill or empty the base chains: switches the ruleset on or off. */
export function nftHooks(state: 'on' | 'off', family: IpFamily = 4): string {
  const { T } = nftFamily(family);
  const base = ['nat-prerouting', 'nat-output', 'nat-postrouting', 'filter-output', 'filter-forward'];
  const out = base.map((c) => `flush chain ${T} ${c}`);
  if (state === 'on') {
    out.push(`add rule ${T} nat-prerouting jump services`);
    out.push(`add rule ${T} nat-output jump services`);
    out.push(`add rule ${T} nat-postrouting jump masquerading`);
    out.push(`add rule ${T} filter-output ct state new jump service-endpoints-check`);
    out.push(`add rule ${T} filter-forward ct state new jump service-endpoints-check`);
  }
  return out.join('\n') + '\n';
}

/** Incremental transaction: a Service appears. */
export function renderNftAddService(m: BenchModel, s: BenchService): string {
  const out: string[] = [];
  serviceChains(m, s, out);
  elements(m, s, out);
  return out.join('\n') + '\n';
}

/**
 * Incremental transaction: a Service's endpoints change. New endpoint
 * chains are added, the service chain is rewritten, and endpoint chains no
 * longer referenced are deleted, all in one transaction.
 */
export function renderNftChangeEndpoints(m: BenchModel, before: BenchService, after: BenchService): string {
  const out: string[] = [];
  const { T } = nftFamily(familyOf(m));
  serviceChains(m, after, out);
  const keep = new Set(after.backends.map((b) => epChainOf(after, b)));
  for (const b of before.backends) {
    const c = epChainOf(before, b);
    if (!keep.has(c)) out.push(`delete chain ${T} ${c}`);
  }
  return out.join('\n') + '\n';
}

