// What a proxy data source delivers (the Kubernetes API through informers, or a manifest
// directory). Every data path (iptables today, a userspace proxy later) consumes the same
// events through the ChangeTracker, so sources know nothing about rules.
import type { EndpointSlice, Node, Service, ServiceCIDR } from '../model/k8s.ts';

export interface SourceHandler {
  upsertService(svc: Service): void;
  deleteService(svc: Service): void;
  upsertSlice(slice: EndpointSlice): void;
  deleteSlice(slice: EndpointSlice): void;
  /** The complete current set (a relist, or a re-read manifest directory). */
  replaceAll(services: Service[], slices: EndpointSlice[]): void;
  /** The node object this proxy runs on (node IPs, podCIDR, deletion/eligibility). */
  node?(node: Node | null): void;
  /** The cluster's ServiceCIDR objects, all of them, whenever they change. */
  serviceCIDRs?(list: ServiceCIDR[]): void;
  /** Services and slices have been listed once: the first sync may run. */
  synced(): void;
  warn(object: string, reason: string): void;
}

export interface ProxySource {
  start(h: SourceHandler): Promise<void>;
  stop(): Promise<void>;
}
