// A worker thread for the conntrack race test: runs one tc program on a list
// of packets, meeting its twin at a spin barrier before each, so both CPUs
// handle the first packet of each flow at the same moment. Plain JS: workers
// do not inherit the tsx loader.
import { createRequire } from 'node:module';
import { workerData } from 'node:worker_threads';

const addon = createRequire(import.meta.url)(workerData.addon);
const arrived = new Int32Array(workerData.sync);
const deadline = Date.now() + 60_000;
for (let i = 0; i < workerData.packets.length; i++) {
  Atomics.add(arrived, 0, 1);
  while (Atomics.load(arrived, 0) < 2 * (i + 1)) {
    if (Date.now() > deadline) throw new Error('race worker: twin never arrived');
  }
  addon.progTestRun(workerData.fd, Buffer.from(workerData.packets[i]));
}
