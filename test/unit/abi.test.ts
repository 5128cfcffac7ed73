import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ABI_CONSTANTS, ABI_STRUCTS, checkAbi, parseBtfJson, type BtfType } from '../../src/datapath/abi.js';
import { encodeCtKey, encodeCtVal, encodeKprConfig, encodeKprSockConfig, encodeNatBeKey, encodeNatBeVal, encodeNatFeKey, encodeNatFeVal } from '../../src/datapath/codec.js';

/** BTF as the tables describe it: what a matching object holds. */
function btfFromTables(): BtfType[] {
  return [
    ...Object.entries(ABI_STRUCTS).map(([name, s]) => ({
      kind: 'STRUCT',
      name,
      size: s.size,
      members: Object.entries(s.fields).map(([f, off]) => ({ name: f, bits_offset: off * 8 })),
    })),
    { kind: 'ENUM', name: 'all', values: Object.entries(ABI_CONSTANTS).map(([n, v]) => ({ name: n, val: v })) },
  ];
}

test('checkAbi accepts matching BTF and names every kind of mismatch', () => {
  assert.deepEqual(checkAbi(btfFromTables(), true), []);
  const btf = btfFromTables();
  const ct = btf.find((t) => t.name === 'ct_val')!;
  ct.size = 48;
  ct.members!.find((m) => m.name === 'nat_port')!.bits_offset = 30 * 8;
  ct.members!.push({ name: 'extra', bits_offset: 40 * 8 });
  const all = btf.find((t) => t.name === 'all')!;
  all.values!.find((v) => v.name === 'NAT_FLG_MODE_SHIFT')!.val = 5;
  all.values!.push({ name: 'STAT_TC_NEW_THING', val: 99 });
  assert.deepEqual(checkAbi(btf, true).sort(), [
    'NAT_FLG_MODE_SHIFT: 5 in C, 6 in TypeScript',
    'STAT_TC_NEW_THING (= 99): in C, missing from STAT_NAMES',
    'struct ct_val.extra: in C, unknown to TypeScript',
    'struct ct_val.nat_port: offset 30 in C, 32 in TypeScript',
    'struct ct_val: size 48 in C, 40 in TypeScript',
  ]);
  // an object that lacks a struct only fails when it must hold all of them
  const partial = btfFromTables().filter((t) => t.name !== 'kpr_config');
  assert.deepEqual(checkAbi(partial, false), []);
  assert.deepEqual(checkAbi(partial, true), ['struct kpr_config: not in the BTF']);
});

test('bpftool prints 32-bit enum values above INT_MAX sign-extended; they are read back as u32', () => {
  const types = parseBtfJson('{"types":[{"kind":"ENUM","name":"x","values":[{"name":"NAT_FE_BLACKHOLE","val":18446744073709551615}]}]}');
  assert.equal(types[0]!.values![0]!.val, 0xffffffff);
});

test('the codecs write every field at the offset the ABI table gives', () => {
  const at = (b: Buffer, s: string, f: string) => ABI_STRUCTS[s]!.fields[f]!;
  const ct = encodeCtVal({
    type: 2, flags: 5, tcpClient: 3, tcpServer: 9, svcId: 0x11223344, created: 7n, lastSeen: 8n,
    natAddr: '192.0.2.1', natSaddr: '192.0.2.2', natPort: 0x1234, natSport: 0x5678, beOrdinal: 0x0a0b0c0d,
  });
  assert.equal(ct.length, ABI_STRUCTS.ct_val!.size);
  assert.equal(ct.readUInt8(at(ct, 'ct_val', 'flags')), 5);
  assert.equal(ct.readUInt8(at(ct, 'ct_val', 'tcp_server')), 9);
  assert.equal(ct.readUInt32LE(at(ct, 'ct_val', 'svc_id')), 0x11223344);
  assert.equal(ct.readBigUInt64LE(at(ct, 'ct_val', 'last_seen')), 8n);
  assert.equal(ct.readUInt8(at(ct, 'ct_val', 'nat_saddr') + 3), 2);
  assert.equal(ct.readUInt16LE(at(ct, 'ct_val', 'nat_sport')), 0x5678);
  assert.equal(ct.readUInt32LE(at(ct, 'ct_val', 'be_ordinal')), 0x0a0b0c0d);
  const ck = encodeCtKey({ proto: 17, addrA: '192.0.2.1', portA: 1, addrB: '192.0.2.9', portB: 2 });
  assert.equal(ck.length, ABI_STRUCTS.ct_key!.size);
  assert.equal(ck.readUInt8(at(ck, 'ct_key', 'addr_b') + 3), 9);
  assert.equal(ck.readUInt16LE(at(ck, 'ct_key', 'port_b')), 2);
  const fk = encodeNatFeKey({ addr: '198.18.0.1', port: 80, proto: 6, srcAddr: '203.0.113.0', srcLen: 24 });
  assert.equal(fk.length, ABI_STRUCTS.nat_fe_key!.size);
  assert.equal(fk.readUInt16LE(at(fk, 'nat_fe_key', 'port')), 80);
  assert.equal(fk.readUInt8(at(fk, 'nat_fe_key', 'proto')), 6);
  assert.equal(fk.readUInt8(at(fk, 'nat_fe_key', 'saddr')), 203);
  const fv = encodeNatFeVal({ id: 1, count: 2, local: 3, affinityTimeout: 4, flags: 5 });
  assert.equal(fv.length, ABI_STRUCTS.nat_fe_val!.size);
  assert.equal(fv.readUInt32LE(at(fv, 'nat_fe_val', 'affinity_timeout')), 4);
  assert.equal(fv.readUInt32LE(at(fv, 'nat_fe_val', 'flags')), 5);
  const bk = encodeNatBeKey({ id: 1, ordinal: 7 });
  assert.equal(bk.readUInt32LE(at(bk, 'nat_be_key', 'ordinal')), 7);
  const bv = encodeNatBeVal({ addr: '192.0.2.3', port: 8080 });
  assert.equal(bv.readUInt16LE(at(bv, 'nat_be_val', 'port')), 8080);
  const cfg = encodeKprConfig({ nodeIP: '198.51.100.1', clusterCidr: '192.0.2.0', clusterCidrLen: 24, snatPortMin: 61000, snatPortMax: 65535, flags: 2 });
  assert.equal(cfg.length, ABI_STRUCTS.kpr_config!.size);
  assert.equal(cfg.readUInt8(at(cfg, 'kpr_config', 'cluster_cidr_len')), 24);
  assert.equal(cfg.readUInt16LE(at(cfg, 'kpr_config', 'snat_port_max')), 65535);
  assert.equal(cfg.readUInt32LE(at(cfg, 'kpr_config', 'flags')), 2);
  const sc = encodeKprSockConfig({ nodeNetnsCookie: 0x0102030405060708n });
  assert.equal(sc.length, ABI_STRUCTS.kpr_sock_config!.size);
  assert.equal(sc.readBigUInt64LE(at(sc, 'kpr_sock_config', 'node_netns_cookie')), 0x0102030405060708n);
});

