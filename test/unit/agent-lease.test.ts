// The agent's lease life on fakes (in-memory etcd, in-memory VXLAN kernel, manual clock):
// acquire and program peers, renew before expiry, put a deleted or expired lease back, refuse
// a subnet another node took over, survive a renew race and an etcd outage without touching
// the data plane.
import test from 'ava';
import { FakeClock } from '../helpers/fake-clock.ts';
import { MemoryKv } from '../helpers/memory-kv.ts';
import { SUBNETS, startTestAgent, vxlanLease, type TestAgent } from '../helpers/agent-harness.ts';
import { RENEW_RETRY_MS } from '../../src/agent/lease-keeper.ts';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';

function cluster(config = CONFIG) {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set('/coreos.com/network/config', config);
  return { clock, kv };
}

const ready = (a: TestAgent) => a.agent.readiness().ready;
const reason = (a: TestAgent) => a.agent.readiness().reason;
const ownKey = (kv: MemoryKv, ip: string) => {
  for (const k of ['10.5.1.0-24', '10.5.2.0-24', '10.5.3.0-24', '10.5.4.0-24']) {
    const kv1 = kv.peek(SUBNETS + k);
    if (kv1 && JSON.parse(kv1.value).PublicIP === ip) return SUBNETS + k;
  }
  return null;
};

test('acquires a lease in flannel\'s format, programs every peer, writes subnet.env, then is ready', async (t) => {
  const { clock, kv } = cluster();
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('192.168.50.9', '0a:00:00:00:00:09'));
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600 });
  t.true(await clock.advanceUntil(() => ready(a), 5000), reason(a));
  const key = ownKey(kv, '192.168.50.1')!;
  t.is(key, `${SUBNETS}10.5.1.0-24`, 'the first free subnet (randomness is 0 here)');
  const stored = kv.peek(key)!;
  t.deepEqual(Object.keys(JSON.parse(stored.value)), ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
  t.not(stored.lease, '0');
  t.is(a.subnetEnv()!.get('FLANNEL_SUBNET'), '10.5.1.1/24');
  t.deepEqual(a.vxlan.state.routes.map((r) => `${r.dst} via ${r.via}`), ['10.5.9.0/24 via 10.5.9.0']);
  t.deepEqual(a.vxlan.state.fdb.map((f) => `${f.mac} ${f.dst}`), ['0a:00:00:00:00:09 192.168.50.9']);
  t.true(a.masqApplied >= 1);

  // Peers come and go.
  kv.set(`${SUBNETS}10.5.7.0-24`, vxlanLease('192.168.50.7', '0a:00:00:00:00:07'));
  t.true(await clock.advanceUntil(() => a.vxlan.state.routes.length === 2, 1000));
  kv.del(`${SUBNETS}10.5.9.0-24`);
  t.true(await clock.advanceUntil(() => a.vxlan.state.routes.length === 1 && a.vxlan.state.fdb.length === 1, 1000));
  t.deepEqual(a.vxlan.state.routes.map((r) => r.dst), ['10.5.7.0/24']);
  t.deepEqual(a.problems(), []);
});

test('renews before expiry on a fresh etcd lease, revoking the old one', async (t) => {
  const { clock, kv } = cluster();
  // A 1 h TTL with a 60 min margin: renewal at half the lifetime.
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600, options: { resyncSeconds: 600 } });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  const key = ownKey(kv, '192.168.50.1')!;
  const first = kv.peek(key)!;
  await clock.advance(29 * 60_000);
  t.is(kv.peek(key)!.lease, first.lease, 'not renewed before half the lifetime');
  await clock.advance(2 * 60_000);
  const second = kv.peek(key)!;
  t.not(second.lease, first.lease);
  t.is(second.createRevision, first.createRevision, 'the same key, never re-created');
  t.is(kv.leaseCount, 1, 'the old etcd lease was revoked');
  t.true(a.logs.some((l) => l.msg === 'renewed subnet lease'));
  // And again, every half lifetime, for a day.
  await clock.advance(24 * 3600_000);
  t.truthy(kv.peek(key));
  t.true(a.logs.filter((l) => l.msg === 'renewed subnet lease').length >= 40);
  t.true(ready(a));
});

