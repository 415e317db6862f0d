// Server-side printing: the `Table` kube-apiserver returns when kubectl asks for
// `application/json;as=Table;g=meta.k8s.io;v=v1`, so `kubectl get` (and `-o wide`, `-w`) shows
// the columns it shows against a real cluster. Column names and cell formats follow
// kube-apiserver's printers for these six kinds; wide columns carry priority 1.
import type { ResourceName } from './resources.ts';

type Obj = Record<string, any>;

export interface Column { name: string; type: string; format: string; description: string; priority: number }

const col = (name: string, description: string, priority = 0, format = ''): Column => ({ name, type: 'string', format, description, priority });
const NAME = col('Name', 'Name must be unique within a namespace.', 0, 'name');
const AGE = col('Age', 'CreationTimestamp is a timestamp representing the server time when this object was created.');

export const COLUMNS: Record<ResourceName, Column[]> = {
  namespaces: [NAME, col('Status', 'The status of the namespace'), AGE],
  nodes: [NAME, col('Status', 'The status of the node'), col('Roles', 'The roles of the node'), AGE, col('Version', 'Kubelet Version reported by the node.'),
    col('Internal-IP', 'List of addresses reachable to the node.', 1), col('External-IP', 'List of addresses reachable to the node.', 1),
    col('OS-Image', 'OS Image reported by the node.', 1), col('Kernel-Version', 'Kernel Version reported by the node.', 1), col('Container-Runtime', 'ContainerRuntime Version reported by the node.', 1)],
  pods: [NAME, col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'), col('Status', 'The aggregate status of the containers in this pod.'),
    col('Restarts', 'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.'), AGE,
    col('IP', 'IP address allocated to the pod.', 1), col('Node', 'NodeName indicates in which node this pod is scheduled.', 1),
    col('Nominated Node', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1), col('Readiness Gates', 'If specified, all readiness gates will be evaluated for pod readiness.', 1)],
  services: [NAME, col('Type', 'type determines how the Service is exposed.'), col('Cluster-IP', 'clusterIP is the IP address of the service.'),
    col('External-IP', 'externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.'),
    col('Port(s)', 'The list of ports that are exposed by this service.'), AGE, col('Selector', 'Route service traffic to pods with label keys and values matching this selector.', 1)],
  endpoints: [NAME, col('Endpoints', 'The set of all endpoints is the union of all subsets.'), AGE],
  endpointslices: [NAME, col('AddressType', 'addressType specifies the type of address carried by this EndpointSlice.'),
    col('Ports', 'ports specifies the list of network ports exposed by each endpoint in this slice.'), col('Endpoints', 'endpoints is a list of unique endpoints in this slice.'), AGE],
};

