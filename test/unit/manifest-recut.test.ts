/**
 * The incremental re-cut of a manifest (manifest-docs.ts, recutManifest)
 * against the full cut, for edits at the start, middle and end, document
 * inserts and deletes, random byte edits, in every form a file can take
 * (multi-document YAML, a JSON List, a JSON array); and the manifest
 * source's store after a run of edits against a fresh read of the result.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { ObjectStore } from '../../src/controller/store.js';
import { createLogger } from '../../src/log.js';
import { cutManifest, recutManifest, type Cut } from '../../src/sources/manifest-docs.js';
import { ManifestSource } from '../../src/sources/manifest.js';
import { service, slice } from '../../src/lab/objects.js';

/** A small seeded generator (mulberry32): a failure names its seed and replays. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] as T };
}
type Rng = ReturnType<typeof rng>;

type Form = 'yaml' | 'json-list' | 'json-list-pretty' | 'json-array';
const FORMS: Form[] = ['yaml', 'json-list', 'json-list-pretty', 'json-array'];

function objects(r: Rng, n: number, tag = ''): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const name = `s${tag}${i}-${r.int(1000)}`;
    const o = r.int(3)
      ? service(name, { clusterIP: `198.18.${r.int(200)}.${r.int(250) + 1}` })
      : slice(`${name}-1`, name, [{ ip: `192.0.2.${r.int(250) + 1}` }]);
    // strings the cutters must skip: brackets, quotes, markers, escapes
    if (r.int(4) === 0) (o as { metadata: Record<string, unknown> }).metadata.annotations = { note: r.pick(['a "q" [b] {c}', '--- not a marker', 'x\\', 'multi\n---\nline', '%not a directive']) };
    out.push(o);
  }
  return out;
}

/** The text of one document in a form. */
function docText(form: Form, o: unknown, r: Rng): string {
  if (form === 'yaml') return (r.int(4) === 0 ? '# comment\n' : '') + stringify(o);
  return form === 'json-list-pretty' ? JSON.stringify(o, null, 2) : JSON.stringify(o);
}

function fileText(form: Form, docs: string[]): string {
  if (form === 'yaml') return docs.map((d, i) => (i === 0 ? d : `---\n${d}`)).join('');
  if (form === 'json-array') return `[\n${docs.join(',\n')}\n]\n`;
  return `{"apiVersion":"v1","kind":"List","metadata":{"items":"x"},"items":[${docs.join(form === 'json-list' ? ',' : ',\n  ')}]}\n`;
}

function assertRecut(old: Buffer, next: Buffer, what: string): boolean {
  const oldCut = cutManifest(old);
  const full = cutManifest(next);
  const re = recutManifest(old, oldCut, next);
  if (!re) return false;
  assert.deepEqual(re.cut, full, `${what}: the re-cut differs from the full cut`);
  assert.equal(re.origin.length, full.pieces.length);
  for (const [i, o] of re.origin.entries()) {
    if (o < 0) continue;
    const p = re.cut.pieces[i] as Cut['pieces'][number];
    const q = oldCut.pieces[o] as Cut['pieces'][number];
    assert.ok(old.subarray(q.start, q.end).equals(next.subarray(p.start, p.end)), `${what}: kept piece ${i} (was ${o}) has other bytes`);
  }
  return true;
}

test('one-document edits, inserts and deletes at the start, middle and end: the re-cut equals the full cut, and is incremental', () => {
  for (const form of FORMS) {
    for (let seed = 1; seed <= 40; seed++) {
      const r = rng(seed);
      const docs = objects(r, 2 + r.int(12)).map((o) => docText(form, o, r));
      const old = Buffer.from(fileText(form, docs));
      for (const at of [0, docs.length >> 1, docs.length - 1]) {
        const [fresh] = objects(r, 1, 'new').map((o) => docText(form, o, r));
        const edits: Array<[string, string[]]> = [
          ['edit', docs.map((d, i) => (i === at ? (fresh as string) : d))],
          ['insert before', [...docs.slice(0, at), fresh as string, ...docs.slice(at)]],
          ['insert after', [...docs.slice(0, at + 1), fresh as string, ...docs.slice(at + 1)]],
          ['delete', docs.filter((_, i) => i !== at)],
        ];
        for (const [kind, next] of edits) {
          const what = `${form} seed ${seed}: ${kind} document ${at} of ${docs.length}`;
          const incremental = assertRecut(old, Buffer.from(fileText(form, next)), what);
          // The first document of a YAML file also decides the format (its first byte): a full cut is fine there.
          if (!(form === 'yaml' && at === 0)) assert.ok(incremental, `${what}: fell back to a full cut`);
        }
      }
      // the same bytes: every piece kept
      const same = recutManifest(old, cutManifest(old), Buffer.from(old));
      assert.ok(same && same.origin.every((o, i) => o === i));
    }
  }
});

