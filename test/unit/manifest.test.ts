import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { ObjectStore } from '../../src/controller/store.js';
import { createLogger } from '../../src/log.js';
import { ManifestSource } from '../../src/sources/manifest.js';
import { service, slice } from '../helpers/objects.js';

const yaml = (...objs: unknown[]) => objs.map((o) => stringify(o)).join('---\n');

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('manifest source: files, multi-document YAML, JSON, List; edits, moves and deletions', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-'));
  const store = new ObjectStore();
  const changes: string[][] = [];
  store.onChange = (keys) => changes.push([...keys].sort());
  const invalid: string[] = [];
  store.onInvalid = (e) => invalid.push(e.object);
  const src = new ManifestSource({ path: dir, log: createLogger('fatal'), pollMs: 100 });
  try {
    await writeFile(join(dir, 'a.yaml'), yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }])));
    await writeFile(join(dir, 'b.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [service('b', { clusterIP: '198.18.0.2' })] }));
    await writeFile(join(dir, 'notes.txt'), 'not a manifest');
    await src.start(store);
    assert.equal(store.isSynced(), true);
    assert.deepEqual(store.serviceKeys().sort(), ['default/a', 'default/b']);
    assert.equal(store.slicesFor('default/a').length, 1);

    // an edit in one file reaches the store as a change to that Service only
    changes.length = 0;
    await writeFile(join(dir, 'a.yaml'), yaml(service('a', { clusterIP: '198.18.0.1' }), slice('a-1', 'a', [{ ip: '192.0.2.1' }, { ip: '192.0.2.9' }])));
    await until(() => store.slicesFor('default/a')[0]?.endpoints.length === 2, 'edit picked up');
    assert.deepEqual(changes.flat(), ['default/a']);

    // moving an object to another file is not a deletion
    await writeFile(join(dir, 'c.yaml'), yaml(service('b', { clusterIP: '198.18.0.2' })));
    await writeFile(join(dir, 'b.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [] }));
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(store.service('default/b'), 'b survived the move');

    // broken YAML keeps the file's last good contents
    await writeFile(join(dir, 'a.yaml'), 'kind: Service\n  bad: [indent');
    await new Promise((r) => setTimeout(r, 400));
    assert.ok(store.service('default/a'));

    // a malformed object is reported by name and the rest keep working
    await writeFile(join(dir, 'd.yaml'), yaml(service('d', { clusterIP: 'nope' }), service('e', { clusterIP: '198.18.0.5' })));
    await until(() => !!store.service('default/e'), 'e added');
    assert.ok(invalid.includes('Service default/d'));

    // removing a file removes its objects (an atomic rename replaces, not removes)
    await rename(join(dir, 'c.yaml'), join(dir, 'c.yaml.off'));
    await until(() => !store.service('default/b'), 'b removed');
    await rm(join(dir, 'a.yaml'));
    await until(() => !store.service('default/a') && store.slicesFor('default/a').length === 0, 'a removed');
  } finally {
    await src.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
