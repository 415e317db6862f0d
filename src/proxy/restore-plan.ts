// From rendered iptables-restore text to the restores that actually reach the kernel. Pure.
//
// Why: measured on this machine (scripts/bench/proxy-restore.ts, iptables 1.8.9), one --noflush
// restore that declares ~40k chains takes minutes on iptables-nft, while the same chains in
// restores of <= ~1000 chain declarations take 3.1 s (fresh) / 3.6 s (all existing) at 10k
// services. iptables-legacy is the opposite: every restore rewrites the whole table, so one
// transaction (1.9 s) beats chunks (7-12 s). So knet
//  1. remembers every chain's rules from the last successful restore and writes only chains
//     whose content changed (a periodic or partial sync of an unchanged cluster writes nothing,
//     and a restart of knet rewrites each chain once). The renderer hands out the same rule
//     arrays for unchanged ports, so most comparisons are one reference check;
//  2. on nft splits large writes into restores of bounded size, ordered so every intermediate
//     kernel state is consistent: a chain is written after the chains it jumps to, stale chains
//     are deleted only after the chains that referenced them were rewritten;
//  3. marks restores that hold only independent service chains, which the applier runs two at
//     a time (iptables-nft parses and fetches its cache in parallel; the kernel serialises the
//     commits): 10k services' chains in 2.0 s instead of 3.8 s.
import type { RenderedTable, RenderedTables } from '../rules/types.ts';
import { sameStrings } from '../util/arrays.ts';

/** table -> chain -> its rules in the kernel (null: the chain exists, content unknown). */
export type AppliedState = Map<string, Map<string, readonly string[] | null>>;

/** iptables-restore text in the renderer's per-chain shape (tests, and callers holding text). */
export function parseRestore(text: string): RenderedTables {
  const out: RenderedTables = new Map();
  let cur: RenderedTable | null = null;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1).trim();
      cur = out.get(name) ?? { chains: new Map(), deletes: new Set() };
      out.set(name, cur);
    } else if (line === 'COMMIT') {
      cur = null;
    } else if (!cur) {
      throw new Error(`restore text: line outside a table: ${line}`);
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (!cur.chains.has(name)) cur.chains.set(name, []);
    } else if (line.startsWith('-A ')) {
      const name = line.slice(3).split(' ')[0]!;
      let rules = cur.chains.get(name);
      if (!rules) throw new Error(`restore text: rule for undeclared chain ${name}`);
      rules.push(line);
    } else if (line.startsWith('-X ')) {
      cur.deletes.add(line.slice(3).trim());
    } else {
      throw new Error(`restore text: unexpected line: ${line}`);
    }
  }
  for (const t of out.values()) for (const d of t.deletes) t.chains.delete(d);
  return out;
}

/** Rules in the chains of one table, as far as known. */
export function rulesInTable(a: AppliedState, table: string): number {
  let n = 0;
  for (const v of a.get(table)?.values() ?? []) n += v?.length ?? 0;
  return n;
}

export interface PlanOptions {
  /** Full sync: also delete chains we know of that the text no longer declares. */
  full: boolean;
  /** Which known-but-unrendered chains a full sync may delete. */
  isStale: (table: string, chain: string) => boolean;
  /** At most this many chain declarations per restore (Infinity: one restore). */
  maxChainsPerRestore: number;
  /** The tables already list every chain after the chains it jumps to (a renderer's do). */
  inDependencyOrder?: boolean;
  /**
   * The caller gives up `applied` (it forgets the kernel state until the restores succeed):
   * update it in place and return it as `next`. Copying the state of 10k services (40k chains)
   * on every sync left megabytes of garbage per sync in the old generation.
   */
  inPlace?: boolean;
  /**
   * Lets restores run two at a time: `cutBefore` says where a chunk may end without splitting
   * a chain from the chains that jump to it (within the write order), and `independent` which
   * written chains depend only on chains written in their own chunk or in an earlier, separate
   * restore. Chunks made only of such writes, cut at such places, are marked concurrent.
   */
  concurrency?: {
    cutBefore: (table: string, prev: string, cur: string) => boolean;
    independent: (table: string, chain: string) => boolean;
  };
}

/** One restore, its text rendered when asked for (so ~40 texts of 13 MB in all need not be alive at once). */
export interface RestoreChunk {
  text(): string;
  /** The same text in newline-terminated pieces. */
  pieces(): Iterable<string>;
}

export interface Plan {
  /** The restore texts in order (rendered when first read). */
  readonly restores: string[];
  /** The same restores, each rendered only when its text is asked for. */
  chunks: RestoreChunk[];
  /**
   * Per restore: may run at the same time as the neighbouring restores that are also marked
   * (every other restore runs alone, after all before it finished).
   */
  concurrent: boolean[];
  /** Applied state once every restore succeeded. */
  next: AppliedState;
  chainsWritten: number;
  chainsDeleted: number;
  rulesWritten: Record<string, number>;
}

/** The chain a rule jumps or goes to ("-j X" / "-g X"), or null. */
function jumpTarget(rule: string): string | null {
  let i = rule.indexOf(' -j ');
  if (i < 0) i = rule.indexOf(' -g ');
  if (i < 0) return null;
  const end = rule.indexOf(' ', i + 4);
  return rule.slice(i + 4, end < 0 ? undefined : end);
}

