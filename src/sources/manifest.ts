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
 *
 * At scale (10k Services in one file): a re-read compares the file's bytes
 * with the last read, re-cuts only the changed range into documents
 * (manifest-docs.ts), and parses, and hands the store, only those. A file
 * caught half-written by a non-atomic rewrite (changed while read, or empty
 * where it held objects) is read again shortly instead of being applied.
 */
import { closeSync, openSync, readlinkSync, readSync, statSync, watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { metaKey, type Kind, type ObjectStore } from '../controller/store.js';
import type { Logger } from '../log.js';
import { cutManifest, recutManifest, type Cut } from './manifest-docs.js';
import type { Source } from './source.js';

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

interface FileState {
  mtimeMs: number;
  size: number;
  ino: number;
  /** "Kind ns/name" of every object the file holds (the objects live in the store) */
  keys: Set<string>;
  /**
   * The file's bytes as last read, and their cut into pieces
   * (manifest-docs.ts): the next read re-cuts only the bytes that changed.
   * One copy of the file, outside the JS heap; not its parsed objects.
   */
  bytes: Buffer;
  /**
   * The buffer `bytes` is in, and, for a big file, one more the next read
   * goes to: a file read into resident memory is copied at memory speed,
   * while fresh pages cost a fault each (an 11 MB read took 44 ms instead of
   * 5 on the test VM).
   */
  backing: Buffer;
  spare: Buffer | undefined;
  cut: Cut;
  /** per piece of `cut`: what it held if it parsed cleanly (else it is parsed again on the next read) */
  parsed: Array<ParsedPiece | undefined>;
}

interface ParsedPiece {
  /** object ids it held */
  ids: string[];
  /** documents it counted (for the document numbers in log lines) */
  docs: number;
}

/**
 * The file's first `size` bytes (its size when stat'ed), read into `into`. A
 * file that grew meanwhile is caught by the stat after the read (isTransient).
 */
function readInto(file: string, into: Buffer, size: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    let got = 0;
    while (got < size) {
      const n = readSync(fd, into, got, size - got, null);
      if (n === 0) break;
      got += n;
    }
    return into.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** From this size on, a file is read into one of two buffers kept for it (FileState.spare). */
const BIG_FILE = 1 << 20;

const isBlank = (b: Buffer) => b.every((c) => c === 32 || c === 9 || c === 10 || c === 13);

const objectId = (kind: Kind, key: string) => `${kind} ${key}`;

/**
 * The names in a file's directory whose change is a change to the file:
 * its own, and, when it is a relative symlink such as a ConfigMap volume's
 * `svc.yaml -> ..data/svc.yaml`, the first name its target goes through
 * (`..data`, which the kubelet swaps to update every file at once).
 */
function watchedNames(file: string): Set<string> {
  const names = new Set([basename(file)]);
  let target: string;
  try {
    target = readlinkSync(file);
  } catch {
    return names; // not a symlink
  }
  const first = isAbsolute(target) ? undefined : target.split('/')[0];
  if (first && first !== '.' && first !== '..') names.add(first);
  return names;
}

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
  /** How long a file that held objects must stay empty to count as emptied (not half-written). */
  emptyGraceMs?: number;
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
  /** Names of the files the watch reported since the last reload; 'all' = stat every file. */
  private hinted: Set<string> | 'all' = 'all';
  /** Files whose last read had a document that did not parse. */
  private broken = new Map<string, string>();
  private synced = false;
  /** Objects already reported as duplicates, so a poll does not repeat it. */
  private reportedDuplicates = new Set<string>();
  /** Files read while being written, or found empty where they held objects: read again shortly. */
  private unsettled = new Map<string, number>();
  private recheck: NodeJS.Timeout | undefined;
  /**
   * Per file, the parse errors (document and message) its last read logged:
   * the same error read again is counted but not logged again.
   */
  private loggedErrors = new Map<string, Set<string>>();
  private notSyncedLogged = '';

  constructor(private readonly opts: ManifestSourceOptions) {}

  async start(store: ObjectStore): Promise<void> {
    this.store = store;
    // Watch first: a change made while the first read runs is not missed.
    // A file is watched through its directory (an editor or kubectl replaces
    // it by a rename, which a watch on the file itself would lose), and only
    // events that name it count: kpr's own log file in that directory must
    // not trigger reloads (each would log, and so feed itself).
    const st = await stat(this.opts.path);
    const dir = st.isDirectory() ? this.opts.path : dirname(this.opts.path);
    try {
      const only = st.isDirectory() ? undefined : watchedNames(this.opts.path);
      this.watcher = watch(dir, (_event, name) => {
        if (!name) return this.kick();
        if (only) {
          if (only.has(name)) this.kick(basename(this.opts.path));
          return;
        }
        // A manifest named by the watch: only it is looked at. The kubelet
        // updates a ConfigMap volume by swapping its `..data` symlink, which
        // replaces every file at once: a stat of every file. Other names
        // (temporaries, editors' swap files, logs) are not manifests; the
        // rename that makes one a manifest names it.
        if (EXTENSIONS.has(extname(name)) && !name.startsWith('.')) this.kick(name);
        else if (name.startsWith('..')) this.kick();
      });
      this.watcher.on('error', (err) => this.opts.log.warn({ err, path: dir }, 'manifest watch failed; polling only'));
    } catch (err) {
      this.opts.log.warn({ err, path: dir }, 'cannot watch manifests; polling only');
    }
    // The poll stats every file: it catches what a watch missed.
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
    if (this.synced || !this.store || this.unsettled.size > 0) return;
    if (this.broken.size > 0) {
      // Said once per set of broken files, not on every reload.
      const why = JSON.stringify([...this.broken.keys()].sort());
      if (why !== this.notSyncedLogged) {
        this.notSyncedLogged = why;
        this.opts.log.error(
          { files: [...this.broken.keys()] },
          'not synced: a manifest has a document that does not parse; nothing is written or deleted until it is fixed',
        );
      }
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
    if (this.recheck) clearTimeout(this.recheck);
    await this.reloading;
  }

  /**
   * A read that may have caught a writer half-way (a non-atomic rewrite:
   * truncate, then write): the file changed while it was read, or it reads
   * empty where it held objects. Neither is applied yet; the file is read
   * again shortly. An empty file that stays empty for emptyGraceMs is taken
   * as emptied on purpose.
   */
  private isTransient(file: string, bytes: Buffer, before: { mtimeMs: number; size: number }, prev: FileState | undefined): boolean {
    const now = Date.now();
    let why: string | undefined;
    let after;
    try {
      after = statSync(file);
    } catch {
      after = undefined;
    }
    if (!after || after.mtimeMs !== before.mtimeMs || after.size !== before.size) why = 'changed while read';
    else if (isBlank(bytes) && (prev?.keys.size ?? 0) > 0 && now - (this.unsettled.get(file) ?? now) < (this.opts.emptyGraceMs ?? 1000)) why = 'empty';
    if (!why) {
      this.unsettled.delete(file);
      return false;
    }
    if (!this.unsettled.has(file)) {
      this.unsettled.set(file, now);
      this.opts.log.info({ file, why }, `${basename(file)} looks half-written (${why}); reading it again shortly`);
    }
    if (!this.recheck) {
      this.recheck = setTimeout(() => {
        this.recheck = undefined;
        this.kick();
      }, 100);
      this.recheck.unref();
    }
    return true;
  }

  private kick(name?: string): void {
    if (name === undefined) this.hinted = 'all';
    else if (this.hinted !== 'all') this.hinted.add(name);
    if (this.debounce) clearTimeout(this.debounce);
    // A short debounce: an editor's save is several events in a row.
    this.debounce = setTimeout(() => {
      // Failures are logged by the queue.
      this.enqueue(false).catch(() => undefined);
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
   * Read every file now, whatever the watch has or has not reported yet
   * (its events come some time after the write), and hand the store the
   * objects of those that changed.
   */
  reload(): Promise<void> {
    return this.enqueue(true);
  }

  /**
   * One read at a time, whoever asks: two interleaved reads would re-cut a
   * file from each other's half-updated pieces.
   */
  private enqueue(all: boolean): Promise<void> {
    const run = this.reloading.then(() => this.readChanged(all));
    this.reloading = run.catch((err) => this.opts.log.error({ err }, 'manifest reload failed'));
    return run;
  }

  /**
   * Re-read the files that changed and hand the store only their objects:
   * one edited Service among 10k costs one file's parse, not all of them.
   * `all`: every file is read, not only those the watch named, and none is
   * skipped on its stat (a direct reload is rare: start-up and tests).
   */
  private async readChanged(all: boolean): Promise<void> {
    const { log } = this.opts;
    const hinted = all ? 'all' : this.hinted;
    this.hinted = new Set();
    const present = new Set<string>();
    let files: string[];
    try {
      files = await this.listFiles();
    } catch (err) {
      // The path vanished or is unreadable: keep serving what we had.
      log.error({ err, path: this.opts.path }, 'cannot read manifests; keeping the last good state');
      return;
    }
    // Objects go to the store in slices as they are parsed, so a 10k-Service
    // first read does not hold every parsed document at once. The controller
    // hears of them together all the same: it syncs from a timer, which
    // cannot run before this (synchronous) walk over the files is done.
    let upserts: Array<{ kind: Kind; raw: unknown }> = [];
    const upserted = new Set<string>();
    const gone = new Set<string>();
    for (const file of files) {
      present.add(file);
      const prev = this.files.get(file);
      // A known file the watch did not name is unchanged (the poll checks them all).
      if (prev && hinted !== 'all' && !hinted.has(basename(file))) continue;
      // stat and read synchronously: local files, read in a few ms, while an
      // async read is several thread-pool round trips, each slow on a busy node.
      let st;
      try {
        st = statSync(file);
      } catch {
        continue;
      }
      // The poll trusts an unchanged stat. A file the watch named, or a
      // direct reload, is read all the same: two writes of the same size
      // within one tick of the file system's clock leave the same mtime
      // (and a rename may reuse the inode number), and the byte comparison
      // below makes an unchanged file cheap.
      const statSame = prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size && prev.ino === st.ino;
      if (statSame && !all && hinted === 'all') continue;
      // Big files only: a directory of 10k one-Service files must not hold two padded buffers per file.
      const big = st.size >= BIG_FILE;
      const backing = !big
        ? Buffer.allocUnsafe(st.size)
        : prev?.spare && prev.spare.length >= st.size
          ? prev.spare
          : Buffer.allocUnsafeSlow(Math.ceil(st.size * 1.0625) + 4096);
      let bytes: Buffer;
      try {
        bytes = readInto(file, backing, st.size);
      } catch (err) {
        bytes = Buffer.alloc(0);
        log.error({ err, file }, `cannot read ${basename(file)}`);
      }
      if (this.isTransient(file, bytes, st, prev)) continue;
      // Read for nothing (the watch and the poll both saw one write, or a
      // direct reload): nothing to parse, and a broken document is not
      // counted twice for one write.
      if (prev && bytes.equals(prev.bytes)) {
        Object.assign(prev, { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino });
        continue;
      }
      // Only the pieces around the changed bytes are new; the others keep what they held.
      const recut = prev ? recutManifest(prev.bytes, prev.cut, bytes) : null;
      const cut = recut?.cut ?? cutManifest(bytes);
      const parsed: Array<ParsedPiece | undefined> = [];
      const keys = new Set<string>();
      let bad = 0;
      let firstBad = '';
      const errors = new Set<string>();
      let index = 0;
      for (const [n, piece] of cut.pieces.entries()) {
        const from = recut?.origin[n] ?? -1;
        const known = from >= 0 ? prev?.parsed[from] : undefined;
        if (known) {
          for (const id of known.ids) keys.add(id);
          parsed.push(known);
          index += known.docs;
          continue;
        }
        const ids: string[] = [];
        let pieceBad = 0;
        const docs = this.parsePiece(bytes.toString('utf8', piece.start, piece.end), piece.json);
        for (const doc of docs) {
          const i = index++;
          if (!doc.ok) {
            pieceBad++;
            firstBad ||= doc.message.split('\n')[0] ?? '';
            const sig = `${i}\0${doc.message}`;
            errors.add(sig);
            const level = this.loggedErrors.get(file)?.has(sig) ? 'debug' : 'error';
            log[level]({ file, document: i, err: doc.message }, `cannot parse document ${i} of ${basename(file)}; skipping it`);
            this.opts.onParseError?.(file, i, doc.message);
            continue;
          }
          for (const { kind, raw } of this.classify(file, doc.value)) {
            upserts.push({ kind, raw });
            const key = metaKey(raw);
            if (key) (ids.push(objectId(kind, key)), upserted.add(objectId(kind, key)));
            if (upserts.length >= 512) {
              this.store?.applyBatch(upserts, []);
              upserts = [];
            }
          }
        }
        for (const id of ids) keys.add(id);
        bad += pieceBad;
        // A piece with a bad document is parsed (and counted) again on the next read.
        parsed.push(pieceBad === 0 ? { ids, docs: docs.length } : undefined);
      }
      if (bad > 0) {
        this.broken.set(file, firstBad);
        // The broken document may be what held them: keep the file's earlier objects.
        for (const id of prev?.keys ?? []) keys.add(id);
        this.loggedErrors.set(file, errors);
      } else {
        this.broken.delete(file);
        if (this.loggedErrors.delete(file)) log.info({ file }, `${basename(file)} parses cleanly again`);
        for (const id of prev?.keys ?? []) if (!keys.has(id)) gone.add(id);
      }
      this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, keys, bytes, backing, spare: big ? prev?.backing : undefined, cut, parsed });
    }
    for (const [file, state] of [...this.files]) {
      if (present.has(file)) continue;
      this.files.delete(file);
      this.broken.delete(file);
      this.unsettled.delete(file);
      this.loggedErrors.delete(file);
      for (const id of state.keys) gone.add(id);
    }
    // An object that moved to another file is not gone.
    // (Every file read above is in this.files already, with what it holds now.)
    const stillHeld = (id: string) => [...this.files.values()].some((f) => f.keys.has(id));
    const removals = [...gone]
      .filter((id) => !stillHeld(id))
      .map((id) => {
        const sp = id.indexOf(' ');
        return { kind: id.slice(0, sp) as Kind, key: id.slice(sp + 1) };
      });
    if ((upserts.length || removals.length) && this.store) this.store.applyBatch(upserts, removals);
    if (upserted.size) this.reportDuplicates(upserted);
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

  private parsePiece(text: string, json: boolean): Doc[] {
    // JSON is YAML too, and JSON.parse is many times faster and leaner for
    // big generated manifests.
    const head = text.trimStart()[0];
    if (json || head === '{' || head === '[') {
      try {
        const v = JSON.parse(text) as unknown;
        return (Array.isArray(v) && !json ? v : [v]).map((value) => ({ ok: true, value }));
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
