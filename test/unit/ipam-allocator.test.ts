import test from 'ava';
import fc from 'fast-check';
import { candidates, chooseAddress, hostRange, isAssignable, type Pool } from '../../src/ipam/allocator.ts';
import { broadcastOf, formatIPv4, networkOf, parseCidr4, parseIPv4 } from '../../src/ipam/ipv4.ts';

const pool = (cidr: string, reserved: string[] = []): Pool => {
  const subnet = parseCidr4(cidr);
  return { subnet, gateway: networkOf(subnet) + 1, reserved: new Set(reserved.map(parseIPv4)) };
};

test('never hands out the network, gateway or broadcast address, nor reserved ones', (t) => {
  const p = pool('10.1.2.0/29', ['10.1.2.4']);
  const all = [...candidates(p, new Set())].map(formatIPv4);
  t.deepEqual(all, ['10.1.2.2', '10.1.2.3', '10.1.2.5', '10.1.2.6']);
});

test('round robin: starts after the last reserved address and wraps', (t) => {
  const p = pool('10.1.2.0/29');
  t.is(formatIPv4(chooseAddress(p, new Set(), parseIPv4('10.1.2.5'))!), '10.1.2.6');
  t.is(formatIPv4(chooseAddress(p, new Set(), parseIPv4('10.1.2.6'))!), '10.1.2.2');
  t.is(formatIPv4(chooseAddress(p, new Set([parseIPv4('10.1.2.6')]), parseIPv4('10.1.2.5'))!), '10.1.2.2');
  // A hint outside the range is ignored.
  t.is(formatIPv4(chooseAddress(p, new Set(), parseIPv4('192.168.0.1'))!), '10.1.2.2');
});

test('an exhausted pool yields null', (t) => {
  const p = pool('10.1.2.0/30');
  t.is(chooseAddress(p, new Set([parseIPv4('10.1.2.2')])), null);
});

test('subnets too small for pods are refused', (t) => {
  t.throws(() => hostRange(parseCidr4('10.0.0.0/31')), { message: /too small/ });
});

test('property: every candidate is assignable, unused and unique', (t) => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 22, max: 30 }),
    fc.array(fc.integer({ min: 0, max: 1023 }), { maxLength: 40 }), fc.option(fc.integer({ min: 0, max: 1023 })),
    (base, prefix, usedOffsets, hint) => {
      const subnet = { ip: base >>> 0, prefix };
      const net = networkOf(subnet);
      const p: Pool = { subnet, gateway: net + 1, reserved: new Set([net + 3]) };
      const used = new Set(usedOffsets.map((o) => net + (o % (broadcastOf(subnet) - net + 1))));
      const seen = new Set<number>();
      for (const ip of candidates(p, used, hint === null ? undefined : net + hint)) {
        if (!isAssignable(p, ip) || used.has(ip) || seen.has(ip)) return false;
        seen.add(ip);
      }
      // Every assignable unused address appears exactly once.
      const { first, last } = hostRange(subnet);
      let expected = 0;
      for (let ip = first; ip <= last; ip++) if (isAssignable(p, ip) && !used.has(ip)) expected++;
      return seen.size === expected;
    }));
  t.pass();
});

test('IPv4 parsing is strict', (t) => {
  for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '10.0.0.1 ', 'a.b.c.d', '', '1.2.3.4/33']) {
    t.throws(() => parseIPv4(bad), undefined, bad);
  }
  t.throws(() => parseCidr4('10.0.0.0/33'));
  t.throws(() => parseCidr4('10.0.0.0'));
  t.is(parseIPv4('255.255.255.255'), 0xffffffff);
});
