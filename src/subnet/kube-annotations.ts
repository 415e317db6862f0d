// Pure: flannel's kube subnet manager layout on Node objects, so knet nodes and flannel nodes
// in one cluster read each other. A node's subnet is its spec.podCIDRs' IPv4 entry (else
// spec.podCIDR); what peers need to reach it is published as annotations under a prefix
// (default flannel.alpha.coreos.com/): backend-type, backend-data (the backend's lease data
// as compact JSON), public-ip, and kube-subnet-manager "true", which marks a node whose
// annotations are meant to be read. public-ip-overwrite, set by an operator, replaces the
// public IP a node publishes. Every value read from a Node is validated here.
import { type Cidr, formatCidr, isIPv4, parseCidr } from './cidr.ts';
import type { Lease, LeaseAttrs } from './lease.ts';
import type { Node } from '../model/k8s.ts';

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function assertNodeName(name: string, what = 'node name'): void {
  if (typeof name !== 'string' || !NODE_NAME.test(name)) throw new Error(`invalid ${what} ${JSON.stringify(name)}: must be a DNS subdomain (lower-case letters, digits, "-" and ".")`);
}

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';

export interface AnnotationNames {
  kubeSubnetManager: string;
  backendData: string;
  backendV6Data: string;
  backendType: string;
  publicIP: string;
  publicIPv6: string;
  publicIPOverwrite: string;
  publicIPv6Overwrite: string;
}

/**
 * Annotation names under `prefix` as flannel forms them: at most one "/"; without one, "/" is
 * appended; a prefix not ending in "/" or "-" gets "-" (so "example.com/net" gives
 * "example.com/net-public-ip").
 */
export function annotationNames(prefix: string = DEFAULT_ANNOTATION_PREFIX): AnnotationNames {
  if (typeof prefix !== 'string') throw new Error('annotation prefix must be a string');
  const slashes = prefix.split('/').length - 1;
  if (slashes > 1) throw new Error(`invalid --kube-annotation-prefix ${JSON.stringify(prefix)}: it can contain at most one slash`);
  let p = slashes === 0 ? `${prefix}/` : prefix;
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  if (!/^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new Error(`invalid --kube-annotation-prefix ${JSON.stringify(prefix)}: it must look like fqdn/[0-9a-z-_]*`);
  }
  return {
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    backendType: `${p}backend-type`,
    publicIP: `${p}public-ip`,
    publicIPv6: `${p}public-ipv6`,
    publicIPOverwrite: `${p}public-ip-overwrite`,
    publicIPv6Overwrite: `${p}public-ipv6-overwrite`,
  };
}

/** Go's json.Marshal of the backend data: compact JSON, "null" when there is none. */
export function backendDataText(data: unknown): string {
  return data === undefined || data === null ? 'null' : JSON.stringify(data);
}

const annotationsOf = (node: Node): Record<string, unknown> => (node.metadata?.annotations ?? {}) as Record<string, unknown>;

/** The node's IPv4 pod subnet, null when none is assigned yet; throws on a malformed value. */
export function nodePodSubnet(node: Node): Cidr | null {
  const spec = node.spec ?? {};
  const list = spec.podCIDRs;
  if (list !== undefined && list !== null && !Array.isArray(list)) throw new Error('spec.podCIDRs is not a list');
  if (Array.isArray(list) && list.length > 0) {
    if (list.length > 2) throw new Error('spec.podCIDRs has more than two entries (IPv4/IPv6 only or dual stack)');
    let v4: Cidr | null = null;
    for (const text of list) {
      const c = parseCidr(text as string);
      if (c.family === 4) v4 = c;
    }
    if (!v4) throw new Error(`spec.podCIDRs ${JSON.stringify(list)} has no IPv4 entry`);
    return v4;
  }
  const single = spec.podCIDR;
  if (single === undefined || single === null || single === '') return null;
  const c = parseCidr(single);
  if (c.family !== 4) throw new Error(`spec.podCIDR ${single} is not IPv4`);
  return c;
}

