/**
 * Manifest source: Services, EndpointSlices and Nodes from YAML files, the same
 * objects `kubectl get -o yaml` prints (single objects, multi-document files
 * and `kind: List`). A file or a directory; changes are picked up by
 * fs.watch, backed by a slow mtime poll because editors replace files in
 * ways a watch can miss. A file that fails to parse keeps its last good
 * contents.
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
}

export class ManifestSource implements Source {
  readonly name = 'manifests';
  private files = new Map<string, FileState>();
  private watcher: FSWatcher | undefined;
  private poller: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();
  private store: ObjectStore | undefined;

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
    store.markSynced('Service');
    store.markSynced('EndpointSlice');
    store.markSynced('Node');
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
      let docs: unknown[];
      try {
        docs = this.parseFile(file, await readFile(file, 'utf8'));
      } catch (err) {
        log.error({ file, err: (err as Error).message }, `cannot parse ${basename(file)}; keeping its last good contents`);
        this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, keys: prev?.keys ?? new Set() });
        continue;
      }
      const keys = new Set<string>();
      for (const doc of docs) {
        for (const { kind, raw } of this.classify(file, doc)) {
          upserts.push({ kind, raw });
          const key = metaKey(raw);
          if (key) {
            keys.add(objectId(kind, key));
            fresh.add(objectId(kind, key));
          }
        }
      }
      for (const id of prev?.keys ?? []) if (!keys.has(id)) gone.add(id);
      this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, keys });
    }
    for (const [file, state] of [...this.files]) {
      if (present.has(file)) continue;
      this.files.delete(file);
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
  }

  private parseFile(file: string, text: string): unknown[] {
    // JSON is YAML too, and JSON.parse is many times faster and leaner for
    // big generated manifests.
    const head = text.trimStart()[0];
    if (head === '{' || head === '[') {
      try {
        const v = JSON.parse(text) as unknown;
        return Array.isArray(v) ? v : [v];
      } catch {
        /* not strict JSON: let the YAML parser judge it */
      }
    }
    const docs = parseAllDocuments(text);
    const out: unknown[] = [];
    for (const d of Array.isArray(docs) ? docs : [docs]) {
      if (d.errors.length > 0) throw new Error(d.errors[0]?.message ?? `invalid YAML in ${file}`);
      const v = d.toJS();
      if (v === null || v === undefined) continue;
      out.push(v);
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
