// Both overlay backends on in-memory kernels: what they program, that a second pass changes
// nothing, that hand edits heal, vanished peers go, and a change the kernel refuses comes back
// as an error and is retried by the next pass. The same paths run against the real kernel in
// test/integration/agent-overlay.test.ts and ovs-gre.test.ts.
import test from 'ava';
import { VxlanBackend } from '../../src/overlay/vxlan/backend.ts';
import { OvsGreBackend } from '../../src/overlay/ovs-gre/backend.ts';
import { parseOvsGreConfig } from '../../src/overlay/ovs-gre/config.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';
import { FakeOvsGreKernel, FakeVxlanKernel } from '../helpers/fake-overlay-kernel.ts';

const vxLease = (n: number, ip: string, mac = `0a:00:00:00:01:${n.toString(16).padStart(2, '0')}`): Lease => {
  const subnet = parseCidr(`10.5.${n}.0/24`);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } }, etcdLease: '1', expiresAt: null };
};
const underlay = { iface: 'eth0', publicIP: '192.168.50.1', prefixLen: 24, mtu: 1500 };
const vxConfig = { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: false };

function vxlan() {
  const kernel = new FakeVxlanKernel();
  const backend = new VxlanBackend({ netns: null, config: vxConfig, device: 'flannel.1', underlay, network: parseCidr('10.5.0.0/16'), kernel });
  return { kernel, backend };
}

test('vxlan: programs peers, a second pass is a no-op, hand edits heal, vanished peers go', async (t) => {
  const { kernel, backend } = vxlan();
  const prepared = await backend.prepare(undefined);
  t.is(prepared.mtu, 1450);
  const mac = (prepared.backendData as { VtepMAC: string }).VtepMAC;
  const own = vxLease(1, '192.168.50.1', mac);
  const peers = [vxLease(2, '192.168.50.2'), vxLease(3, '192.168.50.3')];
  const r = await backend.reconcile(own, peers);
  t.like(r, { peers: 2, changes: 6, errors: [] });
  t.deepEqual(kernel.devices.get('flannel.1')!.addresses, ['10.5.1.0/32']);
  t.is((await backend.reconcile(own, peers)).changes, 0);
  kernel.state.routes = kernel.state.routes.filter((x) => x.dst !== '10.5.2.0/24');
  t.is((await backend.reconcile(own, peers)).changes, 1);
  t.is((await backend.reconcile(own, peers.slice(0, 1))).changes, 3);
  t.deepEqual(kernel.state.routes.map((x) => x.dst), ['10.5.2.0/24']);
});

test('vxlan: the previous VTEP MAC is kept across a restart; a change the kernel refuses is an error, then retried', async (t) => {
  const { kernel, backend } = vxlan();
  const prepared = await backend.prepare({ VNI: 1, VtepMAC: '0a:bb:00:00:00:01' });
  t.is((prepared.backendData as { VtepMAC: string }).VtepMAC, '0a:bb:00:00:00:01');
  const own = vxLease(1, '192.168.50.1', '0a:bb:00:00:00:01');
  kernel.refuseRoutes.add('10.5.3.0/24');
  const r = await backend.reconcile(own, [vxLease(2, '192.168.50.2'), vxLease(3, '192.168.50.3')]);
  t.is(r.errors.length, 1);
  t.regex(r.errors[0]!, /10\.5\.3\.0\/24/);
  kernel.refuseRoutes.clear();
  const again = await backend.reconcile(own, [vxLease(2, '192.168.50.2'), vxLease(3, '192.168.50.3')]);
  t.deepEqual(again.errors, []);
  t.is(again.changes, 1, 'only the refused route is written again');
});

const ovsNet = parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre"}}');
const greLease = (n: number, ip: string): Lease => {
  const subnet = parseCidr(`10.246.${n}.0/24`);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, BackendType: 'ovs-gre' }, etcdLease: '1', expiresAt: null };
};

test('ovs-gre: switch, pod side and flows are built once; an unchanged table is not rewritten; a deleted flow heals', async (t) => {
  const kernel = new FakeOvsGreKernel();
  const backend = new OvsGreBackend({ ovs: { netns: null, runDir: '/nonexistent' }, config: parseOvsGreConfig(ovsNet.backend), underlay: { publicIP: '192.168.50.1', mtu: 1500 }, network: ovsNet.ipv4!.network, kernel });
  t.like(await backend.prepare(undefined), { backendType: 'ovs-gre', backendData: null, mtu: 1458 });
  const own = greLease(1, '192.168.50.1');
  const r = await backend.reconcile(own, [greLease(2, '192.168.50.2')]);
  t.deepEqual(r.errors, []);
  t.is(r.peers, 1);
  t.is(kernel.flows.get('obr0')!.length, 4);
  t.deepEqual(kernel.links.get('cni0')!.addr_info, [{ family: 'inet', local: '10.246.1.1', prefixlen: 24 }]);
  t.is(kernel.links.get('tun0')!.master, 'cni0');
  t.deepEqual(kernel.routes.map((x) => `${x.dst} dev ${x.dev} src ${x.prefsrc}`), ['10.246.0.0/16 dev cni0 src 10.246.1.1']);
  const writes = kernel.replaceCount;
  const second = await backend.reconcile(own, [greLease(2, '192.168.50.2')]);
  t.is(second.changes, 0);
  t.is(kernel.replaceCount, writes, 'an unchanged table costs a dump and no write');
  kernel.flows.set('obr0', kernel.flows.get('obr0')!.slice(1));
  t.is((await backend.reconcile(own, [greLease(2, '192.168.50.2')])).changes, 1);
  t.is(kernel.flows.get('obr0')!.length, 4);
});

test('ovs-gre: a port OVS could not open is an error naming it', async (t) => {
  const kernel = new FakeOvsGreKernel();
  const backend = new OvsGreBackend({ ovs: { netns: null, runDir: '/nonexistent' }, config: parseOvsGreConfig(ovsNet.backend), underlay: { publicIP: '192.168.50.1', mtu: 1500 }, network: ovsNet.ipv4!.network, kernel });
  await backend.prepare(undefined);
  kernel.ofports.set('gre0', -1);
  kernel.ensureBridge = async () => undefined;
  await t.throwsAsync(backend.reconcile(greLease(1, '192.168.50.1'), []), { message: /OVS port gre0 has OpenFlow port -1, not 10/ });
});
