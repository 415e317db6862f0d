// An in-memory nftables kernel behind the Nft interface, for fast tests of the nftables data
// path's failure paths. It understands the commands the data path writes (add/flush/delete of
// tables, chains, sets and maps; add and insert rule, delete rule by handle; add/delete element)
// and, when made with { ruleHandles: true }, lists a chain's rule handles. It refuses what the kernel
// refuses: a jump or goto to a missing chain, deleting a chain or set something still references,
// changing a base chain's hook or a set's declaration, a missing object, an element that exists
// with another value. A transaction is all or nothing. Failures can be injected, and foreign
// changes made (they are reported to watchers as the kernel's monitor would).
import type { Nft, NftCommit, NftFamily, NftTableListing, NftWatch } from '../../src/kernel/nft.ts';

interface Chain { spec: string; rules: string[]; handles: number[] }
interface Container { map: boolean; spec: string; elements: Map<string, string> }
interface Table { chains: Map<string, Chain>; sets: Map<string, Container> }

export class NftError extends Error {}

const clone = (tables: Map<string, Table>) => new Map([...tables].map(([k, t]) => [k, {
  chains: new Map([...t.chains].map(([n, c]) => [n, { spec: c.spec, rules: [...c.rules], handles: [...c.handles] }])),
  sets: new Map([...t.sets].map(([n, s]) => [n, { map: s.map, spec: s.spec, elements: new Map(s.elements) }])),
}]));

/** Chains a rule or verdict jumps or goes to; sets a rule names. */
const targets = (text: string) => [...text.matchAll(/\b(?:jump|goto) (\S+)/g)].map((m) => m[1]!);
const setRefs = (text: string) => [...text.matchAll(/@(\S+)/g)].map((m) => m[1]!);

export class FakeNft implements Nft {
  tables = new Map<string, Table>();
  /** Every committed transaction's lines, in order (the data path's and foreign ones). */
  readonly log: string[][] = [];
  private failures: Array<{ when: (lines: string[]) => boolean; message: string }> = [];
  private watchers = new Set<{ key: string; cb: (c: NftCommit) => void }>();
  private generation = 0;
  // Shared by every fake: a test may copy one fake's tables into another, handles and all.
  private static lastHandle = 0;
  listCalls = 0;
  ruleHandles?: (family: NftFamily, table: string, chain: string) => Promise<string[]>;

  constructor(o: { ruleHandles?: boolean } = {}) {
    if (o.ruleHandles) {
      this.ruleHandles = async (family, table, chain) => {
        // The kernel's dump filtered by a chain that is not there lists nothing.
        return (this.tables.get(`${family} ${table}`)?.chains.get(chain)?.handles ?? []).map(String);
      };
    }
  }

  /** The next transaction `when` matches (default: any) fails with `message` and commits nothing. */
  failNext(message = 'Error: Could not process rule: Device or resource busy', when: (lines: string[]) => boolean = () => true): void {
    this.failures.push({ when, message });
  }

  async apply(commands: string | Iterable<string>): Promise<void> {
    this.commit(typeof commands === 'string' ? commands : [...commands].join(''), 1);
  }

  async check(commands: string | Iterable<string>): Promise<void> {
    const lines = (typeof commands === 'string' ? commands : [...commands].join('')).split('\n').filter(Boolean);
    this.run(clone(this.tables), lines);
  }

  /** Someone else's `nft -f`: committed and reported to watchers. */
  foreign(commands: string): void {
    this.commit(commands, 2);
  }

  async listTable(family: NftFamily, table: string): Promise<NftTableListing | null> {
    this.listCalls++;
    const t = this.tables.get(`${family} ${table}`);
    if (!t) return null;
    const chains = new Map<string, { hook?: string; type?: string; priority?: number }>();
    for (const [name, c] of t.chains) {
      const m = /type (\w+) hook (\w+) priority (-?\d+)/.exec(c.spec);
      chains.set(name, m ? { type: m[1]!, hook: m[2]!, priority: Number(m[3]) } : {});
    }
    return {
      chains,
      sets: new Set([...t.sets].filter(([, s]) => !s.map).map(([n]) => n)),
      maps: new Set([...t.sets].filter(([, s]) => s.map).map(([n]) => n)),
    };
  }

  async deleteTable(family: NftFamily, table: string): Promise<boolean> {
    const had = this.tables.has(`${family} ${table}`);
    if (had) this.commit(`delete table ${family} ${table}\n`, 1);
    return had;
  }

  watchForeign(family: NftFamily, table: string, onForeign: (c: NftCommit) => void): NftWatch {
    const w = { key: `${family} ${table}`, cb: onForeign };
    this.watchers.add(w);
    return { stop: () => { this.watchers.delete(w); } };
  }

  /** The table as `add` lines in the renderer's format (for comparison with nftablesText). */
  dump(family: NftFamily, table = 'kube-proxy'): string {
    const t = this.tables.get(`${family} ${table}`);
    if (!t) return '';
    const p = `${family} ${table}`;
    const lines = [`add table ${p} { comment "rules for kube-proxy" ; }`];
    for (const [n, s] of t.sets) lines.push(`add ${s.map ? 'map' : 'set'} ${p} ${n} ${s.spec}`);
    for (const [n, c] of t.chains) lines.push(`add chain ${p} ${n}${c.spec}`);
    for (const [n, c] of t.chains) for (const r of c.rules) lines.push(`add rule ${p} ${n} ${r}`);
    for (const [n, s] of t.sets) for (const e of s.elements.values()) lines.push(`add element ${p} ${n} { ${e} }`);
    return lines.join('\n') + '\n';
  }

