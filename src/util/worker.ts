/**
 * Worker threads running one of kpr's own modules, compiled or under tsx.
 *
 * A worker does not inherit the tsx loader of its parent (it is registered
 * per thread), so under tsx the worker first registers it, then imports the
 * module; compiled, the worker runs the .js file directly.
 */
import { Worker } from 'node:worker_threads';
import { ownScript } from './paths.js';

/** Start a worker running ownScript(path) ("datapath/conntrack-worker") with workerData. */
export function startOwnWorker(path: string, workerData: unknown): Worker {
  const script = ownScript(path);
  if (!script.endsWith('.ts')) return new Worker(script, { workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const href = new URL(`file://${script}`).href;
  const boot = `import(${JSON.stringify(api)}).then(({ tsImport }) => tsImport(${JSON.stringify(href)}, ${JSON.stringify(href)}))`;
  return new Worker(boot, { eval: true, workerData });
}
