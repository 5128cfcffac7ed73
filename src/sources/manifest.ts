/**
 * Manifest source: Services and EndpointSlices from YAML files, the same
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
import type { ObjectStore } from '../controller/store.js';
import type { Logger } from '../log.js';
import type { Source } from './source.js';

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

interface FileState {
  mtimeMs: number;
  size: number;
  docs: unknown[];
}

export interface ManifestSourceOptions {
  path: string;
  log: Logger;
  pollMs?: number;
  /** Counts objects that are neither Services nor EndpointSlices. */
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
    await this.reload();
    store.markSynced('Service');
    store.markSynced('EndpointSlice');
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
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poller) clearInterval(this.poller);
    if (this.debounce) clearTimeout(this.debounce);
    await this.reloading;
  }

  private kick(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.reloading = this.reloading.then(() => this.reload()).catch((err) => this.opts.log.error({ err }, 'manifest reload failed'));
    }, 50);
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

  /** Re-read changed files and hand the store the complete object set. */
  async reload(): Promise<void> {
    const { log } = this.opts;
    let changed = false;
    const present = new Set<string>();
    let files: string[];
    try {
      files = await this.listFiles();
    } catch (err) {
      // The path vanished or is unreadable: keep serving what we had.
      log.error({ err, path: this.opts.path }, 'cannot read manifests; keeping the last good state');
      return;
    }
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
      changed = true;
      try {
        const docs = this.parseFile(file, await readFile(file, 'utf8'));
        this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, docs });
      } catch (err) {
        log.error({ file, err: (err as Error).message }, `cannot parse ${basename(file)}; keeping its last good contents`);
        this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, docs: prev?.docs ?? [] });
      }
    }
    for (const file of [...this.files.keys()]) {
      if (!present.has(file)) {
        this.files.delete(file);
        changed = true;
      }
    }
    if (!changed || !this.store) return;
    const services: unknown[] = [];
    const slices: unknown[] = [];
    for (const [file, { docs }] of this.files) {
      for (const doc of docs) this.classify(file, doc, services, slices);
    }
    this.store.replace('Service', services);
    this.store.replace('EndpointSlice', slices);
  }

  private parseFile(file: string, text: string): unknown[] {
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

  private classify(file: string, doc: unknown, services: unknown[], slices: unknown[]): void {
    const o = doc as { kind?: unknown; items?: unknown; metadata?: { name?: unknown } } | null;
    if (o && o.kind === 'List' && Array.isArray(o.items)) {
      for (const item of o.items) this.classify(file, item, services, slices);
      return;
    }
    if (o?.kind === 'Service') services.push(doc);
    else if (o?.kind === 'EndpointSlice') slices.push(doc);
    else {
      const what = `${typeof o?.kind === 'string' ? o.kind : '<no kind>'} ${typeof o?.metadata?.name === 'string' ? o.metadata.name : '<unnamed>'}`;
      this.opts.log.warn({ file, object: what }, `ignoring ${what} in ${basename(file)}: not a Service or EndpointSlice`);
      this.opts.onIgnored?.(what, 'wrong-kind');
    }
  }
}
