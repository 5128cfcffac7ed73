import { readFileSync } from 'node:fs';
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
