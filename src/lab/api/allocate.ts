// Address allocation the lab API does in place of kube-apiserver's and kube-controller-manager's
// allocators, pure: a Service's ClusterIP (the first free address from .10 up, the lab's
// predictable choice), its NodePorts and health-check NodePort, and each Node's pod CIDR
// (kube-controller-manager's range allocator: node-sized blocks of the cluster CIDR, the next
// free one after the last handed out, wrapping around; blocks in use are re-read from the Nodes
// after a restart, which starts the search at the beginning again).
import { cidrContains, formatIP, parseCIDR, parseIP, type ParsedCIDR } from '../../util/ip.ts';
import type { FieldError } from './errors.ts';
import type { Obj } from './store.ts';

export interface ServiceRanges { serviceCIDR: string; nodePortRange: readonly [number, number] }

const needsClusterIP = (s: Obj) => s.spec?.type !== 'ExternalName' && s.spec?.clusterIP !== 'None';
const needsNodePorts = (s: Obj) => s.spec?.type === 'NodePort' || (s.spec?.type === 'LoadBalancer' && s.spec?.allocateLoadBalancerNodePorts !== false);
const needsHealthCheck = (s: Obj) => s.spec?.type === 'LoadBalancer' && s.spec?.externalTrafficPolicy === 'Local';

/**
 * An update keeps what was allocated when the new object leaves it out (kube-apiserver does the
 * same, so `kubectl replace` of a manifest without a ClusterIP keeps the Service's address), and
 * drops what the new type has no use for when the update left it as it was (a NodePort Service
 * patched to ClusterIP loses its NodePorts instead of failing validation).
 */
export function keepAllocated(svc: Obj, old: Obj | undefined): void {
  if (!old) return;
  const spec = svc.spec ??= {};
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!needsClusterIP(svc) && needsClusterIP(old) && same(spec.clusterIP, old.spec.clusterIP)) {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  }
  if (!needsNodePorts(svc) && needsNodePorts(old)) {
    for (const p of spec.ports ?? []) {
      const was = (old.spec.ports ?? []).find((q: Obj) => q.port === p.port && q.protocol === p.protocol)?.nodePort;
      if (p.nodePort && p.nodePort === was) delete p.nodePort;
    }
  }
  if (!needsHealthCheck(svc) && spec.healthCheckNodePort && spec.healthCheckNodePort === old.spec.healthCheckNodePort) delete spec.healthCheckNodePort;
  const external = spec.type === 'NodePort' || spec.type === 'LoadBalancer';
  if (!external && spec.externalTrafficPolicy && spec.externalTrafficPolicy === old.spec.externalTrafficPolicy) delete spec.externalTrafficPolicy;
  if (spec.type !== 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== undefined && spec.allocateLoadBalancerNodePorts === old.spec.allocateLoadBalancerNodePorts) delete spec.allocateLoadBalancerNodePorts;
  if (needsClusterIP(svc) && needsClusterIP(old) && !spec.clusterIP) {
    spec.clusterIP = old.spec.clusterIP;
    if (!spec.clusterIPs?.length) spec.clusterIPs = old.spec.clusterIPs;
  }
  if (needsNodePorts(svc) && needsNodePorts(old)) {
    for (const p of spec.ports ?? []) {
      if (p.nodePort) continue;
      const was = (old.spec.ports ?? []).find((q: Obj) => q.port === p.port && q.protocol === p.protocol)?.nodePort;
      if (was) p.nodePort = was;
    }
  }
  if (needsHealthCheck(svc) && needsHealthCheck(old) && !spec.healthCheckNodePort) spec.healthCheckNodePort = old.spec.healthCheckNodePort;
}

