// A fast reader for the plain block YAML that `kubectl get -o yaml` prints: block mappings and
// sequences, one-line plain or quoted scalars, `{}` and `[]`, comment lines and `---` between
// documents. It gives exactly what js-yaml's core schema gives for such text, or null for
// anything else (flow collections, block scalars, anchors, tags, multi-line scalars, escapes,
// duplicate keys, bad indentation...), which js-yaml then reads, with its errors and lines.
// Why: at 10k services (an 8.5 MB dump) js-yaml takes ~500 ms and most of `knet rules`' time;
// this reader walks the same text in a fraction of that (scripts/bench/rules prints both).
// Plain scalars that no fast path types are typed by js-yaml's own core-schema resolvers, so
// numbers, booleans and nulls come out as js-yaml would make them. js-yaml itself loads only when
// needed: kubectl's text (names, addresses, timestamps, CIDRs) never needs it.
import type jsyamlModule from 'js-yaml';
import { lazyModule } from '../util/lazy-module.ts';

/** js-yaml, loaded on first use (about 20 ms of start-up). */
export const jsYaml = lazyModule<typeof jsyamlModule>('js-yaml');

interface ImplicitType { resolve(data: string): boolean; construct(data: string): unknown }
let implicitTypes: ImplicitType[] | undefined;
const implicit = () => (implicitTypes ??= (jsYaml().CORE_SCHEMA as unknown as { compiledImplicit: ImplicitType[] }).compiledImplicit);

/**
 * Characters a core-schema number can hold (digits, signs, '.', '_', exponents, 0x/0o/0b, .inf):
 * a scalar that starts with a digit and holds any other (a timestamp's ':', a CIDR's '/') is a
 * string, and needs no resolver.
 */
const NUMBER_CHAR = new Uint8Array(128);
for (const c of '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.+-') NUMBER_CHAR[c.charCodeAt(0)] = 1;

// js-yaml refuses these characters anywhere in a stream; such text is left to it.
const NON_PRINTABLE = /[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F\uFFFE\uFFFF\uFEFF]|[\uD800-\uDFFF]|\r|\t/;

const SPACE = 32;
const HASH = 35;
const DASH = 45;
const COLON = 58;
const DQUOTE = 34;
const SQUOTE = 39;
const MAX_DEPTH = 100;

/** Thrown (and caught below) when the text leaves the subset. */
class Unsupported extends Error {}
const unsupported = new Unsupported();

/** Could a plain scalar starting with this character be a null, a boolean or a number? */
function maybeTyped(c: number): boolean {
  // digits, + - . ~ and n N t T f F
  return (c >= 48 && c <= 57) || c === 43 || c === DASH || c === 46 || c === 126 || c === 110 || c === 78 || c === 116 || c === 84 || c === 102 || c === 70;
}

function resolvePlain(s: string): unknown {
  const first = s.charCodeAt(0);
  if (!maybeTyped(first)) return s;
  // Fast paths for what kubectl prints most, with the core schema's answers: a word can only be
  // a null or a boolean; plain decimal digits are an integer; digits with two dots or more (an
  // IP address) are no number, nor is a digit followed by a character no number holds. Everything
  // else asks js-yaml's resolvers, a fifth of the reading.
  if ((first >= 65 && first <= 90) || (first >= 97 && first <= 122)) return wordValue(s);
  if (first >= 48 && first <= 57) {
    let dots = 0;
    let i = 1;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 46) dots++;
      else if (c < 48 || c > 57) break;
    }
    if (i === s.length) {
      if (dots >= 2) return s;
      if (dots === 0 && (first !== 48 || s.length === 1) && s.length <= 15) return Number(s);
    }
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 128 || NUMBER_CHAR[c] === 0) return s;
    }
  }
  const types = implicit();
  for (let t = 0; t < types.length; t++) if (types[t]!.resolve(s)) return types[t]!.construct(s);
  return s;
}

/** A plain scalar starting with a letter: null and the booleans are the only typed ones. */
function wordValue(s: string): unknown {
  switch (s) {
    case 'null': case 'Null': case 'NULL': return null;
    case 'true': case 'True': case 'TRUE': return true;
    case 'false': case 'False': case 'FALSE': return false;
    default: return s;
  }
}

// Characters a plain scalar may not start with (block context): YAML's indicators.
const INDICATOR = new Set([...'-?:,[]{}#&*!|>\'"%@`'].map((c) => c.charCodeAt(0)));

