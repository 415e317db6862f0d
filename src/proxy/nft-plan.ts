// What to write to the kernel for one nftables sync, as `nft -f` transactions. Pure: from what the
// kernel holds (as far as we know it) and a render, it gives the transactions and what the kernel
// will hold after them.
//
// A full sync (at start, after a failure, when someone else changed the table, periodically)
// starts from the kernel's chain and set names: it writes the fixed part, every service chain,
// and all elements (containers flushed and refilled in one transaction, so no packet sees them
// half-filled); chains no service uses any more are flushed. A partial sync writes only the
// chains whose rules changed and the elements that differ. Either way a chain that went unused is
// flushed and deleted only in a later sync, at least a second after (as kube-proxy does: kernels
// before 6.2 may still reference it from a map element deleted in the same second).
//
// Order inside a transaction: chains are declared before any rule jumps to them, references are
// dropped (element deletes, rewritten chains) before what they referenced is flushed or deleted.
// A chain written in front of its old rules (insertThenTrim) keeps those references until the
// trim, a transaction of its own: what only they use is deleted there (NftPlan.afterTrims).
import {
  CLUSTER_IPS, FIREWALL_IPS, NFT_TABLE, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, NODEPORT_IPS, SERVICE_IPS, SERVICE_NODEPORTS,
  elementText, type NftElement, type NftRenderResult, type NftServiceOutput,
} from '../rules/nftables.ts';
import { isNftAffinitySet, isNftServiceChain } from '../rules/nftables-names.ts';
import type { NftTableListing } from '../kernel/nft.ts';

/** The element containers every service writes to (the fixed part adds nodeport-ips). */
export const SERVICE_CONTAINERS = [CLUSTER_IPS, SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, FIREWALL_IPS];

/** What the kernel holds in our table after our last successful sync. */
export interface NftApplied {
  /** The fixed part's key (settings and ServiceCIDRs) it was written with. */
  fixedKey: string;
  /** Service chains with their rules. */
  chains: Map<string, readonly string[]>;
  /** Flushed chains no service uses, with the time they went stale (ms). */
  stale: Map<string, number>;
  /** Affinity sets with their declaration body. */
  sets: Map<string, string>;
  /** Elements per container: key to the text between the braces. */
  elements: Map<string, Map<string, string>>;
  /** Per "container key": the services claiming the element, in name order (the first one's is written). */
  owners: Map<string, string[]>;
}

export interface NftPlan {
  /**
   * Transactions to run in order; each gives the lines of one `nft -f` when called. A full
   * sync's lines are built only then, so only the transaction being written is in memory (at
   * 10k services every line of a full sync at once is ~35 MB).
   */
  transactions: Array<() => readonly string[]>;
  /**
   * Stale chains the first transaction deletes, one line each at its start. When that
   * transaction fails, it is run again without those lines (a chain still referenced only
   * delays its deletion); one transaction instead of two is a whole `nft` run (0.3 s at 10k
   * services) off every change that follows an endpoint change by more than a second.
   */
  deletesStale: string[];
  /**
   * Service chains filled with new rules in front of their old ones (`insertThenTrim`): once
   * transaction `after` committed (the one that wrote them: a full sync's old sets then leave
   * the table as it goes, which keeps the kernel's walks of its set list short), each chain's
   * rules after the first `keep` are deleted by handle in a transaction of their own.
   */
  trims: Array<{ chain: string; keep: number; after: number }>;
  /** Lines for the transaction that deletes the trimmed rules, after those deletions (sets only they used). */
  afterTrims: string[];
  /** The kernel state once every transaction committed (and the trims). */
  next: NftApplied;
  chainsWritten: number;
  elementsWritten: number;
}

export interface PlanOptions {
  /** Now (ms), for stale chain ages. */
  now: number;
  /** Service chains per transaction in a full sync (default: all in one). */
  maxChainsPerTransaction?: number;
  /** A stale chain is deleted once it has been stale this long (ms; kube-proxy: 1 s). */
  staleAfterMs?: number;
  /**
   * A service chain whose rules end in a `numgen` vmap, and which the kernel holds already, is
   * rewritten by inserting its new rules in front of the old ones and trimming those later
   * (NftPlan.trims), not by flushing it: in partial syncs when its old rules end in a vmap too,
   * in full syncs whenever the kernel has the chain (its old rules are not known). Why: a
   * packet that entered the chain just before the commit looks up the old rule's anonymous vmap
   * after the commit, which has by then dropped that map's elements; the lookup misses, the
   * packet falls through the service chain undnatted and is rejected as a packet to an unused
   * ClusterIP port (scripts/nftables-vmap-race.ts, under a UDP flood: 221 packets missed in 3000
   * flush-and-refill rewrites, 0 in 3000 written in front). In front, the new rules decide every
   * packet of the new generation, and the old map lives until no rule can reach it.
   */
  insertThenTrim?: boolean;
  /**
   * A full sync's fixed part (and its stale chain deletions) in a transaction of its own, not
   * with the first services: where netlink batches carry the service chains and elements
   * (nft-batch.ts), only that small transaction needs `nft`.
   */
  fixedApart?: boolean;
}