test('a deleted lease is put back with the same subnet; an expired one too once etcd answers', async (t) => {
  const { clock, kv } = cluster();
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 120 });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  const key = ownKey(kv, '192.168.50.1')!;
  kv.del(key);
  t.true(await clock.advanceUntil(() => kv.peek(key) !== undefined, 1000));
  t.is(JSON.parse(kv.peek(key)!.value).PublicIP, '192.168.50.1');
  t.true(a.logs.some((l) => l.msg === 'this node\'s lease was deleted; re-creating it'));

  // etcd goes away for longer than the lease lives: the lease expires in etcd meanwhile.
  kv.setDown(true);
  t.true(await clock.advanceUntil(() => !ready(a), 1000));
  t.regex(reason(a), /^etcd unreachable: /);
  const routesBefore = JSON.stringify(a.vxlan.state);
  await clock.advance(130_000);
  t.is(kv.peek(key), undefined, 'expired in etcd meanwhile');
  t.is(JSON.stringify(a.vxlan.state), routesBefore, 'the data plane is left alone while etcd is away');
  kv.setDown(false);
  t.true(await clock.advanceUntil(() => kv.peek(key) !== undefined && ready(a), 10_000), reason(a));
  t.is(a.subnetEnv()!.get('FLANNEL_SUBNET'), '10.5.1.1/24', 'same subnet');
});

test('a subnet taken over by another node: not ready while it holds it, re-created once it is gone', async (t) => {
  const { clock, kv } = cluster();
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600 });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  const key = ownKey(kv, '192.168.50.1')!;
  kv.set(key, vxlanLease('192.168.50.66', '0a:00:00:00:00:66'));
  t.true(await clock.advanceUntil(() => !ready(a), 1000));
  t.regex(reason(a), /subnet 10\.5\.1\.0\/24 is now held by 192\.168\.50\.66/);
  t.true(a.logs.some((l) => l.msg === 'this node\'s subnet was taken over by another node'));
  // Retried every 10 s, still held: still not ready, the lease is left alone.
  await clock.advance(3 * RENEW_RETRY_MS);
  t.is(JSON.parse(kv.peek(key)!.value).PublicIP, '192.168.50.66');
  t.false(ready(a));
  kv.del(key);
  t.true(await clock.advanceUntil(() => ready(a), 2 * RENEW_RETRY_MS), reason(a));
  t.is(JSON.parse(kv.peek(key)!.value).PublicIP, '192.168.50.1');
});

test('renew race: the key changes between read and guarded write; the renewal is retried and wins', async (t) => {
  const { clock, kv } = cluster();
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 600 });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  const key = ownKey(kv, '192.168.50.1')!;
  let raced = 0;
  kv.beforeGuardedPut = (k) => {
    if (k !== key || raced++ > 0) return;
    // Someone (an old copy of this node) rewrites the same value just before our guarded put.
    const cur = kv.peek(key)!;
    kv.set(key, cur.value, cur.lease);
  };
  const lease0 = kv.peek(key)!.lease;
  await clock.advance(5 * 60_000 + 1000);
  t.is(raced, 1);
  t.true(a.logs.some((l) => l.msg === 'lease renewal failed; will retry' && /changed in etcd while renewing/.test(String(l.err))));
  t.true(await clock.advanceUntil(() => kv.peek(key)!.lease !== lease0, 2 * RENEW_RETRY_MS + 1000));
  t.true(ready(a));
});

test('etcd down for minutes: not ready, nothing removed from the kernel, lease renewed when it is back', async (t) => {
  const { clock, kv } = cluster();
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('192.168.50.9', '0a:00:00:00:00:09'));
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600 });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  const key = ownKey(kv, '192.168.50.1')!;
  const before = { state: JSON.stringify(a.vxlan.state), lease: kv.peek(key)!.lease, applied: a.vxlan.applied.length };
  kv.setDown(true);
  await clock.advance(5 * 60_000);
  t.false(ready(a));
  t.regex(reason(a), /^etcd unreachable/);
  t.is(JSON.stringify(a.vxlan.state), before.state);
  t.is(a.vxlan.applied.length, before.applied, 'no kernel change while etcd is away');
  // One log line per distinct failure, not one per retry.
  t.true(a.logs.filter((l) => l.msg === 'lease store lost; keeping the data plane as it is').length <= 3);
  kv.setDown(false);
  t.true(await clock.advanceUntil(() => ready(a), 10_000), reason(a));
  t.not(kv.peek(key)!.lease, before.lease, 'renewed after the outage');
  t.true(a.logs.some((l) => l.msg === 'etcd reachable again; leases relisted'));
});

test('config missing at start: retried with a clear error, not ready meanwhile', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1' });
  await clock.advance(3000);
  t.false(ready(a));
  t.regex(reason(a), /read network config: flannel config not found in etcd store at \/coreos.com\/network\/config/);
  kv.set('/coreos.com/network/config', CONFIG);
  t.true(await clock.advanceUntil(() => ready(a), 60_000), reason(a));
});

test('stop() ends every loop and timer', async (t) => {
  const { clock, kv } = cluster();
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600 });
  t.true(await clock.advanceUntil(() => ready(a), 5000));
  await a.agent.stop();
  await a.running;
  await clock.advance(10);
  t.is(clock.pending, kv.leaseCount, 'only the store\'s own lease timers are left');
});
