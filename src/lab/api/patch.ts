// The three patch types kube clients send, pure: JSON merge patch (RFC 7386,
// `application/merge-patch+json`: kubectl label/annotate, `kubectl patch --type merge`),
// JSON patch (RFC 6902, `--type json`) and Kubernetes' strategic merge patch
// (`application/strategic-merge-patch+json`: kubectl apply and `kubectl patch`'s default,
// flannel's node annotations and conditions), which merges the lists that have a merge key
// element by element and understands the `$patch`, `$retainKeys`, `$setElementOrder/` and
// `$deleteFromPrimitiveList/` directives.
import { badRequest } from './errors.ts';
import { fieldsOf, patchMeta, setOwn, type FieldType } from './schema.ts';

type Json = unknown;
type JsonObject = Record<string, Json>;

const isObject = (v: Json): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

export type PatchType = 'merge' | 'strategic' | 'json';

export const PATCH_CONTENT_TYPES: Record<string, PatchType> = {
  'application/merge-patch+json': 'merge',
  'application/strategic-merge-patch+json': 'strategic',
  'application/json-patch+json': 'json',
};

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else setOwn(out, k, mergePatch(Object.hasOwn(out, k) ? out[k] : undefined, v));
  }
  return out;
}

// ---- JSON patch ----

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw badRequest(`JSON patch path ${JSON.stringify(path)} does not start with "/"`);
  return path.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc: Json, parts: string[], path: string): { parent: JsonObject | Json[]; key: string } {
  let cur: Json = doc;
  for (const p of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur) && Object.hasOwn(cur, p)) cur = cur[p];
    else throw badRequest(`JSON patch: path ${JSON.stringify(path)} does not exist`);
    if (cur === undefined) throw badRequest(`JSON patch: path ${JSON.stringify(path)} does not exist`);
  }
  if (!Array.isArray(cur) && !isObject(cur)) throw badRequest(`JSON patch: path ${JSON.stringify(path)} does not exist`);
  return { parent: cur, key: parts[parts.length - 1]! };
}

function arrayIndex(arr: Json[], key: string, path: string, forAdd: boolean): number {
  if (forAdd && key === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(key)) throw badRequest(`JSON patch: invalid array index ${JSON.stringify(key)} in ${JSON.stringify(path)}`);
  const i = Number(key);
  if (i > arr.length || (!forAdd && i === arr.length)) throw badRequest(`JSON patch: index ${i} out of range in ${JSON.stringify(path)}`);
  return i;
}

function getAt(doc: Json, path: string): Json {
  const parts = pointer(path);
  if (parts.length === 0) return doc;
  const { parent, key } = parentOf(doc, parts, path);
  const v = Array.isArray(parent) ? parent[arrayIndex(parent, key, path, false)] : Object.hasOwn(parent, key) ? parent[key] : undefined;
  if (v === undefined) throw badRequest(`JSON patch: path ${JSON.stringify(path)} does not exist`);
  return v;
}

function removeAt(doc: Json, path: string): Json {
  const parts = pointer(path);
  if (parts.length === 0) throw badRequest('JSON patch: cannot remove the whole document');
  const { parent, key } = parentOf(doc, parts, path);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, key, path, false), 1)[0];
  if (!Object.hasOwn(parent, key)) throw badRequest(`JSON patch: path ${JSON.stringify(path)} does not exist`);
  const old = parent[key];
  delete parent[key];
  return old;
}

function addAt(doc: Json, path: string, value: Json): Json {
  const parts = pointer(path);
  if (parts.length === 0) return value;
  const { parent, key } = parentOf(doc, parts, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, path, true), 0, value);
  else setOwn(parent, key, value);
  return doc;
}

export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw badRequest('a JSON patch must be a list of operations');
  let doc = clone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') throw badRequest(`invalid JSON patch operation ${JSON.stringify(raw)}`);
    const { op, path } = raw;
    switch (op) {
      case 'add': doc = addAt(doc, path, clone(raw.value)); break;
      case 'remove': removeAt(doc, path); break;
      case 'replace': getAt(doc, path); if (pointer(path).length === 0) doc = clone(raw.value); else { removeAt(doc, path); doc = addAt(doc, path, clone(raw.value)); } break;
      case 'move': { if (typeof raw.from !== 'string') throw badRequest('JSON patch move needs "from"'); const v = removeAt(doc, raw.from); doc = addAt(doc, path, v); break; }
      case 'copy': { if (typeof raw.from !== 'string') throw badRequest('JSON patch copy needs "from"'); doc = addAt(doc, path, clone(getAt(doc, raw.from))); break; }
      case 'test': if (JSON.stringify(getAt(doc, path)) !== JSON.stringify(raw.value)) throw badRequest(`JSON patch test failed at ${JSON.stringify(path)}`); break;
      default: throw badRequest(`unknown JSON patch operation ${JSON.stringify(op)}`);
    }
  }
  return doc;
}

// ---- strategic merge patch ----

const PATCH = '$patch';
const RETAIN_KEYS = '$retainKeys';
const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

function fieldType(model: string | null, key: string): FieldType | null {
  return model ? fieldsOf(model).get(key)?.type ?? null : null;
}

