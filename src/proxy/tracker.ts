// Change tracking for Services and EndpointSlices, kept apart from rule rendering (as kube-proxy
// keeps its ServiceChangeTracker/EndpointsChangeTracker apart from syncProxyRules). Pure data:
// events go in, and `take()` hands out the set of "ns/name" keys whose objects really changed
// since the last take. A relist that returns the same objects marks nothing, so the next sync
// writes nothing.
import { hash } from 'node:crypto';
import type { ClusterIndex, ClusterState, EndpointSlice, Service, ServiceCIDR, ServiceObjects } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { ClusterStore } from '../rules/cluster-index.ts';
import { objectLabel, prop } from '../model/json.ts';

export interface Changes {
  /** "ns/name" of every service whose Service or EndpointSlices changed. */
  services: Set<string>;
  serviceEvents: number;
  endpointEvents: number;
  /** Oldest `endpoints.kubernetes.io/last-change-trigger-time` among changed slices (ms), for latency. */
  triggerTimes: number[];
}

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
export const TRIGGER_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

/** JSON with sorted keys: the API's typed list objects and raw watch JSON compare equal. */
export function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
}

/**
 * Plain JSON copy of typed client objects (they carry Dates and class prototypes). Objects that
 * are already plain (manifests) are kept as they are: copying 10k services costs memory.
 */
function plain<T>(o: T): T {
  if (Object.getPrototypeOf(o) === Object.prototype) return o;
  return JSON.parse(JSON.stringify(o)) as T;
}

function metaKey(raw: unknown): string | null {
  const m = prop(raw, 'metadata');
  const name = prop(m, 'name');
  if (typeof name !== 'string' || !NAME.test(name)) return null;
  const ns = prop(m, 'namespace') ?? 'default';
  if (typeof ns !== 'string' || !NAME.test(ns)) return null;
  return `${ns}/${name}`;
}

/** A fingerprint, or null for an object too odd to read (nested deeper than the stack allows). */
function fingerprintOf<T>(obj: T, fp: (o: T) => string): string | null {
  try {
    return fp(obj);
  } catch {
    return null;
  }
}

// Digests, not the canonical text itself: at 10k services the texts alone held ~10 MB.
const digest = (text: string) => hash('sha1', text, 'base64');

/** What of a Service matters to rules: resourceVersion and managedFields churn is ignored. */
function serviceFingerprint(s: Service): string {
  return digest(canonical({ l: s.metadata.labels, spec: s.spec, st: s.status }));
}

function sliceFingerprint(s: EndpointSlice): string {
  return digest(canonical({ l: s.metadata.labels, a: s.addressType, e: s.endpoints, p: s.ports }));
}

/** A relist with more changed objects than this walks them all. */
const RELIST_FEW = 16;

/** src: the object as handed in; the same object again (a cached manifest) is unchanged. */
interface Entry<T> { obj: T; fp: string; owner: string; src: T }

export class ChangeTracker implements ClusterIndex {
  private readonly services = new Map<string, Entry<Service>>();
  private readonly slices = new Map<string, Entry<EndpointSlice>>();
  private dirty = new Set<string>();
  private serviceEvents = 0;
  private endpointEvents = 0;
  private triggers: number[] = [];
  private snapshotCache: ClusterState | null = null;
  private serviceCIDRs: ServiceCIDR[] = [];
  private serviceCIDRKey = '';
  /** The same objects grouped per service, handed to the renderer as this tracker's index. */
  private readonly store = new ClusterStore();
  private readonly srcKey = new WeakMap<object, string>();
  /** Per kind: the last relist, when every object of it is stored as handed in (replaceFew). */
  private readonly lastList = new Map<string, readonly object[] | null>();

  constructor(private readonly warn: (object: string, reason: string) => void = () => {}) {}

  get pending(): number {
    return this.dirty.size;
  }

