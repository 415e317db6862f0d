// The nftables sync planner against an in-memory kernel: full syncs over empty and leftover
// tables, partial syncs that write only what changed, stale chains flushed and deleted a second
// later, affinity sets re-declared, elements two services claim, bounded transactions, service
// chains rewritten in front of their old rules; and, over random change sequences (either way of
// rewriting), the kernel ending up holding exactly what `knet rules` prints.
import test from 'ava';
import fc from 'fast-check';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { NftablesRenderer, nftablesText, renderNftables, staleChains, type NftRenderResult } from '../../src/rules/nftables.ts';
import { planFull, planPartial, trimLines, type NftApplied, type NftPlan } from '../../src/proxy/nft-plan.ts';
import { FakeNft } from '../helpers/fake-nft.ts';
import { arbService, cluster as arbCluster } from '../helpers/arb-cluster.ts';
import { nftSettings, normalizeNft, SERVICE_CIDR } from '../helpers/nft.ts';
import { syntheticCluster } from '../../scripts/bench/synthetic-cluster.ts';

const settings = nftSettings();
const cluster = (yaml: string) => loadManifestText(yaml, 'test.yaml').cluster;

async function run(nft: FakeNft, plan: NftPlan): Promise<void> {
  for (const tx of plan.transactions) await nft.apply(tx().join('\n') + '\n');
  // What the applier does after a plan with trims: the old rules behind the new ones go by handle.
  const lines: string[] = [];
  for (const { chain, keep } of plan.trims) lines.push(...trimLines('ip', chain, await nft.ruleHandles!('ip', 'kube-proxy', chain), keep));
  if (plan.trims.length) lines.push(...plan.afterTrims);
  if (lines.length) await nft.apply(lines.join('\n') + '\n');
}

/** What the kernel should hold: the render plus the chains kept flushed. */
const expected = (r: NftRenderResult, applied: NftApplied) => normalizeNft(nftablesText(r, [...applied.stale.keys()].sort()));

const svc = (name: string, spec: string) => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ns1}\nspec:\n${spec.trim().replace(/^/gm, '  ')}\n---\n`;
const eps = (name: string, ips: string[]) =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${name}-1, namespace: ns1, labels: {kubernetes.io/service-name: ${name}}}\naddressType: IPv4\nendpoints: [${ips.map((ip) => `{addresses: [${ip}]}`).join(', ')}]\nports: [{name: p, port: 80, protocol: TCP}]\n---\n`;
const web = (extra = '') => svc('web', `clusterIP: 172.30.0.10\nexternalIPs: [192.168.99.9]\nports: [{name: p, port: 80, protocol: TCP}]\n${extra}`);

test('a full sync into an empty kernel writes exactly the rendered table', async (t) => {
  const nft = new FakeNft();
  const r = renderNftables({ cluster: cluster(SERVICE_CIDR() + web() + eps('web', ['10.1.0.1', '10.1.0.2'])), settings });
  const plan = planFull(r, null, null, { now: 0 });
  await run(nft, plan);
  t.is(normalizeNft(nft.dump('ip')), expected(r, plan.next));
  t.is(plan.transactions.length, 1);
});

test('a partial sync writes only the changed chains and elements; stale chains are flushed, then deleted a second later', async (t) => {
  const nft = new FakeNft();
  const renderer = new NftablesRenderer();
  const r1 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.2'])), settings });
  const p1 = planFull(r1, null, null, { now: 0 });
  await run(nft, p1);
  // One endpoint replaced: the service chain and one new endpoint chain; the old one flushed.
  const r2 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.3'])), settings });
  const p2 = planPartial(r2, p1.next, { now: 100 });
  t.is(p2.transactions.length, 1);
  const tx = p2.transactions[0]!();
  t.is(tx.filter((l) => l.startsWith('add chain')).length, 2);
  t.true(tx.some((l) => /^flush chain ip kube-proxy endpoint-\w+-ns1\/web\/tcp\/p__10\.1\.0\.2\/80$/.test(l)));
  t.false(tx.some((l) => l.includes('element')), 'no element changed');
  await run(nft, p2);
  t.is(normalizeNft(nft.dump('ip')), expected(r2, p2.next));
  t.deepEqual([...p2.next.stale.keys()], staleChains(r1, r2));
  // Too early: nothing deleted. A second later: deleted (nothing else changed: alone).
  const r3 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.3'])), settings });
  t.deepEqual(planPartial(r3, structuredClone(p2.next), { now: 600 }).transactions, []);
  const p4 = planPartial(r3, p2.next, { now: 1100 });
  t.deepEqual(p4.transactions.map((tx) => tx()), [[`delete chain ip kube-proxy ${staleChains(r1, r2)[0]}`]]);
  await run(nft, p4);
  t.is(normalizeNft(nft.dump('ip')), normalizeNft(nftablesText(r3)));
});

