// The lab API's object store: every object under /registry/ kept in memory, filled from the
// key-value store at start and kept current by its watch (the etcd revision is each object's
// resourceVersion), with a bounded history so watches can resume from a resourceVersion.
// Writes are compare-and-swap on the stored revision, so a stale update is a 409 Conflict even
// with several writers. A value that is not a well-typed object (someone else wrote the key)
// is skipped with a warning naming the key, never fatal.
import type { Logger } from '../../util/log.ts';
import { alreadyExists, ApiError, conflict, notFound } from './errors.ts';
import { TooLargeError, type KvBackend, type KvEvent } from './kv.ts';
import { parseRegistryKey, registryKey, REGISTRY_PREFIX, RESOURCES, type ResourceDef, type ResourceName } from './resources.ts';
import { decodeObject } from './schema.ts';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  [k: string]: unknown;
}

export interface Obj { apiVersion?: string; kind?: string; metadata: ObjectMeta; [k: string]: any }

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
/** A change; `previous` is the object as it was before (for MODIFIED and DELETED). */
export interface StoreEvent { type: EventType; def: ResourceDef; object: Obj; previous?: Obj; rv: number }

export interface StoreOptions {
  log: Logger;
  /** Events kept for watches that resume from a resourceVersion. */
  historySize?: number;
}

export class ObjectStore {
  private readonly objects = new Map<ResourceName, Map<string, Obj>>(RESOURCES.map((r) => [r.name, new Map()]));
  private readonly history: StoreEvent[] = [];
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly waiters: Array<{ rv: number; resolve: () => void }> = [];
  private watch: { cancel(): Promise<void> } | null = null;
  /** Watches may resume from any resourceVersion at or after this one. */
  private floor = 0;
  revision = 0;

  constructor(private readonly kv: KvBackend, private readonly o: StoreOptions) {}

  async start(): Promise<void> {
    const all = await this.kv.list(REGISTRY_PREFIX);
    for (const kv of all.kvs) {
      const parsed = this.parse(kv.key, kv.value, kv.modRevision);
      if (parsed) this.objects.get(parsed.def.name)!.set(kv.key, parsed.object);
    }
    this.revision = all.revision;
    this.floor = all.revision;
    this.watch = await this.kv.watch(REGISTRY_PREFIX, all.revision, (events, revision) => this.apply(events, revision));
  }

