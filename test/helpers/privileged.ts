import type { TestContext } from 'node:test';

/**
 * Gate for tests that need root (bpf syscalls, cgroups, netlink).
 * - root: returns true.
 * - not root, CI !== 'true': calls t.skip(reason) and returns false.
 * - not root, CI === 'true': throws, so a privileged suite can't silently pass in CI.
 */
export function requireRoot(t: TestContext): boolean {
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  if (uid === 0) return true;
  const reason = `requires root (uid ${uid})`;
  if (process.env.CI === 'true') {
    throw new Error(`privileged test "${t.name}" ${reason}, and CI=true forbids skipping`);
  }
  t.skip(reason);
  return false;
}
