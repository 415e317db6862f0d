// The stateful renderer (IptablesRenderer) must give exactly what a fresh render gives, while
// looking only at the services it is told changed.
import test from 'ava';
import fc from 'fast-check';
import { IptablesRenderer, renderIptables } from '../../src/rules/iptables.ts';
import { ClusterStore } from '../../src/rules/cluster-index.ts';
import type { ClusterIndex, ClusterState } from '../../src/model/k8s.ts';
import type { RenderedTables, RenderResult } from '../../src/rules/types.ts';
import { arbService, cluster } from '../helpers/arb-cluster.ts';
import { settings } from '../helpers/rules.ts';

/** Puts `next` into the store; returns the "ns/name" of every service whose objects changed. */
function apply(store: ClusterStore, prev: ClusterState, next: ClusterState): Set<string> {
  const changed = new Set<string>();
  const json = (o: unknown) => JSON.stringify(o);
  const before = new Map(prev.services.map((s) => [s.metadata.name, s]));
  const slicesBefore = new Map(prev.endpointSlices.map((s) => [s.metadata.name, s]));
  for (const s of next.services) if (json(before.get(s.metadata.name)) !== json(s)) changed.add(store.upsertService(s));
  for (const s of next.endpointSlices) if (json(slicesBefore.get(s.metadata.name)) !== json(s)) changed.add(store.upsertSlice(s));
  const names = new Set(next.services.map((s) => s.metadata.name));
  for (const s of prev.services) if (!names.has(s.metadata.name)) changed.add(store.deleteService(s));
  const sliceNames = new Set(next.endpointSlices.map((s) => s.metadata.name));
  for (const s of prev.endpointSlices) if (!sliceNames.has(s.metadata.name)) changed.add(store.deleteSlice(s));
  return changed;
}

test('after any sequence of changes, recomputing only the changed services renders what a fresh render does', (t) => {
  fc.assert(fc.property(
    fc.array(fc.array(arbService, { maxLength: 5 }), { minLength: 1, maxLength: 5 }),
    fc.constantFrom(1000, 4),
    fc.integer({ min: 1, max: 400 }),
    (steps, threshold, chunkChars) => {
      const s = settings({ largeClusterEndpointsThreshold: threshold });
      const store = new ClusterStore();
      const renderer = new IptablesRenderer();
      let prev: ClusterState = { services: [], endpointSlices: [] };
      let prevState = renderer.render({ cluster: store.state(), settings: s }).state;
      for (const specs of steps) {
        const next = cluster(specs);
        const changed = apply(store, prev, next);
        const partial = renderer.render({ cluster: store.state(), settings: s, recompute: changed, partial: { changedServices: changed } });
        const fresh = renderIptables({ cluster: next, settings: s, partial: { previous: prevState, changedServices: changed } });
        t.is(partial.text, fresh.text);
        // A one-shot render keeps its service chains' rules as bytes; its tables are the same.
        t.deepEqual(fresh.tables, partial.tables);
        // The text as written out in chunks (knet rules) is the same text.
        t.is(bytesOf(fresh, chunkChars), fresh.text);
        t.deepEqual(partial.rulesTotal, fresh.rulesTotal);
        const full = renderer.render({ cluster: store.state(), settings: s, recompute: new Set() });
        t.is(full.text, renderIptables({ cluster: next, settings: s }).text);
        t.deepEqual(renderIptables({ cluster: next, settings: s }).tables, full.tables);
        t.is(bytesOf(renderIptables({ cluster: next, settings: s }), chunkChars), full.text);
        t.deepEqual([...full.tables.get('nat')!.chains.keys()].sort(), [...parseChains(full.text)].sort());
        t.deepEqual(outOfOrder(full.tables), []);
        t.deepEqual(outOfOrder(partial.tables), []);
        prev = next;
        prevState = full.state;
      }
    },
  ), { numRuns: 150 });
});

test('the text written out in chunks is UTF-8 also where a line is not ASCII', (t) => {
  // Names are validated ASCII; a setting is the only way in for other text, here a detector prefix.
  const s = settings({ localDetector: { mode: 'InterfaceNamePrefix', prefix: 'vethé' } });
  const r = renderIptables({ cluster: cluster(fc.sample(arbService, { numRuns: 4, seed: 7 })), settings: s });
  t.true(r.text.includes('vethé'));
  for (const chunkChars of [1, 50, 1 << 16]) t.is(bytesOf(r, chunkChars), r.text);
});

