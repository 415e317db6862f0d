import test from 'ava';
import { desiredVxlanState } from '../../src/overlay/vxlan/desired.ts';
import { diffOverlay, diffSize, emptyState, type OverlayState } from '../../src/overlay/types.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';

const network = parseCidr('10.5.0.0/16');
const lease = (cidr: string, ip: string, data: unknown = { VNI: 1, VtepMAC: `0a:00:00:00:00:${cidr.split('.')[2]!.padStart(2, '0')}` }, type = 'vxlan'): Lease => {
  const subnet = parseCidr(cidr);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, BackendType: type, BackendData: data }, etcdLease: '1', expiresAt: null };
};
const own = lease('10.5.1.0/24', '192.168.50.1');
const base = { device: 'flannel.1', vni: 1, network, own, directRouting: false, underlay: { iface: 'eth0', subnet: parseCidr('192.168.50.0/24') } };

test('each peer gets a neighbour, an FDB entry and an onlink route via its .0, as flannel programs them', (t) => {
  const d = desiredVxlanState({ ...base, peers: [own, lease('10.5.2.0/24', '192.168.50.2')] });
  t.deepEqual(d.state, {
    neighbours: [{ ip: '10.5.2.0', mac: '0a:00:00:00:00:02', dev: 'flannel.1' }],
    fdb: [{ mac: '0a:00:00:00:00:02', dst: '192.168.50.2', dev: 'flannel.1' }],
    routes: [{ dst: '10.5.2.0/24', via: '10.5.2.0', dev: 'flannel.1', onlink: true }],
  });
  t.is(d.programmed, 1);
});

test('DirectRouting: a plain route via the public IP for peers on the underlay subnet only', (t) => {
  const d = desiredVxlanState({ ...base, directRouting: true, peers: [lease('10.5.2.0/24', '192.168.50.2'), lease('10.5.3.0/24', '172.16.0.3')] });
  t.deepEqual(d.state.routes, [
    { dst: '10.5.2.0/24', via: '192.168.50.2', dev: 'eth0', onlink: false },
    { dst: '10.5.3.0/24', via: '10.5.3.0', dev: 'flannel.1', onlink: true },
  ]);
  t.is(d.state.fdb.length, 1);
});

test('peers that cannot be programmed safely are skipped with a reason', (t) => {
  const d = desiredVxlanState({
    ...base,
    peers: [
      lease('10.5.2.0/24', '192.168.50.2', undefined, 'udp'),
      lease('10.5.3.0/24', '192.168.50.3', { VNI: 2, VtepMAC: '0a:00:00:00:00:03' }),
      lease('10.5.4.0/24', '192.168.50.4', { VNI: 1, VtepMAC: 'zz' }),
      lease('10.6.5.0/24', '192.168.50.5'),
      lease('10.5.6.0/24', '192.168.50.1'),
      lease('10.5.7.0/24', '192.168.50.7', { VNI: 1, VtepMAC: '0a:00:00:00:00:08' }),
      lease('10.5.8.0/24', '192.168.50.8', { VNI: 1, VtepMAC: '0a:00:00:00:00:08' }),
    ],
  });
  // Peers are visited in key order, so the outcome does not depend on listing order.
  t.deepEqual(d.skipped.map((s) => s.key), ['10.5.2.0-24', '10.5.3.0-24', '10.5.4.0-24', '10.5.6.0-24', '10.5.8.0-24', '10.6.5.0-24']);
  t.regex(d.skipped[3]!.reason, /this node's public IP/);
  t.regex(d.skipped[4]!.reason, /already used by 10.5.7.0-24/);
  t.regex(d.skipped[5]!.reason, /outside the network/);
  t.is(d.programmed, 1);
});

test('diff: only missing or changed entries are added; only vanished ones removed', (t) => {
  const peers = [lease('10.5.2.0/24', '192.168.50.2'), lease('10.5.3.0/24', '192.168.50.3')];
  const want = desiredVxlanState({ ...base, peers }).state;
  t.is(diffSize(diffOverlay(want, want)), 0);
  const full = diffOverlay(want, emptyState());
  t.deepEqual(full.add, want);
  t.deepEqual(full.remove, emptyState());
  // Peer 3 vanished, peer 2 changed its public IP (FDB moves), a route was hand-deleted.
  const moved = desiredVxlanState({ ...base, peers: [lease('10.5.2.0/24', '192.168.50.22')] }).state;
  const observed: OverlayState = { ...want, routes: want.routes.filter((r) => r.dst !== '10.5.2.0/24') };
  const d = diffOverlay(moved, observed);
  t.deepEqual(d.add.routes, [{ dst: '10.5.2.0/24', via: '10.5.2.0', dev: 'flannel.1', onlink: true }]);
  t.deepEqual(d.add.fdb, [{ mac: '0a:00:00:00:00:02', dst: '192.168.50.22', dev: 'flannel.1' }]);
  t.deepEqual(d.add.neighbours, []);
  t.deepEqual(d.remove.routes.map((r) => r.dst), ['10.5.3.0/24']);
  t.deepEqual(d.remove.neighbours.map((n) => n.ip), ['10.5.3.0']);
  t.deepEqual(d.remove.fdb.map((f) => f.dst).sort(), ['192.168.50.2', '192.168.50.3']);
});

test('a changed VTEP MAC replaces the neighbour in place', (t) => {
  const a = desiredVxlanState({ ...base, peers: [lease('10.5.2.0/24', '192.168.50.2')] }).state;
  const b = desiredVxlanState({ ...base, peers: [lease('10.5.2.0/24', '192.168.50.2', { VNI: 1, VtepMAC: '0a:00:00:00:00:99' })] }).state;
  const d = diffOverlay(b, a);
  t.deepEqual(d.add.neighbours, [{ ip: '10.5.2.0', mac: '0a:00:00:00:00:99', dev: 'flannel.1' }]);
  t.deepEqual(d.remove.neighbours, []);
});
