// A small interpreter for the nftables table knet renders, to test where packets go without a
// kernel (the kernel tests do the same with real traffic). It reads `nft -f` lines, follows a new
// connection through the hooks in priority order (pre-DNAT filter, nat, post-DNAT filter,
// postrouting) and reports every place a packet can end up: "DROP", "REJECT", the DNAT targets
// ("ip:port, ip:port", numgen branches all taken) or "" (not a service: delivered as is), and
// whether it is masqueraded. It understands exactly the rule forms the renderer writes and
// throws on anything else, so a new form cannot pass unnoticed.
import { cidrContains, parseCIDR, parseIP } from '../../src/util/ip.ts';

export interface Packet {
  src: string;
  dst: string;
  port: number;
  protocol?: 'tcp' | 'udp' | 'sctp';
  /** Incoming interface (for iifname detectors); locally generated packets have none. */
  iif?: string;
}

export interface FlowResult {
  output: string;
  masq: boolean;
}

interface Table {
  chains: Map<string, string[]>;
  sets: Map<string, Set<string>>;
  maps: Map<string, Map<string, string>>;
}

export function parseTable(text: string): Table {
  const t: Table = { chains: new Map(), sets: new Map(), maps: new Map() };
  for (const line of text.split('\n')) {
    const m = /^add (table|chain|set|map|rule|element) ip6? kube-proxy ?(\S*) ?(.*)$/.exec(line);
    if (!m) continue;
    const [, kind, name, rest] = m;
    if (kind === 'chain' && !t.chains.has(name!)) t.chains.set(name!, []);
    else if (kind === 'set') t.sets.set(name!, new Set());
    else if (kind === 'map') t.maps.set(name!, new Map());
    else if (kind === 'rule') t.chains.get(name!)!.push(rest!);
    else if (kind === 'element') {
      const body = /^\{ (.*) \}$/.exec(rest!)![1]!;
      const [key, value] = body.split(' : ');
      const k = key!.replace(/ comment ".*"$/, '');
      if (t.sets.has(name!)) t.sets.get(name!)!.add(k);
      else t.maps.get(name!)!.set(k, value!);
    }
  }
  return t;
}

interface State {
  src: string;
  dst: string;
  port: number;
  proto: string;
  iif: string | undefined;
  mark: number;
  dnat?: string;
  masq: boolean;
}

/** 'continue': on to the next rule; 'return': this chain ends (return, or the end of a goto). */
type Verdict = 'continue' | 'return' | 'accept' | 'drop' | 'reject';
interface Outcome { state: State; verdict: Verdict }

const inList = (ip: string, items: string[]) => items.some((c) => {
  const a = parseIP(ip);
  if (!a) return false;
  if (c.includes('/')) { const n = parseCIDR(c); return !!n && cidrContains(n, a); }
  return parseIP(c)?.text === a.text;
});

class Tracer {
  constructor(private readonly t: Table, private readonly local: (ip: string) => boolean) {}

  chain(name: string, st: State, depth = 0): Outcome[] {
    const rules = this.t.chains.get(name);
    if (!rules) throw new Error(`jump to undeclared chain ${name}`);
    if (depth > 20) throw new Error('jump loop');
    // Leaving a chain: whatever ended it, the caller goes on.
    return this.rulesFrom(rules, 0, st, depth).map((o) => (o.verdict === 'return' ? { ...o, verdict: 'continue' } : o));
  }

  private rulesFrom(rules: string[], from: number, st: State, depth: number): Outcome[] {
    for (let i = from; i < rules.length; i++) {
      const out = this.rule(rules[i]!, st, depth);
      if (out === null) continue;
      const results: Outcome[] = [];
      for (const o of out) {
        if (o.verdict === 'continue') results.push(...this.rulesFrom(rules, i + 1, o.state, depth));
        else results.push(o);
      }
      return results;
    }
    return [{ state: st, verdict: 'continue' }];
  }

