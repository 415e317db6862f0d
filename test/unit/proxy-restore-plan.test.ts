import test from 'ava';
import fc from 'fast-check';
import { IptablesRenderer, renderIptables } from '../../src/rules/iptables.ts';
import { FakeIptables } from '../helpers/fake-iptables.ts';
import { SERVICE_CHAIN_CONCURRENCY, runRestores } from '../../src/proxy/iptables-applier.ts';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/kernel/exec.ts';
import { arbService, cluster } from '../helpers/arb-cluster.ts';
import { settings } from '../helpers/rules.ts';
import { appliedFromSave, jumpsFromSave, parseRestore, planRestores, type AppliedState } from '../../src/proxy/restore-plan.ts';
import { isServiceChain } from '../../src/proxy/jumps.ts';

const isStale = (t: string, c: string) => t === 'nat' && isServiceChain(c);

function natText(services: Record<string, string[]>): string {
  const decl = [':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]'];
  const rules = ['-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000'];
  for (const [svc, eps] of Object.entries(services)) {
    decl.push(`:KUBE-SVC-${svc} - [0:0]`);
    rules.push(`-A KUBE-SERVICES -d 172.30.0.1/32 -j KUBE-SVC-${svc}`);
    for (const ep of eps) {
      decl.push(`:KUBE-SEP-${ep} - [0:0]`);
      rules.push(`-A KUBE-SVC-${svc} -j KUBE-SEP-${ep}`, `-A KUBE-SEP-${ep} -j KUBE-MARK-MASQ`, `-A KUBE-SEP-${ep} -p tcp -j DNAT --to-destination 10.0.0.1:80`);
    }
  }
  return ['*nat', ...decl, ...rules, 'COMMIT', ''].join('\n');
}

test('first sync writes every chain; an identical re-render writes nothing', (t) => {
  const text = natText({ A: ['A1', 'A2'], B: ['B1'] });
  const p1 = planRestores(parseRestore(text), new Map(), { full: true, isStale, maxChainsPerRestore: Infinity });
  t.is(p1.restores.length, 1);
  t.is(p1.chainsWritten, 7);
  const p2 = planRestores(parseRestore(text), p1.next, { full: true, isStale, maxChainsPerRestore: Infinity });
  t.deepEqual(p2.restores, []);
  t.is(p2.chainsWritten, 0);
});

test('an endpoint change writes only the chains whose content changed, and deletes the stale one', (t) => {
  const p1 = planRestores(parseRestore(natText({ A: ['A1', 'A2'], B: ['B1'] })), new Map(), { full: true, isStale, maxChainsPerRestore: Infinity });
  const p2 = planRestores(parseRestore(natText({ A: ['A1', 'A3'], B: ['B1'] })), p1.next, { full: true, isStale, maxChainsPerRestore: Infinity });
  t.is(p2.restores.length, 1);
  const r = p2.restores[0]!;
  t.regex(r, /^:KUBE-SEP-A3 /m);
  t.regex(r, /^:KUBE-SVC-A /m);
  t.regex(r, /^-X KUBE-SEP-A2$/m);
  t.notRegex(r, /^:(KUBE-SEP-B1|KUBE-SERVICES|KUBE-SEP-A1) /m);
  // One restore: every chain is declared before any rule is written.
  t.true(r.lastIndexOf('\n:') < r.indexOf('\n-A '));
  t.false(p2.next.get('nat')!.has('KUBE-SEP-A2'));
});

test('a partial sync does not delete chains it was not told about', (t) => {
  const p1 = planRestores(parseRestore(natText({ A: ['A1'], B: ['B1'] })), new Map(), { full: true, isStale, maxChainsPerRestore: Infinity });
  const p2 = planRestores(parseRestore(natText({ A: ['A1'] })), p1.next, { full: false, isStale, maxChainsPerRestore: Infinity });
  t.false(p2.restores.join('').includes('-X'));
});

test('chunks keep every chain after the chains it jumps to, deletions last', (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 40 }), (nSvc, nEp, max) => {
    const services: Record<string, string[]> = {};
    for (let i = 0; i < nSvc; i++) services[`S${i}`] = Array.from({ length: nEp }, (_, e) => `S${i}E${e}`);
    const applied: AppliedState = new Map([['nat', new Map<string, string[] | null>([['KUBE-SEP-OLD', ['x']], ['KUBE-SVC-OLD', null]])]]);
    const plan = planRestores(parseRestore(natText(services)), applied, { full: true, isStale, maxChainsPerRestore: max });
    const exists = new Set(['KUBE-SEP-OLD', 'KUBE-SVC-OLD']);
    for (const r of plan.restores) {
      const decl = r.split('\n').filter((l) => l.startsWith(':'));
      if (decl.length > max) return false;
      for (const d of decl) exists.add(d.slice(1).split(' ')[0]!);
      for (const l of r.split('\n')) {
        const m = / -j (KUBE-\S+)/.exec(l);
        if (m && !exists.has(m[1]!)) return false;
        if (l.startsWith('-X ')) exists.delete(l.slice(3));
      }
    }
    return !exists.has('KUBE-SEP-OLD') && exists.has('KUBE-SERVICES') && plan.chainsWritten === 2 + nSvc * (1 + nEp);
  }));
  t.pass();
});

