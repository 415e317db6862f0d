// The lab's objects as pure data: the small Pod shape `lab apply` accepts, the default
// workload, and what kube-controller-manager's endpoint controllers derive: EndpointSlices and
// Endpoints from pod labels for Services with selectors, EndpointSlices mirrored from hand-kept
// Endpoints. (ClusterIP, NodePort and pod CIDR allocation live with the lab API: api/allocate.ts.)
import type { EndpointSlice, Service } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { OUTSIDE_IP } from './topology.ts';
import { endpointsToSlices, MANAGED_BY_LABEL, MIRROR_MANAGED_BY } from '../k8s/endpoints-mirror.ts';
import { InvalidField } from '../model/json.ts';

export { MANAGED_BY_LABEL, MIRROR_MANAGED_BY };
export const MANAGED_BY = 'lab.knet.dev';
export const NETNS_ANNOTATION = 'lab.knet.dev/netns';
export const OUTSIDE_NAME = 'outside';
/** The image a lab pod's one container names (there is no image: the echo server is a script). */
export const LAB_POD_IMAGE = 'lab.knet.dev/echo';

/** A lab pod: a network namespace on a node, running one echo server on its ports. */
export interface LabPod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: { name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string>; resourceVersion?: string; uid?: string };
  spec: { nodeName: string; containers: Array<{ name: string; image?: string; ports: Array<{ containerPort: number; protocol?: string; name?: string }> }> };
  status?: { phase?: string; podIP?: string; podIPs?: Array<{ ip: string }>; hostIP?: string; [k: string]: unknown };
}

const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function assertName(what: string, v: unknown): string {
  if (typeof v !== 'string' || v.length > 63 || !DNS1123.test(v)) throw new Error(`${what} must be a DNS label (a-z, 0-9, "-", at most 63): ${JSON.stringify(v)}`);
  return v;
}

function port(v: unknown, what: string): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) throw new Error(`${what} must be a port number 1-65535: ${JSON.stringify(v)}`);
  return v as number;
}

/**
 * Normalizes what `lab apply` accepts as a Pod: metadata.name/namespace/labels and
 * spec.nodeName, with ports either as `spec.ports` (numbers or {port, protocol, name}) or as a
 * real Pod's `spec.containers[].ports[]`. The echo server answers TCP and UDP on every port.
 */
export function normalizePod(o: Record<string, unknown>, nodeNames: readonly string[]): LabPod {
  const md = (o.metadata ?? {}) as Record<string, unknown>;
  const name = assertName('Pod metadata.name', md.name);
  const namespace = md.namespace === undefined ? 'default' : assertName('Pod metadata.namespace', md.namespace);
  const labels = (md.labels ?? {}) as Record<string, string>;
  if (typeof labels !== 'object' || Array.isArray(labels) || Object.values(labels).some((v) => typeof v !== 'string')) throw new Error(`Pod ${name}: labels must map strings to strings`);
  const spec = (o.spec ?? {}) as Record<string, unknown>;
  const nodeName = spec.nodeName;
  if (typeof nodeName !== 'string' || !nodeNames.includes(nodeName)) throw new Error(`Pod ${name}: spec.nodeName must be one of ${nodeNames.join(', ')}, got ${JSON.stringify(nodeName)}`);
  const ports: Array<{ containerPort: number; protocol?: string; name?: string }> = [];
  const add = (p: unknown, what: string) => {
    if (typeof p === 'number') { ports.push({ containerPort: port(p, what) }); return; }
    const r = (p ?? {}) as Record<string, unknown>;
    const out: { containerPort: number; protocol?: string; name?: string } = { containerPort: port(r.containerPort ?? r.port, what) };
    if (r.protocol !== undefined) {
      if (r.protocol !== 'TCP' && r.protocol !== 'UDP') throw new Error(`${what}.protocol must be TCP or UDP`);
      out.protocol = r.protocol;
    }
    if (r.name !== undefined) out.name = assertName(`${what}.name`, r.name);
    ports.push(out);
  };
  if (Array.isArray(spec.ports)) spec.ports.forEach((p, i) => add(p, `Pod ${name} spec.ports[${i}]`));
  if (Array.isArray(spec.containers)) {
    spec.containers.forEach((c, i) => {
      const cp = (c as Record<string, unknown>)?.ports;
      if (Array.isArray(cp)) cp.forEach((p, j) => add(p, `Pod ${name} spec.containers[${i}].ports[${j}]`));
    });
  }
  if (ports.length === 0) ports.push({ containerPort: 8080 });
  const pod: LabPod = { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, spec: { nodeName, containers: [{ name: 'echo', image: LAB_POD_IMAGE, ports }] } };
  if (Object.keys(labels).length) pod.metadata.labels = { ...labels };
  return pod;
}

