import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

const dir = mkdtempSync(join(tmpdir(), 'kpr-cli-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
  // Only if a case went wrong and reached the data path (hooks are off, see below).
  if (existsSync(pin)) {
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'cleanup', '--pin-path', pin]);
    rmSync(pin, { recursive: true, force: true });
  }
});
// Never created: every case here must stop before any BPF work.
const pin = `/sys/fs/bpf/kpr-test-cli-${process.pid}`;

function kpr(args: string[], env: Record<string, string> = {}, file?: string) {
  const cfg = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  if (file !== undefined) writeFileSync(cfg, file);
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KPR_') && k !== 'KUBERNETES_SERVICE_HOST'));
  // Should a case get past validation, it must not attach hooks to the root cgroup.
  const safety = args[0] === 'run' ? ['--no-connect-time-lb'] : [];
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args, ...safety, ...(file !== undefined ? ['--config', cfg] : [])], {
    env: { ...clean, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(existsSync(pin), false, 'no BPF work happened');
  return { code: r.status, stderr: r.stderr };
}

const base = ['run', '--pin-path', pin, '--manifests', dir];

test('an unknown key in the config file stops start-up and names the key', () => {
  const r = kpr(base, {}, 'node-name: n1\nmap-size-nat-fee: 10\n');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /config file .*unknown key\(s\) map-size-nat-fee/);
});

test('a config file that is not a mapping, or not YAML, is rejected', () => {
  assert.match(kpr(base, {}, '- a\n- b\n').stderr, /must be a YAML mapping/);
  const r = kpr(base, {}, 'a: [\n');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /config file/);
});

test('invalid values are rejected from each layer', () => {
  let r = kpr(base, {}, 'resync-interval: -5\n');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--resync-interval must be/);
  r = kpr(base, { KPR_MAP_SIZE_NAT_BE: 'lots' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--map-size-nat-be must be a positive integer/);
  r = kpr([...base, '--log-level', 'loud']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /log-level.*loud|loud.*log-level/s);
  r = kpr([...base, '--metrics-bind-address', '10249']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--metrics-bind-address must be HOST:PORT/);
});

test('precedence is flag > environment > file', () => {
  const file = 'map-size-nat-fe: -1\n';
  assert.match(kpr(base, {}, file).stderr, /got -1/);
  assert.match(kpr(base, { KPR_MAP_SIZE_NAT_FE: '-2' }, file).stderr, /got -2/);
  assert.match(kpr([...base, '--map-size-nat-fe', '-3'], { KPR_MAP_SIZE_NAT_FE: '-2' }, file).stderr, /got -3/);
});

test('unknown KPR_* variables do not stop kpr (only its own names are read); unknown flags are rejected', () => {
  // an invalid known value shows that start-up got past the environment
  let r = kpr([...base, '--map-size-nat-fe', '-7'], { KPR_NODENAME: 'n1', KPR_PORT: 'tcp://198.18.0.9:80', KPR_SOMETHING_ELSE: 'x' });
  assert.match(r.stderr, /got -7/);
  assert.doesNotMatch(r.stderr, /Unknown argument|unknown environment/);
  r = kpr([...base, '--nodename', 'n1']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Unknown argument: nodename/);
});

test('cluster mode needs --node-name; one source only', () => {
  let r = kpr(['run', '--pin-path', pin, '--kubeconfig', join(dir, 'kc')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--node-name is required/);
  r = kpr(['run', '--pin-path', pin, '--in-cluster']);
  assert.match(r.stderr, /--node-name is required/);
  r = kpr([...base, '--kubeconfig', join(dir, 'kc'), '--node-name', 'n1']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /one source, not --manifests and --kubeconfig/);
  r = kpr(['run', '--pin-path', pin, '--node-name', 'n1']);
  assert.match(r.stderr, /a source is required/);
  // A kubeconfig that cannot be read fails before the maps are touched.
  r = kpr(['run', '--pin-path', pin, '--kubeconfig', join(dir, 'missing'), '--node-name', 'n1', '--healthz-bind-address', '', '--metrics-bind-address', '']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /missing/);
});

test('in a pod, KUBERNETES_SERVICE_HOST selects the in-cluster config', () => {
  const r = kpr(['run', '--pin-path', pin, '--node-name', 'n1', '--healthz-bind-address', '', '--metrics-bind-address', ''], {
    KUBERNETES_SERVICE_HOST: '192.0.2.1',
    KUBERNETES_SERVICE_PORT: '6443',
  });
  assert.notEqual(r.code, 0);
  // No service-account token here: the in-cluster loader is what failed.
  assert.match(r.stderr, /in-cluster config: no service account token/);
});

test('the environment of `kpr run` does not break other commands', () => {
  const r = kpr(['inspect', 'nat', '--pin-path', pin], { KPR_NODE_NAME: 'n1', KPR_KUBECONFIG: '/x' });
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.stderr, /Unknown argument|unknown environment/);
  assert.match(r.stderr, /no pinned map/);
});

test('--nodeport-addresses takes CIDRs of either family and "primary"; anything else stops start-up', () => {
  const r = kpr([...base, '--nodeport-addresses', 'primary', '2001:db8::/64', 'nonsense']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--nodeport-addresses must be a CIDR like .*"nonsense"/);
});

test('Maglev: the table size must be a prime in range, and the tables must fit the memory limit', () => {
  let r = kpr([...base, '--lb-algorithm', 'maglev', '--maglev-table-size', '16382']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--maglev-table-size must be a prime between 251 and 131071.*got 16382/);
  r = kpr([...base, '--maglev-table-size', '131101']);
  assert.match(r.stderr, /--maglev-table-size must be a prime/);
  r = kpr([...base, '--lb-algorithm', 'consistent']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /lb-algorithm/);
  // 2 families x 65536 tables x 131071 slots x 4 bytes = 64 GiB: refused with the figure and the flags to change.
  r = kpr(base, { KPR_MAP_SIZE_MAGLEV: '65536' }, 'maglev-table-size: 131071\n');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Maglev tables could take 655\d\d MiB .*2 families x 65536 tables.*131071 slots.*above --maglev-memory-limit 1024 MiB/);
  r = kpr([...base, '--map-size-maglev', '1000', '--maglev-memory-limit', '32']);
  assert.match(r.stderr, /Maglev tables could take 125 MiB/);
});

test('--cluster-cidr takes one CIDR per family, as kube-proxy does for dual-stack', () => {
  const r = kpr([...base, '--cluster-cidr', '2001:db8::/64,2001:db8:1::/64']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--cluster-cidr takes one IPv6 CIDR at most/);
  const bad = kpr([...base, '--cluster-cidr', '10.244.0.0/16,not-a-cidr:']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--cluster-cidr must be a CIDR/);
});

test('--dsr-optout-cidrs takes CIDRs of either family; anything else stops start-up', () => {
  const r = kpr([...base, '--dsr-optout-cidrs', '203.0.113.0/24', '2001:db8:2::/48', '2001:db8:zz::/48']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--dsr-optout-cidrs must be a CIDR like .*"2001:db8:zz::\/48"/);
  assert.doesNotMatch(r.stderr, /2001:db8:2::\/48"/, 'the valid IPv6 CIDR is accepted');
});