test('chain names are read from iptables-save output with unknown content', (t) => {
  const save = '*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n:OTHER - [0:0]\n-A PREROUTING -j KUBE-SVC-X\nCOMMIT\n';
  const a = appliedFromSave(save, (_t, c) => c.startsWith('KUBE-'));
  t.deepEqual([...a.get('nat')!], [['KUBE-SVC-X', null]]);
  // Unknown content never matches, so the chain is rewritten (even as an empty chain).
  const p = planRestores(parseRestore('*nat\n:KUBE-SVC-X - [0:0]\nCOMMIT\n'), a, { full: true, isStale, maxChainsPerRestore: 10 });
  t.is(p.chainsWritten, 1);
});

test('malformed restore text is refused', (t) => {
  t.throws(() => parseRestore('*nat\n-A NOPE -j ACCEPT\nCOMMIT\n'), { message: /undeclared/ });
  t.throws(() => parseRestore(':X - [0:0]\n'), { message: /outside a table/ });
});

test('concurrent restores: a chunk that may run beside others only needs chains from itself or from an earlier restore that ran alone', (t) => {
  fc.assert(fc.property(fc.array(arbService, { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 6 }), (specs, max) => {
    const r = renderIptables({ cluster: cluster(specs), settings: settings() });
    const plan = planRestores(r.tables, new Map(), { full: true, isStale, maxChainsPerRestore: max, inDependencyOrder: true, concurrency: SERVICE_CHAIN_CONCURRENCY });
    t.is(plan.concurrent.length, plan.restores.length);
    const chunks = plan.restores.map((text) => parseRestore(text));
    const writtenIn = new Map<string, number>();
    chunks.forEach((c, i) => { for (const [table, pt] of c) for (const chain of pt.chains.keys()) writtenIn.set(`${table}/${chain}`, i); });
    chunks.forEach((c, i) => {
      if (!plan.concurrent[i]) return;
      // The run of concurrent restores this one belongs to starts after the last lone restore before it.
      let runStart = i;
      while (runStart > 0 && plan.concurrent[runStart - 1]) runStart--;
      for (const [table, pt] of c) {
        t.is(table, 'nat');
        t.is(pt.deletes.size, 0);
        for (const rules of pt.chains.values()) for (const rule of rules) {
          const target = / -[jg] (\S+)/.exec(rule)?.[1];
          const at = target ? writtenIn.get(`nat/${target}`) : undefined;
          if (at !== undefined) t.true(at === i || at < runStart, `${rule} needs restore ${at}, runs in ${i} (run from ${runStart})`);
        }
      }
    });
  }), { numRuns: 200 });
});

test('runRestores: lone restores run alone, marked ones two at a time, in order of start', async (t) => {
  const log: string[] = [];
  let inFlight = 0;
  let most = 0;
  const apply = async (x: string) => {
    inFlight++;
    most = Math.max(most, inFlight);
    log.push(`start ${x} with ${inFlight}`);
    await new Promise((r) => setTimeout(r, x === 'c2' ? 30 : 5));
    inFlight--;
  };
  await runRestores(['a', 'c1', 'c2', 'c3', 'c4', 'b'], [false, true, true, true, true, false], apply);
  t.is(most, 2);
  t.deepEqual(log.filter((l) => l.startsWith('start a') || l.startsWith('start b')), ['start a with 1', 'start b with 1']);
  t.deepEqual(log.map((l) => l.split(' ')[1]), ['a', 'c1', 'c2', 'c3', 'c4', 'b']);
  await t.throwsAsync(runRestores(['x', 'y'], [true, true], async (s) => { if (s === 'x') throw new Error('boom'); }), { message: 'boom' });
});

test('a restore fed in pieces is the same text; pieces are newline-terminated runs of lines', (t) => {
  const specs: Record<string, string[]> = {};
  for (let s = 0; s < 1000; s++) specs[`S${s}`] = [`S${s}E1`, `S${s}E2`];
  const plan = planRestores(parseRestore(natText(specs)), new Map(), { full: true, isStale, maxChainsPerRestore: Infinity });
  t.is(plan.chunks.length, 1);
  const pieces = [...plan.chunks[0]!.pieces()];
  t.true(pieces.length > 1);
  t.true(pieces.every((p) => p.endsWith('\n')));
  t.is(pieces.join(''), plan.chunks[0]!.text());
  t.is(plan.restores[0], plan.chunks[0]!.text());
});