class Reader {
  private pos = 0;
  /** The current content line: where its content starts and ends (trailing spaces cut), its indent; -1: document end. */
  private start = 0;
  private end = 0;
  indent = -1;
  private depth = 0;
  /**
   * The items of the sequences being read, as a stack: each sequence is copied out at its end
   * into an array of its exact size. An array grown by push keeps room for 17 items; a 10k-service
   * dump has 60k sequences of one to three items, and exact arrays took its documents from 25.5
   * to 18.0 MB, which every young-generation GC during the read copies.
   */
  private readonly items: unknown[] = [];
  /**
   * Per key, the last string value read for it: an equal value takes that string instead of its
   * own copy ("TCP", "v1", "IPv4", a node name...), 2 MB less of a 10k-service dump.
   */
  private readonly lastValue = new Map<string, string>();
  /**
   * Per indent, the key that last followed a key ('' for a mapping's first): the objects of a
   * list share their keys in the same order, so the key on a line is mostly known before it is
   * read, and checking the text for it skips cutting, typing and interning it.
   */
  private readonly nextKeys: Map<string, string>[] = [];

  constructor(private readonly text: string) {
    this.advance();
  }

  /** Moves to the next line with content; `---` lines get indent -1, the end of text -2. */
  advance(): void {
    const t = this.text;
    for (;;) {
      if (this.pos >= t.length) { this.indent = -2; return; }
      const lineStart = this.pos;
      let lineEnd = t.indexOf('\n', lineStart);
      if (lineEnd < 0) lineEnd = t.length;
      this.pos = lineEnd + 1;
      let i = lineStart;
      while (i < lineEnd && t.charCodeAt(i) === SPACE) i++;
      if (i === lineEnd || t.charCodeAt(i) === HASH) continue;
      let e = lineEnd;
      while (t.charCodeAt(e - 1) === SPACE) e--;
      this.start = i;
      this.end = e;
      this.indent = i - lineStart;
      if (this.indent === 0) {
        const c = t.charCodeAt(i);
        if (c === DASH && t.startsWith('---', i)) {
          if (e !== i + 3) throw unsupported;
          this.indent = -1;
        } else if (c === 46 /* . */ && t.startsWith('...', i)) throw unsupported;
        else if (c === 37 /* % */) throw unsupported;
      }
      return;
    }
  }

  /** Whether the current line is a sequence entry ("- x" or "-"). */
  private isEntry(): boolean {
    if (this.text.charCodeAt(this.start) !== DASH) return false;
    return this.start + 1 === this.end || this.text.charCodeAt(this.start + 1) === SPACE;
  }

  /** A block node whose first line is the current one, at its indent. */
  block(): unknown {
    if (++this.depth > MAX_DEPTH) throw unsupported;
    const value = this.isEntry() ? this.sequence(this.indent) : this.mapping(this.indent);
    this.depth--;
    return value;
  }

  private sequence(indent: number): unknown[] {
    const list = this.items;
    const from = list.length;
    const t = this.text;
    for (;;) {
      // After "-": spaces, then the item (on this line or, when none, below it).
      let i = this.start + 1;
      while (i < this.end && t.charCodeAt(i) === SPACE) i++;
      if (i === this.end) {
        this.advance();
        list.push(this.indent > indent ? this.block() : null);
      } else if (this.keyEnd(i) >= 0 || (t.charCodeAt(i) === DASH && (i + 1 === this.end || t.charCodeAt(i + 1) === SPACE))) {
        // "- key: value" or "- - x": a mapping (or sequence) whose lines line up under this item.
        this.indent += i - this.start;
        this.start = i;
        list.push(this.block());
      } else {
        list.push(this.scalar(i));
        this.advance();
        if (this.indent > indent) throw unsupported;
      }
      if (this.indent > indent) throw unsupported;
      if (this.indent < indent || !this.isEntry()) {
        const out = list.slice(from);
        list.length = from;
        return out;
      }
    }
  }

