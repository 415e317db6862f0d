// The fields of every served kind, as kube-apiserver knows them: read from the model classes
// of @kubernetes/client-node (generated from Kubernetes' own OpenAPI), plus the patch
// strategies of the few lists that merge by key. Used three ways: decoding a request body (a
// value of the wrong JSON type is a 400, an unknown field is dropped, or refused under
// `fieldValidation=Strict`), strategic merge patches, and the OpenAPI v3 documents kubectl reads.
import { badRequest } from './errors.ts';
import { RESOURCES } from './resources.ts';

export type FieldType =
  | { kind: 'string' }
  | { kind: 'integer'; bits: 32 | 64 }
  | { kind: 'number' }
  | { kind: 'boolean' }
  | { kind: 'date' }
  | { kind: 'intOrString' }
  | { kind: 'quantity' }
  | { kind: 'any' }
  | { kind: 'array'; items: FieldType }
  | { kind: 'map'; values: FieldType }
  | { kind: 'object'; model: string };

export interface Field { name: string; type: FieldType }

interface Attribute { baseName: string; type: string; format: string }
type ModelClass = { getAttributeTypeMap(): Attribute[] };

// Each model is its own small module in the client package; importing only the ones the served
// kinds reach (about 150) is much cheaper than importing the whole client.
const MODELS = '@kubernetes/client-node/dist/gen/models/';
const classes = new Map<string, ModelClass | null>();
let loaded: Promise<void> | null = null;

function referencedModels(type: string): string[] {
  return (type.match(/[A-Z][A-Za-z0-9]*/g) ?? []).filter((n) => n !== 'Array' && n !== 'Date' && n !== 'IntOrString');
}

/** Loads the field tables of the served kinds and every type they reach; call once before decoding. */
export function loadSchemas(): Promise<void> {
  loaded ??= (async () => {
    let frontier = [...new Set(RESOURCES.map((r) => r.model))];
    while (frontier.length) {
      const next = new Set<string>();
      await Promise.all(frontier.map(async (name) => {
        if (classes.has(name)) return;
        let cls: ModelClass | null = null;
        try {
          const mod = await import(`${MODELS}${name}.js`) as Record<string, ModelClass>;
          cls = typeof mod[name]?.getAttributeTypeMap === 'function' ? mod[name]! : null;
        } catch {
          cls = null; // Not a model (a primitive alias): its values pass as they are.
        }
        classes.set(name, cls);
        for (const a of cls?.getAttributeTypeMap() ?? []) for (const ref of referencedModels(a.type)) if (!classes.has(ref)) next.add(ref);
      }));
      frontier = [...next];
    }
  })();
  return loaded;
}

function modelClass(name: string): ModelClass | null {
  if (!classes.size) throw new Error('the lab API schemas are not loaded (call loadSchemas first)');
  return classes.get(name) ?? null;
}

// Resource quantities (cpu: 1, memory: 1Gi) decode from a JSON number or string.
const QUANTITY_MAPS = new Set(['limits', 'requests', 'capacity', 'allocatable', 'overhead', 'allocatedResources', 'hard', 'used']);

function typeFrom(text: string, format: string, fieldName: string): FieldType {
  let m: RegExpExecArray | null;
  if ((m = /^Array<(.+)>$/.exec(text))) return { kind: 'array', items: typeFrom(m[1]!, format, '') };
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(text))) {
    return { kind: 'map', values: QUANTITY_MAPS.has(fieldName) ? { kind: 'quantity' } : typeFrom(m[1]!, '', '') };
  }
  switch (text) {
    case 'string': return { kind: 'string' };
    case 'boolean': return { kind: 'boolean' };
    case 'number': return format === 'int32' ? { kind: 'integer', bits: 32 } : format === 'int64' ? { kind: 'integer', bits: 64 } : { kind: 'number' };
    case 'Date': return { kind: 'date' };
    case 'IntOrString': return { kind: 'intOrString' };
    case 'any': case 'object': return { kind: 'any' };
  }
  return modelClass(text) ? { kind: 'object', model: text } : { kind: 'any' };
}

