/**
 * The object store: the latest valid Service, EndpointSlice and Node
 * objects, as every source delivers them, Services and slices indexed by
 * Service. It tells the controller which Services and which Nodes changed. A malformed object is reported and skipped; if an
 * earlier version of it was valid, that version is kept, so bad input never
 * tears down a working Service.
 */
import { parseEndpointSlice, parseNode, parseService, type ParseResult } from '../model/objects.js';
import { serviceKey, type EndpointSlice, type Node, type Service } from '../model/types.js';

export type Kind = 'Service' | 'EndpointSlice' | 'Node';

/** Nodes are cluster-scoped: keyed by name, whatever namespace a caller put in front. */
function nodeKey(key: string): string {
  return key.slice(key.indexOf('/') + 1);
}

export interface InvalidObject {
  kind: Kind;
  object: string;
  reason: string;
  message: string;
}

interface Entry<T> {
  /** The validated object only: the raw input (often much bigger) is not kept. */
  value: T;
}

/**
 * Same validated content? Serialised only when a second version arrives, so
 * a first load pays nothing, and fields kpr ignores (status, managedFields)
 * never count as a change.
 */
function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function metaKey(raw: unknown): string | undefined {
  const m = (raw as { metadata?: { name?: unknown; namespace?: unknown } } | null)?.metadata;
  if (!m || typeof m.name !== 'string') return undefined;
  return serviceKey(typeof m.namespace === 'string' && m.namespace ? m.namespace : 'default', m.name);
}

const NODE_TAG = 'node:';

export class ObjectStore {
  private services = new Map<string, Entry<Service>>();
  private slices = new Map<string, Entry<EndpointSlice>>();
  /** service key -> slice keys */
  private slicesBySvc = new Map<string, Set<string>>();
  private nodesByName = new Map<string, Entry<Node>>();
  private synced = new Set<Kind>();

  onChange: (serviceKeys: Set<string>) => void = () => {};
  /** Nodes added, changed or removed (by name). */
  onNodesChange: (names: Set<string>) => void = () => {};
  onInvalid: (err: InvalidObject) => void = () => {};
  onSynced: () => void = () => {};

  isSynced(): boolean {
    return this.synced.has('Service') && this.synced.has('EndpointSlice');
  }

  /** A source calls this once its first complete list of a kind is in. */
  markSynced(kind: Kind): void {
    const before = this.isSynced();
    this.synced.add(kind);
    if (!before && this.isSynced()) this.onSynced();
  }

  upsert(kind: Kind, raw: unknown): void {
    const changed = new Set<string>();
    this.upsertInto(kind, raw, changed);
    this.emit(changed);
  }

  remove(kind: Kind, namespace: string, name: string): void {
    const changed = new Set<string>();
    this.removeInto(kind, serviceKey(namespace, name), changed);
    this.emit(changed);
  }

  /** Node changes are tagged "node:NAME" in a change set; Services are plain keys. */
  private emit(changed: Set<string>): void {
    const nodes = new Set<string>();
    const services = new Set<string>();
    for (const k of changed) {
      if (k.startsWith(NODE_TAG)) nodes.add(k.slice(NODE_TAG.length));
      else services.add(k);
    }
    if (nodes.size) this.onNodesChange(nodes);
    if (services.size) this.onChange(services);
  }

  /**
   * Several upserts and removals as one change (a manifest file that
   * changed): the controller hears about it once.
   */
  applyBatch(upserts: Array<{ kind: Kind; raw: unknown }>, removals: Array<{ kind: Kind; key: string }>): void {
    const changed = new Set<string>();
    for (const r of removals) this.removeInto(r.kind, r.key, changed);
    for (const u of upserts) this.upsertInto(u.kind, u.raw, changed);
    this.emit(changed);
  }

  /** Replace every object of a kind with this list (a re-list, or a manifest reload), read once, in order. */
  replace(kind: Kind, raws: Iterable<unknown>): void {
    const changed = new Set<string>();
    const seen = new Set<string>();
    for (const raw of raws) {
      const key = this.upsertInto(kind, raw, changed);
      if (key) seen.add(key);
    }
    const current = kind === 'Service' ? this.services : kind === 'Node' ? this.nodesByName : this.slices;
    for (const key of [...current.keys()]) if (!seen.has(key)) this.removeInto(kind, key, changed);
    this.emit(changed);
  }

