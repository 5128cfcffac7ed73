/**
 * `kpr cleanup --pin-path P` removes what the kpr of P made and nothing of
 * another kpr's: two tc-only kprs with their own pin paths run in one test
 * netns, each on its own device; cleaning one up leaves the other's tc
 * filters and pins in place.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { cleanup } from '../../src/datapath/pinned.js';
import { ip, nodeArgv, run } from '../../src/lab/exec.js';
import { repoRoot } from '../../src/util/paths.js';
import { requireRoot } from '../helpers/privileged.js';

const cli = join(repoRoot(), 'src', 'cli.ts');

/** nsenter, not `ip netns exec`: the latter remounts /sys and hides the pins. */
const inNs = (ns: string, cmd: string, args: string[]): [string, string[]] => ['nsenter', [`--net=/run/netns/${ns}`, cmd, ...args]];

/** kpr's tc filters (direct-action BPF programs) on a device, by direction. */
async function bpfFilters(ns: string, dev: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of ['ingress', 'egress']) {
    const text = await run('tc', ['-n', ns, 'filter', 'show', 'dev', dev, dir]);
    if (/\bbpf\b/.test(text)) out.push(`${dev}/${dir}`);
  }
  return out;
}

test('kpr cleanup removes only the tc filters and pins of its own pin path', { timeout: 180_000 }, async (t) => {
  if (!requireRoot(t)) return;
  const tag = `kpr12ops-cl-${process.pid}`;
  const ns = tag;
  const pins = [`/sys/fs/bpf/${tag}-a`, `/sys/fs/bpf/${tag}-b`];
  const devs = ['kcla', 'kclb'];
  const dir = await mkdtemp(join(tmpdir(), `${tag}-`));
  const kprs: ChildProcess[] = [];
  t.after(async () => {
    for (const p of kprs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await ip(['netns', 'del', ns], { allowFail: true });
    for (const p of pins) await cleanup(p).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });
  await ip(['netns', 'add', ns]);
  await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', ns, 'link', 'add', devs[0] as string, 'type', 'veth', 'peer', 'name', devs[1] as string]);
  await ip(['-n', ns, 'addr', 'add', '192.0.2.1/24', 'dev', devs[0] as string]);
  await ip(['-n', ns, 'addr', 'add', '192.0.2.2/24', 'dev', devs[1] as string]);
  for (const d of devs) await ip(['-n', ns, 'link', 'set', d, 'up']);
  await writeFile(join(dir, 'empty.yaml'), '');

  for (let i = 0; i < 2; i++) {
    const [cmd, args] = inNs(ns, process.execPath, [
      ...nodeArgv(cli), 'run', '--manifests', dir, '--pin-path', pins[i] as string, '--connect-time-lb=false',
      '--devices', devs[i] as string, '--resync-interval', '0',
      '--healthz-bind-address', '127.0.0.1:0', '--metrics-bind-address', '127.0.0.1:0',
    ]);
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    p.stdout?.on('data', (d) => (log += d.toString()));
    p.stderr?.on('data', (d) => (log += d.toString()));
    kprs.push(p);
    const end = Date.now() + 60_000;
    while ((await bpfFilters(ns, devs[i] as string)).length < 2) {
      if (p.exitCode !== null || Date.now() > end) throw new Error(`kpr ${i} did not attach to ${devs[i]}:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  // A stopped kpr leaves its filters serving (restarts keep forwarding): cleanup is what removes them.
  for (const p of kprs) {
    const exited = once(p, 'exit');
    p.kill('SIGTERM');
    await exited;
  }
  assert.deepEqual(await bpfFilters(ns, 'kcla'), ['kcla/ingress', 'kcla/egress']);
  assert.deepEqual(await bpfFilters(ns, 'kclb'), ['kclb/ingress', 'kclb/egress']);

  const [cmd, args] = inNs(ns, process.execPath, [...nodeArgv(cli), 'cleanup', '--pin-path', pins[0] as string]);
  const out = await run(cmd, args, { timeoutMs: 60_000 });
  assert.match(out, /removed tc filters from kcla\/ingress, kcla\/egress\b/);
  assert.doesNotMatch(out, /kclb/);
  assert.deepEqual(await bpfFilters(ns, 'kcla'), [], 'its own filters are gone');
  assert.deepEqual(await bpfFilters(ns, 'kclb'), ['kclb/ingress', 'kclb/egress'], "the other kpr's filters stay");
  assert.equal(existsSync(pins[0] as string), false, 'its own pin path is gone');
  assert.equal(existsSync(join(pins[1] as string, 'kpr_v4_ct')), true, "the other kpr's maps stay pinned");
});
