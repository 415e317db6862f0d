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
//     kernel state is consistent: a chain is written after the chains it jumps to, and a stale
//     chain is deleted only after (or in the same restore as) every chain that jumps to it was
//     rewritten or deleted. Name order is not enough: 340 services deleted at once put a
//     KUBE-SEP in an earlier restore than the KUBE-SVC jumping to it, the kernel refused
//     (EBUSY) and every later sync failed the same way;
//  3. marks restores whose written chains jump only to chains of their own restore or of a
//     restore that ran before, alone; the applier runs them two at a time (iptables-nft parses
//     and fetches its cache in parallel; the kernel serialises the commits): 10k services'
//     chains in 2.0 s instead of 3.8 s. The jumps are read from the rules, so this holds for
//     any order the tables list their chains in; the renderer's order (each port's chains
//     together, each after its targets) only makes most cuts clean and most restores marked.
import type { RenderedTable, RenderedTables } from '../rules/types.ts';
import { sameStrings } from '../util/arrays.ts';

/** table -> chain -> its rules in the kernel (null: the chain exists, content unknown). */
export type AppliedState = Map<string, Map<string, readonly string[] | null>>;

/** table -> chain -> the chains its rules jump or go to, as the kernel holds them (iptables-save). */
export type KernelJumps = Map<string, Map<string, string[]>>;

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
  /**
   * The tables claim to list every chain after the chains it jumps to (a renderer's do): the
   * claim is checked when writes are split, and the chains are sorted when it does not hold.
   */
  inDependencyOrder?: boolean;
  /**
   * What the kernel holds now, read with iptables-save (after a start or a failure, when the
   * content of `applied` is unknown): orders deletions by the real jumps, and a stale chain that
   * a chain this plan leaves alone still jumps to (someone else's rule) is flushed and kept
   * instead of deleted, so that one foreign rule cannot fail every sync.
   */
  kernelJumps?: KernelJumps;
  /**
   * The caller gives up `applied` (it forgets the kernel state until the restores succeed):
   * update it in place and return it as `next`. Copying the state of 10k services (40k chains)
   * on every sync left megabytes of garbage per sync in the old generation.
   */
  inPlace?: boolean;
  /**
   * Lets restores run two at a time. A restore is marked concurrent when it only writes
   * `eligible` chains, each jumping only to chains written in the same restore, already in the
   * kernel, or written by a restore that runs alone before it; cuts are placed, where the size
   * allows, so that no chain is split from the chains that jump to it.
   */
  concurrency?: { eligible: (table: string, chain: string) => boolean };
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
  /** Stale chains flushed but kept because a chain outside the plan still jumps to them. */
  kept: Array<{ table: string; chain: string; referrers: string[] }>;
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

/** Rank of a service chain among the chains that jump to each other: referrers first. */
function deletionRank(chain: string): number {
  if (chain.startsWith('KUBE-FW-')) return 0;
  if (chain.startsWith('KUBE-EXT-') || chain.startsWith('KUBE-XLB-')) return 1;
  if (chain.startsWith('KUBE-SVC-') || chain.startsWith('KUBE-SVL-')) return 2;
  if (chain.startsWith('KUBE-SEP-')) return 3;
  return 4;
}

/**
 * Chains to delete, each after every chain in the set that jumps to it, so that any cut of the
 * sequence into restores deletes no chain that a later restore still holds a jump to. The jumps
 * come from the chains' known rules, else from the kernel; where neither is known, from the
 * naming (FW, EXT, SVC/SVL, SEP: kube-proxy's chains only jump down that list).
 */
export function orderDeletions(chains: Iterable<string>, jumpsOf: (chain: string) => Iterable<string> | null): string[] {
  const set = [...chains].sort((a, b) => deletionRank(a) - deletionRank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const inSet = new Set(set);
  const referrers = new Map<string, string[]>();
  for (const c of set) {
    for (const target of jumpsOf(c) ?? []) {
      if (target === c || !inSet.has(target)) continue;
      let l = referrers.get(target);
      if (!l) referrers.set(target, (l = []));
      l.push(c);
    }
  }
  const out: string[] = [];
  const state = new Map<string, 1 | 2>();
  // Iterative depth-first: a chain is emitted once all its referrers are; a cycle (never in
  // rendered rules) is cut where it is found.
  for (const root of set) {
    if (state.has(root)) continue;
    const stack: Array<{ c: string; i: number }> = [{ c: root, i: 0 }];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const refs = referrers.get(top.c) ?? [];
      if (top.i < refs.length) {
        const r = refs[top.i++]!;
        if (!state.has(r)) { state.set(r, 1); stack.push({ c: r, i: 0 }); }
        continue;
      }
      state.set(top.c, 2);
      out.push(top.c);
      stack.pop();
    }
  }
  return out;
}

