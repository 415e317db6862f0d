// Services and EndpointSlices grouped per "ns/name": the unit the renderer re-renders. Keys are
// the objects' raw names (validation happens when a service is modelled), so every object lands
// somewhere and a bad one is reported with its service.
import type { ClusterIndex, ClusterState, EndpointSlice, Service, ServiceObjects } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { describe, prop } from '../model/json.ts';

/** A key part from a name of any type: strings as they are, anything else as its (short) JSON. */
const part = (v: unknown, fallback: string) => (v === undefined || v === null ? fallback : typeof v === 'string' ? v : describe(v, 60));

export function serviceKey(meta: unknown): string {
  return `${part(prop(meta, 'namespace'), 'default')}/${part(prop(meta, 'name'), '')}`;
}

/** The service a slice belongs to; "ns/" (no service) for a slice without the label. */
export function sliceOwnerKey(slice: EndpointSlice): string {
  const meta = prop(slice, 'metadata');
  const owner = prop(prop(meta, 'labels'), SERVICE_NAME_LABEL);
  return `${part(prop(meta, 'namespace'), 'default')}/${typeof owner === 'string' ? owner : ''}`;
}

export interface IndexedCluster {
  index: ClusterIndex;
  /** Services that share a name with a later one in the input (the later one wins). */
  duplicates: Service[];
  /** EndpointSlices that share a name with a later one (the later one wins, as in the proxy). */
  duplicateSlices: EndpointSlice[];
}

/** Groups a plain object list; O(objects). Holders that keep objects grouped pass their own index. */
export function indexCluster(c: ClusterState): IndexedCluster {
  const groups = new Map<string, { service: Service | undefined; slices: EndpointSlice[] }>();
  const group = (k: string) => {
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { service: undefined, slices: [] }));
    return g;
  };
  const duplicates: Service[] = [];
  for (const s of c.services) {
    const g = group(serviceKey(prop(s, 'metadata')));
    if (g.service) duplicates.push(s);
    g.service = s;
  }
  // A slice is known by its own "ns/name", as the proxy's tracker knows it: a later slice of the
  // same name replaces the earlier one, whichever service either belongs to.
  const last = new Map<string, number>();
  c.endpointSlices.forEach((s, i) => last.set(serviceKey(prop(s, 'metadata')), i));
  const duplicateSlices: EndpointSlice[] = [];
  c.endpointSlices.forEach((s, i) => {
    if (last.get(serviceKey(prop(s, 'metadata'))) !== i) duplicateSlices.push(s);
    else group(sliceOwnerKey(s)).slices.push(s);
  });
  return { index: { keys: () => groups.keys(), get: (k) => groups.get(k) }, duplicates, duplicateSlices };
}

/** A mutable grouped store, for holders that change a few objects at a time (benchmarks, tests). */
export class ClusterStore implements ClusterIndex {
  private readonly groups = new Map<string, { service: Service | undefined; slices: Map<string, EndpointSlice> }>();
  private readonly views = new Map<string, ServiceObjects>();

  keys(): Iterable<string> {
    return this.groups.keys();
  }

  get(key: string): ServiceObjects | undefined {
    const g = this.groups.get(key);
    if (!g) return undefined;
    let v = this.views.get(key);
    if (!v) this.views.set(key, (v = { service: g.service, slices: [...g.slices.values()] }));
    return v;
  }

  /** Returns the service key that changed. */
  upsertService(s: Service): string {
    const k = serviceKey(prop(s, 'metadata'));
    this.group(k).service = s;
    this.views.delete(k);
    return k;
  }

  deleteService(s: Service): string {
    const k = serviceKey(prop(s, 'metadata'));
    const g = this.groups.get(k);
    if (g) { g.service = undefined; this.views.delete(k); this.prune(k); }
    return k;
  }

  upsertSlice(s: EndpointSlice): string {
    const k = sliceOwnerKey(s);
    this.group(k).slices.set(serviceKey(prop(s, 'metadata')), s);
    this.views.delete(k);
    return k;
  }

  deleteSlice(s: EndpointSlice): string {
    const k = sliceOwnerKey(s);
    const g = this.groups.get(k);
    if (g && g.slices.delete(serviceKey(prop(s, 'metadata')))) { this.views.delete(k); this.prune(k); }
    return k;
  }

  /** The objects as plain lists (for callers that want a ClusterState). */
  state(): ClusterState {
    const services: Service[] = [];
    const endpointSlices: EndpointSlice[] = [];
    for (const g of this.groups.values()) {
      if (g.service) services.push(g.service);
      endpointSlices.push(...g.slices.values());
    }
    return { services, endpointSlices, index: this };
  }

  private group(k: string) {
    let g = this.groups.get(k);
    if (!g) this.groups.set(k, (g = { service: undefined, slices: new Map() }));
    return g;
  }

  private prune(k: string): void {
    const g = this.groups.get(k);
    if (g && !g.service && g.slices.size === 0) this.groups.delete(k);
  }
}
