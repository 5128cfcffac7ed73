/**
 * Loading, attaching and removing kpr's BPF objects.
 *
 * Maps are pinned by name under the pin path; program attachments are BPF
 * links pinned under <pin path>/links. Both outlive the controller, so the
 * data path keeps forwarding while it restarts. On start, a pinned link is
 * not recreated: its program is swapped in place with bpf_link_update, so
 * there is no moment without a hook.
 */
import { existsSync, statfsSync } from 'node:fs';
import { mkdir, readdir, rmdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as bpf from './addon.js';
import { BpfMap } from './maps.js';
import {
  ALL_MAPS,
  DEFAULT_MAP_SIZES,
  LINKS_DIR,
  MAP_NAT_BE,
  MAP_NAT_FE,
  MAP_SK_NAT,
  MAP_STATS,
  MAP_SVC_META,
  SOCK_HOOKS,
  SOCK_LB_OBJECT,
  STAT_NAMES,
  type MapSizes,
  type SockHook,
} from './layout.js';
import { bpfObjectPath } from '../util/paths.js';
import { cgroupId } from '../util/cgroup.js';

const BPF_FS_MAGIC = 0xcafe4a11;

export interface DatapathMaps {
  fe: BpfMap;
  be: BpfMap;
  meta: BpfMap;
  skNat: BpfMap;
  stats: BpfMap;
}

export interface AttachReport {
  hook: SockHook;
  action: 'created' | 'updated' | 'moved';
  linkId: number;
}

/** Refuse a pin path that is not on bpffs: pins elsewhere would fail obscurely. */
export function checkBpffs(pinPath: string): void {
  let dir = pinPath;
  while (!existsSync(dir)) dir = dirname(dir);
  const type = statfsSync(dir).type;
  if (type !== BPF_FS_MAGIC) {
    throw new Error(`${pinPath} is not on a BPF filesystem (mount one with: mount -t bpf bpf ${dir === '/' ? '/sys/fs/bpf' : dir})`);
  }
}

export class Datapath {
  private constructor(
    readonly pinPath: string,
    private readonly obj: bpf.BpfObject,
    readonly maps: DatapathMaps,
  ) {}

  static async open(pinPath: string, sizes: MapSizes = DEFAULT_MAP_SIZES): Promise<Datapath> {
    checkBpffs(pinPath);
    await mkdir(pinPath, { recursive: true });
    let obj: bpf.BpfObject;
    try {
      obj = bpf.openObject(bpfObjectPath(SOCK_LB_OBJECT), {
        pinRoot: pinPath,
        maxEntries: {
          [MAP_NAT_FE]: sizes.natFe,
          [MAP_NAT_BE]: sizes.natBe,
          [MAP_SK_NAT]: sizes.skNat,
          [MAP_SVC_META]: sizes.svcMeta,
        },
      });
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
    const map = (name: string) => new BpfMap(name, obj.mapFd(name));
    return new Datapath(pinPath, obj, {
      fe: map(MAP_NAT_FE),
      be: map(MAP_NAT_BE),
      meta: map(MAP_SVC_META),
      skNat: map(MAP_SK_NAT),
      stats: map(MAP_STATS),
    });
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
      const progFd = this.obj.progFd(prog);
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
  readStats(): Record<string, number> {
    const out: Record<string, number> = {};
    STAT_NAMES.forEach((name, i) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(i);
      const v = this.maps.stats.lookup(key);
      let sum = 0n;
      if (v) for (let off = 0; off + 8 <= v.length; off += 8) sum += v.readBigUInt64LE(off);
      out[name] = Number(sum);
    });
    return out;
  }

  close(): void {
    this.obj.close();
  }
}

export interface CleanupReport {
  detached: string[];
  unpinned: string[];
  left: string[];
}

/** Detach every pinned link and unpin every map kpr made under pinPath. */
export async function cleanup(pinPath: string): Promise<CleanupReport> {
  const report: CleanupReport = { detached: [], unpinned: [], left: [] };
  if (!existsSync(pinPath)) return report;
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
  const open = (name: string) => {
    const pin = join(pinPath, name);
    if (!existsSync(pin)) throw new Error(`no pinned map ${name} under ${pinPath}: is kpr running with --pin-path ${pinPath}?`);
    return BpfMap.openPinned(pin, name);
  };
  return { fe: open(MAP_NAT_FE), be: open(MAP_NAT_BE), meta: open(MAP_SVC_META), skNat: open(MAP_SK_NAT), stats: open(MAP_STATS) };
}