test('the built objects agree with the TypeScript tables', (t) => {
  const dir = join(import.meta.dirname, '..', '..', 'bpf');
  if (!existsSync(join(dir, 'abi.bpf.o'))) {
    if (process.env.CI) assert.fail('bpf/abi.bpf.o is not built');
    return t.skip('BPF objects not built');
  }
  for (const [obj, complete] of [['abi.bpf.o', true], ['tc_nat.bpf.o', false], ['sock_lb.bpf.o', false]] as const) {
    const json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', join(dir, obj)], { encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.deepEqual(checkAbi(parseBtfJson(json), complete), [], obj);
  }
});

test('the IPv6 codecs write every field at the offset the ABI table gives for the v6 twins', () => {
  const at = (s: string, f: string) => ABI_STRUCTS[s]!.fields[f]!;
  const ct = encodeCtVal({
    type: 2, flags: 5, tcpClient: 3, tcpServer: 9, svcId: 0x11223344, created: 7n, lastSeen: 8n,
    natAddr: '2001:db8:f::1', natSaddr: '2001:db8::2', natPort: 0x1234, natSport: 0x5678, beOrdinal: 0x0a0b0c0d,
  });
  assert.equal(ct.length, ABI_STRUCTS.ct6_val!.size);
  assert.equal(ct.readUInt16BE(at('ct6_val', 'nat_addr') + 4), 0x000f);
  assert.equal(ct.readUInt8(at('ct6_val', 'nat_saddr') + 15), 2);
  assert.equal(ct.readUInt16LE(at('ct6_val', 'nat_port')), 0x1234);
  assert.equal(ct.readUInt16LE(at('ct6_val', 'nat_sport')), 0x5678);
  assert.equal(ct.readUInt32LE(at('ct6_val', 'be_ordinal')), 0x0a0b0c0d);
  const ck = encodeCtKey({ proto: 17, addrA: '2001:db8::1', portA: 1, addrB: '2001:db8::9', portB: 2 });
  assert.equal(ck.length, ABI_STRUCTS.ct6_key!.size);
  assert.equal(ck.readUInt8(at('ct6_key', 'addr_b') + 15), 9);
  assert.equal(ck.readUInt16LE(at('ct6_key', 'port_a')), 1);
  assert.equal(ck.readUInt16LE(at('ct6_key', 'port_b')), 2);
  const fk = encodeNatFeKey({ addr: '2001:db8:f::10', port: 80, proto: 6, srcAddr: '2001:db8:0:2::', srcLen: 64 });
  assert.equal(fk.length, ABI_STRUCTS.nat_fe6_key!.size);
  assert.equal(fk.readUInt32LE(0), ABI_CONSTANTS.NAT_FE6_PREFIX_BASE! + 64);
  assert.equal(fk.readUInt8(at('nat_fe6_key', 'addr') + 15), 0x10);
  assert.equal(fk.readUInt16LE(at('nat_fe6_key', 'port')), 80);
  assert.equal(fk.readUInt8(at('nat_fe6_key', 'proto')), 6);
  assert.equal(fk.readUInt16BE(at('nat_fe6_key', 'saddr') + 6), 2);
  const bv = encodeNatBeVal({ addr: '2001:db8::3', port: 8080, flags: 1 });
  assert.equal(bv.length, ABI_STRUCTS.nat_be6_val!.size);
  assert.equal(bv.readUInt8(at('nat_be6_val', 'addr') + 15), 3);
  assert.equal(bv.readUInt16LE(at('nat_be6_val', 'port')), 8080);
  assert.equal(bv.readUInt16LE(at('nat_be6_val', 'flags')), 1);
});
