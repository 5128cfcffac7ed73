/**
 * Loading, attaching and removing kpr's BPF objects.
 *
 * Maps are pinned by name under the pin path; program attachments are BPF
 * links pinned under <pin path>/links. Both outlive the controller, so the
 * data path keeps forwarding while it restarts. On start, a pinned link is
 * not recreated: its program is swapped in place with bpf_link_update, so
 * there is no moment without a hook.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statfsSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { mkdir, readdir, rmdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as bpf from './addon.js';
import { BpfMap } from './maps.js';
import { BpfMaglevTables } from './maglev-tables.js';
import { DEFAULT_MAGLEV_TABLE_SIZE } from '../model/maglev.js';
import type { KVMap } from './kvmap.js';
import { encodeIPv4, encodeKprConfig, encodeU32, type KprConfig } from './codec.js';
import {
  ALL_MAPS,
  DEFAULT_MAP_SIZES,
  LINKS_DIR,
  PROGS_DIR,
  MAP_CONFIG,
  MAP_CT,
  MAP_NAT_BE,
  MAP_NAT_FE,
  MAP_NODE_IPS,
  MAP_DSR_OPTOUT,
  MAP_DSR_PEERS,
  MAP_MAGLEV,
  MAP_SK_NAT,
  MAP_STATS,
  MAP_SVC_META,
  SOCK_HOOKS,
  SOCK_LB_OBJECT,
  STAT_NAMES,
  TC_HANDLE,
  TC_NAT_OBJECT,
  TC_PRIORITY,
  TC_PROGRAMS,
  type MapSizes,
  type SockHook,
  type StatName,
  type TcRole,
} from './layout.js';
import { bpfObjectPath } from '../util/paths.js';
import { cgroupId } from '../util/cgroup.js';

const BPF_FS_MAGIC = 0xcafe4a11;
const execFileP = promisify(execFile);

export interface DatapathMaps {
  fe: BpfMap;
  be: BpfMap;
  meta: BpfMap;
  skNat: BpfMap;
  stats: BpfMap;
  ct: BpfMap;
  config: BpfMap;
  nodeIPs: BpfMap;
  dsrOptout: BpfMap;
  dsrPeers: BpfMap;
  maglev: BpfMaglevTables;
}

export interface AttachReport {
  hook: SockHook;
  action: 'created' | 'updated' | 'moved';
  linkId: number;
}

/**
 * `ip netns exec` runs its command in a new mount namespace with /sys
 * remounted for the target network namespace: bpffs is gone from there, and
 * mounting one would hide the real pins. Tell that case apart (called only
 * once the bpffs check has failed).
 */