  upsertService(raw: Service): boolean {
    this.lastList.delete('Service'); // a single change: the next relist walks every object
    const key = metaKey(raw);
    if (!key) {
      this.warn(objectLabel('Service', prop(raw, 'metadata')), 'invalid metadata.name or namespace; skipped');
      return false;
    }
    const old = this.services.get(key);
    if (old && old.src === raw) return false;
    const obj = plain(raw);
    const fp = fingerprintOf(obj, serviceFingerprint);
    if (fp === null) { this.warn(objectLabel('Service', prop(raw, 'metadata')), 'cannot be read (nested too deeply); skipped'); return false; }
    if (old && old.fp === fp) { old.src = raw; this.srcKey.set(raw, key); return false; }
    this.services.set(key, { obj, fp, owner: key, src: raw });
    this.store.upsertService(obj);
    this.srcKey.set(raw, key);
    this.mark(key);
    this.serviceEvents++;
    return true;
  }

  deleteService(raw: Service): boolean {
    this.lastList.delete('Service'); // a single change: the next relist walks every object
    const key = metaKey(raw);
    const old = key ? this.services.get(key) : undefined;
    if (!key || !old) return false;
    this.services.delete(key);
    this.store.deleteService(old.obj);
    this.mark(key);
    this.serviceEvents++;
    return true;
  }

  upsertSlice(raw: EndpointSlice): boolean {
    this.lastList.delete('EndpointSlice'); // a single change: the next relist walks every object
    const key = metaKey(raw);
    const svc = prop(prop(prop(raw, 'metadata'), 'labels'), SERVICE_NAME_LABEL);
    const owner = key && typeof svc === 'string' && NAME.test(svc) ? `${key.split('/')[0]}/${svc}` : null;
    if (!key || !owner) {
      this.warn(objectLabel('EndpointSlice', prop(raw, 'metadata')), `invalid name or missing ${SERVICE_NAME_LABEL} label; skipped`);
      return false;
    }
    const old = this.slices.get(key);
    if (old && old.src === raw) return false;
    const obj = plain(raw);
    const fp = fingerprintOf(obj, sliceFingerprint);
    if (fp === null) { this.warn(objectLabel('EndpointSlice', prop(raw, 'metadata')), 'cannot be read (nested too deeply); skipped'); return false; }
    if (old && old.fp === fp && old.owner === owner) { old.src = raw; this.srcKey.set(raw, key); return false; }
    if (old && old.owner !== owner) { this.mark(old.owner); this.store.deleteSlice(old.obj); }
    this.slices.set(key, { obj, fp, owner, src: raw });
    this.store.upsertSlice(obj);
    this.srcKey.set(raw, key);
    this.mark(owner);
    this.endpointEvents++;
    const trigger = prop(prop(obj.metadata, 'annotations'), TRIGGER_ANNOTATION);
    const t = typeof trigger === 'string' ? Date.parse(trigger) : NaN;
    if (Number.isFinite(t)) this.triggers.push(t);
    return true;
  }

  deleteSlice(raw: EndpointSlice): boolean {
    this.lastList.delete('EndpointSlice'); // a single change: the next relist walks every object
    const key = metaKey(raw);
    const old = key ? this.slices.get(key) : undefined;
    if (!key || !old) return false;
    this.slices.delete(key);
    this.store.deleteSlice(old.obj);
    this.mark(old.owner);
    this.endpointEvents++;
    return true;
  }

  /**
   * A complete listing: objects not in it are deleted; unchanged objects mark nothing. Two
   * objects of the same kind and name (say, in two manifest files): the later one wins, with a
   * warning, as `knet rules` renders them.
   */
  replaceAll(services: Service[], slices: EndpointSlice[]): void {
    this.replaceKind('Service', services, this.services, (o) => this.upsertService(o), (o) => this.deleteService(o));
    this.replaceKind('EndpointSlice', slices, this.slices, (o) => this.upsertSlice(o), (o) => this.deleteSlice(o));
  }

  private replaceKind<T extends object>(kind: string, list: readonly T[], entries: Map<string, Entry<T>>, upsert: (o: T) => boolean, remove: (o: T) => boolean): void {
    if (this.replaceFew(kind, list, entries, upsert)) return;
    const latest = new Map<string, T>();
    let clean = true;
    for (const o of list) {
      // An object handed in before (a cached manifest file) is known by reference: no validation.
      const key = this.srcKey.get(o) ?? metaKey(o);
      if (key === null) { upsert(o); clean = false; continue; } // warns about the invalid name
      if (latest.has(key)) { this.warn(objectLabel(kind, prop(o, 'metadata')), `duplicate ${kind}; the later one wins`); clean = false; }
      latest.set(key, o);
    }
    for (const [key, o] of latest) {
      if (entries.get(key)?.src === o) continue;
      upsert(o);
      if (entries.get(key)?.src !== o) clean = false; // skipped (not stored as handed in)
    }
    for (const [key, e] of [...entries]) if (!latest.has(key)) remove(e.obj);
    this.lastList.set(kind, clean ? [...list] : null);
  }

