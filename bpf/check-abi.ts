/**
 * Build-time check: the structs and constants shared by the BPF objects and
 * the controller agree (src/datapath/abi.ts). Reads the BTF of the compiled
 * objects with bpftool; exits 1 and names every difference otherwise.
 * Run by .ci/setup after the objects and the TypeScript are built.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { checkAbi, parseBtfJson } from '../src/datapath/abi.js';

const bpfDir = import.meta.dirname;
// The anchor object must hold everything; the program objects what they use.
const objects: Array<[string, boolean]> = [
  ['abi.bpf.o', true],
  ['tc_nat.bpf.o', false],
  ['sock_lb.bpf.o', false],
  ['sock_destroy.bpf.o', false],
];
let failed = false;
for (const [obj, complete] of objects) {
  const json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', join(bpfDir, obj)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const problems = checkAbi(parseBtfJson(json), complete);
  for (const p of problems) process.stderr.write(`check-abi: ${obj}: ${p}\n`);
  if (problems.length > 0) failed = true;
}
if (failed) {
  process.stderr.write('check-abi: C and TypeScript disagree; fix bpf/include/abi.h or src/datapath/abi.ts (and the codecs)\n');
  process.exit(1);
}
process.stderr.write('check-abi: BTF of the BPF objects matches the TypeScript layouts and constants\n');
