import { readFileSync, statfsSync } from 'node:fs';
import { mkdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Where cgroup v2 is mounted. Hybrid hosts mount it at
 * /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup: read mountinfo
 * rather than guess.
 */
export function cgroup2Mount(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string {
  for (const line of mountinfo.split('\n')) {
    // "... mountpoint opts - fstype source superopts"
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    if (right.split(' ')[0] === 'cgroup2') {
      const mountPoint = left.split(' ')[4];
      if (mountPoint) return mountPoint.replace(/\\040/g, ' ');
    }
  }
  throw new Error('no cgroup2 filesystem is mounted (kpr needs cgroup v2 for connect-time load balancing)');
}

/** The cgroup id the kernel reports for a cgroup2 directory (its inode). */
export async function cgroupId(path: string): Promise<bigint> {
  return (await stat(path, { bigint: true })).ino;
}

/** A child cgroup for tests and demos: never the hierarchy's root. */
export async function createChildCgroup(name: string): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`bad cgroup name ${name}`);
  const path = join(cgroup2Mount(), name);
  await mkdir(path, { recursive: true });
  return path;
}

export async function removeCgroup(path: string): Promise<void> {
  try {
    await rmdir(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

const CGROUP2_SUPER_MAGIC = 0x63677270;
const FS_NAMES: Record<number, string> = {
  0x27e0eb: 'cgroup v1',
  0x01021994: 'tmpfs',
  0x62656572: 'sysfs',
};

/**
 * Refuse, with a message an operator can act on, a --cgroup that is missing
 * or not a cgroup v2 directory: the kernel would only say EBADF at attach
 * time, after maps were pinned. On hybrid hosts /sys/fs/cgroup is a tmpfs of
 * v1 controllers and cgroup v2 lives at /sys/fs/cgroup/unified.
 */
export function checkCgroup2(path: string, mountinfo?: string): void {
  let type: number;
  try {
    type = statfsSync(path).type;
  } catch (err) {
    throw new Error(`--cgroup ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`);
  }
  if (type === CGROUP2_SUPER_MAGIC) return;
  let hint = '';
  try {
    hint = `; cgroup v2 is mounted at ${cgroup2Mount(mountinfo)} on this host`;
  } catch {
    hint = '; no cgroup2 filesystem is mounted on this host';
  }
  const fs = FS_NAMES[type] ?? `filesystem type 0x${type.toString(16)}`;
  throw new Error(`--cgroup ${path} is not a cgroup v2 directory (it is on ${fs}, as on hybrid or v1 hosts)${hint}`);
}