  /** null: the rule does not match; else the outcomes after it ('continue': the next rule runs). */
  private rule(rule: string, st0: State, depth: number): Outcome[] | null {
    const tok = rule.replace(/ comment ".*"$/, '').split(' ');
    let st = { ...st0 };
    let i = 0;
    const verdictOf = (v: string): Outcome[] | null => {
      const [kind, target] = v.split(' ');
      if (kind === 'drop') return [{ state: st, verdict: 'drop' }];
      if (kind === 'reject') return [{ state: st, verdict: 'reject' }];
      if (kind === 'accept') return [{ state: st, verdict: 'accept' }];
      if (kind === 'return') return [{ state: st, verdict: 'return' }];
      const sub = this.chain(target!, st, depth + 1);
      // goto: the called chain's end ends this chain too; jump: this chain goes on.
      if (kind === 'goto') return sub.map((o) => (o.verdict === 'continue' ? { ...o, verdict: 'return' } : o));
      if (kind === 'jump') return sub;
      throw new Error(`unknown verdict ${v}`);
    };
    while (i < tok.length) {
      const t = tok[i]!;
      if (t === 'ct' && tok[i + 1] === 'state' && tok[i + 2] === 'new') { i += 3; continue; }
      if ((t === 'ip' || t === 'ip6') && tok[i + 2] === '.') {
        // ip daddr . meta l4proto . th dport vmap @map
        const map = this.t.maps.get(tok[i + 9]!.slice(1))!;
        const v = map.get(`${st.dst} . ${st.proto} . ${st.port}`);
        return v === undefined ? null : verdictOf(v);
      }
      if (t === 'ip' || t === 'ip6') {
        const addr = tok[i + 1] === 'saddr' ? st.src : st.dst;
        let neg = false;
        let j = i + 2;
        if (tok[j] === '!=') { neg = true; j++; }
        let hit: boolean;
        if (tok[j] === '{') {
          const end = tok.indexOf('}', j);
          hit = inList(addr, tok.slice(j + 1, end).filter((x) => x !== ','));
          j = end + 1;
        } else if (tok[j]!.startsWith('@')) {
          const set = this.t.sets.get(tok[j]!.slice(1));
          if (!set) throw new Error(`no set ${tok[j]}`);
          hit = inList(addr, [...set]);
          j++;
        } else { hit = inList(addr, [tok[j]!]); j++; }
        if (hit === neg) return null;
        i = j;
        continue;
      }
      if (t === 'meta' && tok[i + 1] === 'l4proto' && tok[i + 2] === '.') {
        // meta l4proto . th dport vmap @map
        const v = this.t.maps.get(tok[i + 6]!.slice(1))!.get(`${st.proto} . ${st.port}`);
        return v === undefined ? null : verdictOf(v);
      }
      if (t === 'meta' && tok[i + 1] === 'l4proto') { if (tok[i + 2] !== st.proto) return null; i += 3; continue; }
      if (t === 'fib') { if (!this.local(tok[i + 1] === 'saddr' ? st.src : st.dst)) return null; i += 4; continue; }
      if (t === 'iifname') {
        const neg = tok[i + 1] === '!=';
        const pat = tok[i + (neg ? 2 : 1)]!;
        const hit = st.iif !== undefined && (pat.endsWith('*') ? st.iif.startsWith(pat.slice(0, -1)) : st.iif === pat);
        if (hit === neg) return null;
        i += neg ? 3 : 2;
        continue;
      }
      if (t === 'mark' && tok[i + 1] === 'set') {
        // mark set mark or|xor M
        const m = Number(tok[i + 4]);
        st = { ...st, mark: tok[i + 3] === 'or' ? st.mark | m : st.mark ^ m };
        i += 5;
        continue;
      }
      if (t === 'mark' && tok[i + 1] === 'and') { if ((st.mark & Number(tok[i + 2])) !== Number(tok[i + 4])) return null; i += 5; continue; }
      if (t === 'update') { i = tok.indexOf('}', i) + 1; continue; }
      if (t === 'numgen') {
        const body = tok.slice(tok.indexOf('{', i) + 1, tok.lastIndexOf('}'));
        const targets = body.join(' ').split(' , ').map((e) => e.split(' : ')[1]!);
        if (targets.length !== Number(tok[i + 3])) throw new Error(`numgen mod ${tok[i + 3]} with ${targets.length} entries`);
        return targets.flatMap((v) => verdictOf(v)!);
      }
      if (t === 'dnat') return [{ state: { ...st, dnat: tok[i + 2]! }, verdict: 'accept' }];
      if (t === 'masquerade') return [{ state: { ...st, masq: true }, verdict: 'accept' }];
      if (['jump', 'goto', 'drop', 'reject', 'accept', 'return'].includes(t)) return verdictOf(tok.slice(i, i + 2).join(' '));
      throw new Error(`the tracer does not know "${t}" in: ${rule}`);
    }
    return [{ state: st, verdict: 'continue' }];
  }
}

let parsed: { text: string; table: Table } | null = null;

/** Where a new connection goes; nodeIPs are the node's own addresses (fib type local). */
export function traceFlow(text: string, pkt: Packet, nodeIPs: string[]): FlowResult {
  const isLocal = (ip: string) => nodeIPs.some((n) => parseIP(n)?.text === parseIP(ip)?.text);
  if (parsed?.text !== text) parsed = { text, table: parseTable(text) };
  const tr = new Tracer(parsed.table, isLocal);
  const local = nodeIPs.includes(pkt.src);
  const start: State = { src: pkt.src, dst: pkt.dst, port: pkt.port, proto: pkt.protocol ?? 'tcp', iif: local ? undefined : pkt.iif, mark: 0, masq: false };
  const results: FlowResult[] = [];
  for (const pre of tr.chain(local ? 'filter-output-pre-dnat' : 'filter-prerouting-pre-dnat', start)) {
    if (pre.verdict === 'drop' || pre.verdict === 'reject') { results.push({ output: pre.verdict.toUpperCase(), masq: false }); continue; }
    for (const nat of tr.chain(local ? 'nat-output' : 'nat-prerouting', pre.state)) {
      if (nat.verdict === 'drop' || nat.verdict === 'reject') { results.push({ output: nat.verdict.toUpperCase(), masq: false }); continue; }
      // After DNAT the filter hooks see the endpoint's address and port.
      const to = nat.state.dnat ? /^\[?(.*?)\]?:(\d+)$/.exec(nat.state.dnat)! : null;
      const st = to ? { ...nat.state, dst: to[1]!, port: Number(to[2]) } : nat.state;
      const hook = local ? 'filter-output' : isLocal(st.dst) ? 'filter-input' : 'filter-forward';
      const filtered = tr.chain(hook, st);
      for (const f of filtered) {
        if (f.verdict === 'drop' || f.verdict === 'reject') { results.push({ output: f.verdict.toUpperCase(), masq: false }); continue; }
        const post = tr.chain('nat-postrouting', f.state);
        results.push({ output: nat.state.dnat ?? '', masq: post.some((p) => p.state.masq) });
      }
    }
  }
  const outputs = [...new Set(results.map((r) => r.output))];
  const verdicts = outputs.filter((o) => o === 'DROP' || o === 'REJECT' || o === '');
  if (verdicts.length && verdicts.length !== outputs.length) throw new Error(`mixed outcomes: ${outputs.join(', ')}`);
  const sorted = outputs.sort((a, b) => (a < b ? -1 : 1)).join(', ');
  return { output: sorted, masq: results.some((r) => r.masq) };
}
