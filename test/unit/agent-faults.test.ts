// Hostile and careless input to the agent (issue 15, agent items), on fakes: a subnets/
// listing of megabytes, overlapping or oversized leases, a VTEP MAC claimed twice, unusable
// networks and public IPs, bad leases logged once instead of on every pass, and a node that
// does not forward IPv4.
import test from 'ava';
import { FakeClock } from '../helpers/fake-clock.ts';
import { MemoryKv } from '../helpers/memory-kv.ts';
import { SUBNETS, startTestAgent, vxlanLease } from '../helpers/agent-harness.ts';
import { MAX_LEASE_VALUE_BYTES, SubnetRegistry } from '../../src/subnet/etcd-registry.ts';
import { IP_FORWARD_OFF } from '../../src/agent/agent.ts';
import { desiredVxlanState } from '../../src/overlay/vxlan/desired.ts';
import { desiredFlows } from '../../src/overlay/ovs-gre/flows.ts';
import { networkProblem, underlayAddressProblem } from '../../src/subnet/usable.ts';
import { routesFromIpJson } from '../../src/kernel/overlay-state.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';

const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
const big = (n: number) => JSON.stringify({ PublicIP: '192.168.50.99', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:99', pad: 'x'.repeat(n) } });

test('15.7: a subnets/ listing over the client\'s 4 MiB is read in pages; oversized leases are skipped by key', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set(`${SUBNETS}10.5.2.0-24`, vxlanLease('192.168.50.2', '0a:00:00:00:00:02'));
  for (const n of [3, 4, 5]) kv.set(`${SUBNETS}10.5.${n}.0-24`, big(1_400_000));
  kv.set(`${SUBNETS}10.5.6.0-24`, vxlanLease('192.168.50.6', '0a:00:00:00:00:06'));
  const reg = new SubnetRegistry(kv);
  const list = await reg.listLeases();
  t.deepEqual(list.leases.map((l) => l.key), ['10.5.2.0-24', '10.5.6.0-24']);
  t.deepEqual(list.invalid.map((i) => i.key), [3, 4, 5].map((n) => `${SUBNETS}10.5.${n}.0-24`));
  t.regex(list.invalid[0]!.error, new RegExp(`over the ${MAX_LEASE_VALUE_BYTES}-byte limit`));
  t.true(kv.calls.some((c) => c.endsWith('limit=250')), 'the page was halved after RESOURCE_EXHAUSTED');

  // One value the client cannot take at all: its key is learnt without it and skipped.
  kv.maxResponseBytes = 1024 * 1024;
  const again = await reg.listLeases();
  t.deepEqual(again.leases.map((l) => l.key), ['10.5.2.0-24', '10.5.6.0-24']);
  t.is(again.invalid.length, 3);
  t.regex(again.invalid[0]!.error, /larger than the etcd client accepts in one response/);
});

test('15.7: an agent starts and learns peers beside megabyte leases; a new one is logged once', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set('/coreos.com/network/config', CONFIG);
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('192.168.50.9', '0a:00:00:00:00:09'));
  for (const n of [3, 4, 5]) kv.set(`${SUBNETS}10.5.${n}.0-24`, big(1_400_000));
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', ttlSeconds: 3600 });
  t.true(await clock.advanceUntil(() => a.agent.readiness().ready, 5000), a.agent.readiness().reason);
  t.deepEqual(a.vxlan.state.routes.map((r) => r.dst), ['10.5.9.0/24']);
  kv.set(`${SUBNETS}10.5.7.0-24`, big(1_400_000));
  kv.set(`${SUBNETS}10.5.8.0-24`, vxlanLease('192.168.50.8', '0a:00:00:00:00:08'));
  t.true(await clock.advanceUntil(() => a.vxlan.state.routes.length === 2, 2000));
  await clock.advance(60_000);
  const malformed = a.logs.filter((l) => l.msg === 'ignoring malformed lease');
  t.deepEqual(malformed.map((l) => l.key).sort(), ['10.5.3.0-24', '10.5.4.0-24', '10.5.5.0-24', '10.5.7.0-24']);
});

