import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { canonicalAddr } from './ip.js';

const execFileP = promisify(execFile);

/** Global addresses of the named devices, IPv4 first, in order (the first of each family is its SNAT source). */
export async function deviceAddresses(devices: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const dev of devices) {
    const { stdout } = await execFileP('ip', ['-j', 'addr', 'show', 'dev', dev]);
    const links = JSON.parse(stdout) as Array<{ addr_info?: Array<{ family: string; local: string; scope: string }> }>;
    // Global addresses only (no link-local), IPv4 first; either family may be missing (single-stack nodes).
    for (const family of ['inet', 'inet6']) {
      for (const l of links) for (const a of l.addr_info ?? []) if (a.family === family && a.scope === 'global') out.push(canonicalAddr(a.local));
    }
  }
  return out;
}

/** Interfaces of the current network namespace. */
export async function listLinks(): Promise<Array<{ ifname: string; ifindex: number }>> {
  const out = await execFileP('ip', ['-j', 'link', 'show']);
  return (JSON.parse(out.stdout) as Array<{ ifname: string; ifindex: number }>).map((l) => ({ ifname: l.ifname, ifindex: l.ifindex }));
}

/** The device `ip route get` picks for an address, and the gateway it names when the address is not on that device's link. */
export async function routeTo(addr: string): Promise<{ dev: string; gateway?: string } | undefined> {
  const { stdout } = await execFileP('ip', ['-j', 'route', 'get', addr]);
  const r = (JSON.parse(stdout) as Array<{ dev?: string; gateway?: string }>)[0];
  if (!r?.dev) return undefined;
  return r.gateway ? { dev: r.dev, gateway: r.gateway } : { dev: r.dev };
}

/** The protocol kpr marks its neighbour entries with (unassigned in iproute2's rt_protos), so cleanup finds them. */
export const KPR_NEIGH_PROTO = 181;

/**
 * A managed neighbour entry (NTF_EXT_MANAGED): the kernel resolves the
 * address itself and keeps it reachable, without traffic to it.
 */
export async function setManagedNeighbour(addr: string, dev: string): Promise<void> {
  await execFileP('ip', ['neigh', 'replace', addr, 'dev', dev, 'managed', 'extern_learn', 'protocol', String(KPR_NEIGH_PROTO)]);
}

/** The neighbour entries kpr made (setManagedNeighbour), in this network namespace. */
export async function kprNeighbours(): Promise<Array<{ addr: string; dev: string }>> {
  const { stdout } = await execFileP('ip', ['-j', 'neigh', 'show']);
  const all = JSON.parse(stdout || '[]') as Array<{ dst: string; dev: string; protocol?: string }>;
  return all.filter((n) => n.protocol === String(KPR_NEIGH_PROTO)).map((n) => ({ addr: canonicalAddr(n.dst), dev: n.dev }));
}

export async function deleteNeighbour(addr: string, dev: string): Promise<void> {
  await execFileP('ip', ['neigh', 'del', addr, 'dev', dev]);
}