test('due stale chains are deleted at the start of the next change\'s transaction, not in one of their own', async (t) => {
  const nft = new FakeNft();
  const renderer = new NftablesRenderer();
  const p1 = planFull(renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.2'])), settings }), null, null, { now: 0 });
  await run(nft, p1);
  const p2 = planPartial(renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.3'])), settings }), p1.next, { now: 100 });
  await run(nft, p2);
  const gone = [...p2.next.stale.keys()];
  const r3 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.4'])), settings });
  const p3 = planPartial(r3, p2.next, { now: 1200 });
  t.deepEqual(p3.deletesStale, gone);
  t.is(p3.transactions.length, 1);
  t.deepEqual(p3.transactions[0]!().slice(0, gone.length), gone.map((c) => `delete chain ip kube-proxy ${c}`));
  t.true(p3.transactions[0]!().length > gone.length, 'the change is in the same transaction');
  await run(nft, p3);
  t.is(normalizeNft(nft.dump('ip')), expected(r3, p3.next));
  // A full sync also starts with them.
  const r4 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.4'])), settings });
  const p4 = planFull(r4, await nft.listTable('ip', 'kube-proxy'), p3.next, { now: 2400 });
  t.deepEqual(p4.transactions[0]!().slice(0, p4.deletesStale.length), p4.deletesStale.map((c) => `delete chain ip kube-proxy ${c}`));
  t.true(p4.deletesStale.length > 0);
});

test('the endpoints go and come back: chains flushed, then refilled and no longer stale', async (t) => {
  const nft = new FakeNft();
  const renderer = new NftablesRenderer();
  const with2 = web() + eps('web', ['10.1.0.1', '10.1.0.2']);
  const r1 = renderer.render({ cluster: cluster(with2), settings });
  let applied = planFull(r1, null, null, { now: 0 }).next;
  await run(nft, planFull(r1, null, null, { now: 0 }));
  const r2 = renderer.render({ cluster: cluster(web() + eps('web', [])), settings });
  const p2 = planPartial(r2, applied, { now: 10 });
  await run(nft, p2);
  applied = p2.next;
  t.is(applied.stale.size, 4);
  t.regex(nft.dump('ip'), /add element ip kube-proxy no-endpoint-services \{ 172\.30\.0\.10 \. tcp \. 80 comment "ns1\/web:p" : goto reject-chain \}/);
  const r3 = renderer.render({ cluster: cluster(with2), settings });
  const p3 = planPartial(r3, applied, { now: 20 });
  await run(nft, p3);
  t.is(p3.next.stale.size, 0);
  t.is(normalizeNft(nft.dump('ip')), normalizeNft(nftablesText(r3)));
});

test('insertThenTrim: a service chain\'s new rules go in front of its old ones, which are trimmed after the commit; nothing else changes', async (t) => {
  const nft = new FakeNft({ ruleHandles: true });
  const renderer = new NftablesRenderer();
  const r1 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.2'])), settings });
  const p1 = planFull(r1, null, null, { now: 0 });
  await run(nft, p1);
  const r2 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.3'])), settings });
  const p2 = planPartial(r2, p1.next, { now: 100, insertThenTrim: true });
  const tx = p2.transactions[0]!();
  const service = [...r2.services.values()].flatMap((out) => [...out.chains]).find(([name]) => name.startsWith('service-'))!;
  // The service chain is not flushed: its rules are inserted, last first, so they end up in order.
  t.false(tx.includes(`flush chain ip kube-proxy ${service[0]}`), tx.join('\n'));
  t.deepEqual(tx.filter((l) => l.startsWith(`insert rule ip kube-proxy ${service[0]} `)), [...service[1]].reverse().map((r) => `insert rule ip kube-proxy ${service[0]} ${r}`));
  t.deepEqual(p2.trims, [{ chain: service[0], keep: service[1].length, after: 0 }]);
  // Between the two commits: the new rules first, the old ones (with the old vmap) behind them.
  await nft.apply(tx.join('\n') + '\n');
  const between = nft.tables.get('ip kube-proxy')!.chains.get(service[0])!.rules;
  t.deepEqual(between.slice(0, service[1].length), [...service[1]]);
  t.is(between.length, service[1].length + p1.next.chains.get(service[0])!.length);
  // After the trim: exactly the rendered table.
  const rest = { ...p2, transactions: [] };
  await run(nft, rest);
  t.is(normalizeNft(nft.dump('ip')), expected(r2, p2.next));
  // A chain that did not end in a vmap before (a new service chain) is written as before.
  const r3 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.3']) + svc('db', 'clusterIP: 172.30.0.11\nports: [{name: p, port: 80, protocol: TCP}]') + eps('db', ['10.1.0.9'])), settings });
  const p3 = planPartial(r3, p2.next, { now: 200, insertThenTrim: true });
  t.deepEqual(p3.trims, []);
  t.false(p3.transactions[0]!().some((l) => l.startsWith('insert ')));
});

test('insertThenTrim in a full sync: every service chain the kernel holds gets its rules in front; a gone affinity set goes after the trim; not when the fixed part deletes chains', async (t) => {
  const nft = new FakeNft({ ruleHandles: true });
  const aff = web('sessionAffinity: ClientIP') + eps('web', ['10.1.0.1', '10.1.0.2']);
  const p1 = planFull(renderNftables({ cluster: cluster(aff), settings }), null, null, { now: 0, insertThenTrim: true });
  t.deepEqual(p1.trims, [], 'an empty kernel: nothing to put in front of');
  await run(nft, p1);
  // A restart: the kernel holds the table; affinity is now off.
  const r2 = renderNftables({ cluster: cluster(web() + eps('web', ['10.1.0.1', '10.1.0.2'])), settings });
  const p2 = planFull(r2, await nft.listTable('ip', 'kube-proxy'), null, { now: 10, insertThenTrim: true });
  const serviceChains = [...r2.services.values()].flatMap((out) => [...out.chains]).filter(([, rules]) => rules.at(-1)!.startsWith('numgen '));
  t.true(serviceChains.length > 0);
  t.deepEqual(p2.trims.map((x) => x.chain).sort(), serviceChains.map(([name]) => name).sort());
  const lines = p2.transactions.flatMap((tx) => tx());
  for (const [name] of serviceChains) t.false(lines.includes(`flush chain ip kube-proxy ${name}`), name);
  t.false(lines.some((l) => l.startsWith('delete set ')), 'the affinity set waits for the trim');
  t.true(p2.afterTrims.length > 0 && p2.afterTrims.every((l) => /^delete set ip kube-proxy affinity-/.test(l)), p2.afterTrims.join('\n'));
  await run(nft, p2);
  t.is(normalizeNft(nft.dump('ip')), expected(r2, p2.next));
  // A chain of an older kube-proxy to delete: the old rules might jump to it, so chains are flushed.
  nft.foreign('add chain ip kube-proxy older-chain\n');
  const p3 = planFull(r2, await nft.listTable('ip', 'kube-proxy'), null, { now: 20, insertThenTrim: true });
  t.deepEqual(p3.trims, []);
});

test('insertThenTrim with affinity: an endpoint leaving keeps the chain in front and deletes its affinity set after the trim; a timeout change flushes', async (t) => {
  const nft = new FakeNft({ ruleHandles: true });
  const renderer = new NftablesRenderer();
  const aff = (s: number, ips: string[]) => web(`sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: ${s}}}`) + eps('web', ips);
  const p1 = planFull(renderer.render({ cluster: cluster(aff(60, ['10.1.0.1', '10.1.0.2'])), settings }), null, null, { now: 0 });
  await run(nft, p1);
  // 10.1.0.2 leaves: its affinity set is used by the old rules until the trim.
  const r2 = renderer.render({ cluster: cluster(aff(60, ['10.1.0.1'])), settings });
  const p2 = planPartial(r2, p1.next, { now: 1, insertThenTrim: true });
  t.true(p2.trims.length > 0);
  t.false(p2.transactions[0]!().some((l) => l.startsWith('delete set ')));
  t.true(p2.afterTrims.length === 1 && /^delete set ip kube-proxy affinity-\S+10\.1\.0\.2/.test(p2.afterTrims[0]!), p2.afterTrims.join('\n'));
  await run(nft, p2);
  t.is(normalizeNft(nft.dump('ip')), normalizeNft(nftablesText(r2, [...p2.next.stale.keys()].sort())));
  // A timeout change re-declares the sets, which no old rule may use then: flushed, no trims.
  const r3 = renderer.render({ cluster: cluster(aff(120, ['10.1.0.1'])), settings });
  const p3 = planPartial(r3, p2.next, { now: 2, insertThenTrim: true });
  t.deepEqual(p3.trims, []);
  await run(nft, p3);
  t.regex(nft.dump('ip'), /timeout 120s/);
  t.is(normalizeNft(nft.dump('ip')), normalizeNft(nftablesText(r3, [...p3.next.stale.keys()].sort())));
});

test('an affinity timeout change re-declares the sets after rewriting the chains that use them; turning affinity off deletes them', async (t) => {
  const nft = new FakeNft();
  const renderer = new NftablesRenderer();
  const aff = (s: number) => web(`sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: ${s}}}`) + eps('web', ['10.1.0.1']);
  const r1 = renderer.render({ cluster: cluster(aff(60)), settings });
  const p1 = planFull(r1, null, null, { now: 0 });
  await run(nft, p1);
  const r2 = renderer.render({ cluster: cluster(aff(120)), settings });
  const p2 = planPartial(r2, p1.next, { now: 1 });
  await run(nft, p2);
  t.regex(nft.dump('ip'), /timeout 120s/);
  t.is(normalizeNft(nft.dump('ip')), normalizeNft(nftablesText(r2)));
  const r3 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1'])), settings });
  const p3 = planPartial(r3, p2.next, { now: 2 });
  await run(nft, p3);
  t.false(nft.dump('ip').includes('affinity-'));
});

test('an element two services claim belongs to the first by name, and passes to the other when it goes', async (t) => {
  const nft = new FakeNft();
  const renderer = new NftablesRenderer();
  const other = svc('zeta', 'clusterIP: 172.30.0.11\nexternalIPs: [192.168.99.9]\nports: [{name: p, port: 80, protocol: TCP}]') + eps('zeta', ['10.2.0.1']);
  const r1 = renderer.render({ cluster: cluster(web() + eps('web', ['10.1.0.1']) + other), settings });
  const p1 = planFull(r1, null, null, { now: 0 });
  await run(nft, p1);
  t.regex(nft.dump('ip'), /service-ips \{ 192\.168\.99\.9 \. tcp \. 80 : goto external-\w+-ns1\/web\//);
  const r2 = renderer.render({ cluster: cluster(other), settings });
  const p2 = planPartial(r2, p1.next, { now: 1 });
  await run(nft, p2);
  t.regex(nft.dump('ip'), /service-ips \{ 192\.168\.99\.9 \. tcp \. 80 : goto external-\w+-ns1\/zeta\//);
});

test('a full sync over a leftover table: an older kube-proxy\'s chains and sets go, unused service chains are flushed, unused affinity sets deleted', async (t) => {
  const nft = new FakeNft();
  nft.foreign([
    'add table ip kube-proxy',
    'add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }',
    'add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -90 ; }',
    'add chain ip kube-proxy endpoints-check',
    'add rule ip kube-proxy filter-prerouting ct state new jump endpoints-check',
    'add map ip kube-proxy old-map { type ipv4_addr : verdict ; }',
    'add chain ip kube-proxy service-OLDOLDOL-ns9/gone/tcp/p',
    'add set ip kube-proxy affinity-OLDOLDOL-ns9/gone/tcp/p__10.9.9.9/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }',
    'add rule ip kube-proxy service-OLDOLDOL-ns9/gone/tcp/p ip saddr @affinity-OLDOLDOL-ns9/gone/tcp/p__10.9.9.9/80 drop',
  ].join('\n'));
  const r = renderNftables({ cluster: cluster(web() + eps('web', ['10.1.0.1'])), settings });
  const plan = planFull(r, await nft.listTable('ip', 'kube-proxy'), null, { now: 5 });
  await run(nft, plan);
  t.deepEqual([...plan.next.stale.keys()], ['service-OLDOLDOL-ns9/gone/tcp/p']);
  t.is(normalizeNft(nft.dump('ip')), expected(r, plan.next));
  t.regex(nft.dump('ip'), /add chain ip kube-proxy nat-prerouting \{ type nat hook prerouting priority -100 ; \}/);
});

test('bounded transactions: whole services per transaction, each valid on its own', async (t) => {
  const nft = new FakeNft();
  let yaml = SERVICE_CIDR();
  for (let i = 0; i < 20; i++) yaml += svc(`s${i}`, `clusterIP: 172.30.1.${i}\nports: [{name: p, port: 80, protocol: TCP}]`) + eps(`s${i}`, [`10.3.${i}.1`, `10.3.${i}.2`]);
  const r = renderNftables({ cluster: cluster(yaml), settings });
  const plan = planFull(r, null, null, { now: 0, maxChainsPerTransaction: 10 });
  t.true(plan.transactions.length >= 6, `${plan.transactions.length} transactions`);
  for (const tx of plan.transactions) t.true(tx().filter((l) => /^add chain .*\//.test(l)).length <= 10);
  await run(nft, plan);
  t.is(normalizeNft(nft.dump('ip')), expected(r, plan.next));
  // fixedApart: the same lines in the same order, the fixed part in a transaction of its own.
  const apart = planFull(r, null, null, { now: 0, maxChainsPerTransaction: 10, fixedApart: true });
  t.is(apart.transactions.length, plan.transactions.length + 1);
  t.deepEqual(apart.transactions.flatMap((tx) => tx()), plan.transactions.flatMap((tx) => tx()));
  t.false(apart.transactions[0]!().some((l) => /^add (chain|rule) ip kube-proxy (service|endpoint)-[A-Z0-9]{8}-/.test(l)));
  t.true(apart.transactions[1]!().some((l) => /^add chain ip kube-proxy service-[A-Z0-9]{8}-/.test(l)));
});

test('fixedApart in a restart: trims follow the transaction that wrote their chains', async (t) => {
  const nft = new FakeNft({ ruleHandles: true });
  let yaml = SERVICE_CIDR();
  for (let i = 0; i < 6; i++) yaml += svc(`s${i}`, `clusterIP: 172.30.1.${i}\nports: [{name: p, port: 80, protocol: TCP}]`) + eps(`s${i}`, [`10.3.${i}.1`, `10.3.${i}.2`]);
  const r = renderNftables({ cluster: cluster(yaml), settings });
  await run(nft, planFull(r, null, null, { now: 0 }));
  const plan = planFull(r, await nft.listTable('ip', 'kube-proxy'), null, { now: 1, maxChainsPerTransaction: 6, insertThenTrim: true, fixedApart: true });
  t.true(plan.trims.length > 0);
  for (const { chain, after } of plan.trims) {
    t.true(after >= 1, 'never after the fixed part alone');
    t.true(plan.transactions[after]!().some((l) => l.startsWith(`insert rule ip kube-proxy ${chain} `)), `${chain} after ${after}`);
  }
});

test('over random change sequences, rewriting chains either way, the kernel holds exactly the rendered table plus the flushed stale chains', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(fc.array(arbService, { maxLength: 5 }), { minLength: 2, maxLength: 6 }), fc.integer({ min: 1, max: 8 }), fc.boolean(), fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }), async (history, max, inFront, fullAt) => {
    const nft = new FakeNft({ ruleHandles: true });
    const renderer = new NftablesRenderer();
    let applied: NftApplied | null = null;
    let now = 0;
    for (const [i, specs] of history.entries()) {
      now += 700;
      const r = renderer.render({ cluster: arbCluster(specs), settings });
      // Now and then a full sync over what the kernel holds (a restart when nothing is known).
      const plan: NftPlan = !applied ? planFull(r, null, null, { now, maxChainsPerTransaction: max })
        : fullAt[i] ? planFull(r, await nft.listTable('ip', 'kube-proxy'), i % 2 ? applied : null, { now, maxChainsPerTransaction: max, insertThenTrim: inFront, fixedApart: inFront })
          : planPartial(r, applied, { now, insertThenTrim: inFront });
      await run(nft, plan);
      const next = plan.next;
      applied = next;
      if (normalizeNft(nft.dump('ip')) !== expected(r, next)) return false;
      // A full sync over the same kernel changes nothing that matters.
      const again = planFull(renderNftables({ cluster: arbCluster(specs), settings }), await nft.listTable('ip', 'kube-proxy'), next, { now, maxChainsPerTransaction: max, insertThenTrim: inFront, fixedApart: !inFront });
      const copy = new FakeNft({ ruleHandles: true });
      copy.tables = structuredClone(nft.tables);
      await run(copy, again);
      if (normalizeNft(copy.dump('ip')) !== expected(r, again.next)) return false;
    }
    return true;
  }), { numRuns: 60 });
  t.pass();
});

test('a 10k-service sync plans without overflowing the stack: one unbounded full transaction, and a partial sync that adds them all', (t) => {
  const big = syntheticCluster(10_000);
  const r = renderNftables({ cluster: big, settings });
  const full = planFull(r, null, null, { now: 0 });
  const serviceChains = [...r.services.values()].reduce((n, out) => n + out.chains.size, 0);
  t.true(serviceChains > 40_000);
  t.is(full.transactions.length, 1);
  t.is(full.chainsWritten, serviceChains);
  const renderer = new NftablesRenderer();
  const empty = renderer.render({ cluster: { services: [], endpointSlices: [] }, settings });
  const applied = planFull(empty, null, null, { now: 0 }).next;
  const partial = planPartial(renderer.render({ cluster: big, settings }), applied, { now: 1 });
  t.is(partial.chainsWritten, serviceChains);
});
