import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments, stringify } from 'yaml';
import { ObjectStore } from '../../src/controller/store.js';
import { createLogger } from '../../src/log.js';
import { splitManifest } from '../../src/sources/manifest-docs.js';
import { ManifestSource } from '../../src/sources/manifest.js';
import { service, slice } from '../../src/lab/objects.js';

const yamlValues = (text: string) => parseAllDocuments(text).map((d) => d.toJS() as unknown).filter((v) => v !== null);

test('YAML is cut at document markers, and the pieces parse to what the whole file parses to', () => {
  const text = [
    '# a comment before the first document',
    'kind: Service',
    'metadata: {name: a}',
    '--- # a marker with a comment',
    'kind: Service',
    'metadata: {name: b}',
    'spec:',
    '  note: |',
    '    --- indented: not a marker',
    '---',
    '...',
    '--- {kind: Service, metadata: {name: c}}',
    '',
  ].join('\n');
  const pieces = splitManifest(text);
  assert.equal(pieces.length, 4);
  assert.deepEqual(pieces.flatMap((p) => yamlValues(p.text)), yamlValues(text));
});

test('a YAML file with directives is one piece', () => {
  const text = '%YAML 1.2\n---\nkind: Service\n...\n%YAML 1.2\n---\nkind: Node\n';
  assert.deepEqual(splitManifest(text), [{ text, json: false }]);
});

test('JSON: the items of a List and the elements of an array, with tricky strings', () => {
  const items = [
    { kind: 'Service', metadata: { name: 'a', annotations: { x: 'a "quoted" [bracket] {brace} \\ back' } } },
    { kind: 'EndpointSlice', metadata: { name: 'b' }, endpoints: [{ addresses: ['192.0.2.1'] }], items: [1, 2] },
    [],
  ];
  for (const text of [
    JSON.stringify({ apiVersion: 'v1', kind: 'List', metadata: { items: 'not this one' }, items }),
    JSON.stringify({ kind: 'List', items }, null, 2),
    JSON.stringify(items),
  ]) {
    const pieces = splitManifest(text);
    assert.equal(pieces.length, 3, text);
    assert.ok(pieces.every((p) => p.json));
    assert.deepEqual(pieces.map((p) => JSON.parse(p.text) as unknown), items);
  }
});

test('JSON that is not a clean List or array is one piece, judged whole', () => {
  for (const text of [
    '{"kind":"Service","metadata":{"name":"a"},"items":[{"a":1}]}', // not a List
    '{"kind":"List","items":[{"a":1},]}', // trailing comma
    '{"kind":"List","items":[{"a":1} x {"b":2}]}', // junk between items
    '[{"a":1}, 2]', // a scalar element
    '{"kind":"List","items":[{"a":1}', // cut short
  ]) {
    assert.deepEqual(splitManifest(text), [{ text, json: false }], text);
  }
});

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const yaml = (...objs: unknown[]) => objs.map((o) => stringify(o)).join('---\n');

test('a re-read parses and applies only the documents that changed', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-docs-'));
  const ignored: string[] = [];
  const store = new ObjectStore();
  const src = new ManifestSource({ path: dir, log: createLogger('fatal'), pollMs: 100, onIgnored: (o) => ignored.push(o) });
  try {
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cfg' } };
    const a = service('a', { clusterIP: '198.18.0.1' });
    await writeFile(join(dir, 'all.yaml'), yaml(a, slice('a-1', 'a', [{ ip: '192.0.2.1' }]), cm));
    await src.start(store);
    assert.deepEqual(ignored, ['ConfigMap cfg']);
    await writeFile(join(dir, 'all.yaml'), yaml(a, slice('a-1', 'a', [{ ip: '192.0.2.2' }]), cm));
    await until(() => store.slicesFor('default/a')[0]?.endpoints[0]?.addresses[0] === '192.0.2.2', 'edit applied');
    // The ConfigMap's document did not change, so it was not parsed (nor reported) again.
    assert.deepEqual(ignored, ['ConfigMap cfg']);
    // A removed document takes its objects with it; the others stay.
    await writeFile(join(dir, 'all.yaml'), yaml(a, cm));
    await until(() => store.slicesFor('default/a').length === 0, 'slice removed');
    assert.ok(store.service('default/a'));
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a non-atomic rewrite read half-way (empty) is not applied; a file emptied for good is', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-docs-'));
  const store = new ObjectStore();
  const removed: string[] = [];
  store.onChange = (keys) => {
    for (const k of keys) if (!store.service(k)) removed.push(k);
  };
  const src = new ManifestSource({ path: dir, log: createLogger('fatal'), pollMs: 50, emptyGraceMs: 1500 });
  const file = join(dir, 'svc.yaml');
  try {
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.1' }), service('b', { clusterIP: '198.18.0.2' })));
    await src.start(store);
    // truncate (what `>` in a shell or a plain writeFile does first), then write the new contents a bit later
    await writeFile(file, '');
    await new Promise((r) => setTimeout(r, 400));
    assert.deepEqual(removed, [], 'the empty read was not applied');
    await writeFile(file, yaml(service('a', { clusterIP: '198.18.0.1' }), service('b', { clusterIP: '198.18.0.3' })));
    await until(() => store.service('default/b')?.clusterIPs[0] === '198.18.0.3', 'rewrite applied');
    assert.deepEqual(removed, []);
    // Emptied and left so: after the grace period the Services go.
    await writeFile(file, '');
    await until(() => store.serviceKeys().length === 0, 'emptied file applied', 10_000);
    assert.deepEqual(removed.sort(), ['default/a', 'default/b']);
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

for (const [what, file] of [['directory', false], ['file through its ..data link', true]] as const) {
  test(`a ConfigMap-style update (the ..data symlink swapped to a new directory) is seen by the watch, not only the poll: --manifests ${what}`, { timeout: 20_000 }, async () => {
    const { mkdir, rename: mv, symlink } = await import('node:fs/promises');
    const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-cm-'));
    const store = new ObjectStore();
    // A poll too slow to matter: only the watch can pick the change up in time.
    const src = new ManifestSource({ path: file ? join(dir, 'svc.yaml') : dir, log: createLogger('fatal'), pollMs: 600_000 });
    try {
      const version = async (n: number, vip: string) => {
        await mkdir(join(dir, `..v${n}`));
        await writeFile(join(dir, `..v${n}`, 'svc.yaml'), yaml(service('a', { clusterIP: vip })));
        await symlink(`..v${n}`, join(dir, '..data_tmp'));
        await mv(join(dir, '..data_tmp'), join(dir, '..data'));
      };
      await version(1, '198.18.0.1');
      await symlink('..data/svc.yaml', join(dir, 'svc.yaml'));
      await src.start(store);
      assert.equal(store.service('default/a')?.clusterIPs[0], '198.18.0.1');
      await version(2, '198.18.0.2');
      await until(() => store.service('default/a')?.clusterIPs[0] === '198.18.0.2', 'the swapped contents applied');
    } finally {
      await src.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