const fieldCache = new Map<string, Map<string, Field>>();

/** The JSON fields of a model class, by JSON name. */
export function fieldsOf(model: string): Map<string, Field> {
  let fields = fieldCache.get(model);
  if (!fields) {
    fields = new Map();
    for (const a of modelClass(model)?.getAttributeTypeMap() ?? []) fields.set(a.baseName, { name: a.baseName, type: typeFrom(a.type, a.format, a.baseName) });
    fieldCache.set(model, fields);
  }
  return fields;
}

export interface PatchMeta { strategy: 'merge' | 'merge,retainKeys' | 'retainKeys'; mergeKey?: string }

// Kubernetes' patchStrategy / patchMergeKey tags for the fields of the served kinds. A list not
// named here is atomic: a patch replaces it whole.
const PATCH_META: Record<string, PatchMeta> = {
  'V1ObjectMeta.finalizers': { strategy: 'merge' },
  'V1ObjectMeta.ownerReferences': { strategy: 'merge', mergeKey: 'uid' },
  'V1ServiceSpec.ports': { strategy: 'merge', mergeKey: 'port' },
  'V1ServiceStatus.conditions': { strategy: 'merge', mergeKey: 'type' },
  'V1NodeSpec.podCIDRs': { strategy: 'merge' },
  'V1NodeStatus.conditions': { strategy: 'merge', mergeKey: 'type' },
  'V1NodeStatus.addresses': { strategy: 'merge', mergeKey: 'type' },
  'V1NamespaceStatus.conditions': { strategy: 'merge', mergeKey: 'type' },
  'V1PodSpec.volumes': { strategy: 'merge,retainKeys', mergeKey: 'name' },
  'V1PodSpec.initContainers': { strategy: 'merge', mergeKey: 'name' },
  'V1PodSpec.containers': { strategy: 'merge', mergeKey: 'name' },
  'V1PodSpec.ephemeralContainers': { strategy: 'merge', mergeKey: 'name' },
  'V1PodSpec.imagePullSecrets': { strategy: 'merge', mergeKey: 'name' },
  'V1PodSpec.hostAliases': { strategy: 'merge', mergeKey: 'ip' },
  'V1PodSpec.topologySpreadConstraints': { strategy: 'merge', mergeKey: 'topologyKey' },
  'V1PodSpec.schedulingGates': { strategy: 'merge', mergeKey: 'name' },
  'V1PodSpec.resourceClaims': { strategy: 'merge,retainKeys', mergeKey: 'name' },
  'V1Container.ports': { strategy: 'merge', mergeKey: 'containerPort' },
  'V1Container.env': { strategy: 'merge', mergeKey: 'name' },
  'V1Container.volumeMounts': { strategy: 'merge', mergeKey: 'mountPath' },
  'V1Container.volumeDevices': { strategy: 'merge', mergeKey: 'devicePath' },
  'V1EphemeralContainer.ports': { strategy: 'merge', mergeKey: 'containerPort' },
  'V1EphemeralContainer.env': { strategy: 'merge', mergeKey: 'name' },
  'V1EphemeralContainer.volumeMounts': { strategy: 'merge', mergeKey: 'mountPath' },
  'V1PodStatus.conditions': { strategy: 'merge', mergeKey: 'type' },
  'V1PodStatus.podIPs': { strategy: 'merge', mergeKey: 'ip' },
  'V1PodStatus.hostIPs': { strategy: 'merge', mergeKey: 'ip' },
};

export function patchMeta(model: string, field: string): PatchMeta | undefined {
  return PATCH_META[`${model}.${field}`];
}

/** Every model class reachable from `root` (for OpenAPI components). */
export function reachableModels(root: string, into = new Set<string>()): Set<string> {
  if (into.has(root)) return into;
  into.add(root);
  const visit = (t: FieldType) => {
    if (t.kind === 'object') reachableModels(t.model, into);
    else if (t.kind === 'array') visit(t.items);
    else if (t.kind === 'map') visit(t.values);
  };
  for (const f of fieldsOf(root).values()) visit(f.type);
  return into;
}

