/**
 * Typed wrapper around the native libbpf addon (addon/src/kpr_bpf.cc).
 *
 * The addon is intentionally thin: raw map/prog/link operations on fds with
 * Buffers in and out. Every failure is thrown as a {@link BpfError} carrying
 * `errno`, `code` and `op` (the libbpf call that failed).
 *
 * The .node file is loaded lazily on first use so that modules importing this
 * file (e.g. for types) still load on machines where the addon is not built.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';

/** Error thrown by every addon function. */
export interface BpfError extends Error {
  /** Positive errno value. */
  errno: number;
  /** Symbolic errno name, e.g. 'ENOENT', 'E2BIG', 'ENOTSUPP'. */
  code: string;
  /** The libbpf / libc function that failed, e.g. 'bpf_map_update_elem'. */
  op: string;
  /** Batch ops: number of elements completed before the failure. */
  processed?: number;
  /** openObject failures: libbpf warnings captured during open/load (incl. verifier log). */
  libbpfLog?: string[];
}

export function isBpfError(e: unknown): e is BpfError {
  return e instanceof Error && typeof (e as Partial<BpfError>).errno === 'number' && typeof (e as Partial<BpfError>).op === 'string';
}

export interface OpenObjectOptions {
  /** Directory on bpffs where LIBBPF_PIN_BY_NAME maps are pinned / reused. */
  pinRoot?: string;
  /** Override max_entries per map name before load. Unknown names throw. */
  maxEntries?: Record<string, number>;
}

/** A loaded bpf_object. Map/prog fds belong to it and are closed by close(). */
export interface BpfObject {
  readonly path: string;
  mapFd(name: string): number;
  /** Program name = the C function name. */
  progFd(name: string): number;
  maps(): Array<{ name: string; fd: number }>;
  programs(): Array<{ name: string; fd: number; sectionName: string }>;
  /** Closes the object (and its fds). Every later call on this handle throws EBADF. */
  close(): void;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  /** BPF_LINK_TYPE_* (3 = cgroup, 6 = xdp, 11 = tcx). */
  type: number;
  /** cgroup links only. */
  cgroupId?: number;
  /** cgroup and tcx links: BPF_* attach type number. */
  attachType?: number;
  /** xdp and tcx links. */
  ifindex?: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  /** BPF_PROG_TYPE_* number. */
  type: number;
  /** 16 hex chars. */
  tag: string;
}

export type CgroupAttachType =
  | 'connect4'
  | 'sendmsg4'
  | 'recvmsg4'
  | 'getpeername4'
  | 'connect6'
  | 'sendmsg6'
  | 'recvmsg6'
  | 'getpeername6'
  | 'sock_create';

export type TcDirection = 'ingress' | 'egress';

export interface TcAttachOptions {
  /** Filter handle, default 1. */
  handle?: number;
  /** Filter priority (1..65535), default 1. */
  priority?: number;
}

export interface ProgTestRunOptions {
  repeat?: number;
  /** Input context (e.g. a struct __sk_buff for tc programs). */
  ctxIn?: Buffer;
  /** Size of the output packet buffer; default data.length + 256. */
  dataSizeOut?: number;
}

export interface ProgTestRunResult {
  retval: number;
  data: Buffer;
  durationNs: number;
  ctxOut?: Buffer;
}

export interface LookupBatchResult {
  /** count * keySize bytes. */
  keys: Buffer;
  /** count * valueSize bytes. */
  values: Buffer;
  count: number;
}

/** bpf_map_update_elem flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** bpf_map_type numbers used by mapCreate. */
export const BPF_MAP_TYPE_ARRAY = 2;
/** map_flags: an inner map whose size may differ from the outer map's template. */
export const BPF_F_INNER_MAP = 1 << 12;

