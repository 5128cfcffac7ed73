/**
 * The IPv6-only lab as an operator brings it up: `kpr lab up --ip-family 6`
 * and `kpr demo --ip-family 6`, run as the CLI. The lab carries IPv6
 * ClusterIP and NodePort traffic and has no IPv4 address anywhere; a wrong
 * family is refused before any namespace exists.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { Lab, LAB_EXT_IP6, type LabNode } from '../../src/lab/cluster.js';
import { nodeArgv } from '../../src/lab/exec.js';
import { LAB_VIP6_DS as VIP6 } from '../../src/lab/manifest.js';
import { ownScript } from '../../src/util/paths.js';
import { requireRoot } from '../helpers/privileged.js';

const execFileP = promisify(execFile);

/** kpr's CLI; never throws: the exit code is part of the result. */
async function kpr(args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [...nodeArgv(ownScript('cli')), ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const netnsExists = (name: string) => existsSync(`/run/netns/${name}`);

test('kpr lab --ip-family: an unknown family is refused before anything is built', async (t) => {
  if (!requireRoot(t)) return;
  const name = `v6bx${process.pid % 1000}`;
  const r = await kpr(['lab', 'up', '--name', name, '--ip-family', '4'], 60_000);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /ip-family/);
  assert.match(r.stderr, /Choices: "dual", "6"/);
  assert.equal(netnsExists(`${name}-fabric`), false, 'no namespace created');
  const d = await kpr(['demo', '--name', name, '--ip-family', 'v6'], 60_000);
  assert.equal(d.code, 2, d.stderr);
  assert.equal(netnsExists(`${name}-fabric`), false);
});

test('kpr lab up --ip-family 6: IPv6-only nodes, pods and client; IPv6 ClusterIP and NodePort traffic', async (t) => {
  if (!requireRoot(t)) return;
  const name = `v6bl${process.pid % 1000}`;
  // The same lab the CLI builds, for its addresses and probes.
  const lab = new Lab({ name, nodes: 2, podsPerNode: 2, ipv6Only: true });
  const [n1, n2] = lab.nodes as [LabNode, LabNode];
  const allPods = lab.allPods().map((p) => p.name).sort();
  try {
    const up = await kpr(['lab', 'up', '--name', name, '--ip-family', '6'], 300_000);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, new RegExp(`lab ${name} is up`));
    for (const node of lab.nodes) {
      await lab.waitFor(async () => (await lab.kprLog(node)).includes('"msg":"synced"'), `kpr on ${node.name}`, 60_000);
    }

    await t.test('no IPv4 address on any interface but loopback, in any of the lab namespaces', async () => {
      assert.deepEqual(await lab.ipv4Addresses(), []);
      for (const node of lab.nodes) assert.equal(node.podCidr, '', 'no IPv4 pod subnet');
      const v4routes = await lab.exec({ netns: n1.netns }, 'ip', ['-4', 'route', 'show']);
      assert.equal(v4routes.trim(), '', `node 1 has no IPv4 route: ${v4routes}`);
      // and each pod has its IPv6 address
      const a = await lab.exec({ netns: n2.pods[0]!.netns }, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.ok(a.includes(`${n2.pods[0]!.ip6}/128`), a);
    });

    await t.test('the default manifest is the IPv6-only one: an IPv6 ClusterIP from a pod reaches every pod', async () => {
      const r = await lab.probe({ netns: n2.pods[0]!.netns }, ['tcp', VIP6, '80', '--count', '40']);
      assert.deepEqual(r.errors, {});
      assert.deepEqual(Object.keys(r.pods).sort(), allPods);
      assert.deepEqual(r.peers, { [`${VIP6}:80`]: 40 });
    });

    await t.test("an IPv6 NodePort from the external client on each node, SNAT to the node's address", async () => {
      for (const node of [n1, n2]) {
        const r = await lab.probe({ netns: lab.extNs }, ['tcp', node.ip6, '30140', '--count', '40']);
        assert.deepEqual(r.errors, {});
        assert.deepEqual(Object.keys(r.pods).sort(), allPods);
        assert.deepEqual(r.seenAs, { [node.ip6]: 40 });
        assert.deepEqual(r.peers, { [`${node.ip6}:30140`]: 40 });
      }
      const local = await lab.probe({ netns: lab.extNs }, ['tcp', n2.ip6, '30090', '--count', '10']);
      assert.deepEqual(local.seenAs, { [LAB_EXT_IP6]: 10 }, 'eTP=Local keeps the client address');
    });

    const st = await kpr(['lab', 'status', '--name', name], 60_000);
    assert.match(st.stdout, new RegExp(`netns ${name}-n1: up`));
    const down = await kpr(['lab', 'down', '--name', name], 120_000);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(netnsExists(`${name}-fabric`), false, 'lab down removed it');
  } finally {
    await lab.down();
  }
});

test('kpr demo --ip-family 6: every check passes on an IPv6-only lab, which is then gone', async (t) => {
  if (!requireRoot(t)) return;
  const name = `v6bd${process.pid % 1000}`;
  try {
    const r = await kpr(['demo', '--name', name, '--ip-family', '6'], 600_000);
    assert.equal(r.code, 0, `${r.stdout.slice(-3000)}\n${r.stderr}`);
    assert.match(r.stdout, /IPv4 addresses in the lab \(loopback aside\): none/);
    assert.match(r.stdout, /OK: no IPv4 address on any node, pod or client/);
    assert.match(r.stdout, /OK: connect-time: all 4 pods answer/);
    assert.match(r.stdout, /OK: IPv6 NodePort on n1/);
    assert.match(r.stdout, /OK: IPv6 NodePort on n2/);
    assert.doesNotMatch(r.stdout, /FAILED/);
    assert.match(r.stdout, /demo OK \(\d+ checks\)/);
    assert.equal(netnsExists(`${name}-fabric`), false, 'the demo tore its lab down');
  } finally {
    await new Lab({ name, nodes: 2, podsPerNode: 2, ipv6Only: true }).down();
  }
});
