import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ServiceAccount } from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { parse, parseAllDocuments } from 'yaml';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function docs(path: string): Any[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((d) => {
    assert.equal(d.errors.length, 0, `${path}: ${d.errors[0]?.message}`);
    return d.toJS() as Any;
  });
}

const rbac = docs('deploy/rbac.yaml');
const [ds] = docs('deploy/daemonset.yaml') as [Any];
const container = ds.spec.template.spec.containers[0] as Any;

test('every manifest passes the Kubernetes schemas', () => {
  const models: Record<string, new (o: Any) => { validate(): void }> = {
    ServiceAccount: ServiceAccount as never,
    ClusterRole: ClusterRole as never,
    ClusterRoleBinding: ClusterRoleBinding as never,
    DaemonSet: DaemonSet as never,
  };
  const all = [...rbac, ds];
  assert.deepEqual(all.map((d) => d.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'ServiceAccount']);
  for (const d of all) {
    const M = models[d.kind as string];
    assert.ok(M, `no model for ${d.kind}`);
    new M(d).validate();
  }
  // The schema check is not a no-op.
  assert.throws(() => new DaemonSet({ ...ds, spec: { ...ds.spec, selector: 'x' } } as never).validate());
  const kust = parse(readFileSync('deploy/kustomization.yaml', 'utf8')) as Any;
  assert.deepEqual(kust.resources, ['rbac.yaml', 'daemonset.yaml']);
});

test('the ClusterRole reads services, endpointslices and nodes, and writes nothing', () => {
  const role = rbac.find((d) => d.kind === 'ClusterRole')!;
  const granted = new Set<string>();
  for (const r of role.rules as Any[]) {
    assert.deepEqual([...r.verbs].sort(), ['get', 'list', 'watch']);
    for (const g of r.apiGroups) for (const res of r.resources) granted.add(`${g}/${res}`);
  }
  assert.deepEqual([...granted].sort(), ['/nodes', '/services', 'discovery.k8s.io/endpointslices']);
  const binding = rbac.find((d) => d.kind === 'ClusterRoleBinding')!;
  const sa = rbac.find((d) => d.kind === 'ServiceAccount')!;
  assert.equal(binding.roleRef.name, role.metadata.name);
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  assert.equal(ds.spec.template.spec.serviceAccountName, sa.metadata.name);
  assert.equal(ds.metadata.namespace, sa.metadata.namespace);
});

test('the DaemonSet runs on every node, host network, least privilege, probed on 10256', () => {
  const pod = ds.spec.template.spec as Any;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.equal(pod.enableServiceLinks, false);
  const sc = container.securityContext as Any;
  assert.notEqual(sc.privileged, true);
  assert.deepEqual([...sc.capabilities.add].sort(), ['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE']);
  // Aborting sockets on removed backends finds pod namespaces through host pids.
  assert.equal(pod.hostPID, true);
  // Kubernetes refuses Bidirectional propagation in an unprivileged container.
  for (const m of container.volumeMounts as Any[]) {
    if (m.mountPropagation === 'Bidirectional') assert.equal(sc.privileged, true, `${m.name}: Bidirectional needs privileged`);
  }
  const mounts: Any = Object.fromEntries((container.volumeMounts as Any[]).map((m) => [m.name, m]));
  const vols = new Map((pod.volumes as Any[]).map((v) => [v.name, v.hostPath?.path]));
  assert.equal(mounts.bpffs.mountPath, '/sys/fs/bpf');
  assert.equal(vols.get('bpffs'), '/sys/fs/bpf');
  assert.equal(vols.get('cgroup'), '/sys/fs/cgroup');
  assert.ok(container.args.includes(mounts.cgroup.mountPath), 'kpr attaches to the host cgroup root it mounts');
  assert.deepEqual([container.readinessProbe.httpGet.path, container.readinessProbe.httpGet.port], ['/readyz', 10256]);
  assert.deepEqual([container.livenessProbe.httpGet.path, container.livenessProbe.httpGet.port], ['/livez', 10256]);
  const env = new Map((container.env as Any[]).map((e) => [e.name, e]));
  assert.ok(env.get('KUBERNETES_SERVICE_HOST')?.value);
  assert.ok(env.get('KUBERNETES_SERVICE_PORT')?.value);
  assert.equal(env.get('KPR_NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
  // hostNetwork turns containerPort 10256 into a hostPort: a surge pod could never be placed beside the old one.
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } });
});

test("kpr accepts the DaemonSet's arguments and environment", () => {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
  for (const e of container.env as Any[]) env[e.name] = e.value ?? 'node-1';
  const pin = `/sys/fs/bpf/kpr-test-deploy-${process.pid}`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...container.args, '--pin-path', pin, '--no-connect-time-lb', '--healthz-bind-address', '', '--metrics-bind-address', ''], {
    env,
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.notEqual(r.status, 0);
  // Past every check: only the missing service-account token (no pod here) stops it.
  assert.match(r.stderr, /in-cluster config: no service account token/);
});