/** Shape of the native module (addon/build/Release/kpr_bpf.node). */
export interface KprBpfNative {
  openObject(path: string, opts?: OpenObjectOptions): BpfObject;
  mapInfo(fd: number): MapInfo;
  mapLookup(fd: number, key: Buffer): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapDump(fd: number): Array<[Buffer, Buffer]>;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): number;
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;
  /**
   * The whole map; or, given a cursor (null to start) and a max, one step of
   * a batch walk whose result carries the next cursor (null at the end).
   */
  mapLookupBatch(fd: number, cursor?: Buffer | null, max?: number): LookupBatchResult & { cursor?: Buffer | null };
  objGet(path: string): number;
  objPin(fd: number, path: string): void;
  closeFd(fd: number): void;
  progAttachCgroup(progFd: number, cgroupPath: string, attachType: CgroupAttachType): number;
  linkUpdate(linkFd: number, newProgFd: number, expectedOldProgFd?: number): void;
  linkDetach(linkFd: number): void;
  linkInfo(linkFd: number): LinkInfo;
  progInfo(fd: number): ProgInfo;
  cgroupQuery(cgroupPath: string, attachType: CgroupAttachType): number[];
  tcAttach(ifindex: number, direction: TcDirection, progFd: number, opts?: TcAttachOptions): { handle: number; priority: number };
  tcDetach(ifindex: number, direction: TcDirection, handle: number, priority: number): void;
  tcQuery(ifindex: number, direction: TcDirection, handle: number, priority: number): number | null;
  tcxAttach(ifindex: number, direction: TcDirection, progFd: number): number;
  progTestRun(progFd: number, data: Buffer, opts?: ProgTestRunOptions): ProgTestRunResult;
  ifNameToIndex(name: string): number;
  errnoName(errno: number): string;
  /** Attach an iterator program, read it to the end and return its output. With netnsPath,
   * the iterator is opened from a thread inside that network namespace (socket iterators
   * walk the namespace of their opener). */
  iterRead(progFd: number, netnsPath?: string): Buffer;
  /** bpf_map_create: a new, unpinned map; the caller owns (and closes) the fd. */
  mapCreate(type: number, keySize: number, valueSize: number, maxEntries: number, name?: string, flags?: number): number;
  /** bpf_map_get_fd_by_id: e.g. the inner map a map-in-map entry holds (lookup returns its id). */
  mapGetFdById(id: number): number;
}

let cached: KprBpfNative | undefined;

/** Path of the .node file; KPR_ADDON_PATH overrides (e.g. for packaged installs). */
export function addonPath(): string {
  return process.env.KPR_ADDON_PATH ?? join(repoRoot(), 'addon', 'build', 'Release', 'kpr_bpf.node');
}

/** Loads (once) and returns the native module. Throws a clear error if it is not built. */
export function loadAddon(): KprBpfNative {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) throw new Error(`kpr native addon not found at ${path}; run "npm run build:addon"`);
  const require = createRequire(import.meta.url);
  cached = require(path) as KprBpfNative;
  return cached;
}

// Named function exports (each forwards to the lazily loaded native module).
export const openObject: KprBpfNative['openObject'] = (path, opts) => loadAddon().openObject(path, opts);
export const mapInfo: KprBpfNative['mapInfo'] = (fd) => loadAddon().mapInfo(fd);
export const mapLookup: KprBpfNative['mapLookup'] = (fd, key) => loadAddon().mapLookup(fd, key);
export const mapUpdate: KprBpfNative['mapUpdate'] = (fd, key, value, flags) => loadAddon().mapUpdate(fd, key, value, flags);
export const mapDelete: KprBpfNative['mapDelete'] = (fd, key) => loadAddon().mapDelete(fd, key);
export const mapDump: KprBpfNative['mapDump'] = (fd) => loadAddon().mapDump(fd);
export const mapUpdateBatch: KprBpfNative['mapUpdateBatch'] = (fd, keys, values, count, flags) =>
  loadAddon().mapUpdateBatch(fd, keys, values, count, flags);
