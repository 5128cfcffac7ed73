/**
 * Another kpr version, built from a git revision of this repository, for
 * upgrade tests: its own sources, BPF objects and addon. It shares this
 * checkout's node_modules when its package-lock is the same, and runs its
 * own `npm ci` otherwise.
 * Built once per revision into /tmp and reused; a half-built tree is never
 * left under the final name.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { repoRoot } from '../../src/util/paths.js';

/**
 * main just before the merge of issue 10: the last revision whose
 * kpr_v4_nat_be kept local backends as a prefix of the cluster set (layout
 * 1), and whose DSR option was 8 bytes (no ingress node).
 */
export const LAYOUT1_REV = '21bdbfad16500a81839b82108f8ff9c96cc758ec';

const git = (args: string[]) => execFileSync('git', ['-C', repoRoot(), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

/** Why this checkout cannot build rev (no history), or undefined. */
export function cannotBuild(rev: string): string | undefined {
  try {
    git(['cat-file', '-e', `${rev}^{commit}`]);
  } catch {
    return `git revision ${rev} is not in this checkout (a shallow clone?)`;
  }
  return undefined;
}

function sameDependencies(rev: string): boolean {
  try {
    git(['diff', '--quiet', rev, 'HEAD', '--', 'package.json', 'package-lock.json']);
    return true;
  } catch {
    return false;
  }
}

/** Build rev (sources, BPF objects, addon) and return the root of its tree. */
export function buildRevision(rev: string): string {
  const full = git(['rev-parse', `${rev}^{commit}`]);
  // Per checkout too: the tree may link to this checkout's node_modules.
  const tag = `kpr-build-${full.slice(0, 12)}-${createHash('sha256').update(repoRoot()).digest('hex').slice(0, 8)}`;
  const dir = join(tmpdir(), tag);
  if (existsSync(join(dir, '.built'))) return dir;
  const work = mkdtempSync(join(tmpdir(), `${tag}-`));
  try {
    const tar = execFileSync('git', ['-C', repoRoot(), 'archive', full], { maxBuffer: 256 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', work], { input: tar });
    if (sameDependencies(full)) symlinkSync(join(repoRoot(), 'node_modules'), join(work, 'node_modules'));
    else execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: work, stdio: 'pipe' });
    execFileSync('make', ['-s', '-C', join(work, 'bpf')], { stdio: 'pipe' });
    execFileSync('npx', ['--no-install', 'node-gyp', 'rebuild', '--nodedir=/usr', '-C', join(work, 'addon'), '--loglevel=error'], {
      stdio: 'pipe',
      cwd: work,
    });
    writeFileSync(join(work, '.built'), full + '\n');
    try {
      renameSync(work, dir);
    } catch {
      // another run finished first: use its tree
      rmSync(work, { recursive: true, force: true });
    }
    return dir;
  } catch (err) {
    rmSync(work, { recursive: true, force: true });
    throw err;
  }
}

/**
 * The built tree of rev, or undefined after t.skip() when this checkout
 * cannot build it; under CI=true that is a failure, as for privileges.
 */
export function requireRevision(t: TestContext, rev: string): string | undefined {
  const why = cannotBuild(rev);
  if (!why) return buildRevision(rev);
  if (process.env.CI === 'true') throw new Error(`cannot build kpr at ${rev}: ${why}`);
  t.skip(why);
  return undefined;
}
