/**
 * `kpr bench-maglev`: what Maglev costs. Cheap (seconds), needs root, and
 * sends no packet: tc programs run only under BPF_PROG_TEST_RUN, on a pin
 * path of its own that it removes afterwards.
 *
 *  - table build time (pure TS) and the full sync with tables, against the
 *    same sync without them, at each Service count;
 *  - kernel memory of the tables, as the kernel accounts it (memlock of
 *    every inner map, from /proc/self/fdinfo), against Services x M x 4;
 *  - per-packet cost of a new external flow with Maglev against random:
 *    the in-kernel run time of single BPF_PROG_TEST_RUNs, one flow each.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Argv, CommandModule } from 'yargs';
import {
  bpf,
  cleanup,
  Datapath,
  DEFAULT_MAGLEV_TABLE_SIZE,
  DEFAULT_MAP_SIZES,
  type DesiredServicePort,
  maglevTableBytes,
  NAT_FLG_EXTERNAL,
  NAT_FLG_MAGLEV,
  planMaglevTable,
  Reconciler,
  tableSizeProblem,
} from 'kpr';

export interface MaglevBenchOptions {
  services: number[];
  tableSize: number;
  backends: number;
  flows: number;
}

export interface MaglevBenchRow {
  services: number;
  tableSize: number;
  backends: number;
  /** wall ms, and CPU ms of this process (the machine may be shared: CPU is the steadier figure) */
  buildMs: number;
  buildCpuMs: number;
  syncRandomMs: number;
  syncRandomCpuMs: number;
  syncMaglevMs: number;
  syncMaglevCpuMs: number;
  /** adopt + full sync with every table in place, as a restart or --resync-interval does */
  resyncMs: number;
  resyncCpuMs: number;
  tables: number;
  kernelBytes: number;
  formulaBytes: number;
}

export interface PacketCost {
  flows: number;
  randomNs: number;
  maglevNs: number;
}

const NODE = '198.51.100.1';

/** n external Services, one port each, b backends (addresses only: nothing is sent to them). */
function ports(n: number, b: number, maglev: boolean): Map<string, DesiredServicePort> {
  const out = new Map<string, DesiredServicePort>();
  for (let i = 0; i < n; i++) {
    const vip = `198.18.${i >> 8}.${i & 0xff}`;
    const flags = NAT_FLG_EXTERNAL | (maglev ? NAT_FLG_MAGLEV : 0);
    const name = `bench/s${i}:http/TCP`;
    out.set(name, {
      name,
      service: `bench/s${i}`,
      proto: 'TCP',
      frontends: [{ addr: vip, port: 80, proto: 6, srcAddr: '0.0.0.0', srcLen: 0, flags, blackhole: false }],
      backends: Array.from({ length: b }, (_, j) => ({ addr: `192.0.2.${1 + ((i * b + j) % 250)}`, port: 8000 + Math.floor((i * b + j) / 250) % 1000, local: false })),
      localBackends: [],
      affinityTimeout: 0,
    });
  }
  return out;
}

