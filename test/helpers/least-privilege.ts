/**
 * kpr's least-privilege deployment, run for real with runc (no engine): the
 * capabilities of deploy/no-sys-admin (BPF, NET_ADMIN, PERFMON) under
 * deploy/seccomp-kpr.json. kpr runs in a one-node lab's node namespace, pins
 * into a bpffs mounted for this check only, attaches to the lab's child
 * cgroup and devices, and serves. The seccomp rule of containerd's default
 * profile (bpf, perf_event_open and setns only with SYS_ADMIN) is checked
 * alongside, and what ours still denies.
 *
 * Where kpr comes from is the caller's (KprInstall): the host's /usr and this
 * checkout (test/integration/container.test.ts), or the root filesystem of
 * the image deploy/Dockerfile builds (test/image/container-image.test.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { Lab, LAB_EXT_IP, type LabNode } from '../../src/lab/cluster.js';
import { defaultLabManifest } from '../../src/lab/manifest.js';
import { nodeArgv, run } from '../../src/lab/exec.js';
import { readStats, withPinnedMaps } from '../../src/datapath/pinned.js';
import { natRows } from '../../src/inspect/nat.js';
import { cgroup2Mount } from '../../src/util/cgroup.js';
import { ownScript, repoRoot } from '../../src/util/paths.js';
import { requireRoot } from './privileged.js';
import { capMask, procSecurity, RuncBundle, type ContainerSpec, type SeccompProfile } from './runc.js';

/** Where the container finds kpr. */
export interface KprInstall {
  /** An image's root filesystem; none: the host's /usr and /etc. */
  rootfs?: string;
  /** The command that runs kpr's CLI, inside the container. */
  kpr: string[];
  /** The libbpf addon, inside the container. */
  addon: string;
  /** The seccomp profile to run under (Docker format), on the host. */
  seccompFile: string;
  cwd: string;
  /** What the install needs bound in (this checkout, for the host's). */
  binds: ContainerSpec['binds'];
}

/** kpr from the host's /usr (node) and this checkout, bound read-only. */
export function hostInstall(): KprInstall {
  const repo = repoRoot();
  return {
    kpr: ['/usr/bin/node', ...nodeArgv(ownScript('cli'))],
    addon: join(repo, 'addon/build/Release/kpr_bpf.node'),
    seccompFile: join(repo, 'deploy', 'seccomp-kpr.json'),
    cwd: repo,
    binds: [{ source: repo, dest: repo, readonly: true }],
  };
}

const NO_SYS_ADMIN = ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_PERFMON'];
const ADMIN_ONLY = ['bpf', 'perf_event_open', 'setns'];

function haveRunc(t: TestContext): boolean {
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI === 'true') throw new Error('runc is missing (.ci/setup installs it) and CI=true forbids skipping');
    t.skip('runc is not installed (apt-get install runc)');
    return false;
  }
}