test('run feeds stdin in pieces with backpressure, and stops when the reader goes away', async (t) => {
  const piece = `${'x'.repeat(4095)}\n`;
  const many = Array.from({ length: 4096 }, () => piece);
  const { stdout } = await run('wc', ['-c'], { input: many });
  t.is(Number(stdout.trim()), 4096 * 4096);
  // head exits after one byte: the writer must notice and the run must still settle.
  const { stdout: first } = await run('head', ['-c', '1'], { input: many });
  t.is(first, 'x');
});

test('run fails with the input error, and the program is killed, when the pieces stop coming', async (t) => {
  function* broken(): Generator<string> {
    yield 'a complete line\n';
    throw new Error('render failed halfway');
  }
  // cat would exit 0 on end of input; a clean end here would hand half an input to the program.
  await t.throwsAsync(run('cat', [], { input: broken() }), { message: 'render failed halfway' });
  // The program is killed before its stdin closes: it never gets to act on an end of input.
  const dir = mkdtempSync(join(tmpdir(), 'knt-feed-'));
  try {
    const mark = join(dir, 'saw-end-of-input');
    await t.throwsAsync(run('sh', ['-c', 'cat >/dev/null && : > "$1"', 'sh', mark], { input: broken() }), { message: 'render failed halfway' });
    await new Promise((r) => setTimeout(r, 100));
    t.false(existsSync(mark));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('deletions: any services deleted, any chunk size, whatever is known of the kernel: every restore is accepted and the end state is a fresh render\'s', async (t) => {
  await fc.assert(fc.asyncProperty(
    fc.array(arbService, { minLength: 1, maxLength: 8 }), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), fc.integer({ min: 1, max: 12 }),
    fc.constantFrom('partial', 'known', 'kernel', 'names only'), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 16 }),
    async (specs, keep, max, knowledge, delays) => {
      const before = cluster(specs);
      const kept = (name: string | undefined) => keep[Number(name!.slice(1))] ?? true;
      const after: typeof before = {
        services: before.services.filter((s) => kept(s.metadata.name)),
        endpointSlices: before.endpointSlices.filter((s) => kept(s.metadata.labels!['kubernetes.io/service-name']!)),
      };
      const k = new FakeIptables();
      const renderer = new IptablesRenderer();
      const first = renderer.render({ cluster: before, settings: settings() });
      await k.restore(first.text, { noflush: true });
      let applied: AppliedState = planRestores(first.tables, new Map(), { full: true, isStale, maxChainsPerRestore: Infinity }).next;
      let kernelJumps;
      if (knowledge === 'kernel' || knowledge === 'names only') {
        const save = await k.save('nat');
        applied = appliedFromSave(save, (_t, c) => c.startsWith('KUBE-'));
        if (knowledge === 'kernel') kernelJumps = jumpsFromSave(save);
      }
      const deleted = new Set(before.services.filter((s) => !kept(s.metadata.name)).map((s) => `ns/${s.metadata.name}`));
      const second = knowledge === 'partial'
        ? renderer.render({ cluster: after, settings: settings(), recompute: deleted, partial: { changedServices: deleted } })
        : renderer.render({ cluster: after, settings: settings(), existing: { natChains: [...applied.get('nat')!.keys()].filter((c) => isServiceChain(c)) } });
      const plan = planRestores(second.tables, applied, { full: knowledge !== 'partial', isStale, maxChainsPerRestore: max, inDependencyOrder: true,
        concurrency: SERVICE_CHAIN_CONCURRENCY, ...(kernelJumps ? { kernelJumps } : {}) });
      // Restores marked concurrent commit in any order, as the kernel serialises them.
      let turn = 0;
      k.commitDelay = () => delays[turn++ % delays.length]!;
      await runRestores(plan.chunks, plan.concurrent, (c) => k.restore(c.text(), { noflush: true }));
      const fresh = new FakeIptables();
      await fresh.restore(renderIptables({ cluster: after, settings: settings() }).text, { noflush: true });
      t.deepEqual(k.danglingJumps(), []);
      t.is(k.dump(), fresh.dump());
    }), { numRuns: 300 });
});