export function podPorts(p: LabPod): number[] {
  return [...new Set(p.spec.containers.flatMap((c) => c.ports.map((x) => x.containerPort)))].sort((a, b) => a - b);
}

export function podIP(p: LabPod): string | undefined {
  return p.status?.podIP;
}

/** The default workload: a client pod on every node, three web pods on different nodes, five Services. */
export function defaultWorkload(nodeNames: readonly string[]): { pods: LabPod[]; services: Service[]; slices: EndpointSlice[] } {
  const pods: LabPod[] = [];
  const mk = (name: string, node: string, labels: Record<string, string>, ports: number[]) => normalizePod(
    { metadata: { name, labels }, spec: { nodeName: node, ports } }, nodeNames);
  nodeNames.forEach((n, i) => pods.push(mk(`client-${i + 1}`, n, { app: 'client' }, [8080])));
  for (let k = 0; k < 3; k++) pods.push(mk(`web-${k + 1}`, nodeNames[k % nodeNames.length]!, { app: 'web' }, [8080, 5353]));
  const svc = (name: string, spec: Service['spec']): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec });
  const services = [
    svc('web', { type: 'ClusterIP', selector: { app: 'web' }, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] }),
    svc('web-nodeport', { type: 'NodePort', selector: { app: 'web' }, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }] }),
    svc('web-sticky', { type: 'ClusterIP', selector: { app: 'web' }, sessionAffinity: 'ClientIP', ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] }),
    svc('dns', { type: 'ClusterIP', selector: { app: 'web' }, ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 }, { name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 5353 }] }),
    // The book's mysql: no selector, endpoints maintained by hand, pointing outside the cluster.
    svc('external', { type: 'ClusterIP', ports: [{ name: 'echo', protocol: 'TCP', port: 9090, targetPort: 9090 }] }),
  ];
  const slices: EndpointSlice[] = [{
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name: 'external-1', namespace: 'default', labels: { [SERVICE_NAME_LABEL]: 'external' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [OUTSIDE_IP], conditions: { ready: true } }],
    ports: [{ name: 'echo', protocol: 'TCP', port: 9090 }],
  }];
  return { pods, services, slices };
}

