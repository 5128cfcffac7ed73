/**
 * Runs kpr's start-up in this process's network namespace, for tests whose
 * devices live in a namespace of their own (the test runs this script under
 * `nsenter --net=/run/netns/NAME`, which keeps bpffs visible).
 *
 * argv[2]: JSON { mode, opts }, opts being DaemonOptions without the logger:
 *   - 'start':     start, wait for the first sync, stop (what a restart finds);
 *   - 'fail':      start with a source that fails, after every hook is attached;
 *   - 'preflight': only the checks made before the kernel is touched.
 * Prints one JSON line: {"ok":true} or {"error":"message"}.
 */
import { pino } from 'pino';
import { preflight, startDaemon, type DaemonOptions } from '../../src/daemon.js';
import { failingSource } from './failing-source.js';

export type StartChildMode = 'start' | 'fail' | 'preflight';

const { mode, opts } = JSON.parse(process.argv[2] ?? '{}') as { mode: StartChildMode; opts: Omit<DaemonOptions, 'log'> };
const full: DaemonOptions = { ...opts, log: pino({ level: 'silent' }), ...(mode === 'fail' ? { source: failingSource } : {}) };
try {
  if (mode === 'preflight') await preflight(full);
  else {
    const d = await startDaemon(full);
    await d.controller.whenIdle();
    await d.stop();
  }
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  console.log(JSON.stringify({ error: (err as Error).message }));
}
// A timer a failed start left behind must not keep the test waiting.
process.exit(0);
