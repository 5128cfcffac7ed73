import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeNatBeKey,
  decodeNatBeVal,
  decodeNatFeKey,
  decodeNatFeVal,
  decodeSkNatKey,
  decodeSvcMeta,
  encodeNatBeKey,
  encodeNatBeVal,
  encodeNatFeKey,
  encodeNatFeVal,
  encodeSkNatKey,
  encodeSvcMeta,
  isNatBeVal4,
  natBeKeyId,
  natBeKeyOrdinal,
  decodeSockDestroyRecs,
  encodeSockDestroyKey,
  SOCK_DESTROY_KEY_SIZE,
  SOCK_DESTROY_REC_SIZE,
} from '../../src/datapath/codec.js';

// Layouts from bpf/include/abi.h, written out byte by byte.

test('nat_fe_key: packed 16 bytes, prefixlen = 56 + source prefix, port host order', () => {
  const b = encodeNatFeKey({ addr: '198.18.0.10', port: 80, proto: 6, srcAddr: '203.0.113.0', srcLen: 24 });
  assert.equal(b.toString('hex'), ['50000000', 'c612000a', '5000', '06', 'cb007100', '00'].join(''));
  assert.deepEqual(decodeNatFeKey(b), { addr: '198.18.0.10', port: 80, proto: 6, srcAddr: '203.0.113.0', srcLen: 24 });
  const open = encodeNatFeKey({ addr: '198.18.0.10', port: 53, proto: 17, srcAddr: '0.0.0.0', srcLen: 0 });
  assert.equal(open.readUInt32LE(0), 56);
  assert.throws(() => encodeNatFeKey({ addr: '198.18.0.10', port: 1, proto: 6, srcAddr: '0.0.0.0', srcLen: 33 }), RangeError);
});

test('nat_fe_val: five u32 in host order', () => {
  const v = { id: 7, count: 3, local: 1, affinityTimeout: 10800, flags: 2 };
  const b = encodeNatFeVal(v);
  assert.equal(b.toString('hex'), '07000000' + '03000000' + '01000000' + '302a0000' + '02000000');
  assert.deepEqual(decodeNatFeVal(b), v);
  assert.equal(encodeNatFeVal({ ...v, count: 0xffffffff }).readUInt32LE(4), 0xffffffff);
});

test('nat_be key and value: 8 bytes each', () => {
  assert.equal(encodeNatBeKey({ id: 258, ordinal: 1 }).toString('hex'), '0201000001000000');
  assert.deepEqual(decodeNatBeKey(Buffer.from('0201000001000000', 'hex')), { id: 258, ordinal: 1 });
  const v = encodeNatBeVal({ addr: '192.0.2.7', port: 8080, flags: 1 });
  assert.equal(v.toString('hex'), 'c0000207' + '901f' + '0100');
  assert.deepEqual(decodeNatBeVal(v), { addr: '192.0.2.7', port: 8080, flags: 1 });
  assert.equal(encodeNatBeVal({ addr: '192.0.2.7', port: 8080 }).readUInt16LE(6), 0);
});

test('isNatBeVal4 and the packed key readers agree with the decoders, address text included', () => {
  const key = Buffer.concat([Buffer.alloc(3), encodeNatBeKey({ id: 258, ordinal: 0x80000001 })]);
  assert.equal(natBeKeyId(key, 3), 258);
  assert.equal(natBeKeyOrdinal(key, 3), 0x80000001);
  const addrs = ['0.0.0.0', '192.0.2.1', '192.0.2.10', '192.0.2.100', '255.255.255.255', '10.9.99.100', '203.0.113.5'];
  for (const addr of addrs) {
    for (const [port, flags] of [[8080, 0], [8080, 1], [80, 0]] as const) {
      // at an offset inside a packed read, as adoption passes it
      const packed = Buffer.concat([Buffer.alloc(8, 0xff), encodeNatBeVal({ addr, port, flags })]);
      const decoded = decodeNatBeVal(packed.subarray(8));
      for (const other of addrs) {
        for (const v of [{ addr: other, port, flags }, { addr: other, port: 81, flags }, { addr: other, port, flags: flags ^ 1 }]) {
          const same = v.addr === decoded.addr && v.port === decoded.port && v.flags === decoded.flags;
          assert.equal(isNatBeVal4(v, packed, 8), same, `${JSON.stringify(v)} vs ${JSON.stringify(decoded)}`);
        }
      }
      // Text that encodes to the same bytes but is not what decoding gives.
      for (const text of [addr.replace(/^(\d+)/, '0$1'), `${addr} `, `${addr}.`, addr.slice(0, -1)]) {
        assert.equal(isNatBeVal4({ addr: text, port, flags }, packed, 8), false, text);
      }
      assert.equal(isNatBeVal4({ addr, port }, packed, 8), false, 'flags unset is not flags 0 as decoded');
    }
  }
});

