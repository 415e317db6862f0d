// Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed the way
// kube-apiserver reads them, pure. A bad selector is a 400 naming the requirement.
import { badRequest } from './errors.ts';
import type { ResourceName } from './resources.ts';

type Labels = Record<string, string> | undefined;

export type LabelRequirement =
  | { op: 'exists' | '!'; key: string }
  | { op: '=' | '!='; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] };

const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/** Splits at commas outside parentheses ("a in (x,y),b" is two requirements). */
function splitTop(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) { out.push(text.slice(start, i)); start = i + 1; }
  }
  out.push(text.slice(start));
  return out;
}

function checkKey(key: string, whole: string): string {
  if (key.length > 316 || !KEY.test(key)) throw badRequest(`unable to parse requirement: invalid label key "${key}" in selector "${whole}"`);
  return key;
}

function checkValue(value: string, whole: string): string {
  if (value.length > 63 || !VALUE.test(value)) throw badRequest(`unable to parse requirement: invalid label value "${value}" in selector "${whole}"`);
  return value;
}

export function parseLabelSelector(text: string | null): LabelRequirement[] {
  if (!text || !text.trim()) return [];
  return splitTop(text).map((raw) => {
    const part = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part))) {
      const values = m[3]!.split(',').map((v) => checkValue(v.trim(), text));
      return { op: m[2] as 'in' | 'notin', key: checkKey(m[1]!, text), values };
    }
    if ((m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part))) {
      return { op: m[2] === '!=' ? '!=' : '=', key: checkKey(m[1]!, text), value: checkValue(m[3]!, text) };
    }
    if ((m = /^!\s*(\S+)$/.exec(part))) return { op: '!', key: checkKey(m[1]!, text) };
    if (/^\S+$/.test(part)) return { op: 'exists', key: checkKey(part, text) };
    throw badRequest(`unable to parse requirement: found '${part}', expected: identifier in selector "${text}"`);
  });
}

export function labelsMatch(reqs: readonly LabelRequirement[], labels: Labels): boolean {
  for (const r of reqs) {
    const has = labels !== undefined && Object.hasOwn(labels, r.key);
    const v = has ? labels![r.key] : undefined;
    switch (r.op) {
      case 'exists': if (!has) return false; break;
      case '!': if (has) return false; break;
      case '=': if (v !== r.value) return false; break;
      case '!=': if (v === r.value) return false; break;
      case 'in': if (!has || !r.values.includes(v!)) return false; break;
      case 'notin': if (has && r.values.includes(v!)) return false; break;
    }
  }
  return true;
}

export interface FieldRequirement { field: string; equal: boolean; value: string }

// The fields each resource can be selected by (kube-apiserver's field label conversions).
const FIELDS: Record<ResourceName, string[]> = {
  namespaces: ['status.phase'],
  nodes: ['spec.unschedulable'],
  pods: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
  services: ['spec.clusterIP', 'spec.type'],
  endpoints: [],
  endpointslices: [],
};

export function parseFieldSelector(resource: ResourceName, text: string | null): FieldRequirement[] {
  if (!text || !text.trim()) return [];
  return text.split(',').map((raw) => {
    const m = /^\s*([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(raw);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${raw}'`);
    const field = m[1]!;
    if (field !== 'metadata.name' && field !== 'metadata.namespace' && !FIELDS[resource].includes(field)) {
      throw badRequest(`"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"${FIELDS[resource].map((f) => `, "${f}"`).join('')}`);
    }
    return { field, equal: m[2] !== '!=', value: m[3]! };
  });
}

function fieldValue(obj: Record<string, unknown>, path: string): string {
  let cur: unknown = obj;
  for (const p of path.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
  if (cur === undefined || cur === null) return path === 'spec.unschedulable' || path === 'spec.hostNetwork' ? 'false' : '';
  return String(cur);
}

export function fieldsMatch(reqs: readonly FieldRequirement[], obj: Record<string, unknown>): boolean {
  return reqs.every((r) => (fieldValue(obj, r.field) === r.value) === r.equal);
}