/** Fills in the ClusterIP and NodePorts of a validated Service; field errors when a requested one is taken or out of range. */
export function allocateService(svc: Obj, others: readonly Obj[], ranges: ServiceRanges): FieldError[] {
  const errors: FieldError[] = [];
  const spec = svc.spec;
  if (spec.type === 'ExternalName') {
    for (const k of ['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy']) delete spec[k];
  } else if (spec.clusterIP === 'None') {
    spec.clusterIPs = ['None'];
    spec.ipFamilies = ['IPv4'];
    spec.ipFamilyPolicy = 'SingleStack';
  } else {
    const cidr = parseCIDR(ranges.serviceCIDR)!;
    const used = new Set(others.map((o) => o.spec?.clusterIP).filter((ip): ip is string => !!ip && ip !== 'None'));
    if (spec.clusterIP) {
      const ip = parseIP(spec.clusterIP)!;
      const size = 2n ** BigInt(32 - cidr.prefix);
      if (!cidrContains(cidr, ip) || ip.value === cidr.value || ip.value === cidr.value + size - 1n) {
        errors.push({ type: 'Invalid', field: 'spec.clusterIPs', value: [spec.clusterIP], detail: `failed to allocate IP ${spec.clusterIP}: the provided IP (${spec.clusterIP}) is not in the valid range. The range of valid IPs is ${ranges.serviceCIDR}` });
      } else if (used.has(ip.text)) {
        errors.push({ type: 'Invalid', field: 'spec.clusterIPs', value: [spec.clusterIP], detail: `failed to allocate IP ${spec.clusterIP}: provided IP is already allocated` });
      }
    } else {
      const free = firstFreeAddress(cidr, used);
      if (!free) errors.push({ type: 'Invalid', field: 'spec.clusterIPs', value: [], detail: `failed to allocate a serviceIP: range is full (${ranges.serviceCIDR})` });
      else spec.clusterIP = free;
    }
    spec.clusterIPs = [spec.clusterIP];
    spec.ipFamilies = ['IPv4'];
    spec.ipFamilyPolicy = 'SingleStack';
  }
  const [lo, hi] = ranges.nodePortRange;
  const taken = new Set<number>(others.flatMap((o) => [...(o.spec?.ports ?? []).map((p: Obj) => p.nodePort), o.spec?.healthCheckNodePort]).filter((p): p is number => !!p));
  const mine = new Set<number>();
  const take = (requested: number | undefined, field: string): number | undefined => {
    if (requested) {
      if (requested < lo || requested > hi) errors.push({ type: 'Invalid', field, value: requested, detail: `provided port is not in the valid range. The range of valid ports is ${lo}-${hi}` });
      else if (taken.has(requested)) errors.push({ type: 'Invalid', field, value: requested, detail: 'provided port is already allocated' });
      mine.add(requested);
      return requested;
    }
    for (let p = lo; p <= hi; p++) {
      if (!taken.has(p) && !mine.has(p)) { mine.add(p); return p; }
    }
    errors.push({ type: 'Invalid', field, value: 0, detail: `range is full (${lo}-${hi})` });
    return undefined;
  };
  if (needsNodePorts(svc)) {
    // Ports that share a number and differ in protocol share a NodePort.
    const byNumber = new Map<number, number>();
    (spec.ports ?? []).forEach((p: Obj, i: number) => {
      if (!p.nodePort && byNumber.has(p.port)) { p.nodePort = byNumber.get(p.port); return; }
      const np = take(p.nodePort, `spec.ports[${i}].nodePort`);
      if (np) { p.nodePort = np; byNumber.set(p.port, np); }
    });
  }
  if (needsHealthCheck(svc)) {
    const np = take(spec.healthCheckNodePort, 'spec.healthCheckNodePort');
    if (np) spec.healthCheckNodePort = np;
  } else delete spec.healthCheckNodePort;
  return errors;
}

function firstFreeAddress(cidr: ParsedCIDR, used: ReadonlySet<string>): string | null {
  const size = 2 ** (32 - cidr.prefix);
  for (let i = 10; i < size - 1; i++) {
    const ip = formatIP(4, cidr.value + BigInt(i));
    if (!used.has(ip)) return ip;
  }
  return null;
}

/** kube-controller-manager's CIDR set: the cluster CIDR cut into blocks of the node mask size. */
export class CidrSet {
  private readonly cluster: ParsedCIDR;
  private readonly used = new Set<number>();
  private readonly max: number;
  private next = 0;

  constructor(clusterCIDR: string, readonly maskSize: number) {
    const c = parseCIDR(clusterCIDR);
    if (!c || c.family !== 4) throw new Error(`cluster CIDR must be an IPv4 CIDR, got ${JSON.stringify(clusterCIDR)}`);
    if (!Number.isInteger(maskSize) || maskSize <= c.prefix || maskSize > 30 || maskSize - c.prefix > 16) {
      throw new Error(`node CIDR mask size ${maskSize} does not fit cluster CIDR ${clusterCIDR} (it must be longer than /${c.prefix}, at most /30 and at most 16 bits longer)`);
    }
    this.cluster = c;
    this.max = 2 ** (maskSize - c.prefix);
  }

  private block(i: number): string {
    return `${formatIP(4, this.cluster.value + (BigInt(i) << BigInt(32 - this.maskSize)))}/${this.maskSize}`;
  }

  /** The block index of a node's CIDR, or null when it is not one of this set's blocks. */
  private indexOf(cidr: string): number | null {
    const c = parseCIDR(cidr);
    if (!c || c.family !== 4 || c.prefix !== this.maskSize || !cidrContains(this.cluster, parseIP(c.network)!)) return null;
    return Number((c.value - this.cluster.value) >> BigInt(32 - this.maskSize));
  }

  /** Marks a CIDR a Node already has as used; false when it is outside the cluster CIDR. */
  occupy(cidr: string): boolean {
    const i = this.indexOf(cidr);
    if (i === null) return false;
    this.used.add(i);
    return true;
  }

  release(cidr: string): void {
    const i = this.indexOf(cidr);
    if (i !== null) this.used.delete(i);
  }

  allocateNext(): string | null {
    for (let k = 0; k < this.max; k++) {
      const i = (this.next + k) % this.max;
      if (!this.used.has(i)) {
        this.used.add(i);
        this.next = (i + 1) % this.max;
        return this.block(i);
      }
    }
    return null;
  }
}
