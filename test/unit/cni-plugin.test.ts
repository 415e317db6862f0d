// The plugin's commands against the in-memory kernel: the state ADD builds, CHECK's findings,
// DEL and GC, and a failure at every kernel step of ADD leaving nothing behind (no link, no
// address, no route, no allocation, no open namespace fd or socket).
import test from 'ava';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni } from '../../src/cni/plugin.ts';
import { RTM } from '../../src/kernel/netlink/codec.ts';
import { fakeCniKernel, type FakeCniKernel } from '../helpers/fake-cni-kernel.ts';

function dataDir(t: { teardown(f: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'knt-c-unit-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const conf = (dir: string, extra: Record<string, unknown> = {}) => JSON.stringify({
  cniVersion: '1.1.0', name: 'unit', type: 'knet', subnet: '10.60.1.0/24', network: '10.60.0.0/16', bridge: 'cbr0', mtu: 1400, dataDir: dir, ...extra,
});
const env = (command: string, pod = 'pod1', extra: Record<string, string> = {}) => ({
  CNI_COMMAND: command, CNI_CONTAINERID: `c-${pod}`, CNI_NETNS: `/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', ...extra,
});
const records = (dir: string) => readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));

async function add(k: FakeCniKernel, dir: string, pod = 'pod1', extra: Record<string, unknown> = {}) {
  k.kernel.netns(pod);
  const out = await runCni(conf(dir, extra), env('ADD', pod), k);
  return { ...out, json: out.stdout ? JSON.parse(out.stdout) : undefined };
}

test('ADD: bridge with the gateway, veth on it, pod end up with address and routes; the result says so', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  const r = await add(k, dir, 'pod1', { hairpinMode: true, routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.60.1.1' }] });
  t.is(r.exitCode, 0, r.stdout);
  const node = k.kernel.netns('node');
  const pod = k.kernel.netns('pod1');
  const br = node.byName('cbr0')!;
  t.like(br, { kind: 'bridge', mtu: 1400, up: true });
  t.deepEqual(node.addresses.map((a) => `${a.address}/${a.prefixLen}`), ['10.60.1.1/24']);
  const host = node.byName(r.json.interfaces[1].name)!;
  t.like(host, { kind: 'veth', master: br.index, up: true, hairpin: true, mtu: 1400 });
  const eth0 = pod.byName('eth0')!;
  t.like(eth0, { up: true, mtu: 1400, mac: '0a:58:0a:3c:01:02' });
  t.deepEqual(pod.snapshot(), {
    links: [{ name: 'eth0', kind: 'veth', mtu: 1400, up: true, master: '', hairpin: false }, { name: 'lo', kind: '', mtu: 65536, up: true, master: '', hairpin: false }],
    addresses: ['eth0 10.60.1.2/24'],
    routes: ['0.0.0.0/0 via 10.60.1.1 dev eth0', '10.60.1.0/24 via - dev eth0', '192.168.0.0/16 via 10.60.1.1 dev eth0'],
  });
  t.like(r.json, { cniVersion: '1.1.0', ips: [{ address: '10.60.1.2/24', gateway: '10.60.1.1', interface: 2 }] });
  t.deepEqual(r.json.interfaces[0], { name: 'cbr0', mac: br.mac, mtu: 1400 });
  t.deepEqual(r.json.interfaces[2], { name: 'eth0', mac: eth0.mac, sandbox: '/run/netns/pod1', mtu: 1400 });
  t.deepEqual(records(dir), ['10.60.1.2']);
  t.is(k.openSockets(), 0);
  t.is(k.kernel.openFds(), 0);
  t.deepEqual(k.masq, [], 'ipMasq is off with a static subnet');
});

test('ADD with ipMasq sets up the node masquerade for the pod subnet and the cluster network', async (t) => {
  const k = fakeCniKernel();
  const r = await add(k, dataDir(t), 'pod1', { ipMasq: true });
  t.is(r.exitCode, 0, r.stdout);
  t.deepEqual(k.masq, [{ network: 'unit', podSubnet: '10.60.1.0/24', clusterNetwork: '10.60.0.0/16' }]);
});

test('a second pod shares the bridge and gets the next address', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  t.is((await add(k, dir, 'pod1')).exitCode, 0);
  const r = await add(k, dir, 'pod2');
  t.is(r.exitCode, 0, r.stdout);
  t.is(r.json.ips[0].address, '10.60.1.3/24');
  const node = k.kernel.netns('node');
  t.is([...node.links.values()].filter((l) => l.master === node.byName('cbr0')!.index).length, 2);
  t.is(node.addresses.length, 1);
});

// Every kernel request ADD makes, failed in turn: the error is reported with its code and the
// node, the pod and the data dir are as before the ADD.
const ADD_STEPS: [string, number, number][] = [
  ['look up the bridge', RTM.GETLINK, 1],
  ['create the bridge', RTM.NEWLINK, 1],
  ['add the gateway address', RTM.NEWADDR, 1],
  ['create the veth', RTM.NEWLINK, 2],
  ['set hairpin', RTM.SETLINK, 1],
  ['bring the pod end up', RTM.NEWLINK, 3],
  ['add the pod address', RTM.NEWADDR, 2],
  ['add the pod route', RTM.NEWROUTE, 1],
];
for (const [what, type, nth] of ADD_STEPS) {
  test(`ADD failing at "${what}" leaves nothing behind`, async (t) => {
    const k = fakeCniKernel();
    const dir = dataDir(t);
    k.kernel.netns('pod1');
    const before = { node: k.kernel.netns('node').snapshot(), pod: k.kernel.netns('pod1').snapshot() };
    // Let nth-1 requests of this type through, fail the nth.
    let seen = 0;
    const transport = k.kernel.transport.bind(k.kernel);
    k.kernel.transport = (ns: string) => {
      const inner = transport(ns);
      return {
        ...inner,
        send: (d: Uint8Array) => {
          if (d[4] === type && ++seen === nth) k.kernel.failOn(type, 'EPERM');
          return inner.send(d);
        },
      };
    };
    const r = await runCni(conf(dir, { hairpinMode: true }), env('ADD', 'pod1'), k);
    t.is(r.exitCode, 1);
    const err = JSON.parse(r.stdout);
    t.is(err.code, 102, r.stdout);
    t.regex(err.details, /EPERM/);
    t.deepEqual(k.kernel.netns('pod1').snapshot(), before.pod);
    const node = k.kernel.netns('node').snapshot() as { links: { name: string }[] };
    // The bridge and its gateway address are the node's, kept once made; no veth stays.
    t.deepEqual(node.links.filter((l) => l.name !== 'cbr0'), (before.node as typeof node).links);
    t.deepEqual(records(dir), []);
    t.is(k.openSockets(), 0);
    t.is(k.kernel.openFds(), 0);
  });
}

test('ADD failing in the masquerade set-up is error 104 and leaves nothing behind', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  k.failMasq = true;
  const r = await add(k, dir, 'pod1', { ipMasq: true });
  t.is(r.exitCode, 1);
  t.like(JSON.parse(r.stdout), { code: 104, msg: 'iptables failed' });
  t.deepEqual(k.kernel.netns('pod1').snapshot(), { links: [{ name: 'lo', kind: '', mtu: 65536, up: true, master: '', hairpin: false }], addresses: [], routes: [] });
  t.deepEqual([...k.kernel.netns('node').links.values()].filter((l) => l.kind === 'veth'), []);
  t.deepEqual(records(dir), []);
});

test('ADD of an interface the pod already has is 101 and takes nothing of the first', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  t.is((await add(k, dir)).exitCode, 0);
  const again = await runCni(conf(dir), env('ADD', 'pod1', { CNI_CONTAINERID: 'other' }), k);
  t.like(JSON.parse(again.stdout), { code: 101 });
  t.deepEqual(records(dir), ['10.60.1.2']);
  t.truthy(k.kernel.netns('pod1').byName('eth0'));
});

test('ADD: a namespace that is gone is 3, a path that is no namespace is 4', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  const gone = await runCni(conf(dir), env('ADD', 'never'), k);
  t.like(JSON.parse(gone.stdout), { code: 3 });
  const plain = await runCni(conf(dir), { ...env('ADD'), CNI_NETNS: '/etc/hostname' }, k);
  t.like(JSON.parse(plain.stdout), { code: 4 });
  t.deepEqual(readdirSync(dir), []);
});

test('CHECK passes on what ADD made and names each difference', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  const r = await add(k, dir);
  const check = (prev: unknown, e = env('CHECK')) => runCni(conf(dir, { prevResult: prev }), e, k);
  t.deepEqual(await check(r.json), { stdout: '', exitCode: 0 });
  const pod = k.kernel.netns('pod1');
  const eth0 = pod.byName('eth0')!;

  const failsWith = async (why: RegExp, prev: unknown = r.json) => {
    const out = await check(prev);
    t.is(out.exitCode, 1);
    const err = JSON.parse(out.stdout);
    t.is(err.code, 103, out.stdout);
    t.regex(err.details, why);
  };
  await failsWith(/route to 10\.99\.0\.0\/16 is missing/, { ...r.json, routes: [...r.json.routes, { dst: '10.99.0.0/16' }] });
  await failsWith(/not an IPv4 CIDR/, { ...r.json, routes: [{ dst: 'fd00::/8' }] });
  await failsWith(/no interface eth0/, { ...r.json, interfaces: r.json.interfaces.slice(0, 2) });
  // Entries of the wrong type are named, never an internal error (999).
  await failsWith(/prevResult interfaces\[0\] is not an object/, { ...r.json, interfaces: [null, ...r.json.interfaces] });
  await failsWith(/prevResult ips\[0\] is not an object/, { ...r.json, ips: [null] });
  await failsWith(/prevResult routes\[0\] is not an object/, { ...r.json, routes: [null] });
  await failsWith(/prevResult ips is not a list/, { ...r.json, ips: 'x' });
  await failsWith(/interfaces\[2\]\.mtu is not a number/, { ...r.json, interfaces: r.json.interfaces.map((i: Record<string, unknown>, n: number) => (n === 2 ? { ...i, mtu: '1400' } : i)) });
  eth0.mtu = 1300;
  await failsWith(/MTU 1300, expected 1400/);
  eth0.mtu = 1400;
  const addresses = pod.addresses;
  pod.addresses = [];
  await failsWith(/eth0 lacks 10\.60\.1\.2\/24 \(has none\)/);
  pod.addresses = addresses;
  const routes = pod.routes;
  pod.routes = routes.filter((x) => x.dstLen !== 0);
  await failsWith(/route to 0\.0\.0\.0\/0 is missing/);
  pod.routes = routes;
  const node = k.kernel.netns('node');
  const host = node.byName(r.json.interfaces[1].name)!;
  host.master = 0;
  await failsWith(/not on bridge cbr0/);
  host.master = node.byName('cbr0')!.index;
  t.deepEqual(await check(r.json), { stdout: '', exitCode: 0 });
  const gone = await check(r.json, env('CHECK', 'never', { CNI_CONTAINERID: 'c-pod1' }));
  t.like(JSON.parse(gone.stdout), { code: 3 });
  t.is(k.openSockets(), 0);
  t.is(k.kernel.openFds(), 0);
});

test('DEL removes the veth (both ends) and the address; a second DEL succeeds too', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  await add(k, dir);
  for (let i = 0; i < 2; i++) {
    const r = await runCni(conf(dir), env('DEL'), k);
    t.deepEqual(r, { stdout: '', exitCode: 0 });
  }
  t.is(k.kernel.netns('pod1').byName('eth0'), undefined);
  t.deepEqual([...k.kernel.netns('node').links.values()].map((l) => l.name).sort(), ['cbr0', 'lo']);
  t.deepEqual(records(dir), []);
  // The namespace already gone: still success.
  const r = await runCni(conf(dir), env('DEL', 'never'), k);
  t.is(r.exitCode, 0);
});

test('GC keeps valid attachments, releases the rest and removes orphan knet veths', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  for (const p of ['pod1', 'pod2', 'pod3']) await add(k, dir, p);
  // A veth whose ADD died before writing its record: knet-named, on the bridge, owned by nobody.
  const node = k.kernel.netns('node');
  k.kernel.netns('orphan');
  const nl = k.hostRtnl();
  await nl.createVeth({ name: 'veth0badf00d', mtu: 1400, master: node.byName('cbr0')!.index, peer: { name: 'eth0', netnsFd: k.kernel.fdOf('orphan'), mtu: 1400 } });
  nl.close();
  const valid = [{ containerID: 'c-pod2', ifname: 'eth0' }];
  const r = await runCni(JSON.stringify({ ...JSON.parse(conf(dir)), 'cni.dev/valid-attachments': valid }), { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, k);
  t.deepEqual(r, { stdout: '', exitCode: 0 });
  t.deepEqual(records(dir), ['10.60.1.3']);
  t.deepEqual([...node.links.values()].filter((l) => l.kind === 'veth').length, 1);
  t.truthy(k.kernel.netns('pod2').byName('eth0'));
  t.falsy(k.kernel.netns('pod1').byName('eth0'));
  t.falsy(k.kernel.netns('orphan').byName('eth0'));
});

test('GC reports what it could not remove (102) and still releases what it could', async (t) => {
  const k = fakeCniKernel();
  const dir = dataDir(t);
  await add(k, dir, 'pod1');
  await add(k, dir, 'pod2');
  k.kernel.failOn(RTM.DELLINK, 'EBUSY');
  const r = await runCni(JSON.stringify({ ...JSON.parse(conf(dir)), 'cni.dev/valid-attachments': [] }), { CNI_COMMAND: 'GC' }, k);
  t.is(r.exitCode, 1);
  const err = JSON.parse(r.stdout);
  t.is(err.code, 102);
  t.regex(err.details, /EBUSY/);
  t.is(records(dir).length, 1, 'the record whose veth could not go stays for the next GC');
});
