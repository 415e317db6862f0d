// Balancing decisions of the userspace mode: round robin, ClientIP affinity with sliding
// expiry, endpoint churn, dial plan; and the UDP flow table. Pure, no sockets.
import test from 'ava';
import fc from 'fast-check';
import { ServicePortBalancer, dialPlan } from '../../src/proxy/userspace/balancer.ts';
import { FlowTable } from '../../src/proxy/userspace/flows.ts';

const EPS = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
const count = (xs: Array<string | null>) => xs.reduce((m, x) => m.set(String(x), (m.get(String(x)) ?? 0) + 1), new Map<string, number>());

test('round robin spreads exactly evenly over the endpoints', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 0 });
  b.update(EPS);
  const picks = Array.from({ length: 30 }, (_, i) => b.pick(`10.1.0.${i % 4}`, 0));
  t.deepEqual([...count(picks).values()], [10, 10, 10]);
});

test('no endpoints: no pick', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 0 });
  t.is(b.pick('10.1.0.1', 0), null);
  b.update(EPS);
  b.update([]);
  t.is(b.pick('10.1.0.1', 0), null);
});

test('an unchanged endpoint set keeps the rotation; churn continues after the last one served', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 0 });
  b.update(EPS);
  t.is(b.pick('c', 0), EPS[0]);
  t.false(b.update([...EPS].reverse()));
  t.is(b.pick('c', 0), EPS[1]);
  t.true(b.update([EPS[0]!, EPS[2]!, '10.0.0.4:80']));
  t.is(b.pick('c', 0), EPS[2]);
  t.is(b.pick('c', 0), '10.0.0.4:80');
});

test('ClientIP affinity sticks per client, spreads across clients, and slides', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 10 });
  b.update(EPS);
  const first = b.pick('10.1.0.1', 0);
  for (let s = 1; s <= 30; s++) t.is(b.pick('10.1.0.1', s * 9000), first); // each use within 10 s extends it
  const others = new Set(Array.from({ length: 6 }, (_, i) => b.pick(`10.2.0.${i}`, 0)));
  t.is(others.size, 3);
});

test('ClientIP affinity expires after the timeout of inactivity; sweep forgets expired clients', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 10 });
  b.update(EPS);
  const first = b.pick('10.1.0.1', 0);
  t.not(b.pick('10.1.0.1', 10_000), first); // not < ttl: a new round-robin pick
  b.pick('10.1.0.2', 10_000);
  t.is(b.affinityEntries, 2);
  t.is(b.sweep(20_000), 2);
  t.is(b.affinityEntries, 0);
});

test('affinity to a removed endpoint is dropped; to a kept one survives', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 100 });
  b.update(EPS);
  const a = b.pick('10.1.0.1', 0)!;
  const c = b.pick('10.1.0.2', 0)!;
  b.update(EPS.filter((e) => e !== a));
  t.is(b.affinityEntries, 1);
  t.not(b.pick('10.1.0.1', 1), a);
  t.is(b.pick('10.1.0.2', 1), c);
});

test('a failed endpoint is skipped, and overrides affinity', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 100 });
  b.update(EPS);
  const a = b.pick('10.1.0.1', 0)!;
  const failed = new Set([a]);
  const next = b.pick('10.1.0.1', 1, failed);
  t.not(next, a);
  t.is(b.pick('10.1.0.1', 2), next); // the replacement is remembered
  t.is(b.pick('10.1.0.9', 3, new Set(EPS)), null);
});

test('the affinity table is bounded (least recently used goes first)', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 100, maxAffinity: 3 });
  b.update(EPS);
  for (let i = 0; i < 10; i++) b.pick(`10.1.0.${i}`, i);
  t.is(b.affinityEntries, 3);
});

test('switching affinity off forgets every client', (t) => {
  const b = new ServicePortBalancer({ stickySeconds: 100 });
  b.update(EPS);
  b.pick('10.1.0.1', 0);
  b.setStickySeconds(0);
  t.is(b.affinityEntries, 0);
});

test('dial plan: bounded tries, one per endpoint, kube-proxy timeouts', (t) => {
  t.deepEqual(dialPlan(1), { tries: 1, timeoutsMs: [250] });
  t.deepEqual(dialPlan(3), { tries: 3, timeoutsMs: [250, 500, 1000] });
  t.deepEqual(dialPlan(50), { tries: 4, timeoutsMs: [250, 500, 1000, 2000] });
  t.deepEqual(dialPlan(0).tries, 1);
});

test('property: without affinity, any endpoint sequence gets picks within one of each other', (t) => {
  fc.assert(fc.property(fc.array(fc.uniqueArray(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 5 }), fc.integer({ min: 1, max: 40 }), (sets, n) => {
    const b = new ServicePortBalancer({ stickySeconds: 0 });
    for (const s of sets) b.update(s.map((x) => `10.0.0.${x}:80`));
    const last = sets[sets.length - 1]!;
    const c = count(Array.from({ length: n * last.length }, () => b.pick('c', 0)));
    return c.size === last.length && [...c.values()].every((v) => v === n);
  }));
  t.pass();
});

test('flow table: idle expiry, refresh on activity, bounded with eviction of the least recently active', (t) => {
  const f = new FlowTable<string>({ idleMs: 100, maxFlows: 3 });
  t.deepEqual(f.add('a', 'A', 0), []);
  f.add('b', 'B', 10);
  f.add('c', 'C', 20);
  t.is(f.get('a', 90), 'A'); // refreshed (and moved: 90 ms stale > idle/4)
  t.deepEqual(f.add('d', 'D', 95), ['B']);
  t.is(f.size, 3);
  t.is(f.get('c', 130), undefined); // idle 110 ms
  t.deepEqual(f.expire(130), ['C']);
  f.touch('d', 180);
  t.deepEqual(f.expire(195).sort(), ['A']);
  t.deepEqual(f.add('d', 'D2', 200), ['D']); // replaced under the same key
  t.false(f.delete('d', 'D'));
  t.true(f.delete('d', 'D2'));
  t.deepEqual(f.clear(), []);
  t.throws(() => new FlowTable({ idleMs: 0, maxFlows: 1 }));
});
