/**
 * Integration test for the native libbpf addon (src/datapath/addon.ts).
 *
 * Needs root and a real kernel. Everything it creates is named after the test
 * pid and removed in the finally block:
 *   - bpffs pin root   /sys/fs/bpf/kpr-addon-test-<pid>
 *   - child cgroup     <cgroup2 mount>/kpr-addon-test-<pid>   (never the root)
 *   - veth pair        kpradd<pid>a / kpradd<pid>b (no addresses, no traffic)
 *   - temp dir with the compiled fixture object
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { bpf, BPF_EXIST, BPF_NOEXIST, isBpfError } from '../../src/datapath/addon.js';
import type { BpfError, BpfObject } from '../../src/datapath/addon.js';
import { requireRoot } from '../helpers/privileged.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtureSrc = join(here, '..', 'fixtures', 'addon_fixture.bpf.c');

const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_F_NO_PREALLOC = 1;
const BPF_LINK_TYPE_CGROUP = 3;
const BPF_LINK_TYPE_TCX = 11;
const BPF_CGROUP_INET4_CONNECT = 10;

/** First cgroup2 mount point from /proc/self/mountinfo (fields: ... mountpoint(5th) ... - fstype ...). */
function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep > 0 && f[sep + 1] === 'cgroup2' && f[4]) {
      return f[4].replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    }
  }
  throw new Error('no cgroup2 mount found in /proc/self/mountinfo');
}

