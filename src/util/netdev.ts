import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** IPv4 addresses of the named devices, in order (the first is the SNAT source). */
export async function deviceAddresses(devices: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const dev of devices) {
    const { stdout } = await execFileP('ip', ['-j', '-4', 'addr', 'show', 'dev', dev]);
    const links = JSON.parse(stdout) as Array<{ addr_info?: Array<{ family: string; local: string; scope: string }> }>;
    for (const l of links) for (const a of l.addr_info ?? []) if (a.family === 'inet' && a.scope === 'global') out.push(a.local);
  }
  return out;
}
