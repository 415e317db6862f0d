// The VXLAN reconciler against a real kernel, inside a knt-a namespace: programs peers,
// heals hand edits, removes vanished peers, leaves foreign entries alone, keeps its MAC.
import test from 'ava';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { ipBatch, ipJson } from '../../src/kernel/iproute.ts';
import { readOverlayState } from '../../src/kernel/overlay-state.ts';
import { VxlanBackend } from '../../src/overlay/vxlan/backend.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';
import { findUnderlay } from '../../src/kernel/vxlan.ts';

const rootTest = isRoot ? test : test.skip;

const lease = (n: number, ip: string, mac = `0a:00:00:00:01:${n.toString(16).padStart(2, '0')}`): Lease => {
  const subnet = parseCidr(`10.5.${n}.0/24`);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }, etcdLease: '1', expiresAt: null };
};

async function node(t: Parameters<typeof testNetns>[0]) {
  const ns = await testNetns(t, 'knt-a');
  await ipBatch(ns, ['link add eth0 type veth peer name peer0', 'addr add 192.168.50.1/24 dev eth0', 'link set eth0 up', 'link set peer0 up']);
  const underlay = await findUnderlay(ns, { iface: 'eth0' });
  const config = { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: false };
  return { ns, underlay, backend: new VxlanBackend({ netns: ns, config, device: 'flannel.1', underlay, network: parseCidr('10.5.0.0/16') }) };
}

rootTest('programs peers, heals hand edits, removes vanished peers, leaves foreign entries alone', async (t) => {
  const { ns, underlay, backend } = await node(t);
  t.is(underlay.publicIP, '192.168.50.1');
  const prepared = await backend.prepare(undefined);
  t.is(prepared.mtu, 1450);
  const mac = (prepared.backendData as { VtepMAC: string }).VtepMAC;
  const own = lease(1, '192.168.50.1', mac);
  const peers = [lease(2, '192.168.50.2'), lease(3, '192.168.50.3')];
  const r = await backend.reconcile(own, peers);
  t.is(r.peers, 2);
  t.is(r.changes, 6);
  t.deepEqual(r.errors, []);
  const [dev] = await ipJson<{ mtu: number; address: string; addr_info: { local: string; prefixlen: number }[] }>(ns, ['addr', 'show', 'dev', 'flannel.1']);
  t.is(dev!.mtu, 1450);
  t.is(dev!.address, mac);
  t.deepEqual(dev!.addr_info.filter((a) => a.local.startsWith('10.')).map((a) => `${a.local}/${a.prefixlen}`), ['10.5.1.0/32']);
  const state = await readOverlayState(ns, 'flannel.1');
  t.deepEqual(state.routes.map((x) => `${x.dst} via ${x.via} ${x.onlink}`).sort(), ['10.5.2.0/24 via 10.5.2.0 true', '10.5.3.0/24 via 10.5.3.0 true']);
  t.is(state.fdb.length, 2);
  t.is(state.neighbours.length, 2);
  t.is((await backend.reconcile(own, peers)).changes, 0, 'a second reconcile changes nothing');

  // Foreign entries: a route and a neighbour knet did not make, on and off its device.
  await ipBatch(ns, ['route add 10.99.0.0/24 via 192.168.50.9 dev eth0', 'neigh add 10.5.77.0 lladdr 0a:00:00:00:00:77 dev flannel.1 nud permanent']);
  // Hand-deletes.
  await ipBatch(ns, ['route del 10.5.2.0/24']);
  const { run } = await import('../../src/kernel/exec.ts');
  await run('bridge', ['-n', ns, 'fdb', 'del', '0a:00:00:00:01:03', 'dev', 'flannel.1', 'dst', '192.168.50.3', 'self']);
  const healed = await backend.reconcile(own, peers);
  t.is(healed.changes, 2);
  t.deepEqual(await readOverlayState(ns, 'flannel.1'), state);

  // Peer 3 vanishes.
  t.is((await backend.reconcile(own, peers.slice(0, 1))).changes, 3);
  const after = await readOverlayState(ns, 'flannel.1');
  t.deepEqual(after.routes.map((x) => x.dst), ['10.5.2.0/24']);
  t.deepEqual(after.fdb.map((x) => x.dst), ['192.168.50.2']);
  const routes = await ipJson<{ dst: string }>(ns, ['route', 'show']);
  t.true(routes.some((x) => x.dst === '10.99.0.0/24'), 'foreign route kept');
  const neigh = await ipJson<{ dst: string }>(ns, ['neigh', 'show', 'dev', 'flannel.1']);
  t.true(neigh.some((x) => x.dst === '10.5.77.0'), 'foreign neighbour kept');
});