test('the compose file parses and names the mounts and capabilities the DaemonSet uses', () => {
  const compose = parse(readFileSync('docker-compose.yml', 'utf8')) as Any;
  const k3s = compose.services.k3s as Any;
  assert.ok((k3s.command as string[]).includes('--disable-kube-proxy'));
  const kpr = compose.services.kpr as Any;
  assert.equal(kpr.network_mode, 'host');
  assert.equal(kpr.privileged, true);
  assert.equal(kpr.build.dockerfile, 'deploy/Dockerfile');
  assert.deepEqual([...kpr.cap_add].sort(), [...container.securityContext.capabilities.add].sort());
  const targets = (kpr.volumes as Array<string | Any>).map((v) => (typeof v === 'string' ? v.split(':')[1] : v.target));
  for (const m of container.volumeMounts as Any[]) assert.ok(targets.includes(m.mountPath), `compose mounts ${m.mountPath}`);
  assert.equal(kpr.environment.KPR_KUBECONFIG.split('/')[1], (kpr.volumes as string[])[0]!.split(':')[1]!.split('/')[1]);
  assert.ok(kpr.command.includes('/host/sys/fs/cgroup'));
});

test('the Dockerfile builds BPF, the addon and the JS on Debian trixie nodejs, fails loudly, and ships the tools', () => {
  const df = readFileSync('deploy/Dockerfile', 'utf8');
  const stages = df.split('\n').filter((l) => l.startsWith('FROM '));
  assert.equal(stages.length, 2);
  for (const s of stages) assert.match(s, /debian:trixie/);
  for (const step of ['make -C bpf', 'node-gyp rebuild', 'tsc -p tsconfig.json']) assert.ok(df.includes(step), step);
  // no third-party repository piped into a shell; every stage runs RUN under pipefail
  assert.doesNotMatch(df, /curl|wget|nodesource/i);
  assert.equal((df.match(/^SHELL \["\/bin\/bash", "-euo", "pipefail", "-c"\]$/gm) ?? []).length, 2);
  assert.match(df, /< 20\.19/, 'the build refuses a nodejs older than the engines field');
  const runtime = df.slice(df.lastIndexOf('FROM '));
  const pkgs = /apt-get install -y --no-install-recommends ([^\n\\&]+)/.exec(runtime)?.[1]?.trim().split(/\s+/) ?? [];
  assert.deepEqual(pkgs.sort(), ['bpftool', 'iproute2', 'libbpf1', 'nodejs']);
  // each runtime package has its reason in docs/deploy.md
  const doc = readFileSync('docs/deploy.md', 'utf8');
  const section = doc.slice(doc.indexOf('## The image'));
  for (const p of pkgs) assert.match(section, new RegExp('`' + p + '`'), `docs/deploy.md says why ${p} is in the image`);
});

test('the seccomp profile denies by default and allows what kpr needs (bpf, perf_event_open)', () => {
  const p = JSON.parse(readFileSync('deploy/seccomp-kpr.json', 'utf8')) as { defaultAction: string; syscalls: Array<{ names: string[]; action: string }> };
  assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
  const allowed = new Set(p.syscalls.filter((s) => s.action === 'SCMP_ACT_ALLOW').flatMap((s) => s.names));
  for (const name of ['bpf', 'perf_event_open', 'socket', 'epoll_pwait', 'inotify_add_watch', 'execve']) assert.ok(allowed.has(name), name);
});

test('the no-SYS_ADMIN overlay drops SYS_ADMIN and runs under the kpr seccomp profile', () => {
  const k = parse(readFileSync('deploy/no-sys-admin/kustomization.yaml', 'utf8')) as Any;
  assert.deepEqual(k.resources, ['../rbac.yaml', '../daemonset.yaml']);
  const patch = (k.patches as Any[])[0] as Any;
  assert.deepEqual(patch.target, { kind: 'DaemonSet', name: ds.metadata.name });
  // apply the JSON patch ops to a copy of the DaemonSet and validate the result
  const out = JSON.parse(JSON.stringify(ds)) as Any;
  for (const op of parse(patch.patch) as Any[]) {
    const path = (op.path as string).split('/').slice(1);
    const last = path.pop() as string;
    let node = out;
    for (const seg of path) node = node[seg];
    assert.ok(op.op === 'add' || last in node, `${op.path} exists for ${op.op}`);
    node[last] = op.value;
  }
  new DaemonSet(out).validate();
  const sc = out.spec.template.spec.containers[0].securityContext as Any;
  assert.deepEqual([...sc.capabilities.add].sort(), ['BPF', 'NET_ADMIN', 'PERFMON']);
  assert.deepEqual(sc.seccompProfile, { type: 'Localhost', localhostProfile: 'profiles/kpr.json' });
  assert.notEqual(sc.privileged, true);
});