/** Appends lines one by one: spreading a 10k-service sync's lines as arguments overflows the stack. */
function append(into: string[], ...parts: ReadonlyArray<readonly string[]>): void {
  for (const part of parts) for (const line of part) into.push(line);
}

const ownerKey = (container: string, key: string) => `${container} ${key}`;

function tablePrefix(r: Pick<NftRenderResult, 'family'>): string {
  return `${r.family} ${NFT_TABLE}`;
}

type ChainTest = (chain: string, rules: readonly string[]) => boolean;

/**
 * Lines declaring and filling the chains of some services (affinity sets first): each chain
 * flushed and refilled, or, where `inFront` says so, its new rules inserted before its old ones
 * (which `trims` lists for deletion once this committed).
 */
function serviceLines(t: string, outs: Iterable<NftServiceOutput>, onlyChains?: ChainTest, inFront?: ChainTest) {
  const declare: string[] = [];
  const rules: string[] = [];
  const sets: string[] = [];
  const trims: NftPlan['trims'] = [];
  let chains = 0;
  for (const out of outs) {
    for (const [name, spec] of out.sets) sets.push(`add set ${t} ${name} ${spec}`);
    for (const [name, list] of out.chains) {
      if (onlyChains && !onlyChains(name, list)) continue;
      chains++;
      if (inFront?.(name, list)) {
        declare.push(`add chain ${t} ${name}`);
        // Each insert goes first, so the last rule is inserted first.
        for (let i = list.length - 1; i >= 0; i--) rules.push(`insert rule ${t} ${name} ${list[i]}`);
        trims.push({ chain: name, keep: list.length, after: 0 });
        continue;
      }
      declare.push(`add chain ${t} ${name}`, `flush chain ${t} ${name}`);
      for (const r of list) rules.push(`add rule ${t} ${name} ${r}`);
    }
  }
  return { declare, sets, rules, chains, trims };
}

/**
 * Chains in the kernel that are neither ours nor service chains (an older kube-proxy's base
 * chains, say) and base chains hooked differently from ours: the full sync flushes and deletes
 * them, since a base chain's hook and priority cannot be changed in place.
 */
function foreignChains(r: NftRenderResult, kernel: NftTableListing | null): string[] {
  const drop: string[] = [];
  for (const [name, k] of kernel?.chains ?? []) {
    if (isNftServiceChain(name)) continue;
    const ours = r.fixed.chains.get(name);
    if (!ours) { drop.push(name); continue; }
    const m = /type (\w+) hook (\w+) priority (-?\d+)/.exec(ours.spec);
    if (m ? k.hook !== m[2] || k.type !== m[1] || k.priority !== Number(m[3]) : k.hook !== undefined) drop.push(name);
  }
  return drop;
}

/** The fixed part: table, base and dispatch chains with their rules, sets and maps. */
function fixedLines(r: NftRenderResult, kernel: NftTableListing | null, drop: readonly string[]): string[] {
  const t = tablePrefix(r);
  const lines = [`add table ${t} { comment "rules for kube-proxy" ; }`];
  for (const name of drop) lines.push(`flush chain ${t} ${name}`);
  for (const name of drop) lines.push(`delete chain ${t} ${name}`);
  for (const [name, spec] of r.fixed.sets) lines.push(`add set ${t} ${name} ${spec}`);
  for (const [name, spec] of r.fixed.maps) lines.push(`add map ${t} ${name} ${spec}`);
  for (const [name, c] of r.fixed.chains) lines.push(`add chain ${t} ${name}${c.spec}`, `flush chain ${t} ${name}`);
  for (const [name, c] of r.fixed.chains) for (const rule of c.rules) lines.push(`add rule ${t} ${name} ${rule}`);
  // Sets and maps that are not ours (nodeport-ips when node ports are accepted everywhere, an
  // older kube-proxy's), once the rules above no longer reference them.
  for (const name of [...(kernel?.sets ?? [])].sort()) if (!r.fixed.sets.has(name) && !isNftAffinitySet(name)) lines.push(`delete set ${t} ${name}`);
  for (const name of [...(kernel?.maps ?? [])].sort()) if (!r.fixed.maps.has(name)) lines.push(`delete map ${t} ${name}`);
  return lines;
}

