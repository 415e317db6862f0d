// One table of address and CIDR texts run through every entry point that parses them: the
// null-returning core (src/util/ip.ts) and each throwing view (subnet, IPAM, netlink, kernel
// checks) must agree, a null always being a throw and a value always the same value.
import test from 'ava';
import { Address6 } from 'ip-address';

import { ipv4Bytes } from '../../src/kernel/netlink/codec.ts';
import * as ipam from '../../src/ipam/ipv4.ts';
import * as subnet from '../../src/subnet/cidr.ts';
import { isIPv4, mustParseCIDR, mustParseIP, parseCIDR, parseIP } from '../../src/util/ip.ts';

const throwsOrValue = <T>(f: () => T): T | 'throws' => {
  try { return f(); } catch { return 'throws'; }
};

// [text, canonical in the strict syntax or null, canonical in the sloppy syntax or null]
const ADDRESSES: [string, string | null, string | null][] = [
  ['10.1.2.3', '10.1.2.3', '10.1.2.3'],
  ['0.0.0.0', '0.0.0.0', '0.0.0.0'],
  ['255.255.255.255', '255.255.255.255', '255.255.255.255'],
  ['10.180.00.001', null, '10.180.0.1'],
  ['010.1.2.3', null, '10.1.2.3'],
  ['256.1.2.3', null, null],
  ['1.2.3', null, null],
  ['1.2.3.4.5', null, null],
  ['1..2.3', null, null],
  ['1.2.3.', null, null],
  [' 1.2.3.4', null, null],
  ['1.2.3.4 ', null, null],
  ['0x1.2.3.4', null, null],
  ['1.2.3.4/32', null, null],
  ['1234.1.1.1', null, null],
  ['', null, null],
  ['banana', null, null],
  ['::', '::', '::'],
  ['::1', '::1', '::1'],
  ['FD00:0:0::0A', 'fd00::a', 'fd00::a'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', '2001:db8::1:0:0:1'],
  ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ['1:2:3:4:5:6:7::8', null, null],
  ['1::2::3', null, null],
  [':::', null, null],
  ['1:2:3:4:5:6:7', null, null],
  ['12345::', null, null],
  ['fe80::1%eth0', null, null],
  ['::ffff:10.0.0.1', '::ffff:a00:1', '10.0.0.1'],
  ['::ffff:a00:1', '::ffff:a00:1', '10.0.0.1'],
  ['::ffff:127.0.0.1', '::ffff:7f00:1', '127.0.0.1'],
  ['::1.2.3.4', '::102:304', '::102:304'],
  ['2001:db8::1.2.3.4', '2001:db8::102:304', '2001:db8::102:304'],
  ['::ffff:010.0.0.1', null, '10.0.0.1'],
  ['::ffff:1.2.3', null, null],
];

test('every address parser agrees on one table', (t) => {
  for (const [text, strict, sloppy] of ADDRESSES) {
    const at = JSON.stringify(text);
    t.is(parseIP(text, 'strict')?.text ?? null, strict, `strict ${at}`);
    t.is(parseIP(text)?.text ?? null, sloppy, `sloppy ${at}`);
    t.is(throwsOrValue(() => mustParseIP(text, { syntax: 'strict' }).text), strict ?? 'throws', `mustParseIP ${at}`);
    const strict4 = strict !== null && parseIP(strict, 'strict')!.family === 4 ? strict : null;
    const strict6 = strict !== null && parseIP(strict, 'strict')!.family === 6 ? strict : null;
    t.is(isIPv4(text), strict4 !== null, `isIPv4 ${at}`);
    t.is(ipam.isIPv4(text), strict4 !== null, `ipam.isIPv4 ${at}`);
    t.is(subnet.isIPv4(text), strict4 !== null, `subnet.isIPv4 ${at}`);
    const value4 = strict4 === null ? 'throws' : parseIP(strict4, 'strict')!.value;
    t.is(throwsOrValue(() => BigInt(ipam.parseIPv4(text))), value4, `ipam.parseIPv4 ${at}`);
    t.is(throwsOrValue(() => subnet.parseIPv4(text)), value4, `subnet.parseIPv4 ${at}`);
    t.is(throwsOrValue(() => BigInt(ipv4Bytes(text).readUInt32BE(0))), value4, `ipv4Bytes ${at}`);
    t.is(throwsOrValue(() => subnet.parseIPv6(text)), strict6 === null ? 'throws' : parseIP(strict6, 'strict')!.value, `subnet.parseIPv6 ${at}`);
    t.is(throwsOrValue(() => subnet.formatIP(subnet.parseIP(text).family, subnet.parseIP(text).value)), strict ?? 'throws', `subnet.parseIP ${at}`);
  }
});

// [text, strict "network/prefix" or null, sloppy or null, host bits set]
const CIDRS: [string, string | null, string | null, boolean][] = [
  ['10.1.0.0/16', '10.1.0.0/16', '10.1.0.0/16', false],
  ['10.1.2.1/24', '10.1.2.0/24', '10.1.2.0/24', true],
  ['0.0.0.0/0', '0.0.0.0/0', '0.0.0.0/0', false],
  ['10.1.2.3/32', '10.1.2.3/32', '10.1.2.3/32', false],
  ['10.1.2.3/33', null, null, false],
  ['10.1.2.3/024', null, '10.1.2.0/24', true],
  ['010.1.2.0/24', null, '10.1.2.0/24', false],
  ['10.1.2.0/', null, null, false],
  ['10.1.2.0/-1', null, null, false],
  ['10.1.2.0/1000', null, null, false],
  ['10.1.2.0', null, null, false],
  ['10.1.2.0/24/1', null, null, false],
  ['fd00::/8', 'fd00::/8', 'fd00::/8', false],
  ['fd00::1/64', 'fd00::/64', 'fd00::/64', true],
  ['fd00::/129', null, null, false],
  ['::ffff:10.0.0.0/104', '::ffff:a00:0/104', null, false],
];

test('every CIDR parser agrees on one table', (t) => {
  for (const [text, strict, sloppy, hostBits] of CIDRS) {
    const at = JSON.stringify(text);
    t.is(parseCIDR(text, 'strict')?.text ?? null, strict, `strict ${at}`);
    t.is(parseCIDR(text)?.text ?? null, sloppy, `sloppy ${at}`);
    t.is(throwsOrValue(() => mustParseCIDR(text, { syntax: 'strict', hostBits: 'clear' }).text), strict ?? 'throws', `mustParseCIDR ${at}`);
    const refused = strict === null || hostBits ? 'throws' : strict;
    t.is(throwsOrValue(() => mustParseCIDR(text, { syntax: 'strict', hostBits: 'refuse' }).text), refused, `mustParseCIDR refuse ${at}`);
    t.is(throwsOrValue(() => subnet.formatCidr(subnet.parseCidr(text))), refused, `subnet.parseCidr ${at}`);
    t.is(throwsOrValue(() => subnet.formatCidr(subnet.parseCidr(text, true))), strict ?? 'throws', `subnet.parseCidr host bits ${at}`);
    const strict4 = strict !== null && parseCIDR(strict, 'strict')!.family === 4 ? strict : null;
    t.is(throwsOrValue(() => ipam.canonicalCidr(ipam.parseCidr4(text))), strict4 ?? 'throws', `ipam.parseCidr4 ${at}`);
    if (strict4) t.is(ipam.formatIPv4(ipam.parseCidr4(text).ip), text.split('/')[0]!, `ipam keeps the address as written ${at}`);
  }
});

test('the throwing views share one message style', (t) => {
  t.throws(() => mustParseIP('1.2.3.256', { family: 4 }), { message: 'invalid IPv4 address "1.2.3.256"' });
  t.throws(() => mustParseIP('10.0.0.1', { family: 6 }), { message: 'invalid IPv6 address "10.0.0.1"' });
  t.throws(() => mustParseIP(7), { message: 'invalid IP address 7' });
  t.throws(() => subnet.parseCidr('10.0.0.0/33'), { message: 'invalid CIDR "10.0.0.0/33": prefix length 33 too long' });
  t.throws(() => subnet.parseCidr('10.5.1.0/16'), { message: 'invalid CIDR "10.5.1.0/16": host bits set (network is 10.5.0.0/16)' });
  t.throws(() => ipam.parseCidr4('fd00::/8'), { message: 'invalid IPv4 CIDR "fd00::/8"' });
  t.throws(() => ipam.parseCidr4('10.0.0.0/8x'), { message: 'invalid IPv4 CIDR "10.0.0.0/8x"' });
});

test('IPv6 text: the same value and RFC 5952 form as the ip-address package, on random addresses', (t) => {
  for (let k = 0; k < 2000; k++) {
    // Half the groups zero, so "::" runs of every length and position occur.
    const groups = Array.from({ length: 8 }, () => (Math.random() < 0.5 ? 0 : Math.floor(Math.random() * 65536)));
    const full = groups.map((g) => g.toString(16)).join(':');
    const reference = new Address6(full);
    const parsed = parseIP(full, 'strict')!;
    t.is(parsed.text, reference.correctForm(), full);
    t.is(parsed.value, BigInt(reference.bigInt().toString()), full);
    t.is(parseIP(parsed.text, 'strict')!.value, parsed.value, parsed.text);
  }
});
