// An in-memory kernel behind the Iptables interface (src/kernel/iptables.ts), modelling what
// the proxy's failure paths hinge on, as iptables-nft does it:
// - each table of a restore is one transaction, applied line by line and committed at COMMIT;
//   an error discards that table's changes (tables committed before stay);
// - a rule may only jump (-j/-g) to a built-in target or to a chain that exists at that line;
// - a chain is deleted (-X) only when it exists, is empty and no rule references it (EBUSY);
// - "-I CHAIN [N]", "-D CHAIN rule", "-F", "-N" and declarations (":CHAIN - [0:0]", which create
//   or flush) behave like iptables-restore --noflush; without --noflush a table is flushed whole.
// Tests inject failures (`failRestore`) and may let concurrent restores commit in any order
// (`commitDelay`), as the kernel serialises them.
import type { Iptables, IptablesBackend, RestoreOptions } from '../../src/kernel/iptables.ts';

const BUILTIN: Record<string, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};
const TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'QUEUE', 'REJECT', 'MARK', 'DNAT', 'SNAT', 'MASQUERADE', 'REDIRECT', 'LOG', 'CONNMARK', 'NOTRACK', 'CT', 'NFLOG']);

/** table -> chain -> rules ("-A CHAIN ..." lines); insertion order is creation order. */
type Tables = Map<string, Map<string, string[]>>;

export class FakeIptablesError extends Error {}

/** The chain a rule jumps or goes to, or null. */
export function ruleTarget(rule: string): string | null {
  return / -[jg] (\S+)/.exec(rule)?.[1] ?? null;
}

export class FakeIptables implements Iptables {
  readonly tables: Tables = new Map();
  /** Every restore input, in the order they were called. */
  readonly restores: string[] = [];
  saves = 0;
  /** Returns an error message to fail this restore before it touches anything. */
  failRestore: ((input: string, index: number) => string | null) | null = null;
  /** Event-loop turns to wait before a restore commits (concurrent restores then commit in any order). */
  commitDelay: (() => number) | null = null;
  /** Most restores that were in flight at once. */
  mostInFlight = 0;
  private inFlight = 0;

  constructor(readonly backend: IptablesBackend = 'nft') {
    for (const [t, chains] of Object.entries(BUILTIN)) this.tables.set(t, new Map(chains.map((c) => [c, []])));
  }

  async restore(input: string | Iterable<string>, o: RestoreOptions = {}): Promise<void> {
    const text = typeof input === 'string' ? input : [...input].join('');
    const index = this.restores.push(text) - 1;
    this.inFlight++;
    this.mostInFlight = Math.max(this.mostInFlight, this.inFlight);
    try {
      for (let i = this.commitDelay?.() ?? 0; i > 0; i--) await new Promise((r) => setImmediate(r));
      const injected = this.failRestore?.(text, index);
      if (injected) throw new FakeIptablesError(`iptables-restore: ${injected}`);
      this.apply(text, o.noflush ?? false);
    } finally {
      this.inFlight--;
    }
  }

  async save(table: string): Promise<string> {
    this.saves++;
    const chains = this.tables.get(table);
    if (!chains) return '';
    const builtin = BUILTIN[table] ?? [];
    const out = [`*${table}`];
    for (const c of chains.keys()) out.push(builtin.includes(c) ? `:${c} ACCEPT [0:0]` : `:${c} - [0:0]`);
    for (const rules of chains.values()) out.push(...rules);
    out.push('COMMIT', '');
    return out.join('\n');
  }

  async list(table: string, chain: string): Promise<string[] | null> {
    const rules = this.tables.get(table)?.get(chain);
    if (!rules) return null;
    return [(BUILTIN[table] ?? []).includes(chain) ? `-P ${chain} ACCEPT` : `-N ${chain}`, ...rules];
  }

  /** Chains of a table that are not built in. */
  userChains(table: string): string[] {
    const builtin = BUILTIN[table] ?? [];
    return [...(this.tables.get(table)?.keys() ?? [])].filter((c) => !builtin.includes(c));
  }

  /** The filter and nat tables as sorted lines ("nat :CHAIN", "nat -A CHAIN ..."), to compare kernels. */
  dump(): string {
    const out: string[] = [];
    for (const table of ['filter', 'nat']) {
      for (const [chain, rules] of this.tables.get(table) ?? []) out.push(`${table} :${chain}`, ...rules.map((r) => `${table} ${r}`));
    }
    return out.sort().join('\n');
  }

