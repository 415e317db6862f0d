import test from 'ava';
import { ChangeTracker, canonical } from '../../src/proxy/tracker.ts';
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';
import { makeService, makeSlice } from '../helpers/fake-apiserver.ts';

const svc = (name: string, ip = '172.30.0.10') => makeService('default', name, { clusterIP: ip, ports: [{ port: 80, protocol: 'TCP' }] }) as unknown as Service;
const slice = (name: string, ips: string[]) => makeSlice('default', name, ips, [{ port: 8080 }]) as unknown as EndpointSlice;

test('upserts mark the owning service; identical objects mark nothing', (t) => {
  const warnings: string[] = [];
  const tr = new ChangeTracker((o, r) => warnings.push(`${o}: ${r}`));
  tr.upsertService(svc('a'));
  tr.upsertSlice(slice('a', ['10.1.0.1']));
  tr.upsertSlice(slice('b', ['10.1.0.2']));
  t.deepEqual([...tr.take().services].sort(), ['default/a', 'default/b']);
  // Same content with a new resourceVersion: no change.
  const again = svc('a');
  again.metadata.resourceVersion = '999';
  t.false(tr.upsertService(again));
  t.is(tr.take().services.size, 0);
  tr.upsertSlice(slice('a', ['10.1.0.1', '10.1.0.3']));
  const c = tr.take();
  t.deepEqual([...c.services], ['default/a']);
  t.is(c.endpointEvents, 1);
  t.deepEqual(warnings, []);
});

test('replaceAll (a relist) deletes what is gone and ignores what is unchanged', (t) => {
  const tr = new ChangeTracker();
  tr.replaceAll([svc('a'), svc('b', '172.30.0.11')], [slice('a', ['10.1.0.1']), slice('b', ['10.1.0.2'])]);
  tr.take();
  tr.replaceAll([svc('a')], [slice('a', ['10.1.0.1'])]);
  t.deepEqual([...tr.take().services], ['default/b']);
  t.is(tr.snapshot().services.length, 1);
  t.is(tr.snapshot().endpointSlices.length, 1);
  // Key order and Date objects (typed client objects) do not count as changes.
  const reordered = JSON.parse(canonical(svc('a'))) as Service;
  tr.replaceAll([reordered], [slice('a', ['10.1.0.1'])]);
  t.is(tr.take().services.size, 0);
});

test('bad objects are skipped with a reason and do not stop the rest', (t) => {
  const warnings: string[] = [];
  const tr = new ChangeTracker((o, r) => warnings.push(`${o}: ${r}`));
  tr.replaceAll(
    [{ metadata: { name: 'Bad Name!', namespace: 'default' } } as Service, svc('good')],
    [{ metadata: { name: 'nolabel', namespace: 'default' } } as EndpointSlice, slice('good', ['10.1.0.1'])],
  );
  t.deepEqual([...tr.take().services], ['default/good']);
  t.is(warnings.length, 2);
  t.regex(warnings[0]!, /invalid metadata/);
  t.regex(warnings[1]!, /service-name/);
});

test('a failed sync puts its changes back; deleting a slice marks its service', (t) => {
  const tr = new ChangeTracker();
  tr.upsertService(svc('a'));
  tr.upsertSlice(slice('a', ['10.1.0.1']));
  const c = tr.take();
  tr.restore(c);
  t.deepEqual([...tr.take().services], ['default/a']);
  t.true(tr.deleteSlice(slice('a', [])));
  t.deepEqual([...tr.take().services], ['default/a']);
  t.false(tr.deleteSlice(slice('a', [])));
});

test('trigger-time annotations are collected for the programming-latency metric', (t) => {
  const tr = new ChangeTracker();
  const s = slice('a', ['10.1.0.1']);
  s.metadata.annotations = { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-01T00:00:00Z' };
  tr.upsertSlice(s);
  t.deepEqual(tr.take().triggerTimes, [Date.parse('2026-01-01T00:00:00Z')]);
});

test('a relist that changes a few objects in place gives what the full walk gives (random sequences, single events between)', (t) => {
  // The reference tracker always walks every object: a nameless object first makes each of its
  // lists unclean (it only adds a warning).
  const nameless = { metadata: { namespace: 'default' } };
  for (let seed = 1; seed <= 20; seed++) {
    let state = seed;
    const rand = (n: number) => { state = (state * 1103515245 + 12345) & 0x7fffffff; return state % n; };
    const fast = new ChangeTracker();
    const full = new ChangeTracker();
    let version = 0;
    const makeSvc = (name: string) => svc(name, `172.30.0.${rand(4) + 10}`);
    const makeSlc = (name: string) => slice(name, [`10.1.0.${rand(4) + 1}`]);
    let services: Service[] = ['a', 'b', 'c', 'd'].map(makeSvc);
    let slices: EndpointSlice[] = ['a', 'b', 'c', 'd'].map(makeSlc);
    for (let step = 0; step < 60; step++) {
      const op = rand(10);
      const i = rand(services.length || 1);
      const name = 'abcdef'[rand(6)]!;
      services = [...services];
      slices = [...slices];
      if (op === 0 && services.length) services[i] = makeSvc(services[i]!.metadata.name!); // same name, maybe new content
      else if (op === 1 && slices.length) slices[rand(slices.length)] = makeSlc(slices[rand(slices.length)]!.metadata.labels!['kubernetes.io/service-name']!);
      else if (op === 2 && services.length) services[i] = makeSvc(name); // renamed, maybe a duplicate
      else if (op === 3 && services.length) services[i] = { metadata: { name: 'Bad!', namespace: 'default' } } as Service;
      else if (op === 4) services.push(makeSvc(name));
      else if (op === 5 && services.length) services.splice(i, 1);
      else if (op === 6) {
        // A single event between relists, to both.
        const s = makeSvc(name);
        if (rand(2)) { fast.upsertService(s); full.upsertService(s); } else { fast.deleteService(s); full.deleteService(s); }
      } else if (op === 7 && slices.length) slices[rand(slices.length)] = { ...slices[0]!, metadata: { ...slices[0]!.metadata } }; // a copy, maybe a duplicate
      version++;
      fast.replaceAll(services, slices);
      full.replaceAll([nameless as Service, ...services], [nameless as EndpointSlice, ...slices]);
      const at = `seed ${seed} step ${step} op ${op} (v${version})`;
      t.deepEqual([...fast.take().services].sort(), [...full.take().services].sort(), at);
      const objects = (tr: ChangeTracker) => JSON.stringify([tr.snapshot().services, tr.snapshot().endpointSlices]);
      t.is(objects(fast), objects(full), at);
    }
  }
});
