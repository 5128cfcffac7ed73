/**
 * Manifest source: Services, EndpointSlices and Nodes from YAML files, the same
 * objects `kubectl get -o yaml` prints (single objects, multi-document files
 * and `kind: List`). A file or a directory; changes are picked up by
 * fs.watch, backed by a slow mtime poll because editors replace files in
 * ways a watch can miss.
 *
 * Bad input is judged per document: a document that fails to parse is
 * skipped (logged by file and index, counted), the other documents of the
 * same file still apply, and the objects the file held before are kept,
 * since the broken document may be the one that held them. Until every file
 * has parsed cleanly once, the source is not synced: on a restart the
 * controller then writes and deletes nothing, and the pinned maps keep
 * serving what they had.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { metaKey, type Kind, type ObjectStore } from '../controller/store.js';
import type { Logger } from '../log.js';
import type { Source } from './source.js';

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

interface FileState {
  mtimeMs: number;
  size: number;
  /** "Kind ns/name" of every object the file holds (the objects live in the store) */
  keys: Set<string>;
}

const objectId = (kind: Kind, key: string) => `${kind} ${key}`;

export interface ManifestSourceOptions {
  path: string;
  log: Logger;
  pollMs?: number;
  /** Counts objects that are not Services, EndpointSlices or Nodes. */
  onIgnored?: (object: string, reason: string) => void;
  /** Counts documents that do not parse (invalid YAML or JSON, binary garbage). */
  onParseError?: (file: string, document: number, message: string) => void;
  /** Counts an object defined more than once across documents and files. */
  onDuplicate?: (object: string, files: string[]) => void;
}

/** One document of a file: its value, or why it did not parse. */
type Doc = { ok: true; value: unknown } | { ok: false; message: string };

export class ManifestSource implements Source {
  readonly name = 'manifests';
  private files = new Map<string, FileState>();
  private watcher: FSWatcher | undefined;
  private poller: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();
  private store: ObjectStore | undefined;
  /** Files whose last read had a document that did not parse. */
  private broken = new Map<string, string>();
  private synced = false;
  /** Objects already reported as duplicates, so a poll does not repeat it. */
  private reportedDuplicates = new Set<string>();

  constructor(private readonly opts: ManifestSourceOptions) {}

  async start(store: ObjectStore): Promise<void> {
    this.store = store;
    // Watch first: a change made while the first read runs is not missed.
    const st = await stat(this.opts.path);
    const dir = st.isDirectory() ? this.opts.path : dirname(this.opts.path);
    try {
      this.watcher = watch(dir, () => this.kick());
      this.watcher.on('error', (err) => this.opts.log.warn({ err, path: dir }, 'manifest watch failed; polling only'));
    } catch (err) {
      this.opts.log.warn({ err, path: dir }, 'cannot watch manifests; polling only');
    }
    this.poller = setInterval(() => this.kick(), this.opts.pollMs ?? 2000);
    this.poller.unref();
    await this.reload();
  }

  status(): { healthy: boolean; message?: string } {
    if (this.synced) return { healthy: true };
    const [file, msg] = [...this.broken][0] ?? ['', ''];
    return { healthy: false, message: `manifests never read cleanly (${basename(file)}: ${msg}); serving what is pinned, deleting nothing` };
  }