  /** Every rule that jumps to a chain that does not exist (must always be empty). */
  danglingJumps(): string[] {
    const out: string[] = [];
    for (const chains of this.tables.values()) {
      for (const rules of chains.values()) for (const r of rules) {
        const t = ruleTarget(r);
        if (t && !TARGETS.has(t) && !chains.has(t)) out.push(r);
      }
    }
    return out;
  }

  private apply(text: string, noflush: boolean): void {
    let work: Map<string, string[]> | null = null;
    let table = '';
    /** How many rules of the working table jump to each chain. */
    let refs = new Map<string, number>();
    const count = (rule: string, d: number) => {
      const t = ruleTarget(rule);
      if (t) refs.set(t, (refs.get(t) ?? 0) + d);
    };
    const flush = (w: Map<string, string[]>, c: string) => {
      for (const r of w.get(c) ?? []) count(r, -1);
      w.set(c, []);
    };
    const lines = text.split('\n');
    for (let n = 0; n < lines.length; n++) {
      const line = lines[n]!;
      const fail = (msg: string): never => { throw new FakeIptablesError(`iptables-restore: line ${n + 1} failed: ${msg}`); };
      if (line === '' || line.startsWith('#')) continue;
      if (line.startsWith('*')) {
        table = line.slice(1).trim();
        const current = this.tables.get(table) ?? new Map((BUILTIN[table] ?? []).map((c) => [c, []]));
        work = new Map([...current].map(([c, r]) => [c, [...r]]));
        if (!noflush) {
          for (const c of [...work.keys()]) {
            if ((BUILTIN[table] ?? []).includes(c)) work.set(c, []);
            else work.delete(c);
          }
        }
        refs = new Map();
        for (const rules of work.values()) for (const r of rules) count(r, 1);
        continue;
      }
      if (!work) fail(`line outside a table: ${line}`);
      const w = work!;
      if (line === 'COMMIT') {
        this.tables.set(table, w);
        work = null;
        continue;
      }
      const args = line.split(' ');
      const chainArg = (i: number) => {
        const c = args[i];
        if (!c) fail(`missing chain: ${line}`);
        return c!;
      };
      const checkTarget = (rule: string) => {
        const t = ruleTarget(rule);
        if (t && !TARGETS.has(t) && !w.has(t)) fail(`Chain '${t}' does not exist`);
      };
      if (line.startsWith(':')) {
        flush(w, line.slice(1).split(' ')[0]!);
      } else if (args[0] === '-N') {
        const c = chainArg(1);
        if (w.has(c)) fail(`Chain already exists: ${c}`);
        flush(w, c);
      } else if (args[0] === '-F') {
        const c = chainArg(1);
        if (!w.has(c)) fail(`No chain/target/match by that name: ${c}`);
        flush(w, c);
      } else if (args[0] === '-A') {
        const c = chainArg(1);
        if (!w.has(c)) fail(`Chain '${c}' does not exist`);
        checkTarget(line);
        w.get(c)!.push(line);
        count(line, 1);
      } else if (args[0] === '-I') {
        const c = chainArg(1);
        const rules = w.get(c);
        if (!rules) fail(`Chain '${c}' does not exist`);
        const pos = /^\d+$/.test(args[2] ?? '') ? Number(args[2]) : 1;
        const rest = args.slice(/^\d+$/.test(args[2] ?? '') ? 3 : 2).join(' ');
        const rule = `-A ${c} ${rest}`;
        checkTarget(rule);
        rules!.splice(pos - 1, 0, rule);
        count(rule, 1);
      } else if (args[0] === '-D') {
        const c = chainArg(1);
        const rules = w.get(c);
        const rule = `-A ${c} ${args.slice(2).join(' ')}`;
        const at = rules?.indexOf(rule) ?? -1;
        if (at < 0) fail('Bad rule (does a matching rule exist in that chain?)');
        rules!.splice(at, 1);
        count(rule, -1);
      } else if (args[0] === '-X') {
        const c = chainArg(1);
        if (!w.has(c) || (BUILTIN[table] ?? []).includes(c)) fail(`CHAIN_DEL failed (No such file or directory): chain ${c}`);
        if (w.get(c)!.length || (refs.get(c) ?? 0) > 0) fail(`CHAIN_DEL failed (Device or resource busy): chain ${c}`);
        w.delete(c);
      } else {
        fail(`unexpected line: ${line}`);
      }
    }
    if (work) throw new FakeIptablesError(`iptables-restore: COMMIT expected at end of input (table ${table})`);
  }
}