/** Jump targets of a chain's rules. */
function* targetsOf(rules: readonly string[]): Generator<string> {
  for (const r of rules) {
    const t = jumpTarget(r);
    if (t !== null) yield t;
  }
}

interface Unit {
  table: string;
  chain: string;
  /** null: delete the chain. */
  rules: readonly string[] | null;
  /** Indexes of the units written in this plan that its rules jump to (only when split). */
  deps?: number[];
}

/** Positions of the written chains each chain jumps to, or null when one comes later (not in dependency order). */
function writtenDeps(chains: Map<string, string[]>, order: readonly string[], base: number): Array<number[] | undefined> | null {
  const at = new Map<string, number>();
  order.forEach((c, k) => at.set(c, base + k));
  const out: Array<number[] | undefined> = new Array(order.length);
  for (let k = 0; k < order.length; k++) {
    let deps: number[] | undefined;
    for (const r of chains.get(order[k]!)!) {
      const t = jumpTarget(r);
      const d = t === null ? undefined : at.get(t);
      if (d === undefined || d === base + k) continue;
      if (d > base + k) return null;
      (deps ??= []).push(d);
    }
    out[k] = deps;
  }
  return out;
}

export function planRestores(parsed: RenderedTables, applied: AppliedState, o: PlanOptions): Plan {
  const next: AppliedState = o.inPlace ? applied : new Map([...applied].map(([t, m]) => [t, new Map(m)]));
  const units: Unit[] = [];
  const rulesWritten: Record<string, number> = {};
  let chainsWritten = 0;
  let chainsDeleted = 0;
  const kept: Plan['kept'] = [];
  let declared = 0;
  for (const [table, pt] of parsed) declared += pt.chains.size + pt.deletes.size + (o.full ? (applied.get(table)?.size ?? 0) : 0);
  const mayChunk = declared > o.maxChainsPerRestore;
  for (const [table, pt] of parsed) {
    const known = next.get(table) ?? new Map<string, readonly string[] | null>();
    next.set(table, known);
    rulesWritten[table] = 0;
    const write: string[] = [];
    for (const [chain, rules] of pt.chains) if (!sameStrings(known.get(chain), rules)) write.push(chain);
    const written = new Set(write);
    // Within one restore all chains are declared before any rule, so order matters only when
    // the writes are split over several restores; then the order is checked, not trusted.
    let ordered = write;
    let deps: Array<number[] | undefined> | null = null;
    if (mayChunk) {
      if (o.inDependencyOrder) deps = writtenDeps(pt.chains, write, units.length);
      if (!deps) {
        ordered = orderByDependencies(pt.chains, write);
        deps = writtenDeps(pt.chains, ordered, units.length);
      }
    }
    for (let k = 0; k < ordered.length; k++) {
      const chain = ordered[k]!;
      const rules = pt.chains.get(chain)!;
      const d = deps?.[k];
      units.push(d ? { table, chain, rules, deps: d } : { table, chain, rules });
      known.set(chain, rules);
      chainsWritten++;
      rulesWritten[table]! += rules.length;
    }
    const del = new Set<string>();
    for (const c of pt.deletes) if (known.has(c)) del.add(c);
    if (o.full) for (const c of known.keys()) if (!pt.chains.has(c) && o.isStale(table, c)) del.add(c);
    if (!del.size) continue;
    const kernel = o.kernelJumps?.get(table);
    if (kernel) {
      // A chain that stays as it is (neither written nor deleted here) and jumps to a stale
      // chain would make its deletion fail: flush that one and keep it.
      const blocked = new Map<string, string[]>();
      for (const [chain, targets] of kernel) {
        if (written.has(chain) || del.has(chain)) continue;
        for (const t of targets) if (del.has(t)) blocked.set(t, [...(blocked.get(t) ?? []), chain]);
      }
      for (const [chain, referrers] of [...blocked].sort(([a], [b]) => (a < b ? -1 : 1))) {
        del.delete(chain);
        kept.push({ table, chain, referrers });
        if (known.get(chain)?.length === 0) continue;
        units.push({ table, chain, rules: NO_RULES });
        known.set(chain, NO_RULES);
        chainsWritten++;
      }
    }
    const jumpsOf = (c: string): Iterable<string> | null => {
      const rules = known.get(c);
      return rules ? targetsOf(rules) : kernel?.get(c) ?? null;
    };
    for (const c of orderDeletions(del, jumpsOf)) {
      units.push({ table, chain: c, rules: null });
      known.delete(c);
      chainsDeleted++;
    }
  }
  // Deletions go after every write of their table, referrers first (units are already in that
  // order), and chunk boundaries never reorder units, so each intermediate state is consistent.
  const bounds = chunkBounds(units, Math.max(1, o.maxChainsPerRestore), !!o.concurrency);
  const chunks = bounds.map(([start, end]) => restoreChunk(units.slice(start, end)));
  const concurrent = o.concurrency ? markConcurrent(units, bounds, o.concurrency.eligible) : bounds.map(() => false);
  let restores: string[] | null = null;
  return {
    get restores() { return (restores ??= chunks.map((c) => c.text())); },
    chunks, concurrent, next, chainsWritten, chainsDeleted, rulesWritten, kept,
  };
}