// ---- decoding ----

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

export interface Decoded { value: Record<string, unknown>; unknownFields: string[] }

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'number' ? 'number' : typeof v;
}

function goType(t: FieldType): string {
  switch (t.kind) {
    case 'integer': return `int${t.bits}`;
    case 'number': return 'float64';
    case 'boolean': return 'bool';
    case 'date': case 'string': return 'string';
    case 'intOrString': return 'intstr.IntOrString';
    case 'quantity': return 'resource.Quantity';
    case 'any': return 'interface {}';
    case 'array': return `[]${goType(t.items)}`;
    case 'map': return `map[string]${goType(t.values)}`;
    case 'object': return `v1.${t.model.replace(/^(V1|CoreV1|DiscoveryV1)/, '')}`;
  }
}

function fail(path: string, t: FieldType, v: unknown): never {
  throw badRequest(`json: cannot unmarshal ${jsonType(v)} into field ${path || '(root)'} of type ${goType(t)}`);
}

/** The zero value a JSON null becomes inside a list or map (as Go's decoder does). */
function zero(t: FieldType): unknown {
  switch (t.kind) {
    case 'string': case 'date': case 'intOrString': return '';
    case 'integer': case 'number': return 0;
    case 'boolean': return false;
    case 'object': case 'map': return {};
    case 'array': return [];
    default: return null;
  }
}

/** Sets an own property, also for the key "__proto__" (a map key is data, never the prototype). */
export function setOwn(o: Record<string, unknown>, k: string, v: unknown): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

function decodeValue(t: FieldType, v: unknown, path: string, unknown: string[]): unknown {
  switch (t.kind) {
    case 'string': case 'date':
      if (typeof v !== 'string') fail(path, t, v);
      return v;
    case 'integer':
      if (typeof v !== 'number' || !Number.isInteger(v) || (t.bits === 32 && (v < -2147483648 || v > 2147483647))) fail(path, t, v);
      return v;
    case 'number':
      if (typeof v !== 'number') fail(path, t, v);
      return v;
    case 'boolean':
      if (typeof v !== 'boolean') fail(path, t, v);
      return v;
    case 'intOrString':
      if (!(typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v)))) fail(path, t, v);
      return v;
    case 'quantity':
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      if (typeof v !== 'string') fail(path, t, v);
      return v;
    case 'any':
      return v;
    case 'array': {
      if (!Array.isArray(v)) fail(path, t, v);
      return v.map((item, i) => (item === null ? zero(t.items) : decodeValue(t.items, item, `${path}[${i}]`, unknown)));
    }
    case 'map': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, t, v);
      const out: Record<string, unknown> = {};
      for (const [k, item] of Object.entries(v)) setOwn(out, k, item === null ? zero(t.values) : decodeValue(t.values, item, `${path}[${k}]`, unknown));
      return out;
    }
    case 'object':
      return decodeModel(t.model, v, path, unknown);
  }
}

function decodeModel(model: string, v: unknown, path: string, unknown: string[]): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, { kind: 'object', model }, v);
  const fields = fieldsOf(model);
  const out: Record<string, unknown> = {};
  for (const [k, item] of Object.entries(v)) {
    const f = fields.get(k);
    const sub = path ? `${path}.${k}` : k;
    if (!f) { unknown.push(sub); continue; }
    if (item === null) continue;
    out[k] = decodeValue(f.type, item, sub, unknown);
  }
  return out;
}

/**
 * Decodes a body as an object of `model`: JSON types checked field by field (a mismatch is a
 * 400 naming the field), nulls dropped, unknown fields dropped and reported by path.
 */
export function decodeObject(model: string, body: unknown): Decoded {
  const unknownFields: string[] = [];
  const value = decodeModel(model, body, '', unknownFields);
  return { value, unknownFields };
}