  async stop(): Promise<void> {
    await this.watch?.cancel().catch(() => undefined);
    this.watch = null;
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  /** The object a key's value stands for, or null (with a warning) if it is not one. */
  private parse(key: string, value: string, modRevision: number): { def: ResourceDef; object: Obj } | null {
    const where = parseRegistryKey(key);
    if (!where) return null;
    let raw: unknown;
    try {
      raw = JSON.parse(value);
    } catch (err) {
      this.o.log.warn({ key, revision: modRevision, err: (err as Error).message }, 'skipping a stored value that is not JSON');
      return null;
    }
    let object: Obj;
    try {
      object = decodeObject(where.def.model, raw).value as Obj;
    } catch (err) {
      this.o.log.warn({ key, revision: modRevision, err: (err as ApiError).message }, `skipping a stored value that is not a ${where.def.kind}`);
      return null;
    }
    // The key names the object, whatever the value says.
    object.metadata = { ...(object.metadata ?? {}), name: where.name, resourceVersion: String(modRevision) };
    if (where.namespace !== undefined) object.metadata.namespace = where.namespace;
    else delete object.metadata.namespace;
    object.apiVersion = where.def.group ? `${where.def.group}/${where.def.version}` : where.def.version;
    object.kind = where.def.kind;
    return { def: where.def, object };
  }

  private apply(events: KvEvent[], revision: number): void {
    for (const e of events) {
      const where = parseRegistryKey(e.key);
      if (!where) continue;
      const map = this.objects.get(where.def.name)!;
      const before = map.get(e.key);
      const parsed = e.type === 'put' ? this.parse(e.key, e.value, e.modRevision) : null;
      if (parsed) {
        map.set(e.key, parsed.object);
        this.record(before ? { type: 'MODIFIED', def: where.def, object: parsed.object, previous: before, rv: e.modRevision } : { type: 'ADDED', def: where.def, object: parsed.object, rv: e.modRevision });
      } else if (before) {
        // Deleted, or overwritten with something unreadable: either way it is gone.
        map.delete(e.key);
        this.record({ type: 'DELETED', def: where.def, object: { ...before, metadata: { ...before.metadata, resourceVersion: String(e.modRevision) } }, previous: before, rv: e.modRevision });
      }
      if (e.modRevision > this.revision) this.revision = e.modRevision;
    }
    if (revision > this.revision) this.revision = revision;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i]!.rv <= this.revision) this.waiters.splice(i, 1)[0]!.resolve();
    }
  }

  private record(e: StoreEvent): void {
    this.history.push(e);
    const max = this.o.historySize ?? 20_000;
    if (this.history.length > max) {
      const dropped = this.history.splice(0, this.history.length - max);
      this.floor = dropped[dropped.length - 1]!.rv;
    }
    for (const l of this.listeners) l(e);
  }

  subscribe(listener: (e: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Events after `rv` (oldest first), or null when they are no longer kept (410 Gone). */
  eventsAfter(rv: number): StoreEvent[] | null {
    if (rv < this.floor) return null;
    let i = this.history.length;
    while (i > 0 && this.history[i - 1]!.rv > rv) i--;
    return this.history.slice(i);
  }

  get oldestResumable(): number {
    return this.floor;
  }

  get(def: ResourceDef, namespace: string | undefined, name: string): Obj | undefined {
    return this.objects.get(def.name)!.get(registryKey(def, namespace, name));
  }

  list(def: ResourceDef, namespace?: string): Obj[] {
    const all = [...this.objects.get(def.name)!.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  waitRevision(rv: number): Promise<void> {
    if (rv <= this.revision) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ rv, resolve }));
  }

  private async written(def: ResourceDef, key: string, revision: number, fallback: Obj): Promise<Obj> {
    await this.waitRevision(revision);
    return this.objects.get(def.name)!.get(key) ?? { ...fallback, metadata: { ...fallback.metadata, resourceVersion: String(revision) } };
  }

  private serialize(obj: Obj): string {
    const stored = { ...obj, metadata: { ...obj.metadata } };
    delete stored.metadata.resourceVersion;
    return JSON.stringify(stored);
  }

  private async write<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TooLargeError) throw new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: the object is larger than the store accepts (${err.message})`);
      throw err;
    }
  }

  async create(def: ResourceDef, obj: Obj): Promise<Obj> {
    const key = registryKey(def, obj.metadata.namespace, obj.metadata.name);
    const res = await this.write(() => this.kv.create(key, this.serialize(obj)));
    if (!res.ok) throw alreadyExists(def, obj.metadata.name);
    return this.written(def, key, res.revision, obj);
  }

  /** Replaces the object stored at revision `expected` (else 409 Conflict, or 404 if gone). */
  async update(def: ResourceDef, obj: Obj, expected: number): Promise<Obj> {
    const key = registryKey(def, obj.metadata.namespace, obj.metadata.name);
    const res = await this.write(() => this.kv.update(key, this.serialize(obj), expected));
    if (!res.ok) {
      if (!this.get(def, obj.metadata.namespace, obj.metadata.name)) throw notFound(def, obj.metadata.name);
      throw conflict(def, obj.metadata.name);
    }
    return this.written(def, key, res.revision, obj);
  }

  async remove(def: ResourceDef, current: Obj): Promise<Obj> {
    const key = registryKey(def, current.metadata.namespace, current.metadata.name);
    const res = await this.kv.remove(key, Number(current.metadata.resourceVersion));
    if (!res.ok) {
      if (!this.get(def, current.metadata.namespace, current.metadata.name)) throw notFound(def, current.metadata.name);
      throw conflict(def, current.metadata.name);
    }
    await this.waitRevision(res.revision);
    return { ...current, metadata: { ...current.metadata, resourceVersion: String(res.revision) } };
  }
}