test('a one-shot render keeps rules as bytes: a port past the arena block and non-ASCII text come out as the kept renderer gives them', (t) => {
  const big = cluster(fc.sample(arbService, { numRuns: 3, seed: 11 }));
  // 4000 endpoints: 1 MB of one port's rules (3 MB as the arena reckons the worst case), past one arena block.
  big.services.push({ metadata: { namespace: 'ns', name: 'big' }, spec: { clusterIP: '172.30.2.1', ports: [{ name: 'a', protocol: 'TCP', port: 80 }] } });
  big.endpointSlices.push({
    metadata: { namespace: 'ns', name: 'big-x', labels: { 'kubernetes.io/service-name': 'big' } },
    addressType: 'IPv4',
    endpoints: Array.from({ length: 4000 }, (_, i) => ({ addresses: [`10.2.${i >> 8}.${i & 255}`], nodeName: i % 2 ? 'node-a' : 'node-b' })),
    ports: [{ name: 'a', protocol: 'TCP', port: 8080 }],
  });
  for (const s of [settings(), settings({ localDetector: { mode: 'InterfaceNamePrefix', prefix: 'vethé' } })]) {
    const kept = new IptablesRenderer().render({ cluster: big, settings: s });
    const once = renderIptables({ cluster: big, settings: s });
    t.is(once.text, kept.text);
    t.deepEqual(once.tables, kept.tables);
    t.deepEqual(once.rulesWritten, kept.rulesWritten);
    for (const chunkChars of [1, 50, 1 << 16]) t.is(bytesOf(once, chunkChars), kept.text);
  }
  const oneShot = new IptablesRenderer({ oneShot: true });
  oneShot.render({ cluster: big, settings: settings() });
  t.throws(() => oneShot.render({ cluster: big, settings: settings() }), { message: /renders once/ });
});

function bytesOf(result: RenderResult, chunkChars: number): string {
  const chunks: Uint8Array[] = [];
  result.writeText((b) => chunks.push(b), chunkChars);
  return Buffer.concat(chunks).toString('utf8');
}

/** Jumps to a chain listed later in the same table (the applier relies on this order when it splits restores). */
function outOfOrder(tables: RenderedTables): string[] {
  const bad: string[] = [];
  for (const [table, { chains }] of tables) {
    const seen = new Set<string>();
    for (const [c, rules] of chains) {
      for (const r of rules) {
        const target = / -[jg] (\S+)/.exec(r)?.[1];
        if (target && target !== c && chains.has(target) && !seen.has(target)) bad.push(`${table}: ${c} -> ${target}`);
      }
      seen.add(c);
    }
  }
  return bad;
}

function parseChains(text: string): Set<string> {
  const out = new Set<string>();
  let table = '';
  for (const l of text.split('\n')) {
    if (l.startsWith('*')) table = l.slice(1);
    else if (table === 'nat' && l.startsWith(':')) out.add(l.slice(1).split(' ')[0]!);
  }
  return out;
}

test('a render with recompute looks up only the services it names', (t) => {
  const c = cluster([
    { type: 'ClusterIP', ports: [{ name: 'a', protocol: 'TCP' }], etpLocal: false, itpLocal: false, affinity: false, externalIP: false, sourceRanges: false, endpoints: [{ host: 1, local: true, ready: true, terminating: false }] },
    { type: 'NodePort', ports: [{ name: 'a', protocol: 'TCP' }], etpLocal: false, itpLocal: false, affinity: false, externalIP: false, sourceRanges: false, endpoints: [{ host: 2, local: false, ready: true, terminating: false }] },
  ]);
  const store = new ClusterStore();
  for (const s of c.services) store.upsertService(s);
  for (const s of c.endpointSlices) store.upsertSlice(s);
  const looked: string[] = [];
  const index: ClusterIndex = { keys: () => store.keys(), get: (k) => { looked.push(k); return store.get(k); } };
  const renderer = new IptablesRenderer();
  renderer.render({ cluster: { services: [], endpointSlices: [], index }, settings: settings() });
  t.deepEqual(looked.sort(), ['ns/s0', 'ns/s1']);
  looked.length = 0;
  const moved = structuredClone(c.endpointSlices[1]!);
  moved.endpoints![0]!.addresses = ['10.1.1.99'];
  store.upsertSlice(moved);
  const r = renderer.render({ cluster: { services: [], endpointSlices: [], index }, settings: settings(), recompute: new Set(['ns/s1']), partial: { changedServices: new Set(['ns/s1']) } });
  t.deepEqual(looked, ['ns/s1']);
  // The endpoint's old chain is deleted, its new one written; s0's chains are not written.
  const nat = r.tables.get('nat')!;
  t.true([...nat.chains.keys()].some((c) => c.startsWith('KUBE-SEP-')));
  t.is(nat.deletes.size, 1);
  t.true([...nat.deletes][0]!.startsWith('KUBE-SEP-'));
  t.false(r.text.includes('10.1.0.1:8080'), 'unchanged service s0 is not written');
  t.true(r.text.includes('10.1.1.99:8080'));
});