/** Every element of the render by container, with the owners of each (fixed elements: owner ""). */
function allElements(r: NftRenderResult): { elements: Map<string, Map<string, string>>; owners: Map<string, string[]> } {
  const elements = new Map<string, Map<string, string>>();
  const owners = new Map<string, string[]>();
  const add = (owner: string, container: string, e: NftElement) => {
    let m = elements.get(container);
    if (!m) elements.set(container, (m = new Map()));
    if (!m.has(e.key)) m.set(e.key, elementText(e));
    const k = ownerKey(container, e.key);
    const list = owners.get(k);
    if (!list) owners.set(k, [owner]);
    else if (list[list.length - 1] !== owner) list.push(owner);
  };
  for (const [c, e] of r.fixed.elements) add('', c, e);
  for (const [key, out] of r.services) for (const [c, e] of out.elements) add(key, c, e);
  return { elements, owners };
}

/** Stale chains old enough to delete. */
function dueStale(stale: Map<string, number>, active: (c: string) => boolean, o: PlanOptions): string[] {
  const after = o.staleAfterMs ?? 1000;
  const due: string[] = [];
  for (const [c, since] of stale) if (!active(c) && o.now - since >= after) due.push(c);
  return due.sort();
}

/**
 * A full sync over whatever the kernel holds (`kernel`: its chain and set names; null: no
 * table). `known`: what we knew before (for the ages of stale chains), if anything.
 */
export function planFull(r: NftRenderResult, kernel: NftTableListing | null, known: NftApplied | null, o: PlanOptions): NftPlan {
  const t = tablePrefix(r);
  const active = new Set<string>();
  for (const out of r.services.values()) for (const c of out.chains.keys()) active.add(c);
  const activeSets = new Set<string>();
  for (const out of r.services.values()) for (const s of out.sets.keys()) activeSets.add(s);

  // Stale chains: those the kernel holds that no service uses; known ones keep their age.
  const stale = new Map<string, number>();
  for (const name of kernel?.chains.keys() ?? []) {
    if (isNftServiceChain(name) && !active.has(name)) stale.set(name, known?.stale.get(name) ?? o.now);
  }
  const deletesStale = dueStale(stale, (c) => active.has(c), o);
  for (const c of deletesStale) stale.delete(c);
  const drop = foreignChains(r, kernel);
  const base = fixedLines(r, kernel, drop);
  // Service chains the kernel already holds get their new rules in front (see insertThenTrim);
  // not when the fixed part deletes chains, which old rules might still jump to.
  const inFront: ChainTest | undefined = o.insertThenTrim === true && kernel && drop.length === 0 ? (name, list) => kernel.chains.has(name) && endsInVmap(list) : undefined;
  const trims: NftPlan['trims'] = [];
  // Service chains in transactions of bounded size, whole services each (a service's chains
  // jump to each other, so they must arrive together). The first transaction also carries the
  // fixed part (unless fixedApart), the last one the elements (one commit fewer).
  const max = o.maxChainsPerTransaction ?? Number.POSITIVE_INFINITY;
  const batches: NftServiceOutput[][] = [[]];
  let batchChains = 0;
  let chainsWritten = 0;
  for (const out of r.services.values()) {
    if (batchChains > 0 && batchChains + out.chains.size > max) {
      batches.push([]);
      batchChains = 0;
    }
    batches[batches.length - 1]!.push(out);
    batchChains += out.chains.size;
    chainsWritten += out.chains.size;
    if (inFront) for (const [name, list] of out.chains) if (inFront(name, list)) trims.push({ chain: name, keep: list.length, after: batches.length - 1 + (o.fixedApart ? 1 : 0) });
  }

  const { elements, owners } = allElements(r);
  let elementsWritten = 0;
  for (const m of elements.values()) elementsWritten += m.size;
  const containers = [...SERVICE_CONTAINERS, ...(r.fixed.sets.has(NODEPORT_IPS) ? [NODEPORT_IPS] : [])];
  const staleNow = [...stale.keys()].sort();
  const goneSets = [...(kernel?.sets ?? [])].sort().filter((s) => isNftAffinitySet(s) && !activeSets.has(s));
  // Old rules left in front-written chains may use a gone affinity set: it goes after them.
  const setDeletes = goneSets.map((s) => `delete set ${t} ${s}`);
  const afterTrims = trims.length ? setDeletes : [];
  const lastLines = (into: string[]) => {
    // Elements: every container flushed and refilled at once.
    for (const c of containers) into.push(`flush ${r.fixed.maps.has(c) ? 'map' : 'set'} ${t} ${c}`);
    for (const [c, m] of elements) for (const text of m.values()) into.push(`add element ${t} ${c} { ${text} }`);
    // Then what went unused: chains flushed (kept a while), affinity sets deleted at once.
    for (const c of staleNow) into.push(`flush chain ${t} ${c}`);
    if (!trims.length) append(into, setDeletes);
  };
  const fixedPart = () => [...deletesStale.map((c) => `delete chain ${t} ${c}`), ...base];
  const transactions = batches.map((batch, i) => () => {
    const lines: string[] = i === 0 && !o.fixedApart ? fixedPart() : [];
    const l = serviceLines(t, batch, undefined, inFront);
    append(lines, l.sets, l.declare, l.rules);
    if (i === batches.length - 1) lastLines(lines);
    return lines;
  });
  if (o.fixedApart) transactions.unshift(fixedPart);

  const chains = new Map<string, readonly string[]>();
  const sets = new Map<string, string>();
  for (const out of r.services.values()) {
    for (const [c, rules] of out.chains) chains.set(c, rules);
    for (const [s, spec] of out.sets) sets.set(s, spec);
  }
  return { transactions, deletesStale, trims, afterTrims, next: { fixedKey: r.fixed.key, chains, stale, sets, elements, owners }, chainsWritten, elementsWritten };
}