/** Kernel memory the kernel charges for a map fd (fdinfo memlock). */
function memlock(fd: number): number {
  const m = /memlock:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

/** Wall and CPU (user + system) milliseconds of fn. */
function timed<T>(fn: () => T): { value: T; ms: number; cpuMs: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = fn();
  const c = process.cpuUsage(c0);
  return { value, ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000 };
}

function tablesMemory(dp: Datapath): { tables: number; bytes: number } {
  let bytes = memlock(dp.maps.maglev.fd);
  let tables = 0;
  for (const [, id] of bpf.mapDump(dp.maps.maglev.fd)) {
    const fd = bpf.mapGetFdById(id.readUInt32LE(0));
    try {
      bytes += memlock(fd);
      tables++;
    } finally {
      bpf.closeFd(fd);
    }
  }
  return { tables, bytes };
}

async function withDatapath<T>(pin: string, sizes: { tables: number; m: number; fe: number; be: number }, fn: (dp: Datapath) => T): Promise<T> {
  const dp = await Datapath.open(pin, { ...DEFAULT_MAP_SIZES, natFe: sizes.fe, natBe: sizes.be, maglev: sizes.tables }, sizes.m);
  try {
    return fn(dp);
  } finally {
    dp.close();
    await cleanup(pin);
  }
}

export async function benchMaglev(o: MaglevBenchOptions, log: (m: string) => void): Promise<{ rows: MaglevBenchRow[]; packet: PacketCost }> {
  const pin = `/sys/fs/bpf/kpr-bench-maglev-${process.pid}`;
  const rows: MaglevBenchRow[] = [];
  for (const n of o.services) {
    const sizes = { tables: n, m: o.tableSize, fe: Math.max(1024, 2 * n), be: Math.max(4096, 2 * n * o.backends) };
    const want = ports(n, o.backends, true);
    // Pure TS: build every table, as a first sync does.
    const build = timed(() => {
      for (const p of want.values()) planMaglevTable(p.frontends, p.backends, p.localBackends, o.tableSize)?.build();

    });
    const sync = (dp: Datapath, desired: Map<string, DesiredServicePort>) =>
      timed(() => {
        const res = new Reconciler(dp.maps).syncAll(desired);
        if (res.failed.length) throw new Error(`sync failed: ${res.failed[0]?.message}`);
      });
    const rnd = await withDatapath(pin, sizes, (dp) => sync(dp, ports(n, o.backends, false)));
    const row = await withDatapath(pin, sizes, (dp) => {
      const s = sync(dp, want);
      const mem = tablesMemory(dp);
      // A restart, or the periodic resync: adopt what the kernel holds, write what differs (nothing).
      const again = timed(() => {
        const r = new Reconciler(dp.maps);
        r.adopt();
        const res = r.syncAll(want);
        if (res.writes) throw new Error(`a resync rewrote ${res.writes} entries`);
      });
      return { syncMaglevMs: s.ms, syncMaglevCpuMs: s.cpuMs, resyncMs: again.ms, resyncCpuMs: again.cpuMs, tables: mem.tables, kernelBytes: mem.bytes };
    });
    const r: MaglevBenchRow = {
      services: n,
      tableSize: o.tableSize,
      backends: o.backends,
      buildMs: build.ms,
      buildCpuMs: build.cpuMs,
      syncRandomMs: rnd.ms,
      syncRandomCpuMs: rnd.cpuMs,
      ...row,
      formulaBytes: n * maglevTableBytes(o.tableSize),
    };
    rows.push(r);
    log(`  ${n} Services: build ${r.buildCpuMs.toFixed(0)} ms CPU, sync ${r.syncRandomCpuMs.toFixed(0)} -> ${r.syncMaglevCpuMs.toFixed(0)} ms CPU, resync ${r.resyncCpuMs.toFixed(0)} ms CPU, kernel ${(r.kernelBytes / 2 ** 20).toFixed(1)} MiB`);
  }
  const packet = await withDatapath(pin, { tables: 16, m: o.tableSize, fe: 1024, be: 4096 }, (dp) => {
    const r = new Reconciler(dp.maps);
    const want = ports(2, o.backends, false);
    const mg = ports(1, o.backends, true).get('bench/s0:http/TCP') as DesiredServicePort;
    want.set('bench/s0:http/TCP', mg); // s0 (198.18.0.0) Maglev, s1 (198.18.0.1) random
    if (r.syncAll(want).failed.length) throw new Error('sync failed');
    dp.writeConfig({ nodeIP: NODE, clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 1024, snatPortMax: 65535, flags: 0 });
    dp.setNodeIPs([NODE]);
    const prog = dp.tcProgFd('kpr_from_host');
    const cost = (vip: string) => {
      const samples: number[] = [];
      for (let i = 0; i < o.flows; i++) {
        if (i % 4096 === 0) for (const [k] of dp.maps.ct.dump()) dp.maps.ct.delete(k);
        const pkt = synPacket(`203.0.113.${1 + (i % 250)}`, vip, 1024 + (i % 60000));
        samples.push(bpf.progTestRun(prog, pkt).durationNs);
      }
      samples.sort((a, b) => a - b);
      return samples[Math.floor(samples.length / 2)] as number;
    };
    // Alternate, so drift on a shared machine hits both alike.
    const rnd: number[] = [];
    const mgl: number[] = [];
    for (let k = 0; k < 3; k++) {
      rnd.push(cost('198.18.0.1'));
      mgl.push(cost('198.18.0.0'));
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[1] as number;
    return { flows: o.flows, randomNs: med(rnd), maglevNs: med(mgl) };
  });
  log(`  new external flow: random ${packet.randomNs} ns, maglev ${packet.maglevNs} ns (median of single runs)`);
  return { rows, packet };
}

/** A TCP SYN, Ethernet-framed, with valid checksums. */
function synPacket(src: string, dst: string, sport: number): Buffer {
  const b = Buffer.alloc(14 + 20 + 20);
  b.writeUInt16BE(0x0800, 12);
  const ip = b.subarray(14);
  ip[0] = 0x45;
  ip.writeUInt16BE(40, 2);
  ip[8] = 64;
  ip[9] = 6;
  src.split('.').forEach((p, i) => (ip[12 + i] = Number(p)));
  dst.split('.').forEach((p, i) => (ip[16 + i] = Number(p)));
  ip.writeUInt16BE(csum(ip.subarray(0, 20), 0), 10);
  const tcp = ip.subarray(20);
  tcp.writeUInt16BE(sport, 0);
  tcp.writeUInt16BE(80, 2);
  tcp[12] = 5 << 4;
  tcp[13] = 0x02;
  tcp.writeUInt16BE(65535, 14);
  let pseudo = 6 + 20;
  for (let i = 12; i < 20; i += 2) pseudo += ip.readUInt16BE(i);
  tcp.writeUInt16BE(csum(tcp, pseudo), 16);
  return b;
}

function csum(buf: Buffer, init: number): number {
  let sum = init;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function formatMaglevBench(res: { rows: MaglevBenchRow[]; packet: PacketCost }): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  const lines = [
    '| external Services | M | backends each | table build (TS), CPU / wall | full sync, random, CPU / wall | full sync, Maglev, CPU / wall | restart/resync, CPU / wall | tables | kernel memory (memlock) | Services × table bytes |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...res.rows.map((r) => {
      const t = (cpu: number, wall: number) => `${(cpu / 1000).toFixed(1)} s / ${(wall / 1000).toFixed(1)} s`;
      return (
        `| ${r.services} | ${r.tableSize} | ${r.backends} | ${t(r.buildCpuMs, r.buildMs)} | ${t(r.syncRandomCpuMs, r.syncRandomMs)} | ` +
        `${t(r.syncMaglevCpuMs, r.syncMaglevMs)} | ${t(r.resyncCpuMs, r.resyncMs)} | ${r.tables} | ${mib(r.kernelBytes)} MiB | ${mib(r.formulaBytes)} MiB |`
      );
    }),
    '',
    `New external flow in tc (BPF_PROG_TEST_RUN, median of ${res.packet.flows} single runs, 3 alternating rounds): random ${res.packet.randomNs} ns, Maglev ${res.packet.maglevNs} ns.`,
  ];
  return lines.join('\n') + '\n';
}