export function underIpNetnsExec(): boolean {
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
/** struct lpm_v4_key for "a.b.c.d/len" (network address). */
function lpmV4Key(cidr: string): Buffer {
  const [addr, len] = cidr.split('/');
  const k = Buffer.alloc(8);
  k.writeUInt32LE(Number(len ?? 32), 0);
  encodeIPv4(addr ?? '0.0.0.0').copy(k, 4);
  return k;
}

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

/** max_entries overrides for every object that declares kpr's pinned maps. */
export function mapMaxEntries(sizes: MapSizes): Record<string, number> {
  return {
    [MAP_NAT_FE]: sizes.natFe,
    [MAP_NAT_BE]: sizes.natBe,
    [MAP_SK_NAT]: sizes.skNat,
    [MAP_SVC_META]: sizes.svcMeta,
    [MAP_CT]: sizes.ct ?? DEFAULT_MAP_SIZES.ct ?? 524288,
  };
}

export class Datapath {
  private constructor(
    readonly pinPath: string,
    private readonly sockObj: bpf.BpfObject,
    private readonly tcObj: bpf.BpfObject,
    readonly maps: DatapathMaps,
  ) {}

  /** maglevTableSize: M of the Maglev tables this controller writes (--maglev-table-size). */
  static async open(pinPath: string, sizes: MapSizes = DEFAULT_MAP_SIZES, maglevTableSize = DEFAULT_MAGLEV_TABLE_SIZE): Promise<Datapath> {
    checkBpffs(pinPath);
    await mkdir(pinPath, { recursive: true });
    const maxEntries = mapMaxEntries(sizes);
    // Both objects declare the same pinned maps: the first creates them,
    // the second reuses them, so connect-time and tc share one state.
    const open = (name: string, extra: Record<string, number> = {}) => {
      try {
        return bpf.openObject(bpfObjectPath(name), { pinRoot: pinPath, maxEntries: { ...maxEntries, ...extra } });
      } catch (err) {
        const e = err as bpf.BpfError;
        if (e.code === 'EINVAL' && /reuse/i.test([e.message, ...(e.libbpfLog ?? [])].join('\n'))) {
          throw new Error(
            `the maps pinned under ${pinPath} do not match this build or these map sizes; ` +
              `start with the sizes they were created with, or run "kpr cleanup --pin-path ${pinPath}" first\n${e.message}`,
          );
        }
        throw err;
      }
    };
    const sockObj = open(SOCK_LB_OBJECT);
    let tcObj: bpf.BpfObject;
    try {
      tcObj = open(TC_NAT_OBJECT, { [MAP_MAGLEV]: sizes.maglev ?? DEFAULT_MAP_SIZES.maglev ?? 8192 });
    } catch (err) {
      sockObj.close();
      throw err;
    }
    const map = (name: string) => new BpfMap(name, sockObj.mapFd(name));
    return new Datapath(pinPath, sockObj, tcObj, {
      fe: map(MAP_NAT_FE),
      be: map(MAP_NAT_BE),
      meta: map(MAP_SVC_META),
      skNat: map(MAP_SK_NAT),
      stats: map(MAP_STATS),
      ct: map(MAP_CT),
      config: map(MAP_CONFIG),
      nodeIPs: map(MAP_NODE_IPS),
      dsrOptout: map(MAP_DSR_OPTOUT),
      dsrPeers: map(MAP_DSR_PEERS),
      maglev: new BpfMaglevTables(MAP_MAGLEV, tcObj.mapFd(MAP_MAGLEV), maglevTableSize),
    });
  }

  /** Per-node settings for the tc programs. */
  writeConfig(cfg: KprConfig): void {
    this.maps.config.update(encodeU32(0), encodeKprConfig(cfg));
  }

  /** Make kpr_v4_node_ips hold exactly these addresses. */
  setNodeIPs(addrs: string[]): void {
    syncKeySet(this.maps.nodeIPs, addrs.map(encodeIPv4));
  }

  /** Make kpr_v4_dsr_optout hold exactly these CIDRs ("a.b.c.d/len", network address). */
  setDsrOptout(cidrs: string[]): void {
    syncKeySet(this.maps.dsrOptout, cidrs.map(lpmV4Key));
  }

  /** Make kpr_v4_dsr_peers hold exactly these CIDRs: the nodes trusted to send the DSR option. */
  setDsrPeers(cidrs: string[]): void {
    syncKeySet(this.maps.dsrPeers, cidrs.map(lpmV4Key));
  }

  /**
   * Attach (or atomically replace) kpr's tc programs on a device. The
   * programs are pinned under <pin path>/progs too: that marks this pin
   * path as owning tc filters, which `kpr cleanup` then removes.
   */
  attachTc(ifname: string, role: TcRole): { ifindex: number } {
    this.pinTcPrograms();
    const ifindex = bpf.ifNameToIndex(ifname);
    for (const dir of ['ingress', 'egress'] as const) {
      const progFd = this.tcObj.progFd(TC_PROGRAMS[role][dir]);
      bpf.tcAttach(ifindex, dir, progFd, { handle: TC_HANDLE, priority: TC_PRIORITY });
    }
    return { ifindex };
  }

  private tcPinned = false;

  private pinTcPrograms(): void {
    if (this.tcPinned) return;
    const dir = join(this.pinPath, PROGS_DIR);
    mkdirSync(dir, { recursive: true });
    for (const role of Object.values(TC_PROGRAMS)) {
      for (const name of Object.values(role)) {
        const pin = join(dir, name);
        rmSync(pin, { force: true });
        bpf.objPin(this.tcObj.progFd(name), pin);
      }
    }
    this.tcPinned = true;
  }

  /** The tc program fds, for BPF_PROG_TEST_RUN in tests. */
  tcProgFd(name: string): number {
    return this.tcObj.progFd(name);
  }

  /**
   * Attach the connect-time hooks to a cgroup v2 directory. A link already
   * pinned for the same cgroup gets the new program atomically; one pinned
   * for another cgroup is detached and replaced.
   */
  async attachSockHooks(cgroupPath: string): Promise<AttachReport[]> {
    const linksDir = join(this.pinPath, LINKS_DIR);
    await mkdir(linksDir, { recursive: true });
    const wantCgroup = Number(await cgroupId(cgroupPath));
    const out: AttachReport[] = [];
    for (const [hook, prog] of Object.entries(SOCK_HOOKS) as Array<[SockHook, string]>) {
      const progFd = this.sockObj.progFd(prog);
      const pin = join(linksDir, `cgroup_${hook}`);
      let action: AttachReport['action'] = 'created';
      if (existsSync(pin)) {
        const fd = bpf.objGet(pin);
        try {
          if (bpf.linkInfo(fd).cgroupId === wantCgroup) {
            bpf.linkUpdate(fd, progFd);
            out.push({ hook, action: 'updated', linkId: bpf.linkInfo(fd).id });
            continue;
          }
          bpf.linkDetach(fd);
          action = 'moved';
        } finally {
          bpf.closeFd(fd);
        }
        await unlink(pin);
      }
      const linkFd = bpf.progAttachCgroup(progFd, cgroupPath, hook);
      try {
        bpf.objPin(linkFd, pin);
        out.push({ hook, action, linkId: bpf.linkInfo(linkFd).id });
      } finally {
        // The pin holds the link; our fd is not needed.
        bpf.closeFd(linkFd);
      }
    }
    return out;
  }

  /** Data-path counters summed over CPUs. */
  readStats(): Record<StatName, number> {
    return readStats(this.maps.stats);
  }

  close(): void {
    this.tcObj.close();
    this.sockObj.close();
  }
}

export interface CleanupReport {
  detached: string[];
  unpinned: string[];
  left: string[];
  tcDetached: string[];
}

/** Interfaces of the current network namespace. */
export async function listLinks(): Promise<Array<{ ifname: string; ifindex: number }>> {
  const out = await execFileP('ip', ['-j', 'link', 'show']);
  return (JSON.parse(out.stdout) as Array<{ ifname: string; ifindex: number }>).map((l) => ({ ifname: l.ifname, ifindex: l.ifindex }));
}

/**
 * Remove kpr's tc filters (by handle and priority) from the devices of this
 * netns; with progIds, only filters running one of those programs (the ones
 * a given pin path pinned), so a cleanup leaves another kpr's filters alone.
 */
export async function detachAllTc(progIds?: Set<number>): Promise<string[]> {
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

/** Detach every pinned link and unpin every map kpr made under pinPath. */
export async function cleanup(pinPath: string): Promise<CleanupReport> {
  const report: CleanupReport = { detached: [], unpinned: [], left: [], tcDetached: [] };
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
  for (const name of ALL_MAPS) {
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
export function openPinnedMaps(pinPath: string): DatapathMaps {
  const opened: BpfMap[] = [];
  const open = (name: string) => {
    const pin = join(pinPath, name);
    if (!existsSync(pin)) throw new Error(`no pinned map ${name} under ${pinPath}: is kpr running with --pin-path ${pinPath}?`);
    const m = BpfMap.openPinned(pin, name);
    opened.push(m);
    return m;
  };
  try {
    return {
      fe: open(MAP_NAT_FE),
      be: open(MAP_NAT_BE),
      meta: open(MAP_SVC_META),
      skNat: open(MAP_SK_NAT),
      stats: open(MAP_STATS),
      ct: open(MAP_CT),
      config: open(MAP_CONFIG),
      nodeIPs: open(MAP_NODE_IPS),
      dsrOptout: open(MAP_DSR_OPTOUT),
      dsrPeers: open(MAP_DSR_PEERS),
      // M only matters for writes; inspect and tests read tables of any size.
      maglev: new BpfMaglevTables(MAP_MAGLEV, open(MAP_MAGLEV).fd, DEFAULT_MAGLEV_TABLE_SIZE),
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

/** Make a set-like map (any value) hold exactly these keys. */
function syncKeySet(map: KVMap, keys: Buffer[]): void {
  const want = new Set(keys.map((k) => k.toString('hex')));
  for (const [k] of map.dump()) if (!want.has(k.toString('hex'))) map.delete(k);
  for (const k of keys) map.update(k, encodeU32(1));
}