rootTest('a deleted device is recreated with the same VTEP MAC; a restarted backend adopts the device', async (t) => {
  const { ns, underlay, backend } = await node(t);
  const mac = ((await backend.prepare(undefined)).backendData as { VtepMAC: string }).VtepMAC;
  const own = lease(1, '192.168.50.1', mac);
  await backend.reconcile(own, [lease(2, '192.168.50.2')]);
  await ipBatch(ns, ['link del flannel.1']);
  const r = await backend.reconcile(own, [lease(2, '192.168.50.2')]);
  t.is(r.changes, 3);
  const [dev] = await ipJson<{ address: string }>(ns, ['link', 'show', 'dev', 'flannel.1']);
  t.is(dev!.address, mac);
  // A new backend (agent restart) keeps the existing device and its MAC.
  const again = new VxlanBackend({ netns: ns, config: { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: false }, device: 'flannel.1', underlay, network: parseCidr('10.5.0.0/16') });
  t.is(((await again.prepare({ VNI: 1, VtepMAC: '0a:ff:00:00:00:01' })).backendData as { VtepMAC: string }).VtepMAC, mac);
  t.is((await again.reconcile(own, [lease(2, '192.168.50.2')])).changes, 0);
});

rootTest('15.11: a /32 route knet made and nothing wants any more is removed', async (t) => {
  const { ns, backend } = await node(t);
  const mac = ((await backend.prepare(undefined)).backendData as { VtepMAC: string }).VtepMAC;
  const own = lease(1, '192.168.50.1', mac);
  await backend.reconcile(own, [lease(2, '192.168.50.2')]);
  // A host route with knet's protocol, as an older lease (or a hand) left it.
  await ipBatch(ns, ['route add 10.5.9.7/32 via 10.5.2.0 dev flannel.1 onlink proto 75']);
  t.true((await readOverlayState(ns, 'flannel.1')).routes.some((r) => r.dst === '10.5.9.7/32'), 'read back with its prefix');
  const r = await backend.reconcile(own, [lease(2, '192.168.50.2')]);
  t.is(r.changes, 1);
  t.deepEqual(r.errors, []);
  const routes = await ipJson<{ dst: string }>(ns, ['route', 'show']);
  t.false(routes.some((x) => x.dst === '10.5.9.7'), 'the /32 is gone');
  t.true(routes.some((x) => x.dst === '10.5.2.0/24'));
});

rootTest('bad names never reach the kernel', async (t) => {
  const { ns } = await node(t);
  await t.throwsAsync(readOverlayState(ns, 'flannel.1; reboot'), { message: /invalid device/ });
  await t.throwsAsync(findUnderlay(ns, { iface: 'nope0' }), { message: /interface nope0 not found/ });
  await t.throwsAsync(findUnderlay(ns, {}), { message: /no default route/ });
});

rootTest('DirectRouting: peers on the underlay subnet get a plain route via their public IP, others VXLAN', async (t) => {
  const { ns, underlay } = await node(t);
  const backend = new VxlanBackend({ netns: ns, config: { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: true }, device: 'flannel.1', underlay, network: parseCidr('10.5.0.0/16') });
  const mac = ((await backend.prepare(undefined)).backendData as { VtepMAC: string }).VtepMAC;
  await backend.reconcile(lease(1, '192.168.50.1', mac), [lease(2, '192.168.50.2'), lease(3, '172.16.0.3')]);
  const s = await readOverlayState(ns, 'flannel.1');
  t.deepEqual(s.routes.map((r) => `${r.dst} via ${r.via} dev ${r.dev}`).sort(), ['10.5.2.0/24 via 192.168.50.2 dev eth0', '10.5.3.0/24 via 10.5.3.0 dev flannel.1']);
  t.deepEqual(s.fdb.map((f) => f.dst), ['172.16.0.3']);
});
