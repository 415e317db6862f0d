// Leases against a real etcd (Debian's etcd-server on a free loopback port): flannel's format,
// 24 h TTL, Version==0 create, renewal, reservations, racing for the last subnet.
import test from 'ava';
import { Etcd3 } from 'etcd3';
import { startEtcd } from '../helpers/etcd.ts';
import { SubnetRegistry, ConfigNotFoundError } from '../../src/subnet/etcd-registry.ts';
import { acquireLease, OutOfSubnetsError } from '../../src/subnet/acquire.ts';
import { ConfigError } from '../../src/subnet/config.ts';
import { formatCidr, parseCidr } from '../../src/subnet/cidr.ts';
import type { LeaseAttrs } from '../../src/subnet/lease.ts';

const attrs = (ip: string, mac = '0a:00:00:00:00:01'): LeaseAttrs => ({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

async function setup(t: Parameters<typeof startEtcd>[0] & object, config?: string) {
  const etcd = await startEtcd(t);
  const raw = new Etcd3({ hosts: etcd.endpoint });
  t.teardown(() => raw.close());
  if (config) await raw.put('/coreos.com/network/config').value(config);
  const reg = SubnetRegistry.connect({ endpoints: [etcd.endpoint] });
  t.teardown(() => reg.close());
  return { etcd, raw, reg };
}

test('flannel-written config and leases are read; knet writes the same shape', async (t) => {
  const { raw, reg } = await setup(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  await raw.put('/coreos.com/network/subnets/10.5.52.0-24').value('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}');
  await raw.put('/coreos.com/network/subnets/not-a-key').value('{}');
  const cfg = await reg.getConfig();
  t.is(formatCidr(cfg.ipv4!.network), '10.5.0.0/16');
  const list = await reg.listLeases();
  t.is(list.leases.length, 1);
  t.is(list.leases[0]!.attrs.PublicIP, '192.168.64.3');
  t.deepEqual(list.invalid.map((i) => i.key), ['/coreos.com/network/subnets/not-a-key']);
  const got = await acquireLease(reg, { range: cfg.ipv4!, attrs: attrs('192.168.64.4', '0a:00:00:00:00:04'), previous: null });
  const key = `/coreos.com/network/subnets/${got.lease.key}`;
  t.regex(key, /^\/coreos.com\/network\/subnets\/10\.5\.\d+\.0-24$/);
  t.is(await raw.get(key).string(), '{"PublicIP":"192.168.64.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:04"}}');
  const ttl = await raw.leaseClient.leaseTimeToLive({ ID: got.lease.etcdLease });
  t.is(Number(ttl.grantedTTL), 86400);
});

test('missing or invalid config: clear errors', async (t) => {
  const { raw, reg } = await setup(t);
  await t.throwsAsync(reg.getConfig(), { instanceOf: ConfigNotFoundError, message: /flannel config not found in etcd store/ });
  await raw.put('/coreos.com/network/config').value('{"Network":"10.5.0.0/30"}');
  await t.throwsAsync(reg.getConfig(), { instanceOf: ConfigError, message: /network is too small/ });
});

test('reuse by public IP, then by subnet file; renewal moves the key to a fresh lease', async (t) => {
  const { raw, reg } = await setup(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  const range = (await reg.getConfig()).ipv4!;
  const first = await acquireLease(reg, { range, attrs: attrs('192.168.50.1'), previous: parseCidr('10.5.42.0/24') });
  t.is(first.how, 'subnet-file');
  t.is(formatCidr(first.lease.subnet), '10.5.42.0/24');
  const again = await acquireLease(reg, { range, attrs: attrs('192.168.50.1'), previous: null });
  t.is(again.how, 'reused');
  t.is(again.lease.key, first.lease.key);
  t.not(again.lease.etcdLease, first.lease.etcdLease);
  // The old etcd lease is revoked so leases do not pile up.
  const old = await raw.leaseClient.leaseTimeToLive({ ID: first.lease.etcdLease });
  t.is(Number(old.TTL), -1);
  const renewed = await reg.renewLease(again.lease, attrs('192.168.50.1'));
  const kv = (await raw.get(`/coreos.com/network/subnets/${renewed.key}`).exec()).kvs[0]!;
  t.is(String(kv.lease), renewed.etcdLease);
  // Another node's renewal of our subnet is refused.
  await t.throwsAsync(reg.renewLease(renewed, attrs('192.168.50.9')), { message: /now held by 192.168.50.1/ });
});

test('reservations (keys without a lease) are never chosen by others and stay lease-less for their owner', async (t) => {
  const { raw, reg } = await setup(t, '{"Network":"10.5.0.0/22","Backend":{"Type":"vxlan"}}');
  const range = (await reg.getConfig()).ipv4!;
  await raw.put('/coreos.com/network/subnets/10.5.1.0-24').value('{"PublicIP":"192.168.50.7","PublicIPv6":null}');
  await raw.put('/coreos.com/network/subnets/10.5.2.0-24').value('{"PublicIP":"192.168.50.8","PublicIPv6":null}');
  const other = await acquireLease(reg, { range, attrs: attrs('192.168.50.1'), previous: parseCidr('10.5.1.0/24') });
  t.is(formatCidr(other.lease.subnet), '10.5.3.0/24');
  const owner = await acquireLease(reg, { range, attrs: attrs('192.168.50.7'), previous: null });
  t.is(owner.how, 'reused');
  t.is(owner.lease.etcdLease, '0');
  const kv = (await raw.get('/coreos.com/network/subnets/10.5.1.0-24').exec()).kvs[0]!;
  t.is(String(kv.lease), '0');
  t.regex(kv.value.toString(), /"BackendType":"vxlan"/);
});

test('two nodes racing for the last free subnet: exactly one gets it, the other is told "out of subnets"', async (t) => {
  const { etcd, reg } = await setup(t, '{"Network":"10.5.0.0/22","Backend":{"Type":"vxlan"}}');
  const range = (await reg.getConfig()).ipv4!;
  await acquireLease(reg, { range, attrs: attrs('192.168.50.1'), previous: parseCidr('10.5.1.0/24') });
  await acquireLease(reg, { range, attrs: attrs('192.168.50.2'), previous: parseCidr('10.5.2.0/24') });
  const other = SubnetRegistry.connect({ endpoints: [etcd.endpoint] });
  t.teardown(() => other.close());
  const results = await Promise.allSettled([
    acquireLease(reg, { range, attrs: attrs('192.168.50.3'), previous: null }),
    acquireLease(other, { range, attrs: attrs('192.168.50.4'), previous: null }),
  ]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.is(won.length, 1);
  t.is(lost.length, 1);
  t.true(lost[0]!.reason instanceof OutOfSubnetsError);
  t.regex(lost[0]!.reason.message, /^out of subnets: every \/24 between 10.5.1.0 and 10.5.3.0 in 10.5.0.0\/22 is leased or reserved$/);
  t.is((await reg.listLeases()).leases.length, 3);
});

test('15.7: a subnets/ prefix holding 4 MB (three 1.4 MB values) is listed and watched; the big values are skipped by key', async (t) => {
  const { raw, reg } = await setup(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  const big = JSON.stringify({ PublicIP: '192.168.50.99', PublicIPv6: null, BackendType: 'vxlan', BackendData: { pad: 'x'.repeat(1_400_000) } });
  await raw.put('/coreos.com/network/subnets/10.5.2.0-24').value(JSON.stringify(attrs('192.168.50.2')));
  for (const n of [3, 4, 5]) await raw.put(`/coreos.com/network/subnets/10.5.${n}.0-24`).value(big);
  const list = await reg.listLeases();
  t.deepEqual(list.leases.map((l) => l.key), ['10.5.2.0-24']);
  t.deepEqual(list.invalid.map((i) => i.key.split('/').pop()), ['10.5.3.0-24', '10.5.4.0-24', '10.5.5.0-24']);
  t.regex(list.invalid[0]!.error, /bytes is over the 16384-byte limit; skipped unread/);
  // A serializable listing (lease acquisition) pages the same way.
  t.is((await reg.listLeases({ serializable: true })).leases.length, 1);
  const seen: string[] = [];
  const w = await reg.watchLeases(String(BigInt(list.revision) + 1n), {
    put: (l) => seen.push(`put ${l.key}`), invalid: (b) => seen.push(`invalid ${b.key.split('/').pop()}`), delete: (k) => seen.push(`delete ${k}`), end: (r) => seen.push(`end ${r}`),
  });
  t.teardown(() => w.cancel());
  await raw.put('/coreos.com/network/subnets/10.5.6.0-24').value(big);
  await raw.put('/coreos.com/network/subnets/10.5.7.0-24').value(JSON.stringify(attrs('192.168.50.7')));
  const until = Date.now() + 10_000;
  while (seen.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(seen, ['invalid 10.5.6.0-24', 'put 10.5.7.0-24']);
});

test('etcd helper: stop and start keep data and port', async (t) => {
  const { etcd, raw } = await setup(t);
  await raw.put('/k').value('v');
  await etcd.stop();
  await etcd.start();
  const again = new Etcd3({ hosts: etcd.endpoint });
  t.teardown(() => again.close());
  t.is(await again.get('/k').string(), 'v');
});

test('etcd helper: v3 JSON gateway put/get/list/del', async (t) => {
  const { etcd } = await setup(t);
  await etcd.put('/p/a', '1');
  await etcd.put('/p/b', '2');
  await etcd.put('/q', '3');
  t.is(await etcd.get('/p/a'), '1');
  t.deepEqual((await etcd.list('/p/')).map((kv) => `${kv.key}=${kv.value}:${kv.lease}`), ['/p/a=1:0', '/p/b=2:0']);
  await etcd.del('/p/a');
  t.is(await etcd.get('/p/a'), null);
});