test('random byte edits (markers, brackets, quotes, commas, directives): a re-cut, when made, equals the full cut', () => {
  const tokens = ['---', '---\n', '\n---\n', '\n', ' ', '{', '}', '[', ']', '"', '\\', ',', ':', '%', '\n%YAML 1.2\n', 'a', '-', '\r\n', '...', '#', '{"a":1}', ',{"kind":"Service"}', '[1]', '1'];
  let made = 0;
  let eligible = 0;
  for (const form of [...FORMS, 'json-scalar' as const]) {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed * 7919);
      const docs = objects(r, 1 + r.int(6)).map((o) => docText(form === 'json-scalar' ? 'json-list' : form, o, r));
      let text = form === 'json-scalar' ? `[1, ${docs.join(', ')}]` : fileText(form, docs);
      // a few edits in a row, each checked against the one before
      for (let step = 0; step < 4; step++) {
        let i = r.int(text.length + 1);
        let j = Math.min(text.length, i + r.int(r.int(3) === 0 ? 200 : 12));
        // half the time, an edit that ends or starts at a document's first or last byte, where cuts are
        const starts = [...text.matchAll(/\{"|^---|\}(?=\s*[,\]])/gm)].map((m) => m.index);
        if (r.int(2) && starts.length) {
          const at = r.pick(starts) + r.int(2);
          if (r.int(2)) (j = at), (i = Math.max(0, at - r.int(6)));
          else (i = at), (j = Math.min(text.length, at + r.int(6)));
        }
        const ins = Array.from({ length: r.int(4) }, () => r.pick(tokens)).join('');
        const next = text.slice(0, i) + ins + text.slice(j);
        if (!cutManifest(Buffer.from(text)).whole) eligible++;
        if (assertRecut(Buffer.from(text), Buffer.from(next), `${form} seed ${seed} step ${step}: [${i}, ${j}) -> ${JSON.stringify(ins)}`)) made++;
        text = next;
      }
    }
  }
  // The property is exercised only if most edits of files in pieces are re-cut, not left to the full cut.
  assert.ok(made > eligible / 2, `only ${made} of ${eligible} random edits of files in pieces were re-cut`);
});

test('YAML and JSON files that are one piece (directives, not a List) are cut in full', () => {
  for (const text of ['%YAML 1.2\n---\nkind: Service\n', '{"kind":"Service","metadata":{"name":"a"}}']) {
    const old = Buffer.from(text);
    assert.equal(cutManifest(old).whole, true);
    assert.equal(recutManifest(old, cutManifest(old), Buffer.from(text.replace('Service', 'Node'))), null);
  }
});

/** What a store holds, as plain data. */
function snapshot(store: ObjectStore): unknown {
  return store
    .serviceKeys()
    .sort()
    .map((k) => [k, store.service(k), store.slicesFor(k).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))]);
}

test('the manifest source after a run of edits holds what a fresh read of the final files holds', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kpr-manifest-recut-'));
  const log = createLogger('fatal');
  try {
    // The last one is over 1 MiB: read into the two buffers a big file keeps (manifest.ts BIG_FILE).
    for (const [form, count] of [...FORMS.map((f) => [f, 30] as const), ['json-list', 4000] as const]) {
      const file = join(dir, `svc-${form}-${count}.${form === 'yaml' ? 'yaml' : 'json'}`);
      const r = rng(4242);
      const store = new ObjectStore();
      // A ConfigMap first, never edited: it is parsed (and reported as ignored) again only by a full cut.
      let reparsed = 0;
      const src = new ManifestSource({ path: file, log, pollMs: 600_000, onIgnored: () => reparsed++ });
      const cm = docText(form, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cm' } }, r);
      const docs = objects(r, count).map((o) => docText(form, o, r));
      if (count > 30) assert.ok(Buffer.byteLength(fileText(form, docs)) > 1 << 20, 'a big file');
      const put = async () => {
        await writeFile(`${file}.tmp`, fileText(form, [cm, ...docs]));
        await rename(`${file}.tmp`, file);
      };
      await put();
      await src.start(store);
      for (let step = 0; step < 40; step++) {
        const at = r.pick([0, r.int(docs.length), docs.length - 1]);
        const [fresh] = objects(r, 1, `e${step}`).map((o) => docText(form, o, r));
        const op = r.int(3);
        if (op === 0 || docs.length < 5) docs.splice(at, 0, fresh as string);
        else if (op === 1) docs.splice(at, 1);
        else docs[at] = fresh as string;
        await put();
        await src.reload();
      }
      await src.stop();
      const again = new ObjectStore();
      const fresh = new ManifestSource({ path: file, log, pollMs: 600_000 });
      await fresh.start(again);
      await fresh.stop();
      assert.ok(again.serviceKeys().length > 0);
      assert.deepEqual(snapshot(store), snapshot(again), `${form}: incremental reads differ from a fresh read`);
      assert.equal(reparsed, 1, `${form}: every edit was re-cut, not cut in full`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
