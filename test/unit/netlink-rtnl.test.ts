// The rtnetlink encoder and request logic against the in-memory kernel: what each call sends is
// what the kernel model applies, errors come back as NetlinkError with the errno's name, and
// concurrent calls on one socket each get their own answer.
import test from 'ava';
import {
  NetlinkError, RTM, assertIfName, broadcast4, decodeMessages, encodeMessage, macBytes, parseAttrs, nlattr,
} from '../../src/kernel/netlink/codec.ts';
import { Rtnl } from '../../src/kernel/netlink/rtnl.ts';
import { FakeKernel } from '../helpers/fake-netlink.ts';

function setup() {
  const kernel = new FakeKernel();
  const nl = new Rtnl(kernel.transport('node'));
  return { kernel, nl, node: kernel.netns('node'), pod: kernel.netns('pod') };
}

test('bridge, address, veth into another namespace, hairpin, delete', async (t) => {
  const { kernel, nl, node, pod } = setup();
  await nl.createLink({ name: 'br0', kind: 'bridge', mtu: 1400, up: true, mac: macBytes('02:00:00:00:00:01') });
  const br = (await nl.getLink('br0'))!;
  t.like(br, { name: 'br0', kind: 'bridge', mtu: 1400, up: true, mac: '02:00:00:00:00:01', master: 0 });
  t.deepEqual([await nl.addAddress4(br.index, '10.1.0.1', 24), await nl.addAddress4(br.index, '10.1.0.1', 24)], [true, false]);
  const fd = kernel.fdOf('pod');
  await nl.createVeth({ name: 'veth0', mtu: 1400, master: br.index, up: true, mac: macBytes('02:00:00:00:00:02'),
    peer: { name: 'eth0', netnsFd: fd, mtu: 1400, mac: macBytes('0a:58:0a:01:00:02') } });
  const host = (await nl.getLink('veth0'))!;
  t.like(host, { master: br.index, up: true, mtu: 1400, kind: 'veth' });
  t.like(pod.byName('eth0'), { mtu: 1400, mac: '0a:58:0a:01:00:02', up: false });
  await nl.setHairpin(host.index, true);
  t.true(node.byName('veth0')!.hairpin);
  t.deepEqual((await nl.listLinks()).map((l) => l.name).sort(), ['br0', 'lo', 'veth0']);
  t.deepEqual((await nl.listAddresses4()).map((a) => [a.index, a.address, a.prefixLen]), [[br.index, '10.1.0.1', 24]]);
  t.true(await nl.deleteLink('veth0'));
  t.false(await nl.deleteLink('veth0'));
  t.is(pod.byName('eth0'), undefined, 'the peer goes with its veth');
  t.is(await nl.getLink('veth0'), null);
});

test('routes: the gateway must be reachable; duplicates report false; dumps decode', async (t) => {
  const { nl } = setup();
  await nl.createLink({ name: 'dum0', kind: 'dummy' });
  const link = (await nl.getLink('dum0'))!;
  await nl.setLink(link.index, { up: true });
  const e = await t.throwsAsync(nl.addRoute4({ dst: '0.0.0.0', dstLen: 0, gateway: '10.2.0.1', oif: link.index }), { instanceOf: NetlinkError });
  t.is(e?.code, 'ENETUNREACH');
  await nl.addAddress4(link.index, '10.2.0.5', 24);
  t.true(await nl.addRoute4({ dst: '0.0.0.0', dstLen: 0, gateway: '10.2.0.1', oif: link.index }));
  t.false(await nl.addRoute4({ dst: '0.0.0.0', dstLen: 0, gateway: '10.2.0.1', oif: link.index }));
  t.true(await nl.addRoute4({ dst: '10.9.0.0', dstLen: 16, gateway: '10.2.0.1', oif: link.index }));
  const routes = (await nl.listRoutes4()).map((r) => `${r.dst}/${r.dstLen} ${r.gateway} ${r.oif} ${r.table}`).sort();
  t.deepEqual(routes, [`0.0.0.0/0 10.2.0.1 ${link.index} 254`, `10.2.0.0/24  ${link.index} 254`, `10.9.0.0/16 10.2.0.1 ${link.index} 254`]);
});

test('kernel errors come back named; the socket keeps working after one', async (t) => {
  const { kernel, nl } = setup();
  kernel.failOn(RTM.NEWLINK, 'EPERM');
  const e = await t.throwsAsync(nl.createLink({ name: 'br0', kind: 'bridge' }), { instanceOf: NetlinkError });
  t.is(e?.code, 'EPERM');
  t.regex(e!.message, /create bridge br0 failed: EPERM/);
  await nl.createLink({ name: 'br0', kind: 'bridge' });
  const again = await t.throwsAsync(nl.createLink({ name: 'br0', kind: 'bridge' }), { instanceOf: NetlinkError });
  t.is(again?.code, 'EEXIST');
  t.is(await nl.getLink('nope0'), null);
});

test('concurrent calls on one socket each get their own answer', async (t) => {
  const { nl } = setup();
  await Promise.all(['a0', 'b0', 'c0'].map((name) => nl.createLink({ name, kind: 'dummy' })));
  const got = await Promise.all(['c0', 'a0', 'missing0', 'b0'].map((n) => nl.getLink(n)));
  t.deepEqual(got.map((l) => l?.name ?? null), ['c0', 'a0', null, 'b0']);
});

test('a late answer to an earlier request is skipped, not taken for this one', async (t) => {
  const { kernel } = setup();
  const real = kernel.transport('node');
  let first = true;
  const nl = new Rtnl({
    send: (d) => real.send(d),
    receive: async () => {
      if (first) { first = false; return encodeMessage(2, 0, 999, [Buffer.alloc(20)]); }
      return real.receive();
    },
    close: () => real.close(),
  });
  t.deepEqual((await nl.listLinks()).map((l) => l.name), ['lo']);
});

test('a closed socket refuses requests', async (t) => {
  const { nl } = setup();
  nl.close();
  await t.throwsAsync(nl.listLinks(), { message: /closed/ });
});

test('framing and attributes', (t) => {
  const msg = encodeMessage(RTM.GETLINK, 1, 7, [Buffer.from([1, 2, 3])]);
  t.is(msg.length, 19);
  const [m] = decodeMessages(Buffer.concat([msg, Buffer.alloc(1)]));
  t.like(m, { type: RTM.GETLINK, flags: 1, seq: 7 });
  t.deepEqual([...m!.data], [1, 2, 3]);
  const bad = Buffer.from(msg);
  bad.writeUInt32LE(400, 0);
  t.throws(() => decodeMessages(bad), { message: /malformed/ });
  const attrs = parseAttrs(Buffer.concat([nlattr(3, Buffer.from('eth0\0')), nlattr(4 | 0x8000, [Buffer.from([5, 0, 0, 0])])]));
  t.is(attrs.get(3)!.toString(), 'eth0\0');
  t.is(attrs.get(4)!.readUInt32LE(0), 5);
  t.is(broadcast4('10.1.2.3', 24), '10.1.2.255');
  t.is(broadcast4('10.1.2.3', 0), '255.255.255.255');
  t.throws(() => macBytes('02:00:00:00:00'));
  for (const bad of ['', 'a'.repeat(16), 'a/b', 'a b', '..', 'eth0\n']) t.throws(() => assertIfName(bad), undefined, JSON.stringify(bad));
});