export const mapDeleteBatch: KprBpfNative['mapDeleteBatch'] = (fd, keys, count) => loadAddon().mapDeleteBatch(fd, keys, count);
export const mapLookupBatch = (fd: number): LookupBatchResult => loadAddon().mapLookupBatch(fd);
export const mapLookupBatchStep = (fd: number, cursor: Buffer | null, max: number): LookupBatchResult & { cursor: Buffer | null } => {
  const r = loadAddon().mapLookupBatch(fd, cursor, max);
  return { ...r, cursor: r.cursor ?? null };
};
export const objGet: KprBpfNative['objGet'] = (path) => loadAddon().objGet(path);
export const objPin: KprBpfNative['objPin'] = (fd, path) => loadAddon().objPin(fd, path);
export const closeFd: KprBpfNative['closeFd'] = (fd) => loadAddon().closeFd(fd);
export const progAttachCgroup: KprBpfNative['progAttachCgroup'] = (progFd, cgroupPath, attachType) =>
  loadAddon().progAttachCgroup(progFd, cgroupPath, attachType);
export const linkUpdate: KprBpfNative['linkUpdate'] = (linkFd, newProgFd, expectedOldProgFd) =>
  loadAddon().linkUpdate(linkFd, newProgFd, expectedOldProgFd);
export const linkDetach: KprBpfNative['linkDetach'] = (linkFd) => loadAddon().linkDetach(linkFd);
export const linkInfo: KprBpfNative['linkInfo'] = (linkFd) => loadAddon().linkInfo(linkFd);
export const progInfo: KprBpfNative['progInfo'] = (fd) => loadAddon().progInfo(fd);
export const cgroupQuery: KprBpfNative['cgroupQuery'] = (cgroupPath, attachType) => loadAddon().cgroupQuery(cgroupPath, attachType);
export const tcAttach: KprBpfNative['tcAttach'] = (ifindex, direction, progFd, opts) =>
  loadAddon().tcAttach(ifindex, direction, progFd, opts);
export const tcDetach: KprBpfNative['tcDetach'] = (ifindex, direction, handle, priority) =>
  loadAddon().tcDetach(ifindex, direction, handle, priority);
export const tcQuery: KprBpfNative['tcQuery'] = (ifindex, direction, handle, priority) =>
  loadAddon().tcQuery(ifindex, direction, handle, priority);
export const tcxAttach: KprBpfNative['tcxAttach'] = (ifindex, direction, progFd) => loadAddon().tcxAttach(ifindex, direction, progFd);
export const progTestRun: KprBpfNative['progTestRun'] = (progFd, data, opts) => loadAddon().progTestRun(progFd, data, opts);
export const ifNameToIndex: KprBpfNative['ifNameToIndex'] = (name) => loadAddon().ifNameToIndex(name);
export const errnoName: KprBpfNative['errnoName'] = (errno) => loadAddon().errnoName(errno);
export const iterRead: KprBpfNative['iterRead'] = (progFd, netnsPath) => loadAddon().iterRead(progFd, netnsPath);
export const mapCreate: KprBpfNative['mapCreate'] = (type, keySize, valueSize, maxEntries, name, flags) =>
  loadAddon().mapCreate(type, keySize, valueSize, maxEntries, name, flags);
export const mapGetFdById: KprBpfNative['mapGetFdById'] = (id) => loadAddon().mapGetFdById(id);

/** All functions as one object, handy for dependency injection / fakes in unit tests. */
export const addon: KprBpfNative = {
  openObject,
  mapInfo,
  mapLookup,
  mapUpdate,
  mapDelete,
  mapDump,
  mapUpdateBatch,
  mapDeleteBatch,
  mapLookupBatch,
  objGet,
  objPin,
  closeFd,
  progAttachCgroup,
  linkUpdate,
  linkDetach,
  linkInfo,
  progInfo,
  cgroupQuery,
  tcAttach,
  tcDetach,
  tcQuery,
  tcxAttach,
  progTestRun,
  ifNameToIndex,
  errnoName,
  iterRead,
  mapCreate,
  mapGetFdById,
};