/** A duration as kubectl shows an age: 45s, 3m20s, 5h, 12d, 2y30d. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) return hours % 24 === 0 ? `${hours / 24}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const days = Math.floor(hours / 24) % 365;
    return days === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${days}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

function age(o: Obj, now: number): string {
  const t = Date.parse(o.metadata?.creationTimestamp ?? '');
  return Number.isNaN(t) ? '<unknown>' : humanDuration(now - t);
}

function formatLabels(m: Record<string, string> | undefined): string {
  const keys = Object.keys(m ?? {}).sort();
  return keys.length ? keys.map((k) => `${k}=${m![k]}`).join(',') : '<none>';
}

function listWithMore(list: string[], count: number, max: number): string {
  if (count > max) return `${list.join(',')} + ${count - max} more...`;
  return list.length ? list.join(',') : '<unset>';
}

function serviceRow(s: Obj): unknown[] {
  const spec = s.spec ?? {};
  const type = spec.type ?? '';
  const clusterIP = spec.clusterIPs?.[0] ?? '<none>';
  const externalIPs: string[] = spec.externalIPs ?? [];
  let external: string;
  if (type === 'ClusterIP' || type === 'NodePort') external = externalIPs.length ? externalIPs.join(',') : '<none>';
  else if (type === 'LoadBalancer') {
    const lb = [...new Set<string>((s.status?.loadBalancer?.ingress ?? []).map((i: Obj) => i.ip || i.hostname).filter(Boolean))].sort();
    external = externalIPs.length ? [...lb, ...externalIPs].join(',') : lb.length ? lb.join(',') : '<pending>';
  } else if (type === 'ExternalName') external = spec.externalName ?? '';
  else external = '<unknown>';
  const ports = (spec.ports ?? []).map((p: Obj) => (p.nodePort > 0 ? `${p.port}:${p.nodePort}/${p.protocol}` : `${p.port}/${p.protocol}`)).join(',');
  return [s.metadata.name, type, clusterIP, external, ports || '<none>', undefined, formatLabels(spec.selector)];
}

function endpointsText(e: Obj): string {
  const subsets: Obj[] = e.subsets ?? [];
  if (subsets.length === 0) return '<none>';
  const list: string[] = [];
  let count = 0;
  for (const ss of subsets) {
    const addresses: Obj[] = ss.addresses ?? [];
    const ports: Obj[] = ss.ports ?? [];
    const pairs = ports.length ? ports.flatMap((p) => addresses.map((a) => (a.ip.includes(':') ? `[${a.ip}]:${p.port}` : `${a.ip}:${p.port}`))) : addresses.map((a) => a.ip as string);
    for (const x of pairs) { if (list.length < 3) list.push(x); count++; }
  }
  return count > 3 ? `${list.join(',')} + ${count - 3} more...` : list.join(',');
}

function sliceRow(s: Obj): unknown[] {
  const ports: Obj[] = s.ports ?? [];
  const portText = listWithMore(ports.slice(0, 3).map((p) => (p.port !== undefined && p.port !== null ? String(p.port) : p.name !== undefined && p.name !== null ? p.name : '*')), ports.length, 3);
  const addresses: string[] = (s.endpoints ?? []).flatMap((e: Obj) => e.addresses ?? []);
  return [s.metadata.name, s.addressType ?? '', portText, listWithMore(addresses.slice(0, 3), addresses.length, 3)];
}

function nodeRow(n: Obj): unknown[] {
  const ready = (n.status?.conditions ?? []).find((c: Obj) => c.type === 'Ready');
  const status = [ready ? (ready.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown'];
  if (n.spec?.unschedulable) status.push('SchedulingDisabled');
  const roles = new Set<string>();
  for (const [k, v] of Object.entries<string>(n.metadata.labels ?? {})) {
    if (k.startsWith('node-role.kubernetes.io/') && k.length > 'node-role.kubernetes.io/'.length) roles.add(k.slice('node-role.kubernetes.io/'.length));
    else if (k === 'kubernetes.io/role' && v) roles.add(v);
  }
  const address = (type: string) => (n.status?.addresses ?? []).find((a: Obj) => a.type === type)?.address ?? '<none>';
  const info = n.status?.nodeInfo ?? {};
  return [n.metadata.name, status.join(','), [...roles].sort().join(',') || '<none>', undefined, info.kubeletVersion ?? '',
    address('InternalIP'), address('ExternalIP'), info.osImage || '<unknown>', info.kernelVersion || '<unknown>', info.containerRuntimeVersion || '<unknown>'];
}

function podRow(p: Obj): unknown[] {
  const status = p.status ?? {};
  let reason: string = status.reason || status.phase || '';
  let ready = 0;
  let restarts = 0;
  let running = false;
  const statuses: Obj[] = status.containerStatuses ?? [];
  for (let i = statuses.length - 1; i >= 0; i--) {
    const c = statuses[i]!;
    restarts += c.restartCount ?? 0;
    const state = c.state ?? {};
    if (state.waiting?.reason) reason = state.waiting.reason;
    else if (state.terminated?.reason) reason = state.terminated.reason;
    else if (state.terminated) reason = state.terminated.signal ? `Signal:${state.terminated.signal}` : `ExitCode:${state.terminated.exitCode ?? 0}`;
    else if (c.ready && state.running) { running = true; ready++; }
  }
  if (reason === 'Completed' && running) reason = (status.conditions ?? []).some((c: Obj) => c.type === 'Ready' && c.status === 'True') ? 'Running' : 'NotReady';
  if (p.metadata.deletionTimestamp && status.phase !== 'Succeeded' && status.phase !== 'Failed') reason = 'Terminating';
  const gates: Obj[] = p.spec?.readinessGates ?? [];
  const gateText = gates.length
    ? `${gates.filter((g) => (status.conditions ?? []).some((c: Obj) => c.type === g.conditionType && c.status === 'True')).length}/${gates.length}`
    : '<none>';
  return [p.metadata.name, `${ready}/${(p.spec?.containers ?? []).length}`, reason, String(restarts), undefined,
    status.podIPs?.[0]?.ip || '<none>', p.spec?.nodeName || '<none>', status.nominatedNodeName || '<none>', gateText];
}

function cells(resource: ResourceName, o: Obj, now: number): unknown[] {
  let row: unknown[];
  switch (resource) {
    case 'namespaces': row = [o.metadata.name, o.status?.phase ?? '', undefined]; break;
    case 'nodes': row = nodeRow(o); break;
    case 'pods': row = podRow(o); break;
    case 'services': row = serviceRow(o); break;
    case 'endpoints': row = [o.metadata.name, endpointsText(o), undefined]; break;
    case 'endpointslices': row = [...sliceRow(o), undefined]; break;
  }
  // The Age cell sits where each row left `undefined`.
  return row.map((c) => (c === undefined ? age(o, now) : c));
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

function rowObject(o: Obj, include: IncludeObject): unknown {
  if (include === 'None') return undefined;
  if (include === 'Object') return o;
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata };
}

/** A `meta.k8s.io/v1` Table of the objects (one row each). */
export function toTable(resource: ResourceName, objects: Obj[], o: { resourceVersion: string; include: IncludeObject; headers?: boolean; now?: number }): Record<string, unknown> {
  const now = o.now ?? Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion: o.resourceVersion },
    columnDefinitions: o.headers === false ? null : COLUMNS[resource],
    rows: objects.map((x) => {
      const row: Record<string, unknown> = { cells: cells(resource, x, now) };
      const object = rowObject(x, o.include);
      if (object !== undefined) row.object = object;
      return row;
    }),
  };
}
