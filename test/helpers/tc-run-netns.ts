/**
 * Child of test/helpers/dsr6.ts, started with nsenter --net=<the test's
 * namespace>: BPF_PROG_TEST_RUN from this thread makes bpf_fib_lookup see
 * that namespace. argv[2]: JSON list of { prog: pin path, pkt: hex, dev?,
 * gsoSize? }; prints a JSON list of { retval, data: hex }.
 */
import { bpf } from '../../src/datapath/addon.js';

const SKB_CTX_SIZE = 192; // struct __sk_buff
const OFF_INGRESS_IFINDEX = 36;
const OFF_IFINDEX = 40;
const OFF_GSO_SIZE = 176;

const runs = JSON.parse(process.argv[2] ?? '[]') as Array<{ prog: string; pkt: string; dev?: string; gsoSize?: number }>;
const fds = new Map<string, number>();
const out = runs.map((r) => {
  let fd = fds.get(r.prog);
  if (fd === undefined) {
    fd = bpf.objGet(r.prog);
    fds.set(r.prog, fd);
  }
  const ctx = Buffer.alloc(SKB_CTX_SIZE);
  if (r.dev) {
    const ifindex = bpf.ifNameToIndex(r.dev);
    ctx.writeUInt32LE(ifindex, OFF_INGRESS_IFINDEX);
    ctx.writeUInt32LE(ifindex, OFF_IFINDEX);
  }
  if (r.gsoSize) ctx.writeUInt32LE(r.gsoSize, OFF_GSO_SIZE);
  const res = bpf.progTestRun(fd, Buffer.from(r.pkt, 'hex'), { ctxIn: ctx });
  return { retval: res.retval, data: res.data.toString('hex') };
});
process.stdout.write(JSON.stringify(out));