  /** Synced once every file has parsed cleanly; never unsynced after. */
  private maybeMarkSynced(): void {
    if (this.synced || !this.store) return;
    if (this.broken.size > 0) {
      this.opts.log.error(
        { files: [...this.broken.keys()] },
        'not synced: a manifest has a document that does not parse; nothing is written or deleted until it is fixed',
      );
      return;
    }
    this.synced = true;
    this.store.markSynced('Service');
    this.store.markSynced('EndpointSlice');
    this.store.markSynced('Node');
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poller) clearInterval(this.poller);
    if (this.debounce) clearTimeout(this.debounce);
    await this.reloading;
  }

  private kick(): void {
    if (this.debounce) clearTimeout(this.debounce);
    // A short debounce: an editor's save is several events in a row.
    this.debounce = setTimeout(() => {
      this.reloading = this.reloading.then(() => this.reload()).catch((err) => this.opts.log.error({ err }, 'manifest reload failed'));
    }, 10);
  }

  private async listFiles(): Promise<string[]> {
    const st = await stat(this.opts.path);
    if (!st.isDirectory()) return [this.opts.path];
    const names = await readdir(this.opts.path);
    return names
      .filter((n) => EXTENSIONS.has(extname(n)) && !n.startsWith('.'))
      .sort()
      .map((n) => join(this.opts.path, n));
  }

  /**
   * Re-read the files that changed and hand the store only their objects:
   * one edited Service among 10k costs one file's parse, not all of them.
   */
  async reload(): Promise<void> {
    const { log } = this.opts;
    const present = new Set<string>();
    let files: string[];
    try {
      files = await this.listFiles();
    } catch (err) {
      // The path vanished or is unreadable: keep serving what we had.
      log.error({ err, path: this.opts.path }, 'cannot read manifests; keeping the last good state');
      return;
    }
    const upserts: Array<{ kind: Kind; raw: unknown }> = [];
    const gone = new Set<string>();
    const fresh = new Set<string>();
    for (const file of files) {
      present.add(file);
      let st;
      try {
        st = await stat(file);
      } catch {
        continue;
      }
      const prev = this.files.get(file);
      if (prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size) continue;
      let docs: Doc[];
      try {
        docs = this.parseFile(await readFile(file, 'utf8'));
      } catch (err) {
        docs = [{ ok: false, message: (err as Error).message }];
      }
      const keys = new Set<string>();
      let bad = 0;
      docs.forEach((doc, i) => {
        if (!doc.ok) {
          bad++;
          log.error({ file, document: i, err: doc.message }, `cannot parse document ${i} of ${basename(file)}; skipping it`);
          this.opts.onParseError?.(file, i, doc.message);
          return;
        }
        for (const { kind, raw } of this.classify(file, doc.value)) {
          upserts.push({ kind, raw });
          const key = metaKey(raw);
          if (key) {
            keys.add(objectId(kind, key));
            fresh.add(objectId(kind, key));
          }
        }
      });
      if (bad > 0) {
        this.broken.set(file, docs.find((d) => !d.ok)?.message.split('\n')[0] ?? '');
        // The broken document may be what held them: keep the file's earlier objects.
        for (const id of prev?.keys ?? []) keys.add(id);
      } else {
        this.broken.delete(file);
        for (const id of prev?.keys ?? []) if (!keys.has(id)) gone.add(id);
      }
      this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, keys });
    }
    for (const [file, state] of [...this.files]) {
      if (present.has(file)) continue;
      this.files.delete(file);
      this.broken.delete(file);
      for (const id of state.keys) gone.add(id);
    }
    // An object that moved to another file is not gone.
    const stillHeld = (id: string) => fresh.has(id) || [...this.files.values()].some((f) => f.keys.has(id));
    const removals = [...gone]
      .filter((id) => !stillHeld(id))
      .map((id) => {
        const sp = id.indexOf(' ');
        return { kind: id.slice(0, sp) as Kind, key: id.slice(sp + 1) };
      });
    if ((upserts.length || removals.length) && this.store) this.store.applyBatch(upserts, removals);
    if (upserts.length) this.reportDuplicates(new Set(upserts.flatMap(({ kind, raw }) => {
      const key = metaKey(raw);
      return key ? [objectId(kind, key)] : [];
    })));
    this.maybeMarkSynced();
  }

  /**
   * The same object in two places: the one read last wins, which depends on
   * file order and edit order, so say so. Only objects just read are checked.
   */
  private reportDuplicates(ids: Set<string>): void {
    const where = new Map<string, string[]>();
    for (const [file, state] of this.files) {
      for (const id of state.keys) if (ids.has(id)) where.set(id, [...(where.get(id) ?? []), file]);
    }
    for (const [id, files] of where) {
      if (files.length < 2) {
        this.reportedDuplicates.delete(id);
        continue;
      }
      if (this.reportedDuplicates.has(id)) continue;
      this.reportedDuplicates.add(id);
      this.opts.log.warn({ object: id, files }, `${id} is defined in ${files.map((f) => basename(f)).join(' and ')}; the last one read wins`);
      this.opts.onDuplicate?.(id, files);
    }
  }

  private parseFile(text: string): Doc[] {
    // JSON is YAML too, and JSON.parse is many times faster and leaner for
    // big generated manifests.
    const head = text.trimStart()[0];
    if (head === '{' || head === '[') {
      try {
        const v = JSON.parse(text) as unknown;
        return (Array.isArray(v) ? v : [v]).map((value) => ({ ok: true, value }));
      } catch {
        /* not strict JSON: let the YAML parser judge it */
      }
    }
    // NUL and other control characters are not YAML; the parser would turn
    // some garbage into a plain string, so reject it outright.
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x08\x0e-\x1f]/.test(text)) return [{ ok: false, message: 'binary data (control characters), not YAML' }];
    const out: Doc[] = [];
    for (const d of parseAllDocuments(text)) {
      if (d.errors.length > 0) {
        out.push({ ok: false, message: d.errors[0]?.message ?? 'invalid YAML' });
        continue;
      }
      const v = d.toJS() as unknown;
      if (v === null || v === undefined) continue;
      out.push({ ok: true, value: v });
    }
    return out;
  }

  private classify(file: string, doc: unknown): Array<{ kind: Kind; raw: unknown }> {
    const o = doc as { kind?: unknown; items?: unknown; metadata?: { name?: unknown } } | null;
    if (o && o.kind === 'List' && Array.isArray(o.items)) return o.items.flatMap((item) => this.classify(file, item));
    if (o?.kind === 'Service' || o?.kind === 'EndpointSlice' || o?.kind === 'Node') return [{ kind: o.kind, raw: doc }];
    const what = `${typeof o?.kind === 'string' ? o.kind : '<no kind>'} ${typeof o?.metadata?.name === 'string' ? o.metadata.name : '<unnamed>'}`;
    this.opts.log.warn({ file, object: what }, `ignoring ${what} in ${basename(file)}: not a Service, EndpointSlice or Node`);
    this.opts.onIgnored?.(what, 'wrong-kind');
    return [];
  }
}
