// Property tests over random clusters: rendering is deterministic, every jump target and every
// filled chain is declared, and the random rules of a service spread traffic evenly.
import test from 'ava';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { renderIptables } from '../../src/rules/iptables.ts';
import { sha256Prefix10 } from '../../src/rules/names.ts';
import { parseIP } from '../../src/util/ip.ts';
import { arbService, cluster } from '../helpers/arb-cluster.ts';
import { settings } from '../helpers/rules.ts';

const BUILTIN = new Set(['ACCEPT', 'REJECT', 'DROP', 'MARK', 'RETURN', 'DNAT', 'SNAT', 'MASQUERADE']);

function tables(text: string) {
  const out = new Map<string, { declared: Set<string>; filled: Set<string>; jumped: Set<string> }>();
  let cur: { declared: Set<string>; filled: Set<string>; jumped: Set<string> } | undefined;
  for (const l of text.split('\n')) {
    if (l.startsWith('*')) out.set(l.slice(1), (cur = { declared: new Set(), filled: new Set(), jumped: new Set() }));
    else if (l.startsWith(':')) cur!.declared.add(l.slice(1).split(' ')[0]!);
    else if (l.startsWith('-A ')) {
      cur!.filled.add(l.split(' ')[1]!);
      const j = / -j (\S+)/.exec(l);
      if (j && !BUILTIN.has(j[1]!)) cur!.jumped.add(j[1]!);
    }
  }
  return out;
}

test('rendering is deterministic and every jump target and filled chain is declared', (t) => {
  fc.assert(fc.property(fc.array(arbService, { maxLength: 8 }), (specs) => {
    const c = cluster(specs);
    const a = renderIptables({ cluster: c, settings: settings() });
    const b = renderIptables({ cluster: structuredClone(c), settings: settings() });
    if (a.text !== b.text) return false;
    for (const [, tbl] of tables(a.text)) {
      for (const j of tbl.jumped) if (!tbl.declared.has(j)) return false;
      for (const f of tbl.filled) if (!tbl.declared.has(f)) return false;
      // every jumped-to service chain has rules (an empty chain would just fall through)
      for (const j of tbl.jumped) if (j !== 'KUBE-NODEPORTS' && !tbl.filled.has(j)) return false;
    }
    return true;
  }), { numRuns: 150 });
  t.pass();
});

test('the random rules of a service chain give every endpoint an equal share', (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 60 }), (n) => {
    const c = cluster([{ type: 'ClusterIP', ports: [{ name: 'a', protocol: 'TCP' }], etpLocal: false, itpLocal: false, affinity: false, externalIP: false, sourceRanges: false,
      endpoints: Array.from({ length: n }, (_, i) => ({ host: i + 1, local: false, ready: true, terminating: false })) }]);
    const r = renderIptables({ cluster: c, settings: settings() });
    const rules = r.text.split('\n').filter((l) => l.startsWith('-A KUBE-SVC-') && l.includes('-j KUBE-SEP-'));
    if (rules.length !== n) return false;
    // P(endpoint i) = p_i * prod_{j<i} (1 - p_j); the last rule takes whatever is left.
    let remaining = 1;
    for (const l of rules) {
      const m = / --probability (\S+) /.exec(l);
      const p = m ? Number(m[1]) : 1;
      const share = remaining * p;
      if (Math.abs(share - 1 / n) > 1e-6) return false;
      remaining -= share;
    }
    return Math.abs(remaining) < 1e-6;
  }));
  t.pass();
});

test('chain-name hashing equals node:crypto sha256 for any input, short, long or non-ASCII', (t) => {
  const reference = (s: string) => createHash('sha256').update(s).digest().subarray(0, 10);
  fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 40 })), (s) =>
    Buffer.from(sha256Prefix10(s)).equals(reference(s))), { numRuns: 2000 });
  // the padding edges: a block holds 55 bytes plus padding; 247 is the longest input hashed here
  for (const n of [0, 55, 56, 63, 64, 119, 120, 247, 248]) t.deepEqual(Buffer.from(sha256Prefix10('a'.repeat(n))), reference('a'.repeat(n)), `length ${n}`);
});

test('dotted quads parse as the regex-free parser says: canonical text, leading zeros accepted, junk refused', (t) => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 4, maxLength: 4 }), (octets, zeros) => {
    const padded = octets.map((o, i) => String(o).padStart(Math.min(3, String(o).length + zeros[i]!), '0')).join('.');
    const p = parseIP(padded);
    return p !== null && p.family === 4 && p.text === octets.join('.') && p.value === BigInt(((octets[0]! * 256 + octets[1]!) * 256 + octets[2]!) * 256 + octets[3]!);
  }), { numRuns: 500 });
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '1.2.3.4.', '.1.2.3', '1.2.3.a', '0001.2.3.4', '1.2.3.-4', ' 1.2.3.4']) t.is(parseIP(bad), null, bad);
});
