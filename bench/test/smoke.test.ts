/**
 * A tiny real run: one Service, every mode, one short wrk run each. It
 * proves each mode carries traffic to every backend (nginx answers with the
 * pod's name, the check counts distinct pods), that the output files are
 * written, and that nothing of the lab is left behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseBenchArgs, runBench, writeResults, type BenchArgs } from '../command.js';
import { MODE_NAMES } from '../modes.js';
import { run } from '../../src/lab/exec.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { requireRoot } from '../../test/helpers/privileged.js';

/** The smallest run: one Service, one short repetition; the test names what it measures. */
function benchArgs(out: string, o: Partial<BenchArgs> & Pick<BenchArgs, 'scenarios' | 'modes' | 'nodeport-modes'>): BenchArgs {
  return {
    services: '1',
    'include-50k': false,
    duration: 1,
    repeat: 1,
    connections: 6,
    'filler-endpoints': 2,
    's4-endpoints': 10,
    's4-repeat': 1,
    's5-changes': 1,
    's8-connects': 10,
    's9-services': 1000,
    's9-endpoints': 10,
    seed: 1,
    out,
    ...o,
  };
}

test('smoke: S1 with every mode carries traffic to every backend, and cleans up', async (t) => {
  if (!requireRoot(t)) return;
  const out = await mkdtemp(join(tmpdir(), 'kpr-bench-smoke-'));
  try {
    const args = benchArgs(out, { scenarios: 'S1', modes: MODE_NAMES.join(','), 'nodeport-modes': '' });
    const res = await runBench(parseBenchArgs(args), () => {});
    const id = `kb${process.pid % 100000}`;
    assert.equal(res.dp.length, MODE_NAMES.length * 2, 'keep-alive and close for every mode');
    for (const c of res.dp) {
      if (c.unavailable) {
        // Only tc-only may be missing, and then with a reason and no numbers.
        assert.equal(c.mode, 'kpr-tc');
        assert.equal(c.runs.length, 0);
        continue;
      }
      assert.equal(c.error, undefined, `${c.mode} ${c.conn}: ${c.error}`);
      assert.ok(c.check?.passed, `${c.mode}: ${JSON.stringify(c.check)}`);
      assert.deepEqual(Object.keys(c.check.pods).sort(), ['pod-1', 'pod-2', 'pod-3'], `${c.mode} reached ${JSON.stringify(c.check.pods)}`);
      assert.equal(c.runs.length, 1);
      const r = c.runs[0]!;
      assert.ok(r.rps > 100, `${c.mode} ${c.conn}: ${r.rps} req/s`);
      assert.equal(r.non2xx, 0);
      assert.equal(r.socketErrors.connect, 0);
    }
    // Nothing left: namespaces, cgroups, pinned maps.
    const ns = await run('ip', ['netns', 'list']);
    assert.ok(!ns.split('\n').some((l) => l.startsWith(`${id}-`)), `namespaces left:\n${ns}`);
    assert.ok(!readdirSync(cgroup2Mount()).some((d) => d.startsWith(`kprb-${id}-`)), 'cgroups left');
    assert.ok(!readdirSync('/sys/fs/bpf').some((d) => d.startsWith(`kprb-${id}-`)), 'pinned maps left');

    const md = await writeResults(res, out);
    assert.match(md, /## S1 — one Service/);
    assert.match(md, /\| 1 \| – \| keep-alive \| kpr-ct \| \d+ \|/);
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { meta: { versions: { kernel: string } }; dp: unknown[] };
    assert.ok(json.meta.versions.kernel.length > 0);
    assert.equal(json.dp.length, res.dp.length);
    assert.match(readFileSync(join(out, 'S1.svg'), 'utf8'), /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(existsSync(join(out, 'results.md')));
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('smoke: S6, S7, S8 and S9 at tiny size carry traffic, record every figure, and clean up', async (t) => {
  if (!requireRoot(t)) return;
  const out = await mkdtemp(join(tmpdir(), 'kpr-bench-smoke-'));
  try {
    const args = benchArgs(out, {
      scenarios: 'S6,S7,S8,S9',
      modes: 'direct,kpr-ct',
      'nodeport-modes': 'np-direct,np-iptables,kpr-snat,kpr-dsr',
      's8-connects': 10,
      's9-services': 200,
    });
    const res = await runBench(parseBenchArgs(args), () => {});
    const cells = (sc: string) => res.dp.filter((c) => c.scenario === sc);
    // S6: three transfers for each ClusterIP and NodePort mode.
    assert.equal(cells('S6').length, 3 * 6);
    for (const c of cells('S6')) {
      if (c.mode === 'kpr-snat' || c.mode === 'kpr-dsr') {
        // kpr's tc path may still stall large packets (a fix is in flight): bounded, and recorded.
        assert.ok(c.runs.length === 1 || c.error, `${c.mode} ${c.transfer}: neither a run nor an error`);
        continue;
      }
      assert.equal(c.error, undefined, `${c.mode} ${c.transfer}: ${c.error}`);
      const r = c.runs[0]!;
      assert.ok(r.requests > 0, `${c.mode} ${c.transfer}: no transfer completed`);
      assert.equal(r.non2xx, 0, `${c.mode} ${c.transfer}: non-2xx answers`);
    }
    // S7: connections per second and a 10 MiB transfer per mode; both backends (n1, n2) reached.
    assert.equal(cells('S7').length, 2 * 4);
    for (const c of cells('S7')) {
      if ((c.mode === 'kpr-snat' || c.mode === 'kpr-dsr') && c.check && !c.check.passed) {
        // kpr's NodePort path is being fixed in parallel (a DSR check once
        // timed out after SNAT's stalled transfers): the bench must report
        // it, with kpr's log, and measure nothing for that mode.
        assert.match(c.error ?? '', /check failed: .*\nkpr on n1:/s, `${c.mode}: ${c.error}`);
        assert.equal(c.runs.length, 0);
        continue;
      }
      assert.deepEqual(Object.keys(c.check?.pods ?? {}).sort(), c.check?.expected.slice().sort(), `${c.mode}: ${JSON.stringify(c.check)}`);
      if (c.conn === 'close') assert.equal(c.runs.length, 1, `${c.mode}: ${c.error}`);
    }
    // S8: samples per mode, all answered.
    for (const c of cells('S8')) {
      const xs = c.latency?.[0]?.samplesMs ?? [];
      assert.ok(xs.length >= 10, `${c.mode}: ${xs.length} samples, errors ${JSON.stringify(c.latency?.[0]?.errors)}`);
      assert.ok(xs.every((x) => x > 0));
    }
    // S9: kprsync ran at the asked size.
    const full = res.s9.find((c) => c.op === 'full-sync' && c.form === 'translate + map writes');
    assert.equal(full?.error, undefined, full?.error);
    assert.equal(full?.services, 200);
    assert.equal(full?.runs.length, 1);
    assert.equal(res.s9.find((c) => c.op === 'change-endpoint')?.runs.length, 3);

    const md = await writeResults(res, out);
    for (const h of ['## S6', '## S7', '## S8', '## S9']) assert.ok(md.includes(h), `${h} missing`);
    for (const f of ['S6.svg', 'S7.svg', 'S7-transfer.svg', 'S8.svg', 'S9.svg']) assert.ok(existsSync(join(out, f)), `${f} missing`);
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { meta: { load: { start: number[]; end: number[] } }; s9: unknown[] };
    assert.equal(json.meta.load.start.length, 3);
    assert.equal(json.s9.length, res.s9.length);

    const ns = await run('ip', ['netns', 'list']);
    const pid = process.pid % 100000;
    assert.ok(!ns.split('\n').some((l) => l.startsWith(`kb${pid}-`) || l.startsWith(`np${pid}-`)), `namespaces left:\n${ns}`);
    assert.ok(!readdirSync(cgroup2Mount()).some((d) => d.startsWith(`kprb-kb${pid}-`) || d === `kpr-lab-np${pid}`), 'cgroups left');
    assert.ok(!readdirSync('/sys/fs/bpf').some((d) => d.startsWith(`kprb-kb${pid}-`) || d.startsWith(`kpr-lab-np${pid}-`)), 'pinned maps left');
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('smoke IPv6: S2 at 1 and 20 Services, every mode over IPv6 reaches every backend, results say IPv6, and nothing is left', async (t) => {
  if (!requireRoot(t)) return;
  const out = await mkdtemp(join(tmpdir(), 'kpr-bench-smoke6-'));
  const ip6Before = await run('ip6tables-save', [], { allowFail: true });
  const nftBefore = await run('nft', ['list', 'tables']);
  try {
    const args = benchArgs(out, { scenarios: 'S2', services: '1,20', modes: MODE_NAMES.join(','), 'nodeport-modes': '', 'ip-family': 6 });
    const res = await runBench(parseBenchArgs(args), () => {});
    const id = `kb${process.pid % 100000}`;
    // S2 at 1 Service (random), at 20 Services random and worst: three cells per mode.
    assert.equal(res.dp.length, MODE_NAMES.length * 3);
    for (const c of res.dp) {
      assert.equal(c.family, 6, `${c.mode}: family`);
      assert.equal(c.unavailable, undefined, `${c.mode}: ${c.unavailable}`);
      assert.equal(c.error, undefined, `${c.mode} ${c.services} ${c.position}: ${c.error}`);
      assert.ok(c.check?.passed, `${c.mode}: ${JSON.stringify(c.check)}`);
      assert.deepEqual(Object.keys(c.check.pods).sort(), ['pod-1', 'pod-2', 'pod-3'], `${c.mode} reached ${JSON.stringify(c.check.pods)}`);
      assert.equal(c.runs.length, 1);
      const r = c.runs[0]!;
      assert.ok(r.requests > 0, `${c.mode}: no request completed`);
      assert.equal(r.non2xx, 0);
      assert.equal(r.socketErrors.connect, 0, `${c.mode} ${c.services}: connect errors`);
    }
    assert.equal(res.dp.find((c) => c.services === 20 && c.position === 'worst')?.targetIndex, 19);
    const ns = await run('ip', ['netns', 'list']);
    assert.ok(!ns.split('\n').some((l) => l.startsWith(`${id}-`)), `namespaces left:\n${ns}`);
    assert.ok(!readdirSync(cgroup2Mount()).some((d) => d.startsWith(`kprb-${id}-`)), 'cgroups left');
    assert.ok(!readdirSync('/sys/fs/bpf').some((d) => d.startsWith(`kprb-${id}-`)), 'pinned maps left');

    const md = await writeResults(res, out);
    assert.match(md, /## S2 — new connection per request vs number of Services \(IPv6\)/);
    assert.match(md, /S2 10k IPv6 \(random\): kpr-ct ≥ 1\.1 × nftables \| – \| not measured/);
    const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { meta: { options: { family: number } }; dp: Array<{ family: number }> };
    assert.equal(json.meta.options.family, 6);
    assert.ok(json.dp.every((c) => c.family === 6));
    assert.match(readFileSync(join(out, 'S2-ipv6.svg'), 'utf8'), /S2 \(IPv6\)/);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
  // Every rule went into the lab's namespace, never the root one.
  const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('#')).join('\n');
  assert.equal(strip(await run('ip6tables-save', [], { allowFail: true })), strip(ip6Before), 'the root namespace ip6tables changed');
  assert.equal(await run('nft', ['list', 'tables']), nftBefore, 'the root namespace nft tables changed');
});
