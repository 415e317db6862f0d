// Discovery, as kubectl reads it: /version, /api and /apis (aggregated discovery v2, or the
// older APIVersions / APIGroupList), the resource list of each group version, and OpenAPI v3
// documents (/openapi/v3 and one per group version). kubectl needs OpenAPI v3 to learn that the
// server validates fields itself (the `fieldValidation` parameter on PATCH) and to compute
// `kubectl apply` patches; the schemas come from the same field table the server decodes with.
// Everything here is pure and computed once.
import { createHash } from 'node:crypto';
import { groupPrefix, RESOURCES, STATUS_VERBS, VERBS, type ResourceDef } from './resources.ts';
import { fieldsOf, patchMeta, reachableModels, type FieldType } from './schema.ts';

/** The lab API says what it is in its version: a stand-in, not a Kubernetes build. */
export const VERSION = {
  major: '1', minor: '32', gitVersion: 'v1.32.0-knet-lab-stand-in', gitCommit: '', gitTreeState: '', buildDate: '',
  goVersion: '', compiler: 'knet', platform: `${process.platform}/${process.arch === 'x64' ? 'amd64' : process.arch}`,
};

export const AGGREGATED_CONTENT_TYPE = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';

interface GroupVersion { group: '' | 'discovery.k8s.io'; version: 'v1' }
const GROUP_VERSIONS: GroupVersion[] = [{ group: '', version: 'v1' }, { group: 'discovery.k8s.io', version: 'v1' }];
const resourcesOf = (gv: GroupVersion) => RESOURCES.filter((r) => r.group === gv.group && r.version === gv.version);

function resourceDiscovery(r: ResourceDef): Record<string, unknown> {
  const kind = { group: r.group, version: r.version, kind: r.kind };
  const out: Record<string, unknown> = {
    resource: r.name, responseKind: kind, scope: r.namespaced ? 'Namespaced' : 'Cluster', singularResource: r.singular, verbs: VERBS,
  };
  if (r.shortNames.length) out.shortNames = r.shortNames;
  if (r.categories.length) out.categories = r.categories;
  if (r.status) out.subresources = [{ subresource: 'status', responseKind: kind, verbs: STATUS_VERBS }];
  return out;
}

/** Aggregated discovery for `/api` (legacy core group) or `/apis` (named groups). */
export function aggregatedDiscovery(legacy: boolean): Record<string, unknown> {
  const items = GROUP_VERSIONS.filter((gv) => (gv.group === '') === legacy).map((gv) => ({
    metadata: gv.group ? { name: gv.group } : {},
    versions: [{ version: gv.version, resources: resourcesOf(gv).map(resourceDiscovery), freshness: 'Current' }],
  }));
  return { kind: 'APIGroupDiscoveryList', apiVersion: 'apidiscovery.k8s.io/v2', metadata: {}, items };
}

