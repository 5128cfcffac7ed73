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
  /**
   * Pin path per map name, overriding <pinRoot>/<name>: versioned pin names
   * (src/datapath/migrate.ts). Names the object does not declare are ignored.
   */
  pinPaths?: Record<string, string>;
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
  /** bpf_prog_get_fd_by_id: hold the program a link or tc filter runs (progId), e.g. to put it back. */
  progGetFdById(id: number): number;
  /** SO_NETNS_COOKIE: the caller's network namespace, as bpf_get_netns_cookie() names it. */
  netnsCookie(): bigint;
}

let cached: KprBpfNative | undefined;

/** Path of the .node file; KPR_ADDON_PATH overrides (e.g. for packaged installs). */
export function addonPath(): string {
  return process.env.KPR_ADDON_PATH ?? join(repoRoot(), 'addon', 'build', 'Release', 'kpr_bpf.node');
}

/** Loads (once) and returns the native module. Throws a clear error if it is not built. */
function loadAddon(): KprBpfNative {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) throw new Error(`kpr native addon not found at ${path}; run "npm run build:addon"`);
  const require = createRequire(import.meta.url);
  cached = require(path) as KprBpfNative;
  return cached;
}

/**
 * The native module, loaded on first use (a missing build is reported by the
 * first call, not at import): `bpf.mapLookup(fd, key)`.
 */
export const bpf: KprBpfNative = new Proxy({} as KprBpfNative, {
  get: (_target, name) => loadAddon()[name as keyof KprBpfNative],
});

/** One step of a batch walk (cursor null to start); the next cursor is null at the end. */
export function mapLookupBatchStep(fd: number, cursor: Buffer | null, max: number): LookupBatchResult & { cursor: Buffer | null } {
  const r = loadAddon().mapLookupBatch(fd, cursor, max);
  return { ...r, cursor: r.cursor ?? null };
}
