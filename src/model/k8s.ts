// The subset of Kubernetes API objects knet reads, as plain JSON shapes (what the API server,
// kubectl -o yaml and manifests carry). Converters and validation live with their consumers.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  uid?: string;
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface ServiceSpec {
  type?: string;
  clusterIP?: string;
  clusterIPs?: string[];
  ipFamilies?: string[];
  externalIPs?: string[];
  ports?: ServicePortSpec[];
  selector?: Record<string, string>;
  sessionAffinity?: string;
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
  externalTrafficPolicy?: string;
  internalTrafficPolicy?: string;
  healthCheckNodePort?: number;
  loadBalancerIP?: string;
  loadBalancerSourceRanges?: string[];
  externalName?: string;
}

export interface Service {
  apiVersion?: string;
  kind?: 'Service';
  metadata: ObjectMeta;
  spec?: ServiceSpec;
  status?: { loadBalancer?: { ingress?: Array<{ ip?: string; hostname?: string; ipMode?: string }> } };
}

export interface EndpointConditions {
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
}

export interface EndpointSliceEndpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  hostname?: string;
  nodeName?: string;
  zone?: string;
  hints?: unknown;
}

export interface EndpointSlicePort {
  name?: string | null;
  protocol?: string;
  port?: number | null;
  appProtocol?: string;
}

export interface EndpointSlice {
  apiVersion?: string;
  kind?: 'EndpointSlice';
  metadata: ObjectMeta;
  addressType?: string;
  endpoints?: EndpointSliceEndpoint[] | null;
  ports?: EndpointSlicePort[] | null;
}

export interface Node {
  apiVersion?: string;
  kind?: 'Node';
  metadata: ObjectMeta;
  spec?: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean; taints?: Array<{ key: string; effect?: string }> };
  status?: {
    addresses?: Array<{ type: string; address: string }>;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string; lastHeartbeatTime?: string }>;
  };
}

/** networking.k8s.io/v1 ServiceCIDR: a range cluster IPs are allocated from. */
export interface ServiceCIDR {
  apiVersion?: string;
  kind?: 'ServiceCIDR';
  metadata: ObjectMeta;
  spec?: { cidrs?: string[] };
}

/** What a proxy renders from: every Service and EndpointSlice it knows. */
export interface ClusterState {
  services: Service[];
  endpointSlices: EndpointSlice[];
  /** The cluster's ServiceCIDRs (nftables mode drops traffic to their unallocated addresses). */
  serviceCIDRs?: ServiceCIDR[];
  /**
   * The same objects grouped per service, when the holder keeps them that way (the proxy's
   * change tracker): the renderer then looks up only the services that changed.
   */
  index?: ClusterIndex;
}

/** A Service ("ns/name") and the EndpointSlices labelled with its name. */
export interface ServiceObjects {
  service: Service | undefined;
  slices: readonly EndpointSlice[];
}

export interface ClusterIndex {
  /** Every "ns/name" that has a Service or an EndpointSlice, in any order. */
  keys(): Iterable<string>;
  get(key: string): ServiceObjects | undefined;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
