/**
 * `kpr bench-ct`: the main event loop's lag while the conntrack expiry scan
 * walks a full map (issue 12, point 7: p99 <= 20 ms at 500k entries).
 *
 * Fills a real, freshly pinned conntrack map with `entries` entries (UDP
 * flows as FWD+REV pairs, half of them stale), then times scans with
 * perf_hooks.monitorEventLoopDelay enabled only while each scan runs:
 *  - thread: ConntrackScanThread, what the daemon runs;
 *  - inline: ConntrackScanner on the main thread, yielding between batches
 *    (the previous design), for comparison.
 * The map is refilled before every scan, so each one expires half of it.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { cleanup, ConntrackScanner, ConntrackScanThread, CT_FWD, CT_REV, ctKeyFor, Datapath, DEFAULT_MAP_SIZES, encodeCtKey, encodeCtVal, type KVMap } from 'kpr';

type Mode = 'thread' | 'inline';

export interface CtLagRun {
  mode: Mode;
  entries: number;
  scanMs: number;
  expired: number;
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
}

/** pairs of FWD + REV entries; odd flows were seen a second ago, even ones at boot */
function fillCt(ct: KVMap, entries: number): void {
  const now = process.hrtime.bigint();
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  const base = { flags: 0, tcpClient: 0, tcpServer: 0, svcId: 1, created: 0n, beOrdinal: 0 };
  for (let i = 0; i < entries / 2; i++) {
    const client = `192.0.2.${(i % 250) + 1}`;
    const cport = 1024 + Math.floor(i / 250);
    const backend = `203.0.113.${(i % 200) + 1}`;
    const lastSeen = i % 2 ? now - 1_000_000_000n : 0n;
    keys.push(encodeCtKey(ctKeyFor(17, client, cport, '198.18.0.1', 80)));
    values.push(encodeCtVal({ ...base, type: CT_FWD, lastSeen, natAddr: backend, natPort: 8080, natSaddr: '0.0.0.0', natSport: 0 }));
    keys.push(encodeCtKey(ctKeyFor(17, client, cport, backend, 8080)));
    values.push(encodeCtVal({ ...base, type: CT_REV, lastSeen, natAddr: '198.18.0.1', natPort: 80, natSaddr: client, natSport: cport }));
  }
  ct.updateBatch(keys, values);
}

export async function benchCtLag(o: { entries: number; repeat: number; modes: Mode[] }, progress: (m: string) => void): Promise<CtLagRun[]> {
  const pinPath = `/sys/fs/bpf/kpr-bench-ct-${process.pid}`;
  const sizes = { ...DEFAULT_MAP_SIZES, ct: Math.max(DEFAULT_MAP_SIZES.ct ?? 0, o.entries) };
  const dp = await Datapath.open(pinPath, sizes);
  let thread: ConntrackScanThread | undefined;
  const runs: CtLagRun[] = [];
  try {
    if (o.modes.includes('thread')) thread = await ConntrackScanThread.start(join(pinPath, dp.maps.ct.name));
    for (const mode of o.modes) {
      for (let r = 0; r < o.repeat; r++) {
        fillCt(dp.maps.ct, o.entries);
        const h = monitorEventLoopDelay({ resolution: 1 });
        h.enable();
        const t0 = performance.now();
        const res = mode === 'thread' && thread ? await thread.scan() : await new ConntrackScanner(dp.maps.ct).scan();
        const scanMs = performance.now() - t0;
        h.disable();
        const run = {
          mode,
          entries: res.scanned,
          scanMs: Math.round(scanMs),
          expired: res.expired,
          lagP50Ms: +(h.percentile(50) / 1e6).toFixed(1),
          lagP99Ms: +(h.percentile(99) / 1e6).toFixed(1),
          lagMaxMs: +(h.max / 1e6).toFixed(1),
        };
        progress(JSON.stringify(run));
        runs.push(run);
      }
    }
  } finally {
    await thread?.close();
    dp.close();
    await cleanup(pinPath);
  }
  return runs;
}

interface Args {
  entries: number;
  repeat: number;
  modes: string;
  json: boolean;
}

export const benchCtCommand: CommandModule<{}, Args> = {
  command: 'bench-ct',
  describe: 'event-loop lag while the conntrack expiry scan walks a full map (real BPF map, no traffic)',
  builder: (y: Argv<{}>) =>
    y.options({
      entries: { type: 'number', default: 500_000, describe: 'conntrack entries (half of them stale)' },
      repeat: { type: 'number', default: 5, describe: 'scans per mode' },
      modes: { type: 'string', default: 'thread,inline', describe: 'thread (what kpr runs) and/or inline (main-thread, yielding)' },
      json: { type: 'boolean', default: false, describe: 'print JSON' },
    }) as unknown as Argv<Args>,
  handler: async (a) => {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('kpr bench-ct needs root (BPF maps)');
    const modes = a.modes.split(',').map((m) => m.trim()) as Mode[];
    if (modes.some((m) => m !== 'thread' && m !== 'inline')) throw new Error('--modes: thread and/or inline');
    if (!Number.isInteger(a.entries) || a.entries < 2 || a.entries > 4_000_000) throw new Error('--entries: 2..4000000');
    const runs = await benchCtLag({ entries: a.entries, repeat: a.repeat, modes }, (m) => process.stderr.write(`${m}\n`));
    if (a.json) {
      process.stdout.write(JSON.stringify(runs, null, 2) + '\n');
      return;
    }
    const lines = ['MODE     ENTRIES  SCAN ms  LAG p50  LAG p99  LAG max'];
    for (const r of runs) {
      lines.push(`${r.mode.padEnd(7)}  ${String(r.entries).padStart(7)}  ${String(r.scanMs).padStart(7)}  ${r.lagP50Ms.toFixed(1).padStart(7)}  ${r.lagP99Ms.toFixed(1).padStart(7)}  ${r.lagMaxMs.toFixed(1).padStart(7)}`);
    }
    const worst = (m: Mode) => Math.max(...runs.filter((r) => r.mode === m).map((r) => r.lagP99Ms));
    for (const m of modes) lines.push(`${m}: worst p99 ${worst(m).toFixed(1)} ms over ${a.repeat} scans (target <= 20 ms)`);
    process.stdout.write(lines.join('\n') + '\n');
  },
};
