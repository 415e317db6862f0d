import test from 'ava';
import { parseNetworkConfig, ConfigError, subnetFits } from '../../src/subnet/config.ts';
import { formatCidr, formatIP, parseCidr } from '../../src/subnet/cidr.ts';
import { parseVxlanConfig } from '../../src/overlay/vxlan/config.ts';

const v4 = (text: string) => {
  const c = parseNetworkConfig(text);
  return { c, r: c.ipv4!, min: formatIP(4, c.ipv4!.subnetMin), max: formatIP(4, c.ipv4!.subnetMax) };
};

test('flannel documentation example is read with its own bounds', (t) => {
  const { c, r, min, max } = v4('{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{"Type":"udp","Port":7890}}');
  t.is(formatCidr(r.network), '10.0.0.0/8');
  t.is(r.subnetLen, 20);
  t.is(min, '10.10.0.0');
  t.is(max, '10.99.0.0');
  t.is(c.backend.type, 'udp');
  t.is(c.backend.raw.Port, 7890);
  t.true(c.enableIPv4);
  t.false(c.enableIPv6);
});

test('SubnetLen defaults: /24 for networks up to /22, else prefix + 2; Min skips the first subnet', (t) => {
  let x = v4('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  t.is(x.r.subnetLen, 24);
  t.is(x.min, '10.5.1.0');
  t.is(x.max, '10.5.255.0');
  x = v4('{"Network":"10.5.0.0/22"}');
  t.is(x.r.subnetLen, 24);
  x = v4('{"Network":"10.5.0.0/26"}');
  t.is(x.r.subnetLen, 28);
  t.is(x.min, '10.5.0.16');
  t.is(x.max, '10.5.0.48');
});

test('a missing Backend means udp (flannel code, not its docs); Type is case-insensitive', (t) => {
  t.is(parseNetworkConfig('{"Network":"10.5.0.0/16"}').backend.type, 'udp');
  t.is(parseNetworkConfig('{"Network":"10.5.0.0/16","backend":{"type":"VXLAN"}}').backend.type, 'vxlan');
});

test('invalid configs get flannel-like errors', (t) => {
  const bad: [string, RegExp][] = [
    ['{"Network":"10.5.0.0/29"}', /network is too small. Minimum useful network prefix is \/28/],
    ['{"Network":"10.5.0.0/16","SubnetLen":31}', /SubnetLen must be less than \/31/],
    ['{"Network":"10.5.0.0/16","SubnetLen":17}', /at least four subnets/],
    ['{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', /SubnetMin \(10.6.0.0\) is not within Network/],
    ['{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.128"}', /not on a SubnetLen \(\/24\) boundary/],
    ['{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0"}', /SubnetMin .* is above SubnetMax/],
    ['{"Network":"10.5.1.0/16"}', /host bits set/],
    ['{"Network":"banana"}', /invalid CIDR/],
    ['{}', /please define a correct Network/],
    ['{"Network":"10.5.0.0/16","SubnetLen":"24"}', /SubnetLen must be a positive integer/],
    ['not json', /not valid JSON/],
    ['[1]', /must be a JSON object/],
    ['{"Network":"10.5.0.0/16","EnableIPv4":false}', /nothing to do/],
    ['{"Network":"10.5.0.0/16","EnableIPv6":true}', /IPv6Network/],
  ];
  for (const [text, re] of bad) {
    const err = t.throws(() => parseNetworkConfig(text), { instanceOf: ConfigError }, text);
    t.regex(err!.message, re, text);
  }
});

test('IPv6 network config gets /64 subnets and skips the first', (t) => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48"}');
  t.is(c.ipv6!.subnetLen, 64);
  t.is(formatIP(6, c.ipv6!.subnetMin), 'fd00:10:0:1::');
});

test('subnetFits checks length and the Min..Max window', (t) => {
  const r = parseNetworkConfig('{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}').ipv4!;
  t.true(subnetFits(r, parseCidr('10.5.10.0/24')));
  t.false(subnetFits(r, parseCidr('10.5.9.0/24')));
  t.false(subnetFits(r, parseCidr('10.5.21.0/24')));
  t.false(subnetFits(r, parseCidr('10.5.10.0/25')));
});

test('vxlan backend options: defaults VNI 1, port 8472; case-insensitive keys; bad values rejected', (t) => {
  const d = parseVxlanConfig(parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}').backend);
  t.deepEqual(d, { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: false });
  const e = parseVxlanConfig(parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":4096,"Port":4789,"directRouting":true}}').backend);
  t.is(e.vni, 4096);
  t.is(e.port, 4789);
  t.true(e.directRouting);
  t.throws(() => parseVxlanConfig({ type: 'vxlan', raw: { VNI: 1 << 24 } }), { message: /VNI must be an integer/ });
  t.throws(() => parseVxlanConfig({ type: 'udp', raw: {} }), { message: /only "vxlan"/ });
  t.throws(() => parseVxlanConfig({ type: 'vxlan', raw: { DirectRouting: 'yes' } }), { message: /DirectRouting must be true or false/ });
});
