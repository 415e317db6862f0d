import test from 'ava';
import { formatLeaseAttrs, leaseFromKv, makeSubnetKey, parseLeaseAttrs, parseSubnetKey, parseVxlanBackendData } from '../../src/subnet/lease.ts';
import { formatCidr, parseCidr } from '../../src/subnet/cidr.ts';

test('subnet keys use flannel\'s format, dual stack included', (t) => {
  t.is(makeSubnetKey(parseCidr('10.5.52.0/24')), '10.5.52.0-24');
  t.is(makeSubnetKey(parseCidr('10.12.13.0/24'), parseCidr('fd00:12:13::/56')), '10.12.13.0-24&fd00:12:13::-56');
  const k = parseSubnetKey('10.12.13.0-24&fd00:12:13::-56');
  t.is(formatCidr(k.subnet), '10.12.13.0/24');
  t.is(formatCidr(k.ipv6Subnet!), 'fd00:12:13::/56');
  for (const bad of ['10.5.52.0/24', '10.5.52.1-24', '10.5.52.0-33', '10.5.52.0-24;rm', '../config', '10x5.52.0-24', '']) {
    t.throws(() => parseSubnetKey(bad), undefined, bad);
  }
});

test('flannel\'s documented lease value is read, and written back byte for byte', (t) => {
  const text = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';
  const l = leaseFromKv('10.5.52.0-24', text, '7587880990553423369', null);
  t.is(formatCidr(l.subnet), '10.5.52.0/24');
  t.is(l.attrs.PublicIP, '192.168.64.3');
  t.deepEqual(parseVxlanBackendData(l.attrs.BackendData), { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' });
  t.is(formatLeaseAttrs(l.attrs), text);
  t.deepEqual(Object.keys(JSON.parse(formatLeaseAttrs(l.attrs))), ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
});

test('an old udp-style lease with only PublicIP is accepted (book era)', (t) => {
  const a = parseLeaseAttrs('{"PublicIP":"192.168.3.147"}');
  t.is(a.PublicIP, '192.168.3.147');
  t.is(a.BackendType, undefined);
  t.is(formatLeaseAttrs(a), '{"PublicIP":"192.168.3.147","PublicIPv6":null}');
});

test('malformed lease values are rejected with a clear error', (t) => {
  t.throws(() => parseLeaseAttrs('{"PublicIP":"192.168.3.300"}'), { message: /PublicIP .* is not an IPv4 address/ });
  t.throws(() => parseLeaseAttrs('{"PublicIP":"1.2.3.4; reboot"}'), { message: /PublicIP/ });
  t.throws(() => parseLeaseAttrs('{}'), { message: /PublicIP/ });
  t.throws(() => parseLeaseAttrs('nope'), { message: /not JSON/ });
  t.throws(() => parseLeaseAttrs('{"PublicIP":"1.2.3.4","BackendType":7}'), { message: /BackendType/ });
  t.throws(() => parseVxlanBackendData({ VNI: 1, VtepMAC: 'ff:ff:ff:ff:ff:ff' }), { message: /not a unicast/ });
  t.throws(() => parseVxlanBackendData({ VNI: 1, VtepMAC: 'c6:d2:32:6f:8f' }), { message: /invalid MAC/ });
  t.throws(() => parseVxlanBackendData({ VNI: -1, VtepMAC: 'c6:d2:32:6f:8f:44' }), { message: /invalid VNI/ });
});
