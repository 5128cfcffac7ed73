/**
 * What kpr leaves pinned under its pin path, seen from outside a running
 * Datapath: the bpffs check, opening the maps without loading programs
 * (inspect, tests), reading the counters, and `kpr cleanup`.
 */
import { existsSync, readdirSync, statfsSync, statSync } from 'node:fs';
import { readdir, rmdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { deleteNeighbour, kprNeighbours, listLinks, routeTo } from '../util/netdev.js';
import { canonicalAddr, ipv6Text } from '../util/ip.js';
import { DEFAULT_MAGLEV_TABLE_SIZE } from '../model/maglev.js';
import { STAT_NAMES, STRUCTS6, type StatName } from './abi.js';
import { bpf } from './addon.js';
import { BpfMap } from './bpf-map.js';
import { encodeU32 } from './codec.js';
import type { DatapathMaps } from './datapath.js';
import type { KVMap } from './kvmap.js';
import { BpfMaglevTables } from './maglev-tables.js';
import {
  ALL_MAPS,
  LINKS_DIR,
  MAP_CONFIG,
  MAP_CT,
  MAP_DSR_OPTOUT,
  MAP_DSR_PEERS,
  MAP_V6_DSR_PEERS,
  MAP_V6_DSR_OPTOUT,
  MAP_MAGLEV,
  MAP_V6_MAGLEV,
  MAP_NAT_BE,
  MAP_NAT_FE,
  MAP_NODE_IPS,
  MAP_SK_NAT,
  MAP_STATS,
  MAP_SVC_META,
  MAP_V6_CT,
  MAP_V6_NAT_BE,
  MAP_V6_NAT_FE,
  PROGS_DIR,
  TC_HANDLE,
  TC_PRIORITY,
} from './names.js';
import { allVersionPinNames, mapPinPath } from './migrate.js';

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * `ip netns exec` runs its command in a new mount namespace with /sys
 * remounted for the target network namespace: bpffs is gone from there, and
 * mounting one would hide the real pins. Tell that case apart (called only
 * once the bpffs check has failed).
 */
function underIpNetnsExec(): boolean {
  try {
    // Our network namespace is one that `ip netns add` named; reached
    // through nsenter the host's /sys (and bpffs) would still be visible.
    const self = statSync('/proc/self/ns/net');
    return readdirSync('/run/netns').some((name) => {
      try {
        const st = statSync(join('/run/netns', name));
        return st.ino === self.ino && st.dev === self.dev;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/** Refuse a pin path that is not on bpffs: pins elsewhere would fail obscurely. */
export function checkBpffs(pinPath: string, ipNetnsExec?: boolean): void {
  let dir = pinPath;
  while (!existsSync(dir)) dir = dirname(dir);
  const type = statfsSync(dir).type;
  if (type !== BPF_FS_MAGIC) {
    if (ipNetnsExec ?? underIpNetnsExec()) {
      throw new Error(
        `${pinPath} is not on a BPF filesystem: this looks like "ip netns exec", which remounts /sys and hides bpffs ` +
          `(mounting one here would hide the real pins); run kpr with "nsenter --net=/run/netns/NAME" instead`,
      );
    }
    throw new Error(`${pinPath} is not on a BPF filesystem (mount one with: mount -t bpf bpf ${dir === '/' ? '/sys/fs/bpf' : dir})`);
  }
}

export interface CleanupReport {
  detached: string[];
  unpinned: string[];
  left: string[];
  tcDetached: string[];
  /** managed neighbour entries of IPv6 DSR peers removed (address/device) */
  neighbours: string[];
}

/**
 * Remove kpr's tc filters (by handle and priority) from the devices of this
 * netns; with progIds, only filters running one of those programs (the ones
 * a given pin path pinned), so a cleanup leaves another kpr's filters alone.
 */
async function detachAllTc(progIds?: Set<number>): Promise<string[]> {
  const out: string[] = [];
  for (const link of await listLinks()) {
    for (const dir of ['ingress', 'egress'] as const) {
      const id = bpf.tcQuery(link.ifindex, dir, TC_HANDLE, TC_PRIORITY);
      if (id !== null && (!progIds || progIds.has(id))) {
        bpf.tcDetach(link.ifindex, dir, TC_HANDLE, TC_PRIORITY);
        out.push(`${link.ifname}/${dir}`);
      }
    }
  }
  return out;
}

/**
 * The managed neighbour entries the daemon kept for this pin path's IPv6
 * DSR peers (dsr-peers.ts, PeerNeighbours): kpr's protocol mark, and an
 * address in this pin path's kpr_v6_dsr_peers or the gateway of the route
 * to one, so another kpr's entries in the same namespace stay.
 */
async function removePeerNeighbours(pinPath: string): Promise<string[]> {
  const pin = mapPinPath(pinPath, MAP_V6_DSR_PEERS);
  if (!existsSync(pin)) return [];
  const m = new BpfMap(MAP_V6_DSR_PEERS, bpf.objGet(pin));
  const { fields } = STRUCTS6.lpm_v6_key;
  let peers: Set<string>;
  try {
    peers = new Set(m.dump().filter(([k]) => k.readUInt32LE(fields.prefixlen) === 128).map(([k]) => ipv6Text(k.subarray(fields.addr, fields.addr + 16))));
  } finally {
    m.close();
  }
  for (const peer of [...peers]) {
    const r = await routeTo(peer).catch(() => undefined);
    if (r?.gateway) peers.add(canonicalAddr(r.gateway));
  }
  const out: string[] = [];
  for (const n of await kprNeighbours()) {
    if (!peers.has(n.addr)) continue;
    await deleteNeighbour(n.addr, n.dev);
    out.push(`${n.addr}/${n.dev}`);
  }
  return out;
}

/** Detach every pinned link and unpin every map kpr made under pinPath. */
export async function cleanup(pinPath: string): Promise<CleanupReport> {
  const report: CleanupReport = { detached: [], unpinned: [], left: [], tcDetached: [], neighbours: [] };
  if (!existsSync(pinPath)) return report;
  // tc filters live on devices, not under the pin path. A pin path whose
  // kpr attached tc has its programs pinned: remove kpr's filters from the
  // devices of this network namespace.
  const progsDir = join(pinPath, PROGS_DIR);
  if (existsSync(progsDir)) {
    const ids = new Set<number>();
    for (const name of await readdir(progsDir)) {
      const fd = bpf.objGet(join(progsDir, name));
      try {
        ids.add(bpf.progInfo(fd).id);
      } finally {
        bpf.closeFd(fd);
      }
    }
    report.tcDetached = await detachAllTc(ids);
    report.neighbours = await removePeerNeighbours(pinPath);
    for (const name of await readdir(progsDir)) await unlink(join(progsDir, name));
    await rmdir(progsDir);
  }
  checkBpffs(pinPath);
  const linksDir = join(pinPath, LINKS_DIR);
  if (existsSync(linksDir)) {
    for (const name of await readdir(linksDir)) {
      const pin = join(linksDir, name);
      const fd = bpf.objGet(pin);
      try {
        // Detach explicitly: another process may still hold an fd to the link.
        bpf.linkDetach(fd);
        report.detached.push(name);
      } finally {
        bpf.closeFd(fd);
      }
      await unlink(pin);
    }
    await rmdir(linksDir);
  }
  // Older layout versions too: an upgrade that stopped before retiring them.
  for (const name of new Set([...ALL_MAPS, ...allVersionPinNames()])) {
    const pin = join(pinPath, name);
    if (existsSync(pin)) {
      await unlink(pin);
      report.unpinned.push(name);
    }
  }
  report.left = await readdir(pinPath);
  if (report.left.length === 0) await rmdir(pinPath);
  return report;
}

/** Pinned NAT maps, opened without loading programs (inspect, tests). */
function openPinnedMaps(pinPath: string): DatapathMaps {
  const opened: Array<{ close(): void }> = [];
  const pin = (name: string) => {
    const path = mapPinPath(pinPath, name);
    if (!existsSync(path)) throw new Error(`no pinned map ${name} under ${pinPath}: is kpr running with --pin-path ${pinPath}?`);
    return path;
  };
  const keep = <M extends { close(): void }>(m: M): M => {
    opened.push(m);
    return m;
  };
  const open = (name: string) => keep(BpfMap.openPinned(pin(name), name));
  try {
    return {
      fe: open(MAP_NAT_FE),
      be: open(MAP_NAT_BE),
      fe6: open(MAP_V6_NAT_FE),
      be6: open(MAP_V6_NAT_BE),
      ct6: open(MAP_V6_CT),
      meta: open(MAP_SVC_META),
      skNat: open(MAP_SK_NAT),
      stats: open(MAP_STATS),
      ct: open(MAP_CT),
      config: open(MAP_CONFIG),
      nodeIPs: open(MAP_NODE_IPS),
      dsrOptout: open(MAP_DSR_OPTOUT),
      dsrOptout6: open(MAP_V6_DSR_OPTOUT),
      dsrPeers: open(MAP_DSR_PEERS),
      dsrPeers6: open(MAP_V6_DSR_PEERS),
      // M only matters for writes; inspect and tests read tables of any size.
      maglev: keep(new BpfMaglevTables(MAP_MAGLEV, bpf.objGet(pin(MAP_MAGLEV)), DEFAULT_MAGLEV_TABLE_SIZE, true)),
      maglev6: keep(new BpfMaglevTables(MAP_V6_MAGLEV, bpf.objGet(pin(MAP_V6_MAGLEV)), DEFAULT_MAGLEV_TABLE_SIZE, true)),
    };
  } catch (err) {
    for (const m of opened) m.close();
    throw err;
  }
}

/** Run fn on the pinned maps and close them afterwards. */
export function withPinnedMaps<T>(pinPath: string, fn: (maps: DatapathMaps) => T): T {
  const maps = openPinnedMaps(pinPath);
  try {
    return fn(maps);
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

/** The kpr_stats counters by name, summed over CPUs. */
export function readStats(stats: KVMap): Record<StatName, number> {
  const out = {} as Record<StatName, number>;
  STAT_NAMES.forEach((name, i) => {
    const v = stats.lookup(encodeU32(i));
    let sum = 0n;
    if (v) for (let off = 0; off + 8 <= v.length; off += 8) sum += v.readBigUInt64LE(off);
    out[name] = Number(sum);
  });
  return out;
}
