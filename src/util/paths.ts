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

/** A compiled BPF object shipped in bpf/. */
export function bpfObjectPath(name: string): string {
  return join(repoRoot(), 'bpf', name);
}
