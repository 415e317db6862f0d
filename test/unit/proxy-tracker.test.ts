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