export function apiVersions(serverAddress: string): Record<string, unknown> {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

export function apiGroupList(): Record<string, unknown> {
  return {
    kind: 'APIGroupList', apiVersion: 'v1',
    groups: GROUP_VERSIONS.filter((gv) => gv.group).map((gv) => {
      const v = { groupVersion: `${gv.group}/${gv.version}`, version: gv.version };
      return { name: gv.group, versions: [v], preferredVersion: v };
    }),
  };
}

export function apiGroup(group: string): Record<string, unknown> | null {
  const gv = GROUP_VERSIONS.find((g) => g.group === group && group !== '');
  if (!gv) return null;
  const v = { groupVersion: `${gv.group}/${gv.version}`, version: gv.version };
  return { kind: 'APIGroup', apiVersion: 'v1', name: gv.group, versions: [v], preferredVersion: v };
}

/** The APIResourceList of `/api/v1` or `/apis/discovery.k8s.io/v1`, or null for another path. */
export function resourceList(path: string): Record<string, unknown> | null {
  const gv = GROUP_VERSIONS.find((g) => groupPrefix(g) === path);
  if (!gv) return null;
  const resources = resourcesOf(gv).flatMap((r) => {
    const main: Record<string, unknown> = { name: r.name, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: VERBS };
    if (r.shortNames.length) main.shortNames = r.shortNames;
    if (r.categories.length) main.categories = r.categories;
    return r.status ? [main, { name: `${r.name}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: STATUS_VERBS }] : [main];
  });
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv.group ? `${gv.group}/${gv.version}` : gv.version, resources };
}

// ---- OpenAPI v3 ----

const ref = (model: string) => ({ $ref: `#/components/schemas/${model}` });

function schemaOf(t: FieldType): Record<string, unknown> {
  switch (t.kind) {
    case 'string': return { type: 'string' };
    case 'date': return { type: 'string', format: 'date-time' };
    case 'integer': return { type: 'integer', format: `int${t.bits}` };
    case 'number': return { type: 'number', format: 'double' };
    case 'boolean': return { type: 'boolean' };
    case 'intOrString': return { 'x-kubernetes-int-or-string': true, anyOf: [{ type: 'integer' }, { type: 'string' }] };
    case 'quantity': return { 'x-kubernetes-int-or-string': true, anyOf: [{ type: 'integer' }, { type: 'string' }] };
    case 'any': return { type: 'object' };
    case 'array': return { type: 'array', items: schemaOf(t.items) };
    case 'map': return { type: 'object', additionalProperties: schemaOf(t.values) };
    case 'object': return { allOf: [ref(t.model)] };
  }
}

function componentSchema(model: string): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const f of fieldsOf(model).values()) {
    const s = schemaOf(f.type);
    const meta = patchMeta(model, f.name);
    if (meta) {
      s['x-kubernetes-patch-strategy'] = meta.strategy;
      if (meta.mergeKey) s['x-kubernetes-patch-merge-key'] = meta.mergeKey;
    }
    properties[f.name] = s;
  }
  const out: Record<string, unknown> = { type: 'object', properties };
  const served = RESOURCES.find((r) => r.model === model);
  if (served) out['x-kubernetes-group-version-kind'] = [{ group: served.group, version: served.version, kind: served.kind }];
  return out;
}

const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'];

function operations(r: ResourceDef, item: boolean, status: boolean): Record<string, unknown> {
  const gvk = { 'x-kubernetes-group-version-kind': { group: r.group, version: r.version, kind: r.kind } };
  const body = { content: { 'application/json': { schema: ref(r.model) } } };
  const ok = { responses: { 200: { description: 'OK', content: { 'application/json': { schema: ref(r.model) } } } } };
  const param = (name: string) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } });
  const writeParams = [param('dryRun'), param('fieldManager'), param('fieldValidation')];
  const ops: Record<string, unknown> = {};
  const action = (a: string) => ({ ...gvk, 'x-kubernetes-action': a });
  if (!item) {
    ops.get = { ...action('list'), parameters: ['labelSelector', 'fieldSelector', 'resourceVersion', 'watch', 'timeoutSeconds'].map(param), ...ok };
    if (!status) ops.post = { ...action('post'), parameters: writeParams, requestBody: body, ...ok };
    return ops;
  }
  ops.get = { ...action('get'), ...ok };
  ops.put = { ...action('put'), parameters: writeParams, requestBody: body, ...ok };
  ops.patch = {
    ...action('patch'), parameters: [...writeParams, param('force')],
    requestBody: { content: Object.fromEntries(PATCH_TYPES.map((t) => [t, { schema: { type: 'object' } }])) }, ...ok,
  };
  if (!status) ops.delete = { ...action('delete'), parameters: [param('dryRun'), param('gracePeriodSeconds'), param('propagationPolicy')], ...ok };
  return ops;
}

function paths(gv: GroupVersion): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const prefix = groupPrefix(gv);
  for (const r of resourcesOf(gv)) {
    const collection = r.namespaced ? `${prefix}/namespaces/{namespace}/${r.name}` : `${prefix}/${r.name}`;
    out[collection] = operations(r, false, false);
    out[`${collection}/{name}`] = operations(r, true, false);
    if (r.status) out[`${collection}/{name}/status`] = operations(r, true, true);
    if (r.namespaced) out[`${prefix}/${r.name}`] = { get: (operations(r, false, false) as { get: unknown }).get };
  }
  return out;
}

const openApiDocs = new Map<string, { text: string; hash: string }>();

function docKey(gv: GroupVersion): string {
  return groupPrefix(gv).slice(1);
}

function openApiDoc(gv: GroupVersion): { text: string; hash: string } {
  const key = docKey(gv);
  let doc = openApiDocs.get(key);
  if (!doc) {
    const models = new Set<string>();
    for (const r of resourcesOf(gv)) reachableModels(r.model, models);
    const schemas = Object.fromEntries([...models].sort().map((m) => [m, componentSchema(m)]));
    const text = JSON.stringify({
      openapi: '3.0.0',
      info: { title: 'knet lab API (a kube-apiserver stand-in)', version: VERSION.gitVersion },
      paths: paths(gv),
      components: { schemas },
    });
    doc = { text, hash: createHash('sha512').update(text).digest('hex').toUpperCase() };
    openApiDocs.set(key, doc);
  }
  return doc;
}

/** `/openapi/v3`: where each group version's document is. */
export function openApiIndex(): Record<string, unknown> {
  return { paths: Object.fromEntries(GROUP_VERSIONS.map((gv) => [docKey(gv), { serverRelativeURL: `/openapi/v3/${docKey(gv)}?hash=${openApiDoc(gv).hash}` }])) };
}

/** The document at `/openapi/v3/api/v1` or `/openapi/v3/apis/discovery.k8s.io/v1` (JSON text), or null. */
export function openApiDocument(path: string): string | null {
  const gv = GROUP_VERSIONS.find((g) => `/openapi/v3/${docKey(g)}` === path);
  return gv ? openApiDoc(gv).text : null;
}