  private upsertInto(kind: Kind, raw: unknown, changed: Set<string>): string | undefined {
    const key = metaKey(raw);
    if (kind === 'Node') return this.upsertNode(raw, key, changed);
    const parsed: ParseResult<Service | EndpointSlice> = kind === 'Service' ? parseService(raw) : parseEndpointSlice(raw);
    if (!parsed.ok) {
      this.onInvalid({ kind, object: parsed.object, reason: parsed.reason, message: parsed.message });
      // Keep the last valid version, if any: the key counts as seen.
      return key;
    }
    if (kind === 'Service') {
      const svc = parsed.value as Service;
      const k = serviceKey(svc.namespace, svc.name);
      const prevSvc = this.services.get(k);
      if (prevSvc && sameValue(prevSvc.value, svc)) return k;
      this.services.set(k, { value: svc });
      changed.add(k);
      return k;
    }
    const slice = parsed.value as EndpointSlice;
    const k = serviceKey(slice.namespace, slice.name);
    const prev = this.slices.get(k);
    if (prev && sameValue(prev.value, slice)) return k;
    if (prev) {
      const oldSvc = serviceKey(prev.value.namespace, prev.value.serviceName);
      this.slicesBySvc.get(oldSvc)?.delete(k);
      changed.add(oldSvc);
    }
    this.slices.set(k, { value: slice });
    const svcKey = serviceKey(slice.namespace, slice.serviceName);
    let set = this.slicesBySvc.get(svcKey);
    if (!set) this.slicesBySvc.set(svcKey, (set = new Set()));
    set.add(k);
    changed.add(svcKey);
    return k;
  }

  private upsertNode(raw: unknown, key: string | undefined, changed: Set<string>): string | undefined {
    const parsed = parseNode(raw);
    if (!parsed.ok) {
      this.onInvalid({ kind: 'Node', object: parsed.object.replace(/^Node default\//, 'Node '), reason: parsed.reason, message: parsed.message });
      return key === undefined ? undefined : nodeKey(key);
    }
    const node = parsed.value;
    const prev = this.nodesByName.get(node.name);
    if (prev && sameValue(prev.value, node)) return node.name;
    this.nodesByName.set(node.name, { value: node });
    changed.add(NODE_TAG + node.name);
    return node.name;
  }

  private removeInto(kind: Kind, key: string, changed: Set<string>): void {
    if (kind === 'Node') {
      if (this.nodesByName.delete(nodeKey(key))) changed.add(NODE_TAG + nodeKey(key));
      return;
    }
    if (kind === 'Service') {
      if (this.services.delete(key)) changed.add(key);
      return;
    }
    const prev = this.slices.get(key);
    if (!prev) return;
    this.slices.delete(key);
    const svcKey = serviceKey(prev.value.namespace, prev.value.serviceName);
    const set = this.slicesBySvc.get(svcKey);
    set?.delete(key);
    if (set && set.size === 0) this.slicesBySvc.delete(svcKey);
    changed.add(svcKey);
  }

  service(key: string): Service | undefined {
    return this.services.get(key)?.value;
  }

  slicesFor(key: string): EndpointSlice[] {
    const out: EndpointSlice[] = [];
    for (const k of this.slicesBySvc.get(key) ?? []) {
      const s = this.slices.get(k);
      if (s) out.push(s.value);
    }
    return out;
  }

  serviceKeys(): string[] {
    return [...this.services.keys()];
  }

  counts(): { services: number; slices: number; nodes: number } {
    return { services: this.services.size, slices: this.slices.size, nodes: this.nodesByName.size };
  }

  node(name: string): Node | undefined {
    return this.nodesByName.get(name)?.value;
  }

  /** Every Node of the cluster, by name order. */
  nodes(): Node[] {
    return [...this.nodesByName.values()].map((e) => e.value).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** InternalIP addresses of every Node (DSR peers, for example). */
  nodeInternalIPs(): string[] {
    return this.nodes().flatMap((n) => n.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.address));
  }
}
