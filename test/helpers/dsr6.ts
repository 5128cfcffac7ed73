/**
 * IPv6 DSR in packet tests: kpr's destination-options header (bpf/include/dsr.h)
 * built and read, and tc programs run under BPF_PROG_TEST_RUN from inside a
 * namespace of the test's own, where bpf_fib_lookup finds the routes, MTUs
 * and neighbours the DSR checks depend on. Nothing is sent: test runs only
 * return their packet.
 */
import { join } from 'node:path';
import { nodeArgv, run } from '../../src/lab/exec.js';
import { repoRoot } from '../../src/util/paths.js';
import { ipv6Bytes, ipv6Text } from '../../src/util/ip.js';

export const DSR6_HDR_LEN = 40;
const OPT_TYPE = 0x1e;

export interface Dsr6Fields {
  addr: string;
  node: string;
  port: number;
}

export function decodeDsr6(b: Buffer) {
  return {
    nexthdr: b[0],
    hdrlen: b[1],
    type: b[2],
    optLen: b[3],
    addr: ipv6Text(b.subarray(4, 20)),
    node: ipv6Text(b.subarray(20, 36)),
    port: b.readUInt16BE(36),
    zero: b.readUInt16BE(38),
  };
}

/**
 * An Ethernet+IPv6 packet with kpr's header inserted after the fixed
 * header, or, with `after` > 0, after the first `after` bytes of extension
 * headers (one header, whose next-header byte is relinked).
 */
export function withDsr6(pkt: Buffer, f: Dsr6Fields, after = 0): Buffer {
  const at = 14 + 40 + after;
  const linkOff = after === 0 ? 14 + 6 : 14 + 40;
  const h = Buffer.alloc(DSR6_HDR_LEN);
  h[0] = pkt[linkOff]!;
  h[1] = DSR6_HDR_LEN / 8 - 1;
  h[2] = OPT_TYPE;
  h[3] = DSR6_HDR_LEN - 4;
  Buffer.from(ipv6Bytes(f.addr)).copy(h, 4);
  Buffer.from(ipv6Bytes(f.node)).copy(h, 20);
  h.writeUInt16BE(f.port, 36);
  const out = Buffer.concat([pkt.subarray(0, at), h, pkt.subarray(at)]);
  out[linkOff] = 60;
  out.writeUInt16BE(out.readUInt16BE(14 + 4) + DSR6_HDR_LEN, 14 + 4);
  return out;
}

/** The same frame from another source MAC. */
export function withMac(pkt: Buffer, mac: string): Buffer {
  const out = Buffer.from(pkt);
  Buffer.from(mac.split(':').map((x) => parseInt(x, 16))).copy(out, 6);
  return out;
}

export interface NsRun {
  /** pin path of a tc program */
  prog: string;
  pkt: Buffer;
  /** the device the packet comes in by (ctx ingress_ifindex and ifindex) */
  dev?: string;
  /** ctx gso_size: the packet stands for a GRO aggregate of such payloads */
  gsoSize?: number;
}

const CHILD = join(repoRoot(), 'test', 'helpers', 'tc-run-netns.ts');

export const run6ns = {
  /**
   * A namespace with a veth pair: d6a (2001:db8::1/64, 1500 bytes) is where
   * packets come in, with the peer node 2001:db8::2 at 02:00:00:00:00:02 (the
   * source MAC packet6() writes); the backends' 2001:db8:0:2::/64 is reached
   * by d6b, whose MTU is 1400. IPv6 forwarding is on, as on a node.
   */
  async setup(ns: string): Promise<void> {
    await run('ip', ['netns', 'add', ns]);
    const n = (args: string[]) => run('ip', ['-n', ns, ...args]);
    await n(['link', 'set', 'lo', 'up']);
    await n(['link', 'add', 'd6a', 'type', 'veth', 'peer', 'name', 'd6b']);
    await n(['link', 'set', 'd6b', 'mtu', '1400']);
    await n(['link', 'set', 'd6a', 'up']);
    await n(['link', 'set', 'd6b', 'up']);
    await run('nsenter', [`--net=/run/netns/${ns}`, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    await n(['-6', 'addr', 'add', '2001:db8::1/64', 'dev', 'd6a', 'nodad']);
    await n(['-6', 'route', 'add', '2001:db8:0:2::/64', 'dev', 'd6b']);
    await n(['-6', 'neigh', 'replace', '2001:db8::2', 'lladdr', '02:00:00:00:00:02', 'dev', 'd6a', 'nud', 'permanent']);
  },
  /** Each packet through its program inside ns, in order; the programs share the test's maps. */
  async run(ns: string, runs: NsRun[]): Promise<Array<{ retval: number; data: Buffer }>> {
    const arg = JSON.stringify(runs.map((r) => ({ ...r, pkt: r.pkt.toString('hex') })));
    const out = await run('nsenter', [`--net=/run/netns/${ns}`, process.execPath, ...nodeArgv(CHILD), arg], { timeoutMs: 60_000 });
    return (JSON.parse(out) as Array<{ retval: number; data: string }>).map((r) => ({ retval: r.retval, data: Buffer.from(r.data, 'hex') }));
  },
  async teardown(ns: string): Promise<void> {
    await run('ip', ['netns', 'del', ns], { allowFail: true });
  },
};