function selects(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function resolveTargetPort(tp: number | string | undefined, port: number | undefined, pod: LabPod): number | null {
  if (tp === undefined) return port ?? null;
  if (typeof tp === 'number') return tp;
  if (/^\d+$/.test(tp)) return Number(tp);
  for (const c of pod.spec.containers) for (const p of c.ports) if (p.name === tp) return p.containerPort;
  return null;
}

/**
 * The EndpointSlices the lab keeps for Services with a selector: one slice per Service (named
 * `<service>-lab`), every matching pod with an address as a ready endpoint, sorted by pod name.
 * Services without a selector get none: their slices are the user's.
 */
export function deriveEndpointSlices(services: readonly Service[], pods: readonly LabPod[]): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  for (const s of services) {
    const selector = s.spec?.selector;
    if (!selector || Object.keys(selector).length === 0 || s.spec?.type === 'ExternalName') continue;
    const ns = s.metadata.namespace ?? 'default';
    const name = s.metadata.name!;
    const members = pods
      .filter((p) => p.metadata.namespace === ns && podIP(p) && selects(selector, p.metadata.labels))
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    const svcPorts = s.spec?.ports ?? [];
    const ports = svcPorts.map((sp) => {
      const first = members[0];
      const resolved = first ? resolveTargetPort(sp.targetPort, sp.port, first) : (typeof sp.targetPort === 'number' ? sp.targetPort : sp.port ?? null);
      return { name: sp.name ?? '', protocol: sp.protocol ?? 'TCP', port: resolved };
    });
    out.push({
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${name}-lab`, namespace: ns, labels: { [SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY } },
      addressType: 'IPv4',
      endpoints: members.map((p) => ({
        addresses: [podIP(p)!],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: p.spec.nodeName,
        targetRef: { kind: 'Pod', namespace: ns, name: p.metadata.name },
      })) as unknown as EndpointSlice['endpoints'],
      ports,
    });
  }
  return out;
}

export function isManagedSlice(s: EndpointSlice): boolean {
  return s.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY;
}

export const SKIP_MIRROR_LABEL = 'endpointslice.kubernetes.io/skip-mirror';
export const ENDPOINTS_MANAGED_LABEL = 'endpoints.lab.knet.dev/managed';

export interface EndpointsObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name?: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  subsets?: Array<{
    addresses?: Array<{ ip: string; nodeName?: string; targetRef?: { kind: string; namespace: string; name: string } }>;
    notReadyAddresses?: Array<{ ip: string; nodeName?: string }>;
    ports?: Array<{ name?: string; port: number; protocol?: string }>;
  }>;
}

/**
 * The v1 Endpoints kept for Services with a selector (kube-controller-manager's endpoints
 * controller): one object named as the Service, one subset with the ready pods and the ports
 * their slices carry (a port whose target does not resolve is left out).
 */
export function deriveEndpoints(slices: readonly EndpointSlice[]): EndpointsObject[] {
  return slices.map((sl) => {
    const service = sl.metadata.labels?.[SERVICE_NAME_LABEL] ?? sl.metadata.name!;
    const ports = (sl.ports ?? []).filter((p) => typeof p.port === 'number').map((p) => ({ ...(p.name ? { name: p.name } : {}), port: p.port as number, protocol: p.protocol ?? 'TCP' }));
    const endpoints = sl.endpoints ?? [];
    const out: EndpointsObject = {
      apiVersion: 'v1', kind: 'Endpoints',
      metadata: { name: service, namespace: sl.metadata.namespace ?? 'default', labels: { [SERVICE_NAME_LABEL]: service, [ENDPOINTS_MANAGED_LABEL]: 'true' } },
    };
    if (endpoints.length && ports.length) {
      out.subsets = [{
        addresses: endpoints.map((e) => {
          const ref = (e as { targetRef?: { kind: string; namespace: string; name: string } }).targetRef;
          return { ip: e.addresses[0]!, ...(e.nodeName ? { nodeName: e.nodeName } : {}), ...(ref ? { targetRef: ref } : {}) };
        }),
        ports,
      }];
    }
    return out;
  });
}

/**
 * EndpointSlices mirrored from v1 Endpoints that users keep by hand for Services without a
 * selector (kube-controller-manager's EndpointSlice mirroring controller), so such a Service
 * (the book's mysql) gets traffic from proxies that read only EndpointSlices.
 */
export function mirrorEndpointSlices(services: readonly Service[], endpoints: readonly EndpointsObject[]): EndpointSlice[] {
  const out: EndpointSlice[] = [];
  for (const ep of endpoints) {
    const ns = ep.metadata.namespace ?? 'default';
    const svc = services.find((s) => (s.metadata.namespace ?? 'default') === ns && s.metadata.name === ep.metadata.name);
    if (!svc || Object.keys(svc.spec?.selector ?? {}).length > 0 || ep.metadata.labels?.[SKIP_MIRROR_LABEL] === 'true') continue;
    try {
      out.push(...endpointsToSlices(ep));
    } catch (e) {
      // An Endpoints of the wrong shape mirrors to nothing, as the controller skips it.
      if (!(e instanceof InvalidField)) throw e;
    }
  }
  return out;
}

export function isMirroredSlice(s: EndpointSlice): boolean {
  return s.metadata.labels?.[MANAGED_BY_LABEL] === MIRROR_MANAGED_BY;
}
