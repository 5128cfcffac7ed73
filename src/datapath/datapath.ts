/**
 * Loading and attaching kpr's BPF objects (pinned.ts opens, reads and
 * removes what they leave pinned).
 *
 * Maps are pinned by name under the pin path; program attachments are BPF
 * links pinned under <pin path>/links. Both outlive the controller, so the
 * data path keeps forwarding while it restarts. On start, a pinned link is
 * not recreated: its program is swapped in place with bpf_link_update, so
 * there is no moment without a hook. While a start runs, every hook it
 * changes is journaled with what it ran before (and every node settings map
 * with what it held), so a start that fails puts them back (rollbackJournal).
 */
import { existsSync, mkdirSync, rmdirSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { bpf, type BpfError, type BpfObject } from './addon.js';
import { BpfMap } from './bpf-map.js';
import { BpfMaglevTables } from './maglev-tables.js';
import { DEFAULT_MAGLEV_TABLE_SIZE } from '../model/maglev.js';
import type { KVMap } from './kvmap.js';
import { STRUCTS, STRUCTS6, type StatName } from './abi.js';
import { checkBpffs, readStats } from './pinned.js';
import { encodeIPv4, encodeIPv6, encodeKprConfig, encodeKprConfig6, encodeKprSockConfig, encodeU32, type KprConfig, type KprConfig6 } from './codec.js';
import {
  DEFAULT_MAP_SIZES,
  LINKS_DIR,
  PROGS_DIR,
  MAP_CONFIG,
  MAP_SOCK_CONFIG,
  MAP_CT,
  MAP_NAT_BE,
  MAP_NAT_FE,
  MAP_NODE_IPS,
  MAP_DSR_OPTOUT,
  MAP_DSR_PEERS,
  MAP_V6_DSR_PEERS,
  MAP_V6_DSR_OPTOUT,
  MAP_MAGLEV,
  MAP_V6_MAGLEV,
  MAP_SK_NAT,
  MAP_STATS,
  MAP_SVC_META,
  MAP_V6_CONFIG,
  MAP_V6_CT,
  MAP_V6_NODE_IPS,
  MAP_V6_NAT_BE,
  MAP_V6_NAT_FE,
  MAP_V6_SK_NAT,
  SOCK_HOOKS,
  SOCK_LB_OBJECT,
  TC_HANDLE,
  TC_NAT_OBJECT,
  TC_PRIORITY,
  TC_PROGRAMS,
  type MapSizes,
  type SockHook,
  type TcRole,
} from './names.js';
import { addrFamily, ipv6Text, type IpCidr, type IPFamily } from '../util/ip.js';
import { versionedPinPaths } from './migrate.js';
import { bpfObjectPath } from '../util/paths.js';
import { cgroupId } from '../util/cgroup.js';


export interface DatapathMaps {
  fe: BpfMap;
  be: BpfMap;
  fe6: BpfMap;
  be6: BpfMap;
  ct6: BpfMap;
  meta: BpfMap;
  skNat: BpfMap;
  stats: BpfMap;
  ct: BpfMap;
  config: BpfMap;
  nodeIPs: BpfMap;
  dsrOptout: BpfMap;
  dsrOptout6: BpfMap;
  dsrPeers: BpfMap;
  dsrPeers6: BpfMap;
  maglev: BpfMaglevTables;
  maglev6: BpfMaglevTables;
}

export interface AttachReport {
  hook: SockHook;
  action: 'created' | 'updated' | 'moved';
  linkId: number;
}

/** One change a start made to a hook or a setting: how to take it back, or to keep it. Each closes what it holds. */
interface Undo {
  rollback(): void;
  commit(): void;
}

/** struct lpm_v4_key or lpm_v6_key for a prefix of that family. */
function lpmKey(family: IPFamily, c: { addr: string; len: number }): Buffer {
  const layout = family === 6 ? STRUCTS6.lpm_v6_key : STRUCTS.lpm_v4_key;
  const k = Buffer.alloc(layout.size);
  k.writeUInt32LE(c.len, layout.fields.prefixlen);
  (family === 6 ? encodeIPv6 : encodeIPv4)(c.addr).copy(k, layout.fields.addr);
  return k;
}

/** Either LPM key back to its prefix; the key's size tells the family. */
function decodeLpmKey(k: Buffer): IpCidr {
  const family: IPFamily = k.length === STRUCTS6.lpm_v6_key.size ? 6 : 4;
  const layout = family === 6 ? STRUCTS6.lpm_v6_key : STRUCTS.lpm_v4_key;
  const a = k.subarray(layout.fields.addr, layout.fields.addr + (family === 6 ? 16 : 4));
  return { family, addr: family === 6 ? ipv6Text(a) : [...a].join('.'), len: k.readUInt32LE(layout.fields.prefixlen) };
}

/** max_entries overrides for every object that declares kpr's pinned maps. */
export function mapMaxEntries(sizes: MapSizes): Record<string, number> {
  return {
    [MAP_NAT_FE]: sizes.natFe,
    [MAP_NAT_BE]: sizes.natBe,
    [MAP_SK_NAT]: sizes.skNat,
    [MAP_SVC_META]: sizes.svcMeta,
    [MAP_CT]: sizes.ct ?? DEFAULT_MAP_SIZES.ct ?? 524288,
    // Each IPv6 map is as large as its IPv4 twin.
    [MAP_V6_NAT_FE]: sizes.natFe,
    [MAP_V6_NAT_BE]: sizes.natBe,
    [MAP_V6_SK_NAT]: sizes.skNat,
    [MAP_V6_CT]: sizes.ct ?? DEFAULT_MAP_SIZES.ct ?? 524288,
  };
}

export class Datapath {
  private constructor(
    readonly pinPath: string,
    private readonly sockObj: BpfObject,
    private readonly tcObj: BpfObject,
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
        return bpf.openObject(bpfObjectPath(name), { pinRoot: pinPath, maxEntries: { ...maxEntries, ...extra }, pinPaths: versionedPinPaths(pinPath) });
      } catch (err) {
        const e = err as BpfError;
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
    let tcObj: BpfObject;
    try {
      const tables = sizes.maglev ?? DEFAULT_MAP_SIZES.maglev ?? 8192;
      tcObj = open(TC_NAT_OBJECT, { [MAP_MAGLEV]: tables, [MAP_V6_MAGLEV]: tables });
    } catch (err) {
      sockObj.close();
      throw err;
    }
    const map = (name: string) => new BpfMap(name, sockObj.mapFd(name));
    return new Datapath(pinPath, sockObj, tcObj, {
      fe: map(MAP_NAT_FE),
      be: map(MAP_NAT_BE),
      fe6: map(MAP_V6_NAT_FE),
      be6: map(MAP_V6_NAT_BE),
      ct6: map(MAP_V6_CT),
      meta: map(MAP_SVC_META),
      skNat: map(MAP_SK_NAT),
      stats: map(MAP_STATS),
      ct: map(MAP_CT),
      config: map(MAP_CONFIG),
      nodeIPs: map(MAP_NODE_IPS),
      dsrOptout: map(MAP_DSR_OPTOUT),
      dsrOptout6: map(MAP_V6_DSR_OPTOUT),
      dsrPeers: map(MAP_DSR_PEERS),
      dsrPeers6: map(MAP_V6_DSR_PEERS),
      maglev: new BpfMaglevTables(MAP_MAGLEV, tcObj.mapFd(MAP_MAGLEV), maglevTableSize),
      maglev6: new BpfMaglevTables(MAP_V6_MAGLEV, tcObj.mapFd(MAP_V6_MAGLEV), maglevTableSize),
    });
  }

  /** Per-node settings for the tc programs. */
  writeConfig(cfg: KprConfig): void {
    this.journalMap(this.maps.config);
    this.maps.config.update(encodeU32(0), encodeKprConfig(cfg));
  }

  /**
   * Name this process's network namespace as the node's: the connect-time
   * hooks treat sockets in it as the node itself (loadBalancerSourceRanges).
   * Written before the hooks are attached.
   */
  writeSockConfig(): bigint {
    const cookie = bpf.netnsCookie();
    const m = new BpfMap(MAP_SOCK_CONFIG, this.sockObj.mapFd(MAP_SOCK_CONFIG));
    this.journalMap(m);
    m.update(encodeU32(0), encodeKprSockConfig({ nodeNetnsCookie: cookie }));
    return cookie;
  }

  /** The IPv6 side of the node for the tc programs (kpr_v6_config). */
  writeConfig6(cfg: KprConfig6): void {
    const m = new BpfMap(MAP_V6_CONFIG, this.sockObj.mapFd(MAP_V6_CONFIG));
    this.journalMap(m);
    m.update(encodeU32(0), encodeKprConfig6(cfg));
  }

  /** Make kpr_v4_node_ips and kpr_v6_node_ips hold exactly these addresses, each its family's. */
  setNodeIPs(addrs: string[]): void {
    const m6 = new BpfMap(MAP_V6_NODE_IPS, this.sockObj.mapFd(MAP_V6_NODE_IPS));
    this.journalMap(this.maps.nodeIPs);
    this.journalMap(m6);
    syncKeySet(this.maps.nodeIPs, addrs.filter((a) => addrFamily(a) === 4).map(encodeIPv4));
    syncKeySet(m6, addrs.filter((a) => addrFamily(a) === 6).map(encodeIPv6));
  }

  /** Make kpr_v4_dsr_optout and kpr_v6_dsr_optout hold exactly these prefixes, each its family's. */
  setDsrOptout(cidrs: readonly IpCidr[]): void {
    this.syncPrefixes([[4, this.maps.dsrOptout], [6, this.maps.dsrOptout6]], cidrs);
  }

  /**
   * Make kpr_v4_dsr_peers and kpr_v6_dsr_peers hold exactly these
   * prefixes, each its family's: the nodes trusted to send the DSR option,
   * as DsrPeers lists them.
   */
  setDsrPeers(cidrs: readonly IpCidr[]): void {
    this.syncPrefixes([[4, this.maps.dsrPeers], [6, this.maps.dsrPeers6]], cidrs);
  }

  /** Each family's LPM trie holds exactly that family's prefixes. */
  private syncPrefixes(maps: ReadonlyArray<readonly [IPFamily, BpfMap]>, cidrs: readonly IpCidr[]): void {
    for (const [family, map] of maps) {
      this.journalMap(map);
      syncKeySet(map, cidrs.filter((c) => c.family === family).map((c) => lpmKey(family, c)));
    }
  }

  /** What the two peer maps hold now (a restart's starting point). */
  dsrPeers(): IpCidr[] {
    return [this.maps.dsrPeers, this.maps.dsrPeers6].flatMap((m) => m.dump().map(([k]) => decodeLpmKey(k)));
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
      this.journalTcFilter(ifindex, dir);
      bpf.tcAttach(ifindex, dir, progFd, { handle: TC_HANDLE, priority: TC_PRIORITY });
    }
    return { ifindex };
  }

  private tcPinned = false;

  private pinTcPrograms(): void {
    if (this.tcPinned) return;
    const dir = join(this.pinPath, PROGS_DIR);
    this.mkdirJournaled(dir);
    for (const role of Object.values(TC_PROGRAMS)) {
      for (const name of Object.values(role)) {
        const pin = join(dir, name);
        this.journalPin(pin);
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
   * for another cgroup is replaced by a new link (detached when the start
   * commits, or right away when nothing is journaling).
   */
  async attachSockHooks(cgroupPath: string): Promise<AttachReport[]> {
    const linksDir = join(this.pinPath, LINKS_DIR);
    this.mkdirJournaled(linksDir);
    const wantCgroup = Number(await cgroupId(cgroupPath));
    const out: AttachReport[] = [];
    for (const [hook, prog] of Object.entries(SOCK_HOOKS) as Array<[SockHook, string]>) {
      const progFd = this.sockObj.progFd(prog);
      const pin = join(linksDir, `cgroup_${hook}`);
      const oldFd = existsSync(pin) ? bpf.objGet(pin) : undefined;
      if (oldFd !== undefined && bpf.linkInfo(oldFd).cgroupId === wantCgroup) {
        out.push({ hook, action: 'updated', linkId: this.swapLink(oldFd, progFd) });
        continue;
      }
      let linkFd: number;
      try {
        // Make before break: the new cgroup's hook is attached before the
        // old one is detached, so a failed attach leaves the old one serving.
        linkFd = bpf.progAttachCgroup(progFd, cgroupPath, hook);
      } catch (err) {
        if (oldFd !== undefined) bpf.closeFd(oldFd);
        throw err;
      }
      const undo: Undo = {
        rollback: () => {
          bpf.linkDetach(linkFd);
          bpf.closeFd(linkFd);
          rmSync(pin, { force: true });
          if (oldFd === undefined) return;
          bpf.objPin(oldFd, pin);
          bpf.closeFd(oldFd);
        },
        commit: () => {
          // The pin holds the new link; the old one goes with our fd.
          bpf.closeFd(linkFd);
          if (oldFd === undefined) return;
          bpf.linkDetach(oldFd);
          bpf.closeFd(oldFd);
        },
      };
      try {
        rmSync(pin, { force: true });
        bpf.objPin(linkFd, pin);
        out.push({ hook, action: oldFd === undefined ? 'created' : 'moved', linkId: bpf.linkInfo(linkFd).id });
      } catch (err) {
        undo.rollback();
        throw err;
      }
      this.record(undo);
    }
    return out;
  }

  // --- the start's journal: what each hook ran, and each node setting
  // held, before this start changed it.

  /** Until committed or rolled back: how to take back each hook change, oldest first. */
  private journal: Undo[] | undefined;
  /** tc hooks (ifindex/direction) whose previous filter the journal holds. */
  private readonly tcJournaled = new Set<string>();
  /** Settings maps whose contents before the start the journal holds. */
  private readonly journaledMaps = new Set<string>();

  /**
   * Journal every hook change and settings write from now on: the programs
   * a start swaps out stay held, so a failed start can put them back.
   * Without it (tests, benches) a change is final at once.
   */
  startJournal(): void {
    this.journal ??= [];
  }

  /**
   * The start went through: let go of what the journal held (detaching
   * links moved away from). Returns what failed, and never throws: the
   * start is done.
   */
  commitJournal(): Error[] {
    return this.endJournal((u) => u.commit(), false);
  }

  /**
   * The start failed: put back, newest first, what each hook ran and each
   * settings map held before it. Goes on past a step that fails, and
   * returns what could not be put back.
   */
  rollbackJournal(): Error[] {
    return this.endJournal((u) => u.rollback(), true);
  }

  private endJournal(step: (u: Undo) => void, newestFirst: boolean): Error[] {
    const j = this.journal ?? [];
    this.journal = undefined;
    this.tcJournaled.clear();
    this.journaledMaps.clear();
    const errors: Error[] = [];
    for (const u of newestFirst ? j.reverse() : j) {
      try {
        step(u);
      } catch (err) {
        errors.push(err as Error);
      }
    }
    return errors;
  }

  private record(u: Undo): void {
    if (this.journal) this.journal.push(u);
    else u.commit();
  }

  /** Swap a program into a pinned link (linkFd, which this takes over); returns the link id. */
  private swapLink(linkFd: number, progFd: number): number {
    let prevFd: number | undefined;
    let id: number;
    try {
      const info = bpf.linkInfo(linkFd);
      id = info.id;
      // Held from before the swap: once out of the link, nothing else may keep the program alive.
      if (this.journal) prevFd = bpf.progGetFdById(info.progId);
      bpf.linkUpdate(linkFd, progFd);
    } catch (err) {
      if (prevFd !== undefined) bpf.closeFd(prevFd);
      bpf.closeFd(linkFd);
      throw err;
    }
    const release = () => {
      if (prevFd !== undefined) bpf.closeFd(prevFd);
      bpf.closeFd(linkFd);
    };
    this.record({
      // Compare-and-swap: only if the link still runs this start's program.
      rollback: () => {
        try {
          if (prevFd !== undefined) bpf.linkUpdate(linkFd, prevFd, progFd);
        } finally {
          release();
        }
      },
      commit: release,
    });
    return id;
  }

  /** Before a tc attach: hold the filter this start is about to replace (none: ours is removed on rollback). */
  private journalTcFilter(ifindex: number, dir: 'ingress' | 'egress'): void {
    const key = `${ifindex}/${dir}`;
    if (!this.journal || this.tcJournaled.has(key)) return;
    const prevId = bpf.tcQuery(ifindex, dir, TC_HANDLE, TC_PRIORITY);
    const prevFd = prevId === null ? undefined : bpf.progGetFdById(prevId);
    this.tcJournaled.add(key);
    this.record({
      rollback: () => {
        try {
          if (prevFd === undefined) bpf.tcDetach(ifindex, dir, TC_HANDLE, TC_PRIORITY);
          else bpf.tcAttach(ifindex, dir, prevFd, { handle: TC_HANDLE, priority: TC_PRIORITY });
        } finally {
          if (prevFd !== undefined) bpf.closeFd(prevFd);
        }
      },
      commit: () => {
        if (prevFd !== undefined) bpf.closeFd(prevFd);
      },
    });
  }

  /** Before a start first writes a node settings map: its contents, written back on rollback. */
  private journalMap(m: BpfMap): void {
    if (!this.journal || this.journaledMaps.has(m.name)) return;
    this.journaledMaps.add(m.name);
    const saved = m.dump();
    this.record({ rollback: () => replaceEntries(m, saved), commit: () => undefined });
  }

  /** Before a pin is replaced: hold what it pinned, to pin it again on rollback. */
  private journalPin(pin: string): void {
    if (!this.journal) return;
    const prevFd = existsSync(pin) ? bpf.objGet(pin) : undefined;
    this.record({
      rollback: () => {
        rmSync(pin, { force: true });
        if (prevFd === undefined) return;
        bpf.objPin(prevFd, pin);
        bpf.closeFd(prevFd);
      },
      commit: () => {
        if (prevFd !== undefined) bpf.closeFd(prevFd);
      },
    });
  }

  /** mkdir -p, removed again on rollback if this start made it (and it is empty by then). */
  private mkdirJournaled(dir: string): void {
    if (existsSync(dir)) return;
    mkdirSync(dir, { recursive: true });
    this.record({ rollback: () => rmdirSync(dir), commit: () => undefined });
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

/** Make a set-like map (any value) hold exactly these keys. */
function syncKeySet(map: KVMap, keys: Buffer[]): void {
  replaceEntries(map, keys.map((k) => [k, encodeU32(1)]));
}

/** Make a map hold exactly these entries (an array map: every key, so nothing to delete). */
function replaceEntries(map: KVMap, entries: Array<[Buffer, Buffer]>): void {
  const want = new Set(entries.map(([k]) => k.toString('hex')));
  for (const [k] of map.dump()) if (!want.has(k.toString('hex'))) map.delete(k);
  for (const [k, v] of entries) map.update(k, v);
}
