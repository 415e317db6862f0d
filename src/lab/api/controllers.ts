// The controller jobs a cluster's kube-controller-manager would do, run inside the lab API on
// its own store events: EndpointSlices and Endpoints from pod labels for Services with a
// selector, EndpointSlices mirrored from hand-kept Endpoints, each Node's pod CIDR from the
// cluster CIDR (the range allocator), and emptying a namespace being deleted. Each runs
// debounced after the events that concern it and again after a failure.
import { SERVICE_NAME_LABEL, type EndpointSlice, type Service } from '../../model/k8s.ts';
import type { Logger } from '../../util/log.ts';
import { deriveEndpoints, deriveEndpointSlices, ENDPOINTS_MANAGED_LABEL, isManagedSlice, isMirroredSlice, mirrorEndpointSlices, type EndpointsObject, type LabPod } from '../workload.ts';
import { CidrSet } from './allocate.ts';
import { ApiError } from './errors.ts';
import type { Registry } from './registry.ts';
import { RESOURCES, resourceDef, type ResourceName } from './resources.ts';
import { decodeObject } from './schema.ts';
import type { Obj, StoreEvent } from './store.ts';
import { applyDefaults } from './strategy.ts';

export const DEFAULT_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

/** One debounced job: runs at most once at a time, again if asked while running, retried on failure. */
class Job {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private stopped = false;

  constructor(private readonly name: string, private readonly fn: () => Promise<void>, private readonly log: Logger, private readonly delayMs = 10) {}

  kick(delayMs = this.delayMs): void {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; void this.run(); }, delayMs);
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      await this.fn();
    } catch (err) {
      this.log.error({ controller: this.name, err: (err as Error).message }, 'controller failed; retrying in 1s');
      this.running = false;
      this.kick(1000);
      return;
    }
    this.running = false;
    if (this.again) { this.again = false; this.kick(); }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const ignoreMissing = (err: unknown) => { if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err; };

export interface ControllerOptions {
  log: Logger;
  /** kube-controller-manager's --cluster-cidr; absent: Nodes get no pod CIDR from the API. */
  clusterCIDR?: string;
  /** --node-cidr-mask-size (24 by default, as kube-controller-manager's for IPv4). */
  nodeCidrMaskSize?: number;
}