interface Args {
  services: string;
  'table-size': number;
  backends: number;
  flows: number;
  json: boolean;
}

export const benchMaglevCommand: CommandModule<{}, Args> = {
  command: 'bench-maglev',
  describe: 'Maglev cost: table build time, kernel memory, per-packet cost against random (BPF_PROG_TEST_RUN; no traffic)',
  builder: (y: Argv<{}>) =>
    y.options({
      services: { type: 'string', default: '1000,10000', describe: 'external Service counts' },
      'table-size': { type: 'number', default: DEFAULT_MAGLEV_TABLE_SIZE, describe: 'M, slots per table (prime)' },
      backends: { type: 'number', default: 10, describe: 'backends per Service' },
      flows: { type: 'number', default: 5000, describe: 'new flows per per-packet round' },
      json: { type: 'boolean', default: false, describe: 'print JSON' },
    }) as unknown as Argv<Args>,
  handler: async (a) => {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('kpr bench-maglev needs root (BPF maps)');
    const bad = tableSizeProblem(a['table-size']);
    if (bad) throw new Error(`--table-size ${bad}`);
    const services = a.services.split(',').map((s) => Number(s.trim().replace(/k$/i, '000')));
    if (services.some((n) => !Number.isInteger(n) || n < 1 || n > 65536)) throw new Error('--services: counts in 1..65536');
    const res = await benchMaglev({ services, tableSize: a['table-size'], backends: a.backends, flows: a.flows }, (m) => process.stderr.write(`${m}\n`));
    process.stdout.write(a.json ? JSON.stringify(res, null, 2) + '\n' : formatMaglevBench(res));
  },
};
