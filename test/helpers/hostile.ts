// Hostile input for fuzz tests: every path in a JSON object, a copy with one value replaced (or
// one key added), and values chosen to break naive readers (wrong types, prototype names,
// terminal escapes, huge and nested values).
import fc from 'fast-check';

export type Path = ReadonlyArray<string | number>;

/** Every path to a value inside v (containers included), plus one "new key" path per object. */
export function paths(v: unknown, at: Path = []): Path[] {
  const out: Path[] = [];
  if (Array.isArray(v)) {
    v.forEach((x, i) => { out.push([...at, i], ...paths(x, [...at, i])); });
    out.push([...at, v.length]);
  } else if (v && typeof v === 'object') {
    for (const k of Object.keys(v)) out.push([...at, k], ...paths((v as Record<string, unknown>)[k], [...at, k]));
    out.push([...at, '__proto__'], [...at, 'constructor']);
  }
  return out;
}

/** A deep copy of v with the value at path replaced (own properties only, even "__proto__"). */
export function replaced<T>(v: T, path: Path, value: unknown): T {
  const copy = JSON.parse(JSON.stringify(v)) as T;
  if (path.length === 0) return JSON.parse(JSON.stringify(value ?? null)) as T;
  let cur: unknown = copy;
  for (const k of path.slice(0, -1)) cur = (cur as Record<string | number, unknown>)[k];
  Object.defineProperty(cur, path[path.length - 1]!, { value: structuredClone(value), enumerable: true, writable: true, configurable: true });
  return copy;
}

const ESC = '\u001b[31mred\u001b[0m\r\nCOMMIT\n\u009b2J\u202eevil';

/** Values naive code trips over, besides arbitrary JSON. */
const tricky = fc.constantFrom<unknown>(
  'constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'TCP ', 'tcp', 'None', '', ' ', ESC,
  '127.0.0.1', '0.0.0.0', '169.254.169.254', '224.0.0.1', '::1', 'fe80::1', 'ff02::1', '10.0.0.1/33', '1.2.3.4 -j ACCEPT',
  0, -1, 1.5, 65536, 1e300, Number.MAX_SAFE_INTEGER, true, false, null,
  [], [null], [[]], [{}], {}, JSON.parse('{"__proto__":{"polluted":1}}'), { toString: 1, valueOf: 2 }, { length: { toString: 1 } },
  'x'.repeat(5000), Array.from({ length: 300 }, (_, i) => i),
);

export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: tricky, weight: 2 },
);

/** No character that could drive a terminal: every line of text printable (tabs allowed). */
export function hasRawControl(s: string): boolean {
  return /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(s);
}