  /**
   * A relist that differs from the last one only in a few objects at the same places, each with
   * its old name (a re-read manifest file whose other objects are the cached ones): only those
   * are upserted. Taken only when the last list was clean (every object stored as handed in: no
   * invalid name, no duplicate, none skipped), so the result is the full walk's. Why: the full
   * walk over 20k objects took 20-30 ms of a 10k-service change in the proxy (scripts/bench/proxy).
   * Sources hand in new objects for changes, never one renamed in place (the full walk would
   * key such an object by its old name).
   */
  private replaceFew<T extends object>(kind: string, list: readonly T[], entries: Map<string, Entry<T>>, upsert: (o: T) => boolean): boolean {
    const last = this.lastList.get(kind) as readonly T[] | null | undefined;
    if (!last || last.length !== list.length) return false;
    const changed: number[] = [];
    for (let i = 0; i < list.length; i++) {
      if (list[i] === last[i]) continue;
      if (changed.length === RELIST_FEW) return false;
      changed.push(i);
    }
    const keys: string[] = [];
    for (const i of changed) {
      const key = metaKey(list[i]!);
      if (key === null || key !== this.srcKey.get(last[i]!)) return false;
      keys.push(key);
    }
    let clean = true;
    changed.forEach((i, k) => {
      upsert(list[i]!);
      if (entries.get(keys[k]!)?.src !== list[i]) clean = false;
    });
    this.lastList.set(kind, clean ? [...list] : null);
    return true;
  }

  private mark(key: string): void {
    this.dirty.add(key);
    this.snapshotCache = null;
  }

  keys(): Iterable<string> {
    return this.store.keys();
  }

  get(key: string): ServiceObjects | undefined {
    return this.store.get(key);
  }

  /**
   * Everything known now, for the renderer, which reads it through the index (this tracker).
   * The plain lists are built only if someone asks for them.
   */
  snapshot(): ClusterState {
    if (!this.snapshotCache) {
      const services = this.services;
      const slices = this.slices;
      let svcList: Service[] | null = null;
      let sliceList: EndpointSlice[] | null = null;
      this.snapshotCache = {
        get services() { return (svcList ??= [...services.values()].map((e) => e.obj)); },
        get endpointSlices() { return (sliceList ??= [...slices.values()].map((e) => e.obj)); },
        serviceCIDRs: this.serviceCIDRs,
        index: this,
      };
    }
    return this.snapshotCache;
  }

  /**
   * The cluster's ServiceCIDR objects (the complete set); true when their ranges changed. They
   * belong to no service: a data path that uses them (nftables) sees them in the snapshot.
   */
  setServiceCIDRs(list: ServiceCIDR[]): boolean {
    // Kept as sent (the renderer validates each range and warns); only their names and ranges
    // decide whether anything changed, whatever their shape.
    const key = list.map((o) => JSON.stringify([prop(prop(o, 'metadata'), 'name') ?? null, prop(prop(o, 'spec'), 'cidrs') ?? null])).sort().join('\n');
    if (key === this.serviceCIDRKey) return false;
    this.serviceCIDRKey = key;
    this.serviceCIDRs = [...list];
    this.snapshotCache = null;
    return true;
  }

  /** Hands out what changed since the last take and starts a new batch. */
  take(): Changes {
    const out: Changes = { services: this.dirty, serviceEvents: this.serviceEvents, endpointEvents: this.endpointEvents, triggerTimes: this.triggers };
    this.dirty = new Set();
    this.serviceEvents = 0;
    this.endpointEvents = 0;
    this.triggers = [];
    return out;
  }

  /** Puts changes back after a failed sync so the next one covers them too. */
  restore(c: Changes): void {
    for (const k of c.services) this.dirty.add(k);
    this.triggers.push(...c.triggerTimes);
  }
}