/** The public IP this node publishes: the overwrite annotation when an operator set one. */
export function publishedPublicIP(node: Node, names: AnnotationNames, publicIP: string): string {
  const overwrite = annotationsOf(node)[names.publicIPOverwrite];
  if (typeof overwrite === 'string' && overwrite !== '') {
    if (!isIPv4(overwrite)) throw new Error(`annotation ${names.publicIPOverwrite} ${JSON.stringify(overwrite)} is not an IPv4 address`);
    return overwrite;
  }
  return publicIP;
}

/**
 * The annotations this node must carry for `attrs`, as the changed keys only (flannel sends
 * the two-way strategic merge patch of old and new node, which holds just those), or null
 * when the node already carries them.
 */
export function annotationPatch(node: Node, names: AnnotationNames, attrs: LeaseAttrs): Record<string, string> | null {
  const have = annotationsOf(node);
  const type = attrs.BackendType ?? '';
  const data = backendDataText(attrs.BackendData);
  const want: Record<string, string> = { [names.backendType]: type };
  // flannel leaves backend-data and public-ip alone for a vxlan lease without data.
  if (type !== 'vxlan' || data !== 'null') {
    want[names.backendData] = data;
    want[names.publicIP] = attrs.PublicIP;
  }
  want[names.kubeSubnetManager] = 'true';
  const changed: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) if (have[k] !== v) changed[k] = v;
  return Object.keys(changed).length ? changed : null;
}

export type NodeLease =
  | { kind: 'lease'; lease: Lease }
  /** The node does not take part (no kube-subnet-manager "true"): no lease, no warning. */
  | { kind: 'unmanaged' }
  | { kind: 'invalid'; error: string };

/** A Node as a peer lease, the way flannel's kube subnet manager reads one. */
export function leaseFromNode(node: Node, names: AnnotationNames): NodeLease {
  const name = node.metadata?.name;
  if (typeof name !== 'string' || name === '') return { kind: 'invalid', error: 'node without a name' };
  const a = annotationsOf(node);
  if (a[names.kubeSubnetManager] !== 'true') return { kind: 'unmanaged' };
  try {
    const subnet = nodePodSubnet(node);
    if (!subnet) throw new Error('no podCIDR assigned');
    const publicIP = a[names.publicIP];
    if (!isIPv4(publicIP)) throw new Error(`annotation ${names.publicIP} ${JSON.stringify(publicIP ?? null)} is not an IPv4 address`);
    const type = a[names.backendType];
    if (type !== undefined && typeof type !== 'string') throw new Error(`annotation ${names.backendType} is not a string`);
    const dataText = a[names.backendData];
    let data: unknown;
    if (dataText !== undefined && dataText !== '') {
      if (typeof dataText !== 'string') throw new Error(`annotation ${names.backendData} is not a string`);
      try {
        data = JSON.parse(dataText);
      } catch {
        throw new Error(`annotation ${names.backendData} is not JSON: ${JSON.stringify(dataText.slice(0, 200))}`);
      }
    }
    const attrs: LeaseAttrs = { PublicIP: publicIP, PublicIPv6: null, ...(type ? { BackendType: type } : {}), ...(data !== undefined && data !== null ? { BackendData: data } : {}) };
    const created = creationMs(node);
    return {
      kind: 'lease',
      lease: { key: name, subnet, ipv6Subnet: null, attrs, etcdLease: '0', expiresAt: null, ...(Number.isFinite(created) ? { since: created } : {}) },
    };
  } catch (err) {
    return { kind: 'invalid', error: (err as Error).message };
  }
}

/** When the node was created, in ms (NaN when unknown or not a timestamp). */
export function creationMs(node: Node): number {
  const ts = node.metadata?.creationTimestamp as unknown;
  return typeof ts === 'string' ? Date.parse(ts) : NaN;
}

/** flannel's message for a podCIDR outside the configured Network. */
export function podCidrOutsideNetwork(network: Cidr, subnet: Cidr, node: string): string {
  return `subnet "${formatCidr(network)}" specified in the flannel net config doesn't contain "${formatCidr(subnet)}" PodCIDR of the "${node}" node`;
}