/**
 * Cuts the units into restores of `max` units; with `clean`, at most twice that where no clean
 * cut comes: a cut is clean when no unit after it jumps to a unit before it in the same restore
 * (units that many restores use, such as KUBE-MARK-MASQ, do not count: their restore runs alone
 * anyway).
 */
function chunkBounds(units: readonly Unit[], max: number, clean: boolean): Array<[number, number]> {
  // Per unit, the last unit within reach of one restore that jumps to it (a far user, such as
  // KUBE-SERVICES jumping to every service chain, must not hide the near ones).
  const lastUse = new Int32Array(units.length).fill(-1);
  units.forEach((u, i) => { for (const d of u.deps ?? []) if (i - d <= 2 * max && i > lastUse[d]!) lastUse[d] = i; });
  const bounds: Array<[number, number]> = [];
  let start = 0;
  let reach = -1;
  for (let i = 0; i < units.length; i++) {
    const size = i - start;
    if (size >= max && (!clean || reach < i || size >= 2 * max)) {
      bounds.push([start, i]);
      start = i;
      reach = -1;
    }
    if (lastUse[i]! > reach) reach = lastUse[i]!;
  }
  if (units.length) bounds.push([start, units.length]);
  return bounds;
}

/**
 * Which restores may run beside their neighbours: runRestores runs consecutive marked restores
 * two at a time, so a marked restore may only need chains written in itself or before its run
 * of marked restores began. When a restore needs the first restore of its run, that one is made
 * to run alone instead (it holds chains many others use).
 */
function markConcurrent(units: readonly Unit[], bounds: ReadonlyArray<[number, number]>, eligible: (table: string, chain: string) => boolean): boolean[] {
  const chunkOf = new Int32Array(units.length);
  bounds.forEach(([s, e], c) => chunkOf.fill(c, s, e));
  const out: boolean[] = [];
  let runStart = 0;
  for (let c = 0; c < bounds.length; c++) {
    const [s, e] = bounds[c]!;
    let ok = true;
    let onlyRunStart = true;
    for (let i = s; i < e; i++) {
      const u = units[i]!;
      if (!u.rules || !eligible(u.table, u.chain)) { ok = false; onlyRunStart = false; break; }
      for (const d of u.deps ?? []) {
        const dc = chunkOf[d]!;
        if (dc === c || dc < runStart) continue;
        ok = false;
        if (dc !== runStart) onlyRunStart = false;
      }
    }
    if (ok) { out.push(true); continue; }
    if (onlyRunStart && runStart < c) {
      out[runStart] = false;
      runStart++;
      out.push(true);
      continue;
    }
    out.push(false);
    runStart = c + 1;
  }
  return out;
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

const NO_RULES: readonly string[] = Object.freeze([]);

/** Every chain's jump targets per table from iptables-save output (built-in chains included). */
export function jumpsFromSave(saveText: string): KernelJumps {
  const out: KernelJumps = new Map();
  let table: Map<string, string[]> | undefined;
  for (const line of saveText.split('\n')) {
    if (line.startsWith('*')) {
      const name = line.slice(1).trim();
      table = out.get(name) ?? new Map();
      out.set(name, table);
    } else if (table && line.startsWith('-A ')) {
      const target = jumpTarget(line);
      if (target === null) continue;
      const chain = line.slice(3, line.indexOf(' ', 3));
      const l = table.get(chain);
      if (l) l.push(target);
      else table.set(chain, [target]);
    }
  }
  return out;
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