function compileFixture(outDir: string, name: string, defines: string[] = []): string {
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  const out = join(outDir, name);
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`, ...defines, '-c', fixtureSrc, '-o', out], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return out;
}

/** Asserts fn throws an addon error and returns it for further checks. */
function catchBpf(fn: () => unknown): BpfError {
  try {
    fn();
  } catch (e) {
    assert.ok(isBpfError(e), `expected an addon error, got ${String(e)}`);
    assert.ok(e.errno > 0, 'errno must be positive');
    assert.equal(typeof e.code, 'string');
    assert.ok(e.message.includes(e.op), 'message names the op');
    return e;
  }
  assert.fail('expected an exception');
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
/** struct lpm_key { u32 prefixlen; u8 addr[4]; } */
const lpmKey = (prefixlen: number, a: number, b: number, c: number, d: number): Buffer => {
  const k = Buffer.alloc(8);
  k.writeUInt32LE(prefixlen, 0);
  k.set([a, b, c, d], 4);
  return k;
};

test('native addon (privileged)', async (t) => {
  if (!requireRoot(t)) return;

  const pid = process.pid;
  const tmp = mkdtempSync(join(tmpdir(), 'kpr-addon-'));
  const pinRoot = `/sys/fs/bpf/kpr-addon-test-${pid}`;
  const cgroupDir = join(cgroup2Mount(), `kpr-addon-test-${pid}`);
  const vethA = `kpradd${pid}a`;
  const vethB = `kpradd${pid}b`;
  const objects: BpfObject[] = [];
  const fds = new Set<number>(); // link/map fds the test opened itself
  let cgroupCreated = false;
  let vethCreated = false;

  try {
    const objPath = compileFixture(tmp, 'addon_fixture.o');
    const badObjPath = compileFixture(tmp, 'addon_fixture_bad.o', ['-DKPR_FIXTURE_BAD']);
    mkdirSync(pinRoot);

    const obj = bpf.openObject(objPath, { pinRoot, maxEntries: { fixture_lpm: 256 } });
    objects.push(obj);
    const hashFd = obj.mapFd('fixture_hash');
    const lpmFd = obj.mapFd('fixture_lpm');
    const devmapFd = obj.mapFd('fixture_devmap');
    const mainProg = obj.progFd('connect4_main');
    const altProg = obj.progFd('connect4_alt');
    const tcProg = obj.progFd('tc_pass');

    await t.test('open + load pins LIBBPF_PIN_BY_NAME maps under pinRoot', () => {
      assert.deepEqual(obj.maps().map((m) => m.name).sort(), ['fixture_devmap', 'fixture_hash', 'fixture_lpm']);
      const progs = obj.programs();
      assert.deepEqual(
        progs.map((p) => [p.name, p.sectionName]).sort(),
        [
          ['connect4_alt', 'cgroup/connect4'],
          ['connect4_main', 'cgroup/connect4'],
          ['tc_pass', 'tc'],
        ],
      );
      for (const p of progs) assert.ok(p.fd > 0);
      assert.ok(existsSync(join(pinRoot, 'fixture_hash')), 'pinned hash map');
      assert.ok(!existsSync(join(pinRoot, 'fixture_lpm')), 'unpinned map stays unpinned');
      assert.equal(bpf.progInfo(tcProg).name, 'tc_pass');
      assert.match(bpf.progInfo(tcProg).tag, /^[0-9a-f]{16}$/);
    });

    await t.test('maxEntries override and mapInfo', () => {
      const info = bpf.mapInfo(lpmFd);
      assert.equal(info.name, 'fixture_lpm');
      assert.equal(info.type, BPF_MAP_TYPE_LPM_TRIE);
      assert.equal(info.keySize, 8);
      assert.equal(info.valueSize, 4);
      assert.equal(info.maxEntries, 256, 'fixture declares 128; override wins');
      assert.equal(info.flags & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC);
      const err = catchBpf(() => bpf.openObject(objPath, { pinRoot, maxEntries: { no_such_map: 1 } }));
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.op, 'bpf_object__find_map_by_name');
      assert.match(err.message, /no_such_map/);
    });

    await t.test('second object with the same pinRoot reuses the pinned map', () => {
      bpf.mapUpdate(hashFd, u32(77), u64(7700));
      const obj2 = bpf.openObject(objPath, { pinRoot });
      objects.push(obj2);
      const fd2 = obj2.mapFd('fixture_hash');
      assert.equal(bpf.mapInfo(fd2).id, bpf.mapInfo(hashFd).id);
      assert.notEqual(bpf.mapInfo(obj2.mapFd('fixture_lpm')).id, bpf.mapInfo(lpmFd).id, 'unpinned maps are per object');
      assert.deepEqual(bpf.mapLookup(fd2, u32(77)), u64(7700));

      const pinnedFd = bpf.objGet(join(pinRoot, 'fixture_hash'));
      fds.add(pinnedFd);
      assert.equal(bpf.mapInfo(pinnedFd).id, bpf.mapInfo(hashFd).id);
      bpf.closeFd(pinnedFd);
      fds.delete(pinnedFd);

      obj2.close();
      const err = catchBpf(() => obj2.mapFd('fixture_hash'));
      assert.equal(err.code, 'EBADF');
      catchBpf(() => obj2.close());
      assert.ok(bpf.mapDelete(hashFd, u32(77)));
    });

    await t.test('lookup / update / delete', () => {
      assert.equal(bpf.mapLookup(hashFd, u32(1)), null);
      bpf.mapUpdate(hashFd, u32(1), u64(100));
      assert.deepEqual(bpf.mapLookup(hashFd, u32(1)), u64(100));
      bpf.mapUpdate(hashFd, u32(1), u64(101), BPF_EXIST);
      assert.deepEqual(bpf.mapLookup(hashFd, u32(1)), u64(101));

      const exists = catchBpf(() => bpf.mapUpdate(hashFd, u32(1), u64(1), BPF_NOEXIST));
      assert.equal(exists.code, 'EEXIST');
      assert.equal(exists.op, 'bpf_map_update_elem');
      const missing = catchBpf(() => bpf.mapUpdate(hashFd, u32(2), u64(1), BPF_EXIST));
      assert.equal(missing.code, 'ENOENT');
      assert.equal(missing.errno, 2);

      assert.equal(bpf.mapDelete(hashFd, u32(1)), true);
      assert.equal(bpf.mapDelete(hashFd, u32(1)), false, 'ENOENT delete returns false');

      // LPM semantics through the raw API: /32 lookup matches the /24.
      bpf.mapUpdate(lpmFd, lpmKey(24, 10, 1, 2, 0), u32(24));
      bpf.mapUpdate(lpmFd, lpmKey(16, 10, 1, 0, 0), u32(16));
      assert.deepEqual(bpf.mapLookup(lpmFd, lpmKey(32, 10, 1, 2, 9)), u32(24));
      assert.deepEqual(bpf.mapLookup(lpmFd, lpmKey(32, 10, 1, 9, 9)), u32(16));
      assert.equal(bpf.mapLookup(lpmFd, lpmKey(32, 11, 0, 0, 1)), null);
      const dump = bpf.mapDump(lpmFd);
      assert.equal(dump.length, 2);
      assert.deepEqual(dump.map(([k, v]) => [k.readUInt32LE(0), v.readUInt32LE(0)]).sort(), [
        [16, 16],
        [24, 24],
      ]);
      assert.ok(bpf.mapDelete(lpmFd, lpmKey(24, 10, 1, 2, 0)));
      assert.ok(bpf.mapDelete(lpmFd, lpmKey(16, 10, 1, 0, 0)));
      assert.equal(bpf.mapDump(lpmFd).length, 0);
    });

    await t.test('wrong-size buffers throw a RangeError naming the map', () => {
      for (const fn of [
        () => bpf.mapUpdate(hashFd, Buffer.alloc(3), u64(1)),
        () => bpf.mapUpdate(hashFd, u32(1), u32(1)),
        () => bpf.mapLookup(hashFd, Buffer.alloc(8)),
        () => bpf.mapDelete(lpmFd, u32(1)),
        () => bpf.mapUpdateBatch(hashFd, Buffer.alloc(8), Buffer.alloc(8), 2),
        () => bpf.mapDeleteBatch(hashFd, Buffer.alloc(9), 2),
      ]) {
        const err = catchBpf(fn);
        assert.ok(err instanceof RangeError);
        assert.equal(err.code, 'EINVAL');
        assert.match(err.message, /fixture_(hash|lpm)/);
        assert.match(err.message, /expects \d+/);
      }
    });

    await t.test('error objects carry errno / code / op', () => {
      const missingFile = join(tmp, 'does-not-exist.o');
      const open = catchBpf(() => bpf.openObject(missingFile, { pinRoot }));
      assert.equal(open.errno, 2);
      assert.equal(open.code, 'ENOENT');
      assert.equal(open.op, 'bpf_object__open_file');
      assert.ok(open.message.includes(missingFile));

      const load = catchBpf(() => bpf.openObject(badObjPath, { pinRoot }));
      assert.equal(load.op, 'bpf_object__load');
      assert.ok(Array.isArray(load.libbpfLog) && load.libbpfLog.length > 0);
      assert.match(load.message, /invalid access to packet/, 'verifier log tail is in the message');

      const get = catchBpf(() => bpf.objGet(join(pinRoot, 'nope')));
      assert.equal(get.code, 'ENOENT');
      assert.equal(get.op, 'bpf_obj_get');
      // BPF_OBJ_GET_INFO_BY_FD reports a closed fd as EBADFD (77), not EBADF.
      const badFd = catchBpf(() => bpf.mapInfo(987654));
      assert.equal(badFd.code, 'EBADFD');
      assert.equal(badFd.op, 'bpf_obj_get_info_by_fd');
      assert.equal(bpf.errnoName(7), 'E2BIG');
      assert.equal(bpf.errnoName(524), 'ENOTSUPP');
      const dev = catchBpf(() => bpf.ifNameToIndex('kpr-no-such-if'));
      assert.equal(dev.code, 'ENODEV');
    });

    await t.test('batch ops on the hash map (1000 entries)', () => {
      const n = 1000;
      const keys = Buffer.alloc(n * 4);
      const values = Buffer.alloc(n * 8);
      for (let i = 0; i < n; i++) {
        keys.writeUInt32LE(i + 1, i * 4);
        values.writeBigUInt64LE(BigInt((i + 1) * 10), i * 8);
      }
      assert.equal(bpf.mapUpdateBatch(hashFd, keys, values, n), n);

      // lookup_batch returns the final chunk together with ENOENT; all must be kept.
      const all = bpf.mapLookupBatch(hashFd);
      assert.equal(all.count, n);
      assert.equal(all.keys.length, n * 4);
      assert.equal(all.values.length, n * 8);
      const seen = new Map<number, bigint>();
      for (let i = 0; i < all.count; i++) seen.set(all.keys.readUInt32LE(i * 4), all.values.readBigUInt64LE(i * 8));
      assert.equal(seen.size, n);
      for (let i = 1; i <= n; i++) assert.equal(seen.get(i), BigInt(i * 10));
      assert.equal(bpf.mapDump(hashFd).length, n);

      // NOEXIST is not accepted by the kernel's batch path; the per-element
      // path keeps its meaning and reports how far it got.
      const dup = Buffer.concat([u32(5001), u32(5002), u32(3)]);
      const err = catchBpf(() => bpf.mapUpdateBatch(hashFd, dup, Buffer.alloc(24), 3, BPF_NOEXIST));
      assert.equal(err.code, 'EEXIST');
      assert.equal(err.processed, 2);
      assert.ok(bpf.mapDelete(hashFd, u32(5001)) && bpf.mapDelete(hashFd, u32(5002)));

      // Delete the first half plus keys that are already gone: not an error.
      const del = Buffer.concat([keys.subarray(0, 250 * 4), u32(90001), keys.subarray(250 * 4, 500 * 4), u32(90002)]);
      assert.equal(bpf.mapDeleteBatch(hashFd, del, 502), 502);
      assert.equal(bpf.mapLookupBatch(hashFd).count, n - 500);
      assert.equal(bpf.mapDeleteBatch(hashFd, keys, n), n, 'second pass: half already gone');
      assert.equal(bpf.mapLookupBatch(hashFd).count, 0);
      assert.equal(bpf.mapUpdateBatch(hashFd, Buffer.alloc(0), Buffer.alloc(0), 0), 0);
    });

    await t.test('batch update reports processed when the kernel stops (map full)', () => {
      const max = bpf.mapInfo(hashFd).maxEntries;
      const n = max + 10;
      const keys = Buffer.alloc(n * 4);
      for (let i = 0; i < n; i++) keys.writeUInt32LE(i + 1, i * 4);
      const err = catchBpf(() => bpf.mapUpdateBatch(hashFd, keys, Buffer.alloc(n * 8), n));
      assert.equal(err.code, 'E2BIG');
      assert.equal(err.op, 'bpf_map_update_batch');
      assert.equal(err.processed, max);
      assert.equal(bpf.mapLookupBatch(hashFd).count, max);
      assert.equal(bpf.mapDeleteBatch(hashFd, keys, n), n);
      assert.equal(bpf.mapLookupBatch(hashFd).count, 0);
    });

    await t.test('batch ops on the LPM trie', () => {
      const n = 200;
      const keys = Buffer.concat(Array.from({ length: n }, (_, i) => lpmKey(24, 10, i >> 8, i & 0xff, 0)));
      const values = Buffer.concat(Array.from({ length: n }, (_, i) => u32(i)));
      assert.equal(bpf.mapUpdateBatch(lpmFd, keys, values, n), n);
      assert.equal(bpf.mapDump(lpmFd).length, n);
      const all = bpf.mapLookupBatch(lpmFd);
      assert.equal(all.count, n);
      assert.deepEqual(bpf.mapLookup(lpmFd, lpmKey(32, 10, 0, 199, 5)), u32(199));
      const half = keys.subarray(0, (n / 2) * 8);
      assert.equal(bpf.mapDeleteBatch(lpmFd, Buffer.concat([half, lpmKey(8, 99, 0, 0, 0)]), n / 2 + 1), n / 2 + 1);
      assert.equal(bpf.mapDump(lpmFd).length, n / 2);
      assert.equal(bpf.mapDeleteBatch(lpmFd, keys, n), n);
      assert.equal(bpf.mapDump(lpmFd).length, 0);
    });

    await t.test('per-element fallback on a map type without batch ops (devmap_hash)', () => {
      const lo = bpf.ifNameToIndex('lo');
      const keys = Buffer.concat([u32(1), u32(2), u32(3)]);
      const values = Buffer.concat([u32(lo), u32(lo), u32(lo)]);
      assert.equal(bpf.mapUpdateBatch(devmapFd, keys, values, 3), 3);
      const all = bpf.mapLookupBatch(devmapFd);
      assert.equal(all.count, 3);
      assert.deepEqual(
        Array.from({ length: 3 }, (_, i) => all.keys.readUInt32LE(i * 4)).sort(),
        [1, 2, 3],
      );
      assert.equal(bpf.mapDump(devmapFd).length, 3);
      assert.equal(bpf.mapDeleteBatch(devmapFd, Buffer.concat([u32(1), u32(42), u32(2)]), 3), 3);
      assert.deepEqual(
        bpf.mapDump(devmapFd).map(([k]) => k.readUInt32LE(0)),
        [3],
      );
      assert.ok(bpf.mapDelete(devmapFd, u32(3)));
    });

    await t.test('cgroup connect4 link: attach, pin, update, detach', () => {
      mkdirSync(cgroupDir);
      cgroupCreated = true;
      const mainId = bpf.progInfo(mainProg).id;
      const altId = bpf.progInfo(altProg).id;
      assert.notEqual(mainId, altId);

      const bad = catchBpf(() => bpf.progAttachCgroup(mainProg, cgroupDir, 'bogus' as 'connect4'));
      assert.equal(bad.code, 'EINVAL');

      const link = bpf.progAttachCgroup(mainProg, cgroupDir, 'connect4');
      fds.add(link);
      assert.deepEqual(bpf.cgroupQuery(cgroupDir, 'connect4'), [mainId]);
      assert.deepEqual(bpf.cgroupQuery(cgroupDir, 'connect6'), []);
      const info = bpf.linkInfo(link);
      assert.equal(info.type, BPF_LINK_TYPE_CGROUP);
      assert.equal(info.progId, mainId);
      assert.equal(info.attachType, BPF_CGROUP_INET4_CONNECT);
      assert.equal(info.cgroupId, statSync(cgroupDir).ino, 'cgroup id is the cgroup2 inode');

      // Pinned link survives closing the creating fd (controller restart case).
      const linkPin = join(pinRoot, 'link_connect4');
      bpf.objPin(link, linkPin);
      bpf.closeFd(link);
      fds.delete(link);
      const link2 = bpf.objGet(linkPin);
      fds.add(link2);
      assert.equal(bpf.linkInfo(link2).id, info.id);
      assert.deepEqual(bpf.cgroupQuery(cgroupDir, 'connect4'), [mainId]);

      bpf.linkUpdate(link2, altProg);
      assert.equal(bpf.linkInfo(link2).progId, altId);
      assert.deepEqual(bpf.cgroupQuery(cgroupDir, 'connect4'), [altId]);
      const cas = catchBpf(() => bpf.linkUpdate(link2, mainProg, mainProg));
      assert.equal(cas.code, 'EPERM', 'compare-and-swap with a stale expected prog fails');
      bpf.linkUpdate(link2, mainProg, altProg);
      assert.equal(bpf.linkInfo(link2).progId, mainId);

      // A program by the id a link reports: a new fd to the same program, to swap back with.
      const byId = bpf.progGetFdById(mainId);
      fds.add(byId);
      assert.notEqual(byId, mainProg);
      assert.equal(bpf.progInfo(byId).id, mainId);
      bpf.linkUpdate(link2, altProg, byId);
      bpf.linkUpdate(link2, byId, altProg);
      assert.equal(bpf.linkInfo(link2).progId, mainId);
      bpf.closeFd(byId);
      fds.delete(byId);
      const noProg = catchBpf(() => bpf.progGetFdById(0x7ffffff0));
      assert.equal(noProg.code, 'ENOENT');
      assert.equal(noProg.op, 'bpf_prog_get_fd_by_id');
      assert.match(noProg.message, /prog id 2147483632/);

      bpf.linkDetach(link2);
      assert.deepEqual(bpf.cgroupQuery(cgroupDir, 'connect4'), []);
      unlinkSync(linkPin);
      bpf.closeFd(link2);
      fds.delete(link2);
    });

    await t.test('tc clsact attach / query / detach and tcx link on a test veth', () => {
      execFileSync('ip', ['link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB]);
      vethCreated = true;
      const ifindex = bpf.ifNameToIndex(vethA);
      const tcId = bpf.progInfo(tcProg).id;

      assert.equal(bpf.tcQuery(ifindex, 'ingress', 1, 1), null, 'no clsact yet');
      bpf.tcDetach(ifindex, 'ingress', 1, 1); // nothing to detach: no error

      assert.deepEqual(bpf.tcAttach(ifindex, 'ingress', tcProg), { handle: 1, priority: 1 });
      assert.equal(bpf.tcQuery(ifindex, 'ingress', 1, 1), tcId);
      assert.deepEqual(bpf.tcAttach(ifindex, 'ingress', tcProg), { handle: 1, priority: 1 }, 're-attach replaces');
      const filters = execFileSync('tc', ['filter', 'show', 'dev', vethA, 'ingress'], { encoding: 'utf8' });
      assert.equal(filters.split('\n').filter((l) => l.includes('tc_pass')).length, 1, filters);

      assert.deepEqual(bpf.tcAttach(ifindex, 'egress', tcProg, { handle: 7, priority: 3 }), { handle: 7, priority: 3 });
      assert.equal(bpf.tcQuery(ifindex, 'egress', 7, 3), tcId);
      assert.equal(bpf.tcQuery(ifindex, 'egress', 1, 1), null);

      bpf.tcDetach(ifindex, 'ingress', 1, 1);
      assert.equal(bpf.tcQuery(ifindex, 'ingress', 1, 1), null);
      bpf.tcDetach(ifindex, 'ingress', 1, 1); // ENOENT → no error
      bpf.tcDetach(ifindex, 'egress', 7, 3);
      assert.equal(bpf.tcQuery(ifindex, 'egress', 7, 3), null);

      const tcx = bpf.tcxAttach(ifindex, 'ingress', tcProg);
      fds.add(tcx);
      const li = bpf.linkInfo(tcx);
      assert.equal(li.type, BPF_LINK_TYPE_TCX);
      assert.equal(li.progId, tcId);
      assert.equal(li.ifindex, ifindex);
      bpf.closeFd(tcx); // unpinned link: closing detaches
      fds.delete(tcx);
    });

    await t.test('progTestRun on the tc program', () => {
      const res = bpf.progTestRun(tcProg, Buffer.alloc(64), { repeat: 10 });
      assert.equal(res.retval, 0);
      assert.equal(res.data.length, 64);
      assert.equal(typeof res.durationNs, 'number');
      assert.equal(res.ctxOut, undefined);
    });
  } finally {
    for (const fd of fds) {
      try {
        bpf.closeFd(fd);
      } catch {
        /* best effort */
      }
    }
    for (const o of objects) {
      try {
        o.close();
      } catch {
        /* already closed */
      }
    }
    if (vethCreated) execFileSync('ip', ['link', 'del', vethA]);
    if (cgroupCreated) rmdirSync(cgroupDir);
    rmSync(pinRoot, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('netnsCookie names the caller\'s network namespace: stable in one, different in another', (t) => {
  if (!requireRoot(t)) return;
  const ns = `kpradd${process.pid}c`;
  const mine = bpf.netnsCookie();
  assert.equal(typeof mine, 'bigint');
  assert.ok(mine > 0n);
  assert.equal(bpf.netnsCookie(), mine);
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const addon = join(here, '..', '..', 'addon', 'build', 'Release', 'kpr_bpf.node');
    const other = execFileSync('nsenter', [`--net=/run/netns/${ns}`, process.execPath, '-e', `console.log(String(require(${JSON.stringify(addon)}).netnsCookie()))`], { encoding: 'utf8' }).trim();
    assert.notEqual(BigInt(other), mine);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});
