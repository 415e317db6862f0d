import test from 'ava';
import fc from 'fast-check';
import { chooseSubnet, freeSubnets } from '../../src/subnet/choose.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { type Cidr, formatCidr, overlaps, parseCidr } from '../../src/subnet/cidr.ts';
import type { Lease } from '../../src/subnet/lease.ts';
import { makeSubnetKey } from '../../src/subnet/lease.ts';

const range = parseNetworkConfig('{"Network":"10.5.0.0/16"}').ipv4!;
const lease = (cidr: string, ip: string, etcdLease = '42'): Lease => {
  const subnet = parseCidr(cidr);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null }, etcdLease, expiresAt: null };
};

test('reuses the lease that carries our public IP', (t) => {
  const mine = lease('10.5.7.0/24', '192.168.50.2');
  const r = chooseSubnet({ range, leases: [lease('10.5.1.0/24', '192.168.50.3'), mine], publicIP: '192.168.50.2', previous: parseCidr('10.5.9.0/24') });
  t.deepEqual(r.choice, { kind: 'reuse', lease: mine });
});

test('an own lease that no longer fits the config is dropped; reservations are never dropped', (t) => {
  const stale = lease('10.6.7.0/24', '192.168.50.2');
  const r = chooseSubnet({ range, leases: [stale], publicIP: '192.168.50.2', previous: null, random: () => 0 });
  t.deepEqual(r.incompatible, [stale]);
  t.is(r.choice.kind, 'new');
  const reserved = lease('10.6.8.0/24', '192.168.50.2', '0');
  t.deepEqual(chooseSubnet({ range, leases: [reserved], publicIP: '192.168.50.2', previous: null }).incompatible, []);
});

test('then the subnet from the subnet file, if nobody holds it', (t) => {
  const prev = parseCidr('10.5.9.0/24');
  t.deepEqual(chooseSubnet({ range, leases: [], publicIP: '192.168.50.2', previous: prev }).choice, { kind: 'new', subnet: prev, reason: 'subnet-file' });
  const taken = chooseSubnet({ range, leases: [lease('10.5.9.0/24', '192.168.50.9')], publicIP: '192.168.50.2', previous: prev, random: () => 0 });
  t.is(taken.choice.kind, 'new');
  t.not((taken.choice as { reason: string }).reason, 'subnet-file');
});

test('otherwise a random pick among the first 100 free subnets; reservations count as taken', (t) => {
  const leases = [lease('10.5.1.0/24', '192.168.50.3', '0'), lease('10.5.2.0/24', '192.168.50.4')];
  const first = chooseSubnet({ range, leases, publicIP: '192.168.50.2', previous: null, random: () => 0 }).choice;
  t.is(formatCidr((first as { subnet: Cidr }).subnet), '10.5.3.0/24');
  const last = chooseSubnet({ range, leases, publicIP: '192.168.50.2', previous: null, random: () => 0.9999 }).choice;
  t.is(formatCidr((last as { subnet: Cidr }).subnet), '10.5.102.0/24');
});

test('out of subnets when every subnet in Min..Max is held', (t) => {
  const small = parseNetworkConfig('{"Network":"10.5.0.0/22"}').ipv4!;
  const leases = ['10.5.1.0/24', '10.5.2.0/24', '10.5.3.0/24'].map((c, i) => lease(c, `192.168.50.${i + 3}`));
  t.deepEqual(chooseSubnet({ range: small, leases, publicIP: '192.168.50.2', previous: null }).choice, { kind: 'out-of-subnets' });
});

test('property: free subnets never overlap a taken prefix (including bigger foreign ones) and are aligned', (t) => {
  const small = parseNetworkConfig('{"Network":"10.5.0.0/20","SubnetLen":26}').ipv4!;
  fc.assert(fc.property(
    fc.array(fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 20, max: 28 })), { maxLength: 30 }),
    (raw) => {
      const taken = raw.map(([off, len]) => parseCidr(`10.5.${Math.floor(off / 256)}.${off % 256}/${len}`, true));
      const free = freeSubnets(small, taken, 1000);
      for (const f of free) {
        if (taken.some((c) => overlaps(c, f))) return false;
        if (f.len !== 26 || f.base % 64n !== 0n) return false;
      }
      // Completeness: every aligned candidate not reported as free overlaps something.
      const freeSet = new Set(free.map(formatCidr));
      for (let b = small.subnetMin; b <= small.subnetMax; b += 64n) {
        const c = { family: 4 as const, base: b, len: 26 };
        if (!freeSet.has(formatCidr(c)) && !taken.some((x) => overlaps(x, c))) return false;
      }
      return true;
    },
  ));
  t.pass();
});
