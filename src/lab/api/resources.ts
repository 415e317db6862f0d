// The resources the lab API serves, as data: every other module (paths, discovery, storage
// keys, tables, validation) reads this one table. Group, version, kind, scope, short names and
// verbs are kube-apiserver's own for these six resources.

export type ResourceName = 'namespaces' | 'nodes' | 'pods' | 'services' | 'endpoints' | 'endpointslices';

export interface ResourceDef {
  name: ResourceName;
  group: '' | 'discovery.k8s.io';
  version: 'v1';
  kind: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Has a status subresource (PUT/PATCH .../NAME/status). */
  status: boolean;
  /** kube-apiserver lets PUT create a missing object of this resource. */
  createOnUpdate: boolean;
  /** The @kubernetes/client-node model class that describes the fields (decoding, OpenAPI). */
  model: string;
}

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
export const STATUS_VERBS = ['get', 'patch', 'update'];

export const RESOURCES: readonly ResourceDef[] = [
  { name: 'namespaces', group: '', version: 'v1', kind: 'Namespace', singular: 'namespace', namespaced: false, shortNames: ['ns'], categories: [], status: true, createOnUpdate: false, model: 'V1Namespace' },
  { name: 'nodes', group: '', version: 'v1', kind: 'Node', singular: 'node', namespaced: false, shortNames: ['no'], categories: [], status: true, createOnUpdate: false, model: 'V1Node' },
  { name: 'pods', group: '', version: 'v1', kind: 'Pod', singular: 'pod', namespaced: true, shortNames: ['po'], categories: ['all'], status: true, createOnUpdate: false, model: 'V1Pod' },
  { name: 'services', group: '', version: 'v1', kind: 'Service', singular: 'service', namespaced: true, shortNames: ['svc'], categories: ['all'], status: true, createOnUpdate: false, model: 'V1Service' },
  { name: 'endpoints', group: '', version: 'v1', kind: 'Endpoints', singular: 'endpoints', namespaced: true, shortNames: ['ep'], categories: [], status: false, createOnUpdate: true, model: 'V1Endpoints' },
  { name: 'endpointslices', group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', singular: 'endpointslice', namespaced: true, shortNames: [], categories: [], status: false, createOnUpdate: false, model: 'V1EndpointSlice' },
];

export function resourceDef(name: ResourceName): ResourceDef {
  return RESOURCES.find((r) => r.name === name)!;
}

/** "v1" or "discovery.k8s.io/v1": the apiVersion of the resource's objects. */
export function apiVersionOf(def: ResourceDef): string {
  return def.group ? `${def.group}/${def.version}` : def.version;
}

/** "services" or "endpointslices.discovery.k8s.io", as kube-apiserver names a resource in messages. */
export function qualifiedResource(def: ResourceDef): string {
  return def.group ? `${def.name}.${def.group}` : def.name;
}

/** The URL prefix of the resource's group version. */
export function groupPrefix(def: Pick<ResourceDef, 'group' | 'version'>): string {
  return def.group ? `/apis/${def.group}/${def.version}` : `/api/${def.version}`;
}

export interface Route {
  def: ResourceDef;
  namespace?: string;
  name?: string;
  subresource?: string;
}

/**
 * Parses a REST path (pure): `/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUB]]` and the same under
 * `/apis/discovery.k8s.io/v1`. `null` for anything else (404 "the server could not find the
 * requested resource").
 */
export function parseResourcePath(path: string): Route | null {
  const parts = path.split('/').slice(1).map((p) => {
    try { return decodeURIComponent(p); } catch { return '\0'; }
  });
  let group: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') { group = ''; rest = parts.slice(2); }
  else if (parts[0] === 'apis' && parts[1] === 'discovery.k8s.io' && parts[2] === 'v1') { group = 'discovery.k8s.io'; rest = parts.slice(3); }
  else return null;
  if (rest.length === 0 || rest.some((p) => p === '' || p.includes('\0'))) return null;
  const inGroup = (name: string | undefined) => RESOURCES.find((r) => r.name === name && r.group === group);
  let namespace: string | undefined;
  // /namespaces/NS/RESOURCE... is a namespaced collection; /namespaces/NAME[/status] is a Namespace.
  if (rest[0] === 'namespaces' && rest.length >= 3 && inGroup(rest[2])?.namespaced) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const def = inGroup(rest[0]);
  if (!def || rest.length > 3) return null;
  const route: Route = { def };
  if (namespace !== undefined) route.namespace = namespace;
  if (rest[1] !== undefined) route.name = rest[1];
  if (rest[2] !== undefined) route.subresource = rest[2];
  return route;
}

export const REGISTRY_PREFIX = '/registry/';

/** The etcd key of an object (kube-apiserver's layout, one prefix per resource). */
export function registryKey(def: ResourceDef, namespace: string | undefined, name: string): string {
  return def.namespaced ? `${REGISTRY_PREFIX}${def.name}/${namespace}/${name}` : `${REGISTRY_PREFIX}${def.name}/${name}`;
}

/** The resource, namespace and name an etcd key stands for; null for keys outside the layout. */
export function parseRegistryKey(key: string): { def: ResourceDef; namespace?: string; name: string } | null {
  if (!key.startsWith(REGISTRY_PREFIX)) return null;
  const parts = key.slice(REGISTRY_PREFIX.length).split('/');
  const def = RESOURCES.find((r) => r.name === parts[0]);
  if (!def) return null;
  if (def.namespaced) {
    if (parts.length !== 3 || !parts[1] || !parts[2]) return null;
    return { def, namespace: parts[1], name: parts[2] };
  }
  if (parts.length !== 2 || !parts[1]) return null;
  return { def, name: parts[1] };
}