export class Controllers {
  private readonly jobs: Job[] = [];
  private readonly endpoints: Job;
  private readonly nodeIpam: Job | null;
  private readonly namespaces: Job;
  private cidrs: CidrSet | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly registry: Registry, private readonly o: ControllerOptions) {
    this.endpoints = new Job('endpoints', () => this.reconcileEndpoints(), o.log);
    this.namespaces = new Job('namespaces', () => this.reconcileNamespaces(), o.log);
    this.nodeIpam = o.clusterCIDR ? new Job('node-ipam', () => this.reconcileNodeCIDRs(), o.log) : null;
    this.jobs.push(this.endpoints, this.namespaces, ...(this.nodeIpam ? [this.nodeIpam] : []));
  }

  private get store() { return this.registry.store; }

  async start(): Promise<void> {
    for (const name of DEFAULT_NAMESPACES) {
      if (this.store.get(resourceDef('namespaces'), undefined, name)) continue;
      await this.registry.create(resourceDef('namespaces'), undefined, { metadata: { name } }).catch(ignoreMissing);
    }
    if (this.o.clusterCIDR) {
      this.cidrs = new CidrSet(this.o.clusterCIDR, this.o.nodeCidrMaskSize ?? 24);
      // After a restart the blocks in use are the ones the Nodes carry.
      for (const n of this.store.list(resourceDef('nodes'))) this.occupy(n);
    }
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
    for (const j of this.jobs) j.kick(0);
  }

  stop(): void {
    this.unsubscribe?.();
    for (const j of this.jobs) j.stop();
  }

  private onEvent(e: StoreEvent): void {
    const r: ResourceName = e.def.name;
    if (r === 'services' || r === 'pods' || r === 'endpoints' || r === 'endpointslices') this.endpoints.kick();
    if (r === 'namespaces' && e.object.metadata.deletionTimestamp) this.namespaces.kick();
    if (r === 'nodes' && this.cidrs) {
      if (e.type === 'DELETED') for (const c of e.object.spec?.podCIDRs ?? []) this.cidrs.release(c);
      else if (e.object.spec?.podCIDRs?.length) this.occupy(e.object);
      else this.nodeIpam?.kick();
    }
  }

  private occupy(node: Obj): void {
    for (const c of node.spec?.podCIDRs ?? []) {
      if (!this.cidrs!.occupy(c)) this.o.log.warn({ node: node.metadata.name, podCIDR: c, clusterCIDR: this.o.clusterCIDR }, 'node pod CIDR is outside the cluster CIDR; not tracked');
    }
  }

  /** Gives each Node without a pod CIDR the next free block (kube-controller-manager's range allocator). */
  private async reconcileNodeCIDRs(): Promise<void> {
    const def = resourceDef('nodes');
    for (const node of this.store.list(def)) {
      if (node.spec?.podCIDRs?.length || node.metadata.deletionTimestamp) continue;
      const cidr = this.cidrs!.allocateNext();
      if (!cidr) {
        this.o.log.error({ node: node.metadata.name, clusterCIDR: this.o.clusterCIDR }, 'CIDRNotAvailable: no pod CIDR left in the cluster CIDR for this node');
        continue;
      }
      try {
        await this.registry.patch(def, undefined, node.metadata.name, 'merge', { metadata: { resourceVersion: node.metadata.resourceVersion }, spec: { podCIDR: cidr, podCIDRs: [cidr] } }, undefined);
        this.o.log.info({ node: node.metadata.name, podCIDR: cidr }, 'allocated the node\'s pod CIDR');
      } catch (err) {
        this.cidrs!.release(cidr);
        ignoreMissing(err);
        this.nodeIpam!.kick();
      }
    }
  }

  /** Keeps the derived EndpointSlices and Endpoints equal to what Services, Pods and hand-kept Endpoints say. */
  private async reconcileEndpoints(): Promise<void> {
    const sliceDef = resourceDef('endpointslices');
    const epDef = resourceDef('endpoints');
    const services = this.store.list(resourceDef('services')) as unknown as Service[];
    const pods = this.store.list(resourceDef('pods')) as unknown as LabPod[];
    const endpoints = this.store.list(epDef) as unknown as EndpointsObject[];
    const derived = deriveEndpointSlices(services, pods);
    const desiredSlices = [...derived, ...mirrorEndpointSlices(services, endpoints.filter((e) => e.metadata.labels?.[ENDPOINTS_MANAGED_LABEL] !== 'true'))];
    const haveSlices = (this.store.list(sliceDef) as unknown as EndpointSlice[]).filter((s) => isManagedSlice(s) || isMirroredSlice(s));
    await this.sync(sliceDef.name, desiredSlices as unknown as Obj[], haveSlices as unknown as Obj[], (o) => ({ l: o.metadata.labels, a: o.addressType, e: o.endpoints, p: o.ports }));
    const desiredEndpoints = deriveEndpoints(derived);
    // A Service's Endpoints are the controller's when the Service has a selector (kube's endpoints controller overwrites them).
    const selectorServices = new Set(derived.map((s) => `${s.metadata.namespace}/${s.metadata.labels![SERVICE_NAME_LABEL]}`));
    const haveEndpoints = endpoints.filter((e) => e.metadata.labels?.[ENDPOINTS_MANAGED_LABEL] === 'true' || selectorServices.has(`${e.metadata.namespace}/${e.metadata.name}`));
    await this.sync(epDef.name, desiredEndpoints as unknown as Obj[], haveEndpoints as unknown as Obj[], (o) => ({ l: o.metadata.labels, s: o.subsets }));
  }

  /** Creates, replaces and deletes objects of one resource until `have` equals `desired` by `content`. */
  private async sync(resource: ResourceName, desired: Obj[], have: Obj[], content: (o: Obj) => unknown): Promise<void> {
    const def = resourceDef(resource);
    const key = (o: Obj) => `${o.metadata.namespace}/${o.metadata.name}`;
    const existing = new Map(have.map((o) => [key(o), o]));
    // Compared as they will be stored: decoded (nulls dropped) and defaulted.
    const normalized = desired.map((d) => {
      const v = decodeObject(def.model, d).value as Obj;
      applyDefaults(def, v);
      return v;
    });
    for (const d of normalized) {
      const h = existing.get(key(d));
      existing.delete(key(d));
      if (h && same(content(h), content(d))) continue;
      const body = { ...d, metadata: { ...d.metadata, ...(h ? { resourceVersion: h.metadata.resourceVersion } : {}) } };
      if (h) await this.registry.update(def, d.metadata.namespace, d.metadata.name, body, undefined).catch(ignoreMissing);
      else if (this.store.get(resourceDef('namespaces'), undefined, d.metadata.namespace!)?.metadata.deletionTimestamp === undefined) {
        await this.registry.create(def, d.metadata.namespace, body).catch(ignoreMissing);
      }
    }
    for (const h of existing.values()) await this.registry.delete(def, h.metadata.namespace, h.metadata.name).catch(ignoreMissing);
  }

  /** Empties each namespace being deleted, then removes it. */
  private async reconcileNamespaces(): Promise<void> {
    for (const ns of this.store.list(resourceDef('namespaces'))) {
      if (!ns.metadata.deletionTimestamp) continue;
      for (const def of RESOURCES.filter((r) => r.namespaced)) await this.registry.deleteCollection(def, ns.metadata.name, [], []);
      const left = RESOURCES.filter((r) => r.namespaced).reduce((n, r) => n + this.store.list(r, ns.metadata.name).length, 0);
      if (left === 0) await this.registry.finalizeNamespace(ns.metadata.name);
      else this.namespaces.kick(500);
    }
  }
}
