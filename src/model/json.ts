// Reading untrusted JSON (manifests, API objects, config files) without trusting its shape.
// Every read goes through `prop`, which sees own properties only, so a key like "constructor" or
// "__proto__" never reaches Object.prototype; every wrong type becomes an InvalidField naming the
// field, never a TypeError; and every value quoted in a message goes through `describe`, so
// newlines and terminal escapes from an object never reach a log or a terminal raw.

export type JsonObject = Record<string, unknown>;

/** A field of an object that cannot be used, and why ("must be a list, got ..."). */
export class InvalidField extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
  }
}

export const isRecord = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** v[key] when v is an object that has it as its own property; undefined otherwise. */
export function prop(v: unknown, key: string): unknown {
  return isRecord(v) && Object.hasOwn(v, key) ? v[key] : undefined;
}

// Control characters (C0, DEL, C1), line and paragraph separators, bidirectional overrides and the
// byte-order mark: what could move a terminal's cursor, start an escape sequence or reorder text.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
const escapeChar = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** Text safe to print: unprintable characters escaped, at most `max` characters. */
export function printable(s: string, max = 100): string {
  const cut = s.length > max ? `${s.slice(0, max)}...` : s;
  return cut.replace(UNPRINTABLE, escapeChar);
}

/**
 * An untrusted value for a message: JSON, escaped, shortened. Never throws, and costs O(max)
 * whatever the value's size (a 5 MB list, or a graph of shared YAML aliases, is cut short).
 */
export function describe(v: unknown, max = 100): string {
  let text = '';
  const put = (s: string) => { text += s; return text.length <= max; };
  const walk = (x: unknown, depth: number): boolean => {
    if (x === undefined) return put('nothing');
    if (typeof x === 'string') return put(JSON.stringify(x.length > max ? x.slice(0, max + 1) : x));
    if (x === null || typeof x !== 'object') return put(String(x));
    if (depth > 3) return put(Array.isArray(x) ? '[...]' : '{...}');
    if (Array.isArray(x)) {
      if (!put('[')) return false;
      for (let i = 0; i < x.length; i++) if ((i > 0 && !put(',')) || !walk(x[i], depth + 1)) return false;
      return put(']');
    }
    if (!put('{')) return false;
    let first = true;
    for (const k in x) {
      if (!Object.hasOwn(x, k)) continue;
      if ((!first && !put(',')) || !put(`${JSON.stringify(k.length > max ? k.slice(0, max + 1) : k)}:`) || !walk((x as JsonObject)[k], depth + 1)) return false;
      first = false;
    }
    return put('}');
  };
  walk(v, 0);
  return printable(text, max);
}

/** A name read from an object, printable: strings as they are (escaped), anything else described. */
export function nameText(v: unknown, fallback: string): string {
  if (v === undefined || v === null) return fallback;
  return typeof v === 'string' ? printable(v, 253) : describe(v, 60);
}

/** "Kind ns/name" for messages, from metadata of any shape. */
export function objectLabel(kind: string, meta: unknown): string {
  return `${kind} ${nameText(prop(meta, 'namespace'), 'default')}/${nameText(prop(meta, 'name'), '?')}`;
}

// Typed reads: absent and null are "not set" (as Go decodes them); any other wrong type throws.

export function optObject(v: unknown, field: string): JsonObject | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) throw new InvalidField(field, `must be an object, got ${describe(v)}`);
  return v;
}

export function optList(v: unknown, field: string): readonly unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new InvalidField(field, `must be a list, got ${describe(v)}`);
  return v;
}

export function optString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new InvalidField(field, `must be a string, got ${describe(v)}`);
  return v;
}

export function optBool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new InvalidField(field, `must be true or false, got ${describe(v)}`);
  return v;
}

/** A list whose entries must all be strings. */
export function stringList(v: unknown, field: string): readonly string[] {
  const list = optList(v, field);
  for (let i = 0; i < list.length; i++) {
    if (typeof list[i] !== 'string') throw new InvalidField(`${field}[${i}]`, `must be a string, got ${describe(list[i])}`);
  }
  return list as readonly string[];
}

/** A list whose entries must all be objects. */
export function objectList(v: unknown, field: string): readonly JsonObject[] {
  const list = optList(v, field);
  for (let i = 0; i < list.length; i++) {
    if (!isRecord(list[i])) throw new InvalidField(`${field}[${i}]`, `must be an object, got ${describe(list[i])}`);
  }
  return list as readonly JsonObject[];
}