const network = parseCidr('10.5.0.0/16');
const lease = (cidr: string, ip: string, o: { mac?: string; since?: number; type?: string } = {}): Lease => {
  const subnet = parseCidr(cidr);
  const mac = o.mac ?? `0a:00:00:00:${subnet.len.toString(16).padStart(2, '0')}:${cidr.split('.')[2]!.padStart(2, '0')}`;
  return {
    key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, etcdLease: '1', expiresAt: null, ...(o.since === undefined ? {} : { since: o.since }),
    attrs: { PublicIP: ip, PublicIPv6: null, BackendType: o.type ?? 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } },
  };
};
const own = lease('10.5.1.0/24', '192.168.50.1', { mac: '0a:00:00:00:00:01' });
const vxlan = (peers: Lease[]) => desiredVxlanState({ device: 'flannel.1', vni: 1, network, own, peers, directRouting: false, underlay: null });
const gre = (peers: Lease[]) => desiredFlows({ network, own: { ...own, attrs: { ...own.attrs, BackendType: 'ovs-gre' } }, peers: peers.map((p) => ({ ...p, attrs: { ...p.attrs, BackendType: 'ovs-gre' } })), tunnelOfport: 10, internalOfport: 9 });

test('15.8: both backends refuse a /25 inside this node\'s subnet, a /16 over everything and a wrong length', (t) => {
  const peers = [lease('10.5.1.128/25', '192.168.50.2'), lease('10.5.0.0/16', '192.168.50.3'), lease('10.5.4.0/26', '192.168.50.4'), lease('10.5.5.0/24', '192.168.50.5')];
  const v = vxlan(peers);
  const g = gre(peers);
  for (const d of [v, g]) {
    t.is(d.programmed, 1);
    t.deepEqual(d.skipped.map((s) => s.key).sort(), ['10.5.0.0-16', '10.5.1.128-25', '10.5.4.0-26']);
    t.regex(d.skipped.find((s) => s.key === '10.5.0.0-16')!.reason, /is a \/16; every node's subnet here is a \/24/);
  }
  t.deepEqual(v.state.routes.map((r) => r.dst), ['10.5.5.0/24']);
  t.true(g.flows.every((f) => !/10\.5\.(0\.0\/16|1\.128|4\.0)/.test(f) || f.includes('in_port=10')));
  // A peer (another node name, in kube mode) holding this node's own subnet is refused too.
  const twin = { ...lease('10.5.1.0/24', '192.168.50.6', { mac: '0a:00:00:00:00:66' }), key: 'node-6' };
  t.regex(vxlan([twin]).skipped[0]!.reason, /overlaps this node's subnet 10\.5\.1\.0\/24/);
});

test('15.8/15.9: conflicts go to the lease established first, not to the first key', (t) => {
  // 10.5.9.0 was leased first (lower create revision); the newcomer 10.5.2.0 sorts first by key.
  const established = lease('10.5.9.0/24', '192.168.50.9', { mac: '0a:00:00:00:00:aa', since: 100 });
  const newcomer = lease('10.5.2.0/24', '192.168.50.2', { mac: '0a:00:00:00:00:aa', since: 500 });
  for (const order of [[established, newcomer], [newcomer, established]]) {
    const d = vxlan(order);
    t.deepEqual(d.state.fdb, [{ mac: '0a:00:00:00:00:aa', dst: '192.168.50.9', dev: 'flannel.1' }]);
    t.deepEqual(d.skipped.map((s) => s.key), ['10.5.2.0-24']);
    t.regex(d.skipped[0]!.reason, /VtepMAC 0a:00:00:00:00:aa is already used by 10\.5\.9\.0-24/);
  }
  // A peer claiming this node's own VTEP MAC is refused.
  t.regex(vxlan([lease('10.5.3.0/24', '192.168.50.3', { mac: '0a:00:00:00:00:01' })]).skipped[0]!.reason, /this node's own/);
});

test('15.18: lease public IPs that are no unicast node address never become FDB entries or tunnels', (t) => {
  const peers = ['0.0.0.0', '255.255.255.255', '224.0.0.5', '127.0.0.1', '0.1.2.3', '192.168.50.8'].map((ip, i) => lease(`10.5.${i + 10}.0/24`, ip));
  const v = vxlan(peers);
  t.deepEqual(v.state.fdb.map((f) => f.dst), ['192.168.50.8']);
  t.is(v.skipped.length, 5);
  t.true(v.skipped.every((s) => /public IP .* not a node's unicast address/.test(s.reason)));
  t.is(gre(peers).programmed, 1);
  t.is(underlayAddressProblem('10.1.2.3'), null);
  t.is(underlayAddressProblem('169.254.1.1'), null, 'link-local underlays exist');
});

test('15.18: a Network of 0.0.0.0/0, 127/8, 224/4 or over the underlay is refused with a reason', (t) => {
  const underlay = { iface: 'eth0', publicIP: '192.168.50.1', prefixLen: 24 };
  t.regex(networkProblem(parseCidr('0.0.0.0/0'), underlay)!, /every address/);
  t.regex(networkProblem(parseCidr('127.0.0.0/8'), underlay)!, /loopback/);
  t.regex(networkProblem(parseCidr('224.0.0.0/4'), underlay)!, /multicast/);
  t.regex(networkProblem(parseCidr('192.168.0.0/16'), underlay)!, /overlaps the node network 192\.168\.50\.0\/24 of eth0/);
  t.is(networkProblem(parseCidr('10.244.0.0/16'), underlay), null);
});

test('15.18: the agent refuses such a Network (not ready, the reason said) and takes a fixed one', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set('/coreos.com/network/config', '{"Network":"192.168.0.0/16","Backend":{"Type":"vxlan"}}');
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1' });
  await clock.advance(5000);
  t.false(a.agent.readiness().ready);
  t.regex(a.agent.readiness().reason, /read network config: Network 192\.168\.0\.0\/16 overlaps the node network/);
  t.is(kv.peek(`${SUBNETS}192.168.1.0-24`), undefined, 'no lease taken');
  kv.set('/coreos.com/network/config', CONFIG);
  t.true(await clock.advanceUntil(() => a.agent.readiness().ready, 60_000), a.agent.readiness().reason);
});

test('15.18: a peer that cannot be programmed is logged when it appears or changes, not on every pass', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set('/coreos.com/network/config', CONFIG);
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('255.255.255.255', '0a:00:00:00:00:09'));
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1' });
  t.true(await clock.advanceUntil(() => a.agent.readiness().ready, 5000));
  await clock.advance(60_000); // twelve resync passes
  const notProgrammed = () => a.logs.filter((l) => l.msg === 'peer lease not programmed');
  t.is(notProgrammed().length, 1);
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('224.0.0.1', '0a:00:00:00:00:09'));
  await clock.advance(30_000);
  t.is(notProgrammed().length, 2, 'a new reason is logged once more');
  kv.set(`${SUBNETS}10.5.9.0-24`, vxlanLease('192.168.50.9', '0a:00:00:00:00:09'));
  t.true(await clock.advanceUntil(() => a.vxlan.state.routes.length === 1, 2000));
  t.true(a.logs.some((l) => l.msg === 'peer lease no longer skipped (programmed now, or gone)'));
});

test('15.19: ip_forward off is warned about at start and reported on /readyz until it is on', async (t) => {
  const clock = new FakeClock();
  const kv = new MemoryKv(clock);
  kv.set('/coreos.com/network/config', CONFIG);
  let forwarding = false;
  const a = startTestAgent(t, { clock, kv, ip: '192.168.50.1', readIpForward: async () => forwarding });
  t.true(await clock.advanceUntil(() => a.subnetEnv() !== null, 5000), 'the lease and subnet.env are set up all the same');
  t.deepEqual(a.agent.readiness(), { ready: false, reason: IP_FORWARD_OFF });
  t.is(a.logs.filter((l) => l.msg === IP_FORWARD_OFF).length, 1);
  forwarding = true;
  t.true(await clock.advanceUntil(() => a.agent.readiness().ready, 10_000));
  t.true(a.logs.some((l) => l.msg === 'net.ipv4.ip_forward is 1 again'));
});

test('15.11: host routes (no "/" in ip\'s output) and the default route are read with their prefix', (t) => {
  t.deepEqual(routesFromIpJson([
    { dst: '10.5.2.0/24', gateway: '10.5.2.0', dev: 'flannel.1', flags: ['onlink'] },
    { dst: '10.5.3.7', gateway: '10.5.3.0', dev: 'flannel.1', flags: ['onlink'] },
    { dst: 'default', gateway: '192.168.50.254', dev: 'eth0' },
    { dst: '10.5.4.0/24', dev: 'cni0' },
  ]), [
    { dst: '10.5.2.0/24', via: '10.5.2.0', dev: 'flannel.1', onlink: true },
    { dst: '10.5.3.7/32', via: '10.5.3.0', dev: 'flannel.1', onlink: true },
    { dst: '0.0.0.0/0', via: '192.168.50.254', dev: 'eth0', onlink: false },
  ]);
});