test('sk_nat key: cookie u64, backend address, port', () => {
  const b = encodeSkNatKey({ cookie: 0x0102030405060708n, addr: '192.0.2.1', port: 443 });
  assert.equal(b.toString('hex'), '0807060504030201' + 'c0000201' + 'bb01' + '0000');
  assert.deepEqual(decodeSkNatKey(b), { cookie: 0x0102030405060708n, addr: '192.0.2.1', port: 443 });
});

test('svc_meta: NUL-terminated name in 192 bytes', () => {
  const b = encodeSvcMeta('default/web:http/TCP');
  assert.equal(b.length, 192);
  assert.equal(b[20], 0);
  assert.equal(decodeSvcMeta(b), 'default/web:http/TCP');
  assert.throws(() => encodeSvcMeta('x'.repeat(192)), RangeError);
});

test('decoders reject buffers of the wrong size', () => {
  assert.throws(() => decodeNatFeKey(Buffer.alloc(15)), /expected 16 or 40 bytes/);
  assert.throws(() => decodeNatBeVal(Buffer.alloc(9)), /expected 8 or 20 bytes/);
});

test('sock_destroy_key matches the compiled iterator object (BTF)', async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { bpfObjectPath } = await import('../../src/util/paths.js');
  const { stdout } = await promisify(execFile)('bpftool', ['btf', 'dump', 'file', bpfObjectPath('sock_destroy.bpf.o'), '-j']);
  const types = (JSON.parse(stdout) as { types: Array<{ name?: string; size?: number; members?: Array<{ name: string; bits_offset: number }> }> }).types;
  const key = types.find((t) => t.name === 'sock_destroy_key');
  assert.equal(key?.size, SOCK_DESTROY_KEY_SIZE);
  assert.equal(types.find((t) => t.name === 'sock_destroy6_key')?.size, encodeSockDestroyKey({ svcId: 1, addr: '2001:db8::1', port: 1 }).length);
  assert.deepEqual(key?.members?.map((m) => [m.name, m.bits_offset / 8]), [['svc_id', 0], ['addr', 4], ['port', 8], ['pad', 10]]);
  const b = encodeSockDestroyKey({ svcId: 7, addr: '192.0.2.1', port: 8080 });
  assert.equal(b.toString('hex'), '07000000' + 'c0000201' + '901f' + '0000');
});

test('sock_destroy_rec stream: whole 24-byte records', () => {
  const b = Buffer.alloc(SOCK_DESTROY_REC_SIZE);
  b.writeBigUInt64LE(42n, 0);
  b.writeUInt32BE(0xc0000201, 8);
  b.writeUInt16LE(8080, 12);
  b.writeUInt8(17, 14);
  b.writeInt32LE(-2, 16);
  b.writeUInt32LE(9, 20);
  assert.deepEqual(decodeSockDestroyRecs(Buffer.concat([b, b])), [
    { cookie: 42n, addr: '192.0.2.1', port: 8080, proto: 17, err: -2, svcId: 9 },
    { cookie: 42n, addr: '192.0.2.1', port: 8080, proto: 17, err: -2, svcId: 9 },
  ]);
  assert.throws(() => decodeSockDestroyRecs(Buffer.alloc(25)), /whole records/);
});

test('IPv6 keys and values round-trip, in canonical text, and pick the v6 layout from the address', async () => {
  const { decodeCtKey, decodeCtVal, encodeCtKey, encodeCtVal, ctKeyFor, NAT_FE6_KEY_SIZE, NAT_BE6_VAL_SIZE } = await import('../../src/datapath/codec.js');
  const key = { addr: '2001:db8:f::10', port: 443, proto: 6, srcAddr: '::', srcLen: 0 };
  const fk = encodeNatFeKey(key);
  assert.equal(fk.length, NAT_FE6_KEY_SIZE);
  assert.deepEqual(decodeNatFeKey(fk), key);
  assert.throws(() => encodeNatFeKey({ ...key, srcLen: 129 }), /out of range/);
  const bv = encodeNatBeVal({ addr: '2001:db8::a:1', port: 8080, flags: 1 });
  assert.equal(bv.length, NAT_BE6_VAL_SIZE);
  assert.deepEqual(decodeNatBeVal(bv), { addr: '2001:db8::a:1', port: 8080, flags: 1 });
  const ck = ctKeyFor(17, '2001:db8::9', 5000, '2001:db8::1', 53);
  assert.deepEqual(ck, { proto: 17, addrA: '2001:db8::1', portA: 53, addrB: '2001:db8::9', portB: 5000 });
  assert.deepEqual(decodeCtKey(encodeCtKey(ck)), ck);
  const cv = {
    type: 1, flags: 2, tcpClient: 0, tcpServer: 0, svcId: 9, created: 1n, lastSeen: 2n,
    natAddr: '2001:db8::5', natSaddr: '::', natPort: 8080, natSport: 0, beOrdinal: 3,
  };
  assert.deepEqual(decodeCtVal(encodeCtVal(cv)), cv);
});
