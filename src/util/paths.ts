import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The repository (or image) root: the nearest directory up from this module
 * whose package.json is kpr's. Works from src/ under tsx and from dist/.
 */
export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'kpr') return (cached = dir);
      } catch {
        /* keep walking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the kpr package root');
    dir = up;
  }
}

/**
 * One of kpr's own entry points, by its path under src/ without extension
 * ("cli", "lab/probe"): dist/<path>.js when kpr runs compiled, src/<path>.ts
 * under tsx, so child processes run the same code as their parent.
 */
export function ownScript(path: string): string {
  const compiled = import.meta.url.endsWith('.js');
  return compiled ? join(repoRoot(), 'dist', `${path}.js`) : join(repoRoot(), 'src', `${path}.ts`);
}

/**
 * The bench's entry point (bench/index), compiled (bench/dist/index.js) when
 * kpr runs compiled, bench/index.ts under tsx. The bench is not shipped in
 * dist/: it exists only in a source checkout.
 */
export function benchEntry(): string {
  const compiled = import.meta.url.endsWith('.js');
  return compiled ? join(repoRoot(), 'bench', 'dist', 'index.js') : join(repoRoot(), 'bench', 'index.ts');
}

/** A compiled BPF object shipped in bpf/. */
export function bpfObjectPath(name: string): string {
  return join(repoRoot(), 'bpf', name);
}