/**
 * The lines deleting a trimmed chain's old rules, given its rule handles in order (the new rules,
 * `keep` of them, first). Fewer rules than that means the chain is not what was written.
 */
export function trimLines(family: 'ip' | 'ip6', chain: string, handles: readonly string[], keep: number): string[] {
  if (handles.length < keep) throw new Error(`chain ${chain} holds ${handles.length} rules, fewer than the ${keep} just written`);
  return handles.slice(keep).map((handle) => `delete rule ${family} ${NFT_TABLE} ${chain} handle ${handle}`);
}

/** The named sets some rules use (`@name`: affinity sets). */
const setsUsed = (rules: readonly string[]) => rules.flatMap((rule) => [...rule.matchAll(/@(\S+)/g)].map((m) => m[1]!));

/** A service chain's rules end in the numgen vmap that picks an endpoint (and always ends the chain). */
const endsInVmap = (rules: readonly string[]) => rules.length > 0 && rules[rules.length - 1]!.startsWith('numgen random mod ');

const sameRules = (a: readonly string[] | undefined, b: readonly string[]) => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * A partial sync: the services in `r.changed` are written where they differ from `applied`;
 * everything else is left alone. `applied` is updated in place and returned as `next`.
 */
export function planPartial(r: NftRenderResult, applied: NftApplied, o: PlanOptions): NftPlan {
  const t = tablePrefix(r);
  const afterChains = new Set<string>();
  for (const c of r.changed.values()) for (const name of c.after?.chains.keys() ?? []) afterChains.add(name);
  for (const name of afterChains) applied.stale.delete(name);
  const deletesStale = dueStale(applied.stale, () => false, o);
  for (const c of deletesStale) applied.stale.delete(c);

  const tx: string[] = deletesStale.map((c) => `delete chain ${t} ${c}`);
  // Affinity sets whose declaration changed are deleted and added again: every chain of their
  // service is rewritten first, so nothing references them at that moment.
  const respec = new Set<string>();
  const newSets: string[] = [];
  const goneSets: string[] = [];
  for (const c of r.changed.values()) {
    for (const [s, spec] of c.after?.sets ?? []) {
      const had = applied.sets.get(s);
      if (had === undefined) newSets.push(`add set ${t} ${s} ${spec}`);
      else if (had !== spec) respec.add(s);
    }
    for (const s of c.before?.sets.keys() ?? []) if (!c.after?.sets.has(s)) goneSets.push(s);
  }
  const gone = new Set(goneSets);
  const usedByTrimmed = new Set<string>();
  const rewriteAll = (out: NftServiceOutput) => [...out.sets.keys()].some((s) => respec.has(s));
  const written = new Set<string>();
  const outs = [...r.changed.values()].map((c) => c.after).filter((x): x is NftServiceOutput => !!x);
  const declare: string[] = [];
  const rules: string[] = [];
  const trims: NftPlan['trims'] = [];
  for (const out of outs) {
    const all = rewriteAll(out);
    // Affinity sets being redeclared must lose every reference first: those chains are flushed.
    // An affinity set that goes away (an endpoint left) while old rules still use it is deleted
    // after the trim.
    const inFront = (name: string, list: readonly string[]) => {
      const old = applied.chains.get(name) ?? [];
      return o.insertThenTrim === true && !all && endsInVmap(list) && endsInVmap(old) && setsUsed(old).every((set) => out.sets.has(set) || gone.has(set));
    };
    const rewrite = (name: string, list: readonly string[]) => (all || !sameRules(applied.chains.get(name), list));
    const l = serviceLines(t, [{ ...out, sets: new Map() }], rewrite, inFront);
    append(declare, l.declare);
    append(rules, l.rules);
    trims.push(...l.trims);
    for (const { chain } of l.trims) for (const set of setsUsed(applied.chains.get(chain)!)) if (gone.has(set)) usedByTrimmed.add(set);
    for (const [name, list] of out.chains) {
      if (!rewrite(name, list)) continue;
      written.add(name);
      applied.chains.set(name, list);
    }
  }
  append(tx, newSets, declare);
  for (const s of respec) {
    const spec = outs.flatMap((out) => (out.sets.has(s) ? [out.sets.get(s)!] : []))[0]!;
    tx.push(`delete set ${t} ${s}`, `add set ${t} ${s} ${spec}`);
    applied.sets.set(s, spec);
  }
  for (const out of outs) for (const [s, spec] of out.sets) applied.sets.set(s, spec);
  append(tx, rules);

  // Elements: for every key a changed service had or has, the owners decide what the table holds.
  const touched = new Set<string>();
  const texts = new Map<string, Map<string, string>>();
  for (const [svc, c] of r.changed) {
    for (const [cont, e] of c.before?.elements ?? []) {
      const k = ownerKey(cont, e.key);
      touched.add(k);
      const list = applied.owners.get(k);
      if (list) { const i = list.indexOf(svc); if (i >= 0) list.splice(i, 1); if (!list.length) applied.owners.delete(k); }
    }
  }
  for (const [svc, c] of r.changed) {
    for (const [cont, e] of c.after?.elements ?? []) {
      const k = ownerKey(cont, e.key);
      touched.add(k);
      let m = texts.get(svc);
      if (!m) texts.set(svc, (m = new Map()));
      if (!m.has(k)) m.set(k, elementText(e));
      const list = applied.owners.get(k) ?? [];
      if (!list.includes(svc)) { list.push(svc); list.sort(); }
      applied.owners.set(k, list);
    }
  }
  const textOf = (svc: string, k: string): string => {
    const own = texts.get(svc)?.get(k);
    if (own !== undefined) return own;
    const [cont, key] = [k.slice(0, k.indexOf(' ')), k.slice(k.indexOf(' ') + 1)];
    const found = r.services.get(svc)?.elements.find(([c, e]) => c === cont && e.key === key);
    return found ? elementText(found[1]) : '';
  };
  const dels: string[] = [];
  const adds: string[] = [];
  let elementsWritten = 0;
  for (const k of [...touched].sort()) {
    const cont = k.slice(0, k.indexOf(' '));
    const key = k.slice(cont.length + 1);
    const owner = applied.owners.get(k)?.[0];
    const want = owner === undefined ? undefined : textOf(owner, k);
    let m = applied.elements.get(cont);
    if (!m) applied.elements.set(cont, (m = new Map()));
    const have = m.get(key);
    if (have === want) continue;
    if (have !== undefined) { dels.push(`delete element ${t} ${cont} { ${key} }`); m.delete(key); }
    if (want !== undefined) { adds.push(`add element ${t} ${cont} { ${want} }`); m.set(key, want); elementsWritten++; }
  }
  append(tx, dels, adds);

  // Chains that changed services used before and use no more: flushed now, deleted later.
  const goneChains: string[] = [];
  for (const c of r.changed.values()) for (const name of c.before?.chains.keys() ?? []) if (!afterChains.has(name) && applied.chains.has(name)) goneChains.push(name);
  for (const name of goneChains.sort()) {
    tx.push(`flush chain ${t} ${name}`);
    applied.chains.delete(name);
    applied.stale.set(name, o.now);
  }
  const afterTrims: string[] = [];
  for (const s of goneSets.sort()) {
    if (!applied.sets.has(s) || outs.some((out) => out.sets.has(s))) continue;
    (usedByTrimmed.has(s) ? afterTrims : tx).push(`delete set ${t} ${s}`);
    applied.sets.delete(s);
  }
  return { transactions: tx.length ? [() => tx] : [], deletesStale, trims, afterTrims, next: applied, chainsWritten: written.size, elementsWritten };
}