  private mapping(indent: number): Record<string, unknown> {
    const map: Record<string, unknown> = {};
    const t = this.text;
    const guesses = (this.nextKeys[indent] ??= new Map());
    let previous = '';
    for (;;) {
      const guess = guesses.get(previous);
      let colon = guess === undefined ? -1 : this.guessedKeyEnd(guess);
      let key: string;
      if (colon >= 0) key = guess!;
      else {
        colon = this.keyEnd(this.start);
        if (colon < 0) throw unsupported;
        const text = t.slice(this.start, colon);
        key = String(resolvePlain(text));
        // Only keys that are their own text are guessed (a typed key such as 0x10 reads as 16).
        if (key === text) guesses.set(previous, key);
      }
      previous = key;
      if (key === '__proto__' || Object.prototype.hasOwnProperty.call(map, key)) throw unsupported;
      let i = colon + 1;
      while (i < this.end && t.charCodeAt(i) === SPACE) i++;
      let value: unknown;
      if (i === this.end || t.charCodeAt(i) === HASH) {
        this.advance();
        if (this.indent > indent) value = this.block();
        else if (this.indent === indent && this.isEntry()) value = this.sequence(indent);
        else value = null;
      } else {
        value = this.scalar(i);
        if (typeof value === 'string') {
          const last = this.lastValue.get(key);
          if (last === value) value = last;
          else this.lastValue.set(key, value);
        }
        this.advance();
      }
      map[key] = value;
      if (this.indent > indent) throw unsupported;
      if (this.indent < indent || this.isEntry()) return map;
    }
  }

  /** Where the current line's key ends if it is `key` (followed by ":" and a space or the line's end), or -1. */
  private guessedKeyEnd(key: string): number {
    const t = this.text;
    const after = this.start + key.length;
    if (!t.startsWith(key, this.start) || t.charCodeAt(after) !== COLON) return -1;
    return after + 1 === this.end || t.charCodeAt(after + 1) === SPACE ? after : -1;
  }

  /** Where a plain key starting at `from` ends (its ":" before a space or the line's end), or -1. */
  private keyEnd(from: number): number {
    const t = this.text;
    const first = t.charCodeAt(from);
    if (INDICATOR.has(first)) return -1;
    for (let i = from + 1; i < this.end; i++) {
      const c = t.charCodeAt(i);
      if (c === COLON) {
        if (i + 1 === this.end || t.charCodeAt(i + 1) === SPACE) {
          if (t.charCodeAt(i - 1) === SPACE) throw unsupported;
          return i;
        }
      } else if (c === HASH && t.charCodeAt(i - 1) === SPACE) return -1;
    }
    return -1;
  }

  /** The one-line scalar from `from` to the line's end. */
  private scalar(from: number): unknown {
    const t = this.text;
    const end = this.end;
    const first = t.charCodeAt(from);
    if (first === DQUOTE || first === SQUOTE) {
      if (end - from < 2 || t.charCodeAt(end - 1) !== first) throw unsupported;
      const body = t.slice(from + 1, end - 1);
      if (first === DQUOTE) {
        if (body.includes('"') || body.includes('\\')) throw unsupported;
        return body;
      }
      // '' is a quote inside a single-quoted scalar; a lone ' would end it early.
      if (!body.includes("'")) return body;
      if (/^(?:[^']|'')*$/.test(body)) return body.replaceAll("''", "'");
      throw unsupported;
    }
    if (end - from === 2 && ((first === 123 && t.charCodeAt(from + 1) === 125) || (first === 91 && t.charCodeAt(from + 1) === 93))) {
      return first === 123 ? {} : [];
    }
    if (INDICATOR.has(first) && first !== DASH) throw unsupported;
    const text = t.slice(from, end);
    if (text.includes(': ') || text.includes(' #') || text.endsWith(':')) throw unsupported;
    if (first === DASH && (text.length === 1 || text.charCodeAt(1) === SPACE)) throw unsupported;
    return resolvePlain(text);
  }
}

/** The documents of `text` as js-yaml's core schema reads them, or null when `text` is not plain block YAML. */
export function readBlockYaml(text: string): unknown[] | null {
  if (NON_PRINTABLE.test(text)) return null;
  try {
    const reader = new Reader(text);
    const docs: unknown[] = [];
    // A leading "---" opens the first document; later ones separate documents.
    if (reader.indent === -1) reader.advance();
    for (;;) {
      if (reader.indent < 0) return null; // an empty document (or no text at all): js-yaml's call
      docs.push(reader.block());
      if (reader.indent === -2) return docs;
      if (reader.indent !== -1) return null;
      reader.advance();
    }
  } catch (e) {
    if (e === unsupported) return null;
    throw e;
  }
}