/** Our profile with containerd's RuntimeDefault rule for bpf, perf_event_open and setns: allowed only with SYS_ADMIN. */
function runtimeDefaultRule(ours: SeccompProfile): SeccompProfile {
  return {
    ...ours,
    syscalls: [
      ...ours.syscalls.map((s) => ({ ...s, names: s.names.filter((n) => !ADMIN_ONLY.includes(n)) })),
      { names: ADMIN_ONLY, action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
    ],
  };
}

/**
 * The checks, as subtests of t. name: the lab's name (1-8 lowercase letters
 * and digits), also in the run directory and the container ids.
 */
export async function leastPrivilegeChecks(t: TestContext, install: KprInstall, name: string): Promise<void> {
  if (!requireRoot(t) || !haveRunc(t)) return;
  const ours = JSON.parse(readFileSync(install.seccompFile, 'utf8')) as SeccompProfile;
  const lab = new Lab({ name, nodes: 1, podsPerNode: 2 });
  const node = lab.nodes[0] as LabNode;
  const dir = `/run/kpr-runc-${name}`;
  const bpffs = join(dir, 'bpffs');
  const hostPin = join(bpffs, 'kpr');
  const bundle = new RuncBundle(dir, `kpr-test-${name}`, install.rootfs);
  const cg = cgroup2Mount();
  let mounted = false;
  let kprId: string | undefined;
  const spec = (args: string[], caps: string[], seccomp: SeccompProfile | undefined, binds: ContainerSpec['binds'] = []): ContainerSpec => ({
    args,
    cwd: install.cwd,
    caps,
    seccomp,
    netns: `/run/netns/${node.netns}`,
    binds: [...install.binds, ...binds],
  });
  try {
    await lab.create();
    await lab.startPods();
    await lab.writeManifest(defaultLabManifest(lab));
    await bundle.create();
    // A bpffs of this test's own: the container's /sys/fs/bpf, and nobody else's pins.
    await mkdir(bpffs, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', bpffs]);
    mounted = true;

    await t.test('bpf(): EPERM under the runtime-default rule without SYS_ADMIN; allowed with SYS_ADMIN, or with our profile without it', async () => {
      const probe = `const a = require(${JSON.stringify(install.addon)});
        try { a.closeFd(a.mapCreate(2, 4, 4, 1, 'kprprobe')); console.log('bpf ok'); } catch (e) { console.log('bpf ' + e.code); }`;
      const tryBpf = async (caps: string[], profile: SeccompProfile) => (await bundle.run(spec(['/usr/bin/node', '-e', probe], caps, profile))).out.trim();
      const rows = {
        'runtime default, BPF+NET_ADMIN+PERFMON': await tryBpf(NO_SYS_ADMIN, runtimeDefaultRule(ours)),
        'runtime default, + SYS_ADMIN': await tryBpf([...NO_SYS_ADMIN, 'CAP_SYS_ADMIN'], runtimeDefaultRule(ours)),
        'seccomp-kpr.json, BPF+NET_ADMIN+PERFMON': await tryBpf(NO_SYS_ADMIN, ours),
      };
      t.diagnostic(JSON.stringify(rows));
      assert.deepEqual(rows, {
        'runtime default, BPF+NET_ADMIN+PERFMON': 'bpf EPERM',
        'runtime default, + SYS_ADMIN': 'bpf ok',
        'seccomp-kpr.json, BPF+NET_ADMIN+PERFMON': 'bpf ok',
      });
    });

    await t.test('our profile still denies what kpr does not use, even to SYS_ADMIN: mount namespaces, mount, ptrace', async () => {
      const tryIt = async (profile: SeccompProfile | undefined) =>
        (await bundle.run(spec(['/usr/bin/unshare', '--mount', '/usr/bin/true'], [...NO_SYS_ADMIN, 'CAP_SYS_ADMIN'], profile))).code;
      assert.equal(await tryIt(undefined), 0, 'unconfined, SYS_ADMIN may unshare');
      assert.notEqual(await tryIt(ours), 0, 'seccomp-kpr.json refuses unshare');
      const allowed = new Set(ours.syscalls.flatMap((s) => s.names));
      for (const name of ['mount', 'umount2', 'unshare', 'ptrace', 'kexec_load', 'init_module', 'pivot_root', 'keyctl']) assert.ok(!allowed.has(name), `${name} is not allowed`);
    });

    await t.test('kpr under BPF+NET_ADMIN+PERFMON and seccomp-kpr.json: pins, cgroup hooks and tc, and both paths serve', async () => {
      const kprArgs = [
        ...install.kpr,
        // the container sees its own bpffs, and the host's cgroup2 hierarchy, under /sys/fs
        ...lab.kprRunArgs(node, { pinPath: '/sys/fs/bpf/kpr', cgroup: node.cgroup.replace(cg, '/sys/fs/cgroup') }),
      ];
      const binds = [
        { source: lab.stateDir, dest: lab.stateDir, readonly: true },
        { source: bpffs, dest: '/sys/fs/bpf', readonly: false },
        { source: cg, dest: '/sys/fs/cgroup', readonly: true },
      ];
      const c = await bundle.start(spec(kprArgs, NO_SYS_ADMIN, ours, binds));
      kprId = c.id;
      const deadline = Date.now() + 60_000;
      let programmed = false;
      while (Date.now() < deadline && !programmed) {
        if (c.proc.exitCode !== null) break;
        try {
          programmed = withPinnedMaps(hostPin, natRows).some((r) => r.frontend.addr === '198.18.0.10') && /tc programs attached/.test(c.output());
        } catch {
          /* not pinned yet */
        }
        if (!programmed) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(programmed, `kpr programmed the lab's Services from inside the container:\n${c.output()}`);

      const sec = await procSecurity(await bundle.pid(c.id));
      assert.equal(sec.capEff, capMask(NO_SYS_ADMIN), `CapEff ${sec.capEff.toString(16)}`);
      assert.equal(sec.seccomp, 2, 'a seccomp filter is in force');

      const before = withPinnedMaps(hostPin, (m) => readStats(m.stats));
      // connect-time: a pod in the hooked cgroup to the ClusterIP
      const ct = await lab.probe({ netns: node.pods[0]!.netns, cgroup: node.cgroup }, ['tcp', '198.18.0.10', '80', '--count', '20']);
      assert.deepEqual(ct.errors, {});
      assert.equal(ct.ok, 20);
      // per packet: the external client through the NodePort
      const np = await lab.probe({ netns: lab.extNs }, ['tcp', node.ip, '30080', '--count', '20']);
      assert.deepEqual(np.errors, {});
      assert.equal(np.ok, 20);
      assert.deepEqual(Object.keys(np.seenAs), [node.ip], `SNAT to the node address, not ${LAB_EXT_IP}`);
      const after = withPinnedMaps(hostPin, (m) => readStats(m.stats));
      assert.ok(after.sock_xlate - before.sock_xlate >= 20, 'the cgroup hooks translated');
      assert.ok(after.tc_fwd_new - before.tc_fwd_new >= 20, 'the tc programs created the flows');
      t.diagnostic(`kpr log (container):\n${c.output().split('\n').filter((l) => /attached|synced|error|warn/i.test(l)).slice(0, 12).join('\n')}`);

      // The price of no SYS_ADMIN: kpr cannot enter a pod's network
      // namespace (setns needs it, whatever seccomp allows), so sockets sent
      // to a removed backend are not aborted. kpr says so and keeps serving.
      const manifest = defaultLabManifest(lab) as Array<{ kind: string; metadata: { name: string }; endpoints?: unknown[] }>;
      const web = manifest.find((o) => o.kind === 'EndpointSlice' && o.metadata.name === 'web-1');
      web!.endpoints = web!.endpoints!.slice(1);
      await lab.writeManifest(manifest);
      await lab.waitFor(async () => /socket iterator failed/.test(c.output()), 'kpr to report the socket walk it could not do', 30_000);
      const line = c.output().split('\n').find((l) => /socket iterator failed/.test(l)) ?? '';
      t.diagnostic(line);
      assert.match(line, /EPERM|EACCES/);
      const still = await lab.probe({ netns: node.pods[0]!.netns, cgroup: node.cgroup }, ['tcp', '198.18.0.10', '80', '--count', '10']);
      assert.deepEqual(still.errors, {});
      assert.equal(c.proc.exitCode, null, 'kpr is still running');
    });
  } finally {
    if (kprId) {
      await bundle.kill(kprId);
      await bundle.delete(kprId);
    }
    // kpr's own cleanup, from the node namespace, on the host's view of the pins
    if (existsSync(hostPin) && existsSync(`/run/netns/${node.netns}`)) {
      await run('nsenter', ['--net=' + `/run/netns/${node.netns}`, process.execPath, ...nodeArgv(ownScript('cli')), 'cleanup', '--pin-path', hostPin], { timeoutMs: 60_000 }).catch(
        (e: unknown) => t.diagnostic(`cleanup: ${String(e)}`),
      );
    }
    if (mounted) execFileSync('umount', [bpffs]);
    await rmdir(bpffs).catch(() => undefined);
    await bundle.destroy();
    await lab.down();
  }
}