function modelOf(t: FieldType | null): string | null {
  if (!t) return null;
  if (t.kind === 'object') return t.model;
  if (t.kind === 'array') return modelOf(t.items);
  return null;
}

/** Applies a strategic merge patch to `target`, an object of `model` (pure). */
export function strategicMergePatch(target: Json, patch: Json, model: string): Json {
  if (!isObject(patch)) throw badRequest('a strategic merge patch must be a JSON object');
  return mergeMap(isObject(target) ? clone(target) : {}, patch, model);
}

function mergeMap(original: JsonObject, patch: JsonObject, model: string | null): Json {
  const directive = patch[PATCH];
  if (directive === 'delete') return undefined;
  if (directive === 'replace') {
    const out = clone(patch);
    delete out[PATCH];
    return out;
  }
  if (directive !== undefined) throw badRequest(`unknown patch directive $patch: ${JSON.stringify(directive)}`);
  let out = original;
  const retain = patch[RETAIN_KEYS];
  if (retain !== undefined) {
    if (!Array.isArray(retain)) throw badRequest('$retainKeys must be a list');
    out = Object.fromEntries(Object.entries(out).filter(([k]) => retain.includes(k)));
  }
  for (const [key, value] of Object.entries(patch)) {
    if (key === RETAIN_KEYS || key.startsWith(SET_ORDER)) continue;
    if (key.startsWith(DELETE_PRIMITIVE)) {
      const field = key.slice(DELETE_PRIMITIVE.length);
      if (!Array.isArray(value)) throw badRequest(`${key} must be a list`);
      const current = out[field];
      if (Array.isArray(current)) out[field] = current.filter((x) => !value.some((d) => JSON.stringify(d) === JSON.stringify(x)));
      continue;
    }
    if (value === null) { delete out[key]; continue; }
    const current = Object.hasOwn(out, key) ? out[key] : undefined;
    const type = fieldType(model, key);
    const meta = model ? patchMeta(model, key) : undefined;
    if (Array.isArray(value)) {
      const merged = meta?.strategy.startsWith('merge') ? mergeList(Array.isArray(current) ? current : [], value, meta.mergeKey, modelOf(type)) : stripDirectives(value);
      setOwn(out, key, applyOrder(merged, patch[`${SET_ORDER}${key}`], meta?.mergeKey));
      continue;
    }
    if (isObject(value)) {
      // Maps (labels, selectors) and free-form values merge key by key, without list strategies.
      const merged = mergeMap(isObject(current) ? current : {}, value, type?.kind === 'object' ? type.model : null);
      if (merged === undefined) delete out[key]; else setOwn(out, key, merged);
      continue;
    }
    setOwn(out, key, value);
  }
  return out;
}

/** A list patch without a merge strategy replaces the list; directives inside are dropped. */
function stripDirectives(list: Json[]): Json[] {
  return list.filter((x) => !(isObject(x) && x[PATCH] !== undefined)).map((x) => clone(x));
}

function mergeList(original: Json[], patch: Json[], mergeKey: string | undefined, model: string | null): Json[] {
  if (patch.some((x) => isObject(x) && x[PATCH] === 'replace')) {
    return patch.filter((x) => !(isObject(x) && x[PATCH] === 'replace')).map((x) => clone(x));
  }
  if (!mergeKey) {
    // A list of primitives with strategy merge: the union, original order first.
    const out = [...original];
    for (const v of patch) if (!out.some((x) => JSON.stringify(x) === JSON.stringify(v))) out.push(clone(v));
    return out;
  }
  const out = original.map((x) => clone(x));
  const indexOf = (key: Json) => out.findIndex((x) => isObject(x) && JSON.stringify(x[mergeKey]) === JSON.stringify(key));
  for (const item of patch) {
    if (!isObject(item)) throw badRequest(`a list with merge key ${mergeKey} holds objects, got ${JSON.stringify(item)}`);
    if (!Object.hasOwn(item, mergeKey)) throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${mergeKey}`);
    const at = indexOf(item[mergeKey]);
    if (item[PATCH] === 'delete') {
      if (at >= 0) out.splice(at, 1);
      continue;
    }
    if (at >= 0) {
      const merged = mergeMap(out[at] as JsonObject, item, model);
      if (merged === undefined) out.splice(at, 1); else out[at] = merged;
    } else {
      const added = mergeMap({}, item, model);
      if (added !== undefined) out.push(added);
    }
  }
  return out;
}

/** `$setElementOrder/FIELD`: the listed elements in that order, the others after them as they were. */
function applyOrder(list: Json[], order: Json, mergeKey: string | undefined): Json[] {
  if (!Array.isArray(order)) return list;
  const keyOf = (x: Json) => JSON.stringify(mergeKey && isObject(x) ? x[mergeKey] : x);
  const rank = new Map(order.map((o, i) => [keyOf(o), i]));
  const listed = list.filter((x) => rank.has(keyOf(x))).sort((a, b) => rank.get(keyOf(a))! - rank.get(keyOf(b))!);
  return [...listed, ...list.filter((x) => !rank.has(keyOf(x)))];
}