  private commit(text: string, pid: number): void {
    const lines = text.split('\n').filter(Boolean);
    const f = this.failures.findIndex((x) => x.when(lines));
    if (f >= 0) {
      const [failure] = this.failures.splice(f, 1);
      throw new NftError(failure!.message);
    }
    const next = clone(this.tables);
    const touched = this.run(next, lines);
    this.tables = next;
    this.log.push(lines);
    this.generation++;
    if (pid !== 1) for (const w of this.watchers) if (touched.has(w.key)) w.cb({ generation: this.generation, pid, tables: touched });
  }

  /** Applies lines to `tables` in place; throws on the first one the kernel would refuse. */
  private run(tables: Map<string, Table>, lines: string[]): Set<string> {
    const touched = new Set<string>();
    const fail = (line: string, why: string): never => { throw new NftError(`Error: Could not process rule: ${why}\n${line}`); };
    for (const line of lines) {
      const m = /^(add|insert|flush|delete) (table|chain|set|map|rule|element) (ip6?) (\S+)(?: (\S+))?(?: (.*))?$/.exec(line);
      if (!m) fail(line, 'syntax error');
      const [, verb, kind, fam, tname, name, rest] = m!;
      const key = `${fam} ${tname}`;
      touched.add(key);
      let t = tables.get(key);
      if (kind === 'table') {
        if (verb === 'add') { if (!t) tables.set(key, { chains: new Map(), sets: new Map() }); continue; }
        if (!t) fail(line, 'No such file or directory');
        if (verb === 'delete') tables.delete(key);
        else for (const c of t!.chains.values()) { c.rules = []; c.handles = []; }
        continue;
      }
      if (!t) fail(line, 'No such file or directory');
      t = t!;
      const refs = (what: (text: string) => string[], n: string) => {
        for (const c of t!.chains.values()) if (c.rules.some((r) => what(r).includes(n))) return true;
        for (const s of t!.sets.values()) if ([...s.elements.values()].some((e) => what(e).includes(n))) return true;
        return false;
      };
      if (verb === 'insert' && kind !== 'rule') fail(line, 'syntax error');
      if (kind === 'chain') {
        const c = t.chains.get(name!);
        const spec = rest ? ` ${rest}` : '';
        if (verb === 'add') {
          if (!c) t.chains.set(name!, { spec, rules: [], handles: [] });
          else if (spec && c.spec && spec !== c.spec) fail(line, 'Operation not supported');
          continue;
        }
        if (!c) fail(line, 'No such file or directory');
        if (verb === 'flush') { c!.rules = []; c!.handles = []; } else {
          if (refs(targets, name!)) fail(line, 'Device or resource busy');
          t.chains.delete(name!);
        }
        continue;
      }
      if (kind === 'set' || kind === 'map') {
        const s = t.sets.get(name!);
        if (verb === 'add') {
          if (!s) t.sets.set(name!, { map: kind === 'map', spec: rest ?? '', elements: new Map() });
          else if ((rest ?? '') !== s.spec) fail(line, 'File exists');
          continue;
        }
        if (!s) fail(line, 'No such file or directory');
        if (verb === 'flush') s!.elements.clear();
        else {
          if (refs(setRefs, name!)) fail(line, 'Device or resource busy');
          t.sets.delete(name!);
        }
        continue;
      }
      if (kind === 'rule') {
        const c = t.chains.get(name!);
        if (!c) fail(line, 'No such file or directory');
        if (verb === 'delete') {
          const i = c!.handles.indexOf(Number(/^handle (\d+)$/.exec(rest ?? '')?.[1] ?? NaN));
          if (i < 0) fail(line, 'No such file or directory');
          c!.rules.splice(i, 1);
          c!.handles.splice(i, 1);
          continue;
        }
        for (const target of targets(rest ?? '')) if (!t.chains.has(target)) fail(line, `No such file or directory (jump to ${target})`);
        for (const set of setRefs(rest ?? '')) if (!t.sets.has(set)) fail(line, `No such file or directory (set ${set})`);
        if (verb === 'insert') { c!.rules.unshift(rest ?? ''); c!.handles.unshift(++FakeNft.lastHandle); } else { c!.rules.push(rest ?? ''); c!.handles.push(++FakeNft.lastHandle); }
        continue;
      }
      // element
      const s = t.sets.get(name!);
      if (!s) fail(line, 'No such file or directory');
      const body = /^\{ (.*) \}$/.exec(rest ?? '')?.[1];
      if (body === undefined) fail(line, 'syntax error');
      const k = body!.split(' : ')[0]!.replace(/ comment ".*"$/, '');
      if (verb === 'add') {
        for (const target of targets(body!)) if (!t.chains.has(target)) fail(line, `No such file or directory (goto ${target})`);
        const had = s!.elements.get(k);
        if (had !== undefined && had !== body) fail(line, 'File exists');
        s!.elements.set(k, body!);
      } else {
        if (!s!.elements.has(k)) fail(line, 'No such file or directory');
        s!.elements.delete(k);
      }
    }
    return touched;
  }
}