/** Chains in dependency order: every chain after the chains it jumps to (within `set`). */
function orderByDependencies(chains: Map<string, string[]>, set: string[]): string[] {
  const inSet = new Set(set);
  const done = new Set<string>();
  const out: string[] = [];
  const visit = (c: string, depth: number) => {
    if (done.has(c) || depth > 64) return;
    done.add(c);
    for (const r of chains.get(c) ?? []) {
      const t = jumpTarget(r);
      if (t !== null && t !== c && inSet.has(t)) visit(t, depth + 1);
    }
    out.push(c);
  };
  for (const c of set) visit(c, 0);
  return out;
}

interface Unit { table: string; chain: string; rules: string[] | null }

export function planRestores(parsed: RenderedTables, applied: AppliedState, o: PlanOptions): Plan {
  const next: AppliedState = o.inPlace ? applied : new Map([...applied].map(([t, m]) => [t, new Map(m)]));
  const units: Unit[] = [];
  const rulesWritten: Record<string, number> = {};
  let chainsWritten = 0;
  let chainsDeleted = 0;
  let declared = 0;
  for (const [table, pt] of parsed) declared += pt.chains.size + pt.deletes.size + (o.full ? (applied.get(table)?.size ?? 0) : 0);
  const mayChunk = declared > o.maxChainsPerRestore;
  for (const [table, pt] of parsed) {
    const known = next.get(table) ?? new Map<string, readonly string[] | null>();
    next.set(table, known);
    rulesWritten[table] = 0;
    const write: string[] = [];
    for (const [chain, rules] of pt.chains) if (!sameStrings(known.get(chain), rules)) write.push(chain);
    // Within one restore all chains are declared before any rule, so order matters only when
    // the writes are split over several restores.
    const ordered = mayChunk && !o.inDependencyOrder ? orderByDependencies(pt.chains, write) : write;
    for (const chain of ordered) {
      const rules = pt.chains.get(chain)!;
      units.push({ table, chain, rules });
      known.set(chain, rules);
      chainsWritten++;
      rulesWritten[table]! += rules.length;
    }
    const del = new Set<string>();
    for (const c of pt.deletes) if (known.has(c)) del.add(c);
    if (o.full) for (const c of known.keys()) if (!pt.chains.has(c) && o.isStale(table, c)) del.add(c);
    for (const c of [...del].sort()) {
      units.push({ table, chain: c, rules: null });
      known.delete(c);
      chainsDeleted++;
    }
  }
  // Deletions go after every write of their table (units are already in that order), and
  // chunk boundaries never reorder units, so each intermediate state is consistent.
  const chunks: RestoreChunk[] = [];
  const concurrent: boolean[] = [];
  const max = Math.max(1, o.maxChainsPerRestore);
  const c = o.concurrency;
  let start = 0;
  let forced = false;
  const close = (end: number) => {
    const chunk = units.slice(start, end);
    chunks.push(restoreChunk(chunk));
    // A chunk that begins where a cut was forced may depend on the chunk before it.
    concurrent.push(!!c && !forced && chunk.every((u) => u.rules !== null && c.independent(u.table, u.chain)));
    start = end;
  };
  for (let i = 1; i <= units.length; i++) {
    if (i === units.length) { close(i); break; }
    const size = i - start;
    if (size < max) continue;
    const prev = units[i - 1]!;
    const cur = units[i]!;
    const safe = !c || prev.table !== cur.table || c.cutBefore(cur.table, prev.chain, cur.chain);
    if (safe || size >= 2 * max) {
      close(i);
      forced = !safe;
    }
  }
  let restores: string[] | null = null;
  return {
    get restores() { return (restores ??= chunks.map((c) => c.text())); },
    chunks, concurrent, next, chainsWritten, chainsDeleted, rulesWritten,
  };
}

/** The lines of one restore: per table its header, every declaration, rules, deletions, COMMIT. */
function* chunkLines(units: Unit[]): Generator<string> {
  const byTable = new Map<string, Unit[]>();
  for (const u of units) {
    let l = byTable.get(u.table);
    if (!l) byTable.set(u.table, (l = []));
    l.push(u);
  }
  for (const [table, list] of byTable) {
    yield `*${table}`;
    for (const u of list) yield `:${u.chain} - [0:0]`;
    for (const u of list) if (u.rules) yield* u.rules;
    for (const u of list) if (!u.rules) yield `-X ${u.chain}`;
    yield 'COMMIT';
  }
}

/** Newline-terminated runs of `size` lines. */
function* batched(lines: Iterable<string>, size: number): Generator<string> {
  let buf: string[] = [];
  for (const l of lines) {
    buf.push(l);
    if (buf.length === size) { buf.push(''); yield buf.join('\n'); buf = []; }
  }
  if (buf.length) { buf.push(''); yield buf.join('\n'); }
}

/**
 * One restore. Its pieces feed iptables-restore's stdin one after another: on the legacy
 * backend a full sync is one restore of every chain (10k services: 13 MB of text), which then
 * never exists whole.
 */
function restoreChunk(units: Unit[]): RestoreChunk {
  return {
    text: () => [...chunkLines(units), ''].join('\n'),
    pieces: () => batched(chunkLines(units), 4096),
  };
}

/** Chain names per table from iptables-save output (content unknown: null). */
export function appliedFromSave(saveText: string, keep: (table: string, chain: string) => boolean): AppliedState {
  const out: AppliedState = new Map();
  let table = '';
  for (const line of saveText.split('\n')) {
    if (line.startsWith('*')) { table = line.slice(1).trim(); if (!out.has(table)) out.set(table, new Map()); }
    else if (line.startsWith(':') && table) {
      const [name, policy] = line.slice(1).split(' ');
      if (policy === '-' && keep(table, name!)) out.get(table)!.set(name!, null);
    }
  }
  return out;
}