test('a stale chain that a foreign rule still jumps to is flushed and kept, not deleted; the rest goes', async (t) => {
  const k = new FakeIptables();
  const text = natText({ A: ['A1', 'A2'], B: ['B1'] });
  await k.restore(text, { noflush: true });
  await k.restore('*nat\n-A OUTPUT -d 10.99.99.99/32 -j KUBE-SEP-A2\nCOMMIT\n', { noflush: true });
  const save = await k.save('nat');
  const plan = planRestores(parseRestore(natText({ B: ['B1'] })), appliedFromSave(save, (_t, c) => c.startsWith('KUBE-')),
    { full: true, isStale, maxChainsPerRestore: 2, kernelJumps: jumpsFromSave(save) });
  for (const r of plan.restores) await k.restore(r, { noflush: true });
  t.deepEqual(plan.kept, [{ table: 'nat', chain: 'KUBE-SEP-A2', referrers: ['OUTPUT'] }]);
  t.deepEqual(k.userChains('nat').sort(), ['KUBE-MARK-MASQ', 'KUBE-SEP-A2', 'KUBE-SEP-B1', 'KUBE-SERVICES', 'KUBE-SVC-B']);
  t.deepEqual((await k.list('nat', 'KUBE-SEP-A2')), ['-N KUBE-SEP-A2']);
  t.true(plan.next.get('nat')!.has('KUBE-SEP-A2'));
});

test('concurrency follows the jumps, not the order chains are listed in: any order gives restores the kernel accepts, whichever commits first', async (t) => {
  await fc.assert(fc.asyncProperty(
    fc.array(arbService, { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 8 }), fc.array(fc.nat(), { minLength: 1, maxLength: 64 }),
    fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 16 }),
    async (specs, max, keys, delays) => {
      const r = renderIptables({ cluster: cluster(specs), settings: settings() });
      // The same chains listed in a random order, still claimed to be in dependency order.
      const shuffled = new Map([...r.tables].map(([name, table]) => {
        const entries = [...table.chains].map((e, i) => ({ e, key: keys[i % keys.length]! * 1000 + i }));
        entries.sort((a, b) => a.key - b.key);
        return [name, { chains: new Map(entries.map((x) => x.e)), deletes: table.deletes }];
      }));
      const plan = planRestores(shuffled, new Map(), { full: true, isStale, maxChainsPerRestore: max, inDependencyOrder: true, concurrency: SERVICE_CHAIN_CONCURRENCY });
      const k = new FakeIptables();
      let turn = 0;
      k.commitDelay = () => delays[turn++ % delays.length]!;
      await runRestores(plan.chunks, plan.concurrent, (c) => k.restore(c.text(), { noflush: true }));
      const fresh = new FakeIptables();
      await fresh.restore(r.text, { noflush: true });
      t.is(k.dump(), fresh.dump());
    }), { numRuns: 200 });
});

test('in the renderer\'s order most service-chain restores run two at a time, cut between ports', (t) => {
  const specs = Array.from({ length: 60 }, (_, i) => ({ type: 'ClusterIP' as const, ports: [{ name: 'a' as const, protocol: 'TCP' as const }], etpLocal: false, itpLocal: false,
    affinity: i % 3 === 0, externalIP: false, sourceRanges: false, endpoints: [1, 2, 3].map((host) => ({ host, local: false, ready: true, terminating: false })) }));
  const r = renderIptables({ cluster: cluster(specs), settings: settings() });
  const plan = planRestores(r.tables, new Map(), { full: true, isStale, maxChainsPerRestore: 8, inDependencyOrder: true, concurrency: SERVICE_CHAIN_CONCURRENCY });
  const marked = plan.concurrent.filter(Boolean).length;
  t.true(marked >= plan.concurrent.length - 4, `${marked} of ${plan.concurrent.length} restores marked`);
});

test('a far user (KUBE-SERVICES jumps to every service chain) does not let a cut split a port: 10k-style plans keep all service-chain restores concurrent', (t) => {
  const specs = Array.from({ length: 300 }, (_, i) => ({ type: (['ClusterIP', 'NodePort', 'LoadBalancer'] as const)[i % 3]!, ports: [{ name: 'a' as const, protocol: 'TCP' as const }], etpLocal: false, itpLocal: false,
    affinity: false, externalIP: false, sourceRanges: i % 3 === 2, endpoints: [1, 2, 3].map((host) => ({ host, local: false, ready: true, terminating: false })) }));
  const r = renderIptables({ cluster: cluster(specs), settings: settings() });
  const plan = planRestores(r.tables, new Map(), { full: true, isStale, maxChainsPerRestore: 50, inDependencyOrder: true, concurrency: SERVICE_CHAIN_CONCURRENCY });
  // The first (KUBE-MARK-MASQ) and the last (KUBE-SERVICES, KUBE-NODEPORTS) run alone.
  t.deepEqual(plan.concurrent.slice(1, -1).filter((c) => !c), []);
});
