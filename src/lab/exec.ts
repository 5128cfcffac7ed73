import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Run a command with an argument array (never a shell string). */
export async function run(cmd: string, args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`);
  }
}

export const ip = (args: string[], opts?: { allowFail?: boolean }) => run('ip', args, opts);

/**
 * Argument vector that runs cmd inside a netns and, optionally, inside a
 * cgroup. The cgroup move happens in the wrapper before exec, so the
 * program's very first socket is already under the cgroup's hooks. The
 * paths travel as positional parameters, not as shell text.
 */
export function wrapArgv(cmd: string, args: string[], where: { netns?: string; cgroup?: string }): [string, string[]] {
  let argv = [cmd, ...args];
  if (where.netns) argv = ['ip', 'netns', 'exec', where.netns, ...argv];
  if (where.cgroup) argv = ['sh', '-c', 'echo $$ > "$0" && exec "$@"', `${where.cgroup}/cgroup.procs`, ...argv];
  return [argv[0] as string, argv.slice(1)];
}

export async function runIn(
  where: { netns?: string; cgroup?: string },
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number } = {},
): Promise<string> {
  const [c, a] = wrapArgv(cmd, args, where);
  return run(c, a, opts);
}

export function spawnIn(where: { netns?: string; cgroup?: string }, cmd: string, args: string[]): ChildProcess {
  const [c, a] = wrapArgv(cmd, args, where);
  return spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Node command line that runs one of kpr's own TypeScript or compiled entry points. */
export function nodeArgv(script: string): string[] {
  return script.endsWith('.ts') ? ['--import', 'tsx', script] : [script];
}
