import test from 'ava';
import { buildResult, hostVethName, podMac, randomMac, type AttachmentFacts } from '../../src/cni/result.ts';
import { masqChainName, masqJump, renderMasqChain } from '../../src/kernel/masq.ts';
import { jumpRuleText } from '../../src/kernel/jumps.ts';
import { runCni } from '../../src/cni/plugin.ts';
import { fakeCniKernel } from '../helpers/fake-cni-kernel.ts';

const facts: AttachmentFacts = {
  bridge: { name: 'cni0', mac: '02:00:00:00:00:01' },
  hostVeth: { name: 'veth01234567', mac: '02:00:00:00:00:02' },
  pod: { name: 'eth0', mac: '0a:58:0a:01:00:02', sandbox: '/run/netns/p' },
  mtu: 1450, address: '10.1.0.2/24', gateway: '10.1.0.1', routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1' }],
};

test('1.x results: bridge, host veth, pod interface at index 2', (t) => {
  const r = buildResult('1.0.0', facts);
  t.deepEqual(r.interfaces.map((i) => i.name), ['cni0', 'veth01234567', 'eth0']);
  t.deepEqual(r.ips, [{ address: '10.1.0.2/24', gateway: '10.1.0.1', interface: 2 }]);
  t.is(r.interfaces[0]!.mtu, undefined, 'interface mtu is a 1.1.0 field');
  t.is(buildResult('1.1.0', facts).interfaces[2]!.mtu, 1450);
});

test('0.x results carry ips[].version', (t) => {
  for (const v of ['0.3.0', '0.3.1', '0.4.0'] as const) {
    const r = buildResult(v, facts);
    t.is(r.cniVersion, v);
    t.is(r.ips[0]!.version, '4');
  }
});

test('a previous result is kept and our interface indexes shift past it', (t) => {
  const prev = { interfaces: [{ name: 'lo', mac: '00:00:00:00:00:00' }], ips: [{ address: '127.0.0.1/8', interface: 0 }], routes: [{ dst: '10.0.0.0/8' }] };
  const r = buildResult('1.1.0', facts, prev);
  t.is(r.interfaces.length, 4);
  t.is(r.ips[1]!.interface, 3);
  t.deepEqual(r.routes[0], { dst: '10.0.0.0/8' });
});

test('names and MACs', (t) => {
  t.regex(hostVethName('abc', 'eth0'), /^veth[0-9a-f]{8}$/);
  t.is(hostVethName('abc', 'eth0'), hostVethName('abc', 'eth0'));
  t.not(hostVethName('abc', 'eth0'), hostVethName('abc', 'eth1'));
  t.is(podMac('10.244.3.17'), '0a:58:0a:f4:03:11');
  const m = randomMac(Buffer.from([0xff, 1, 2, 3, 4, 5]));
  t.regex(randomMac(), /^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/);
  t.is(m, 'fe:01:02:03:04:05', 'unicast, locally administered');
});

test('masquerade chain: pod to pod and multicast return, the rest masquerades', (t) => {
  const spec = { network: 'net1', podSubnet: '10.244.3.0/24', clusterNetwork: '10.244.0.0/16' };
  const c = masqChainName('net1');
  t.regex(c, /^KNET-MASQ-[0-9A-F]{8}$/);
  const text = renderMasqChain(spec);
  t.true(text.includes(`:${c} - [0:0]`));
  t.true(text.includes(`-A ${c} -d 10.244.0.0/16 `));
  t.true(text.includes(`-A ${c} -d 224.0.0.0/4 `));
  t.true(text.trimEnd().endsWith('COMMIT'));
  t.is(jumpRuleText(masqJump(spec)).split(' ').slice(0, 4).join(' '), '-A POSTROUTING -s 10.244.3.0/24');
});

test('VERSION answers without touching anything', async (t) => {
  const r = await runCni('{"cniVersion":"0.4.0"}', { CNI_COMMAND: 'VERSION' }, fakeCniKernel());
  t.is(r.exitCode, 0);
  t.deepEqual(JSON.parse(r.stdout), { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
});

test('errors are the spec\'s JSON with the request\'s version', async (t) => {
  const r = await runCni('{"cniVersion":"1.0.0","name":"n","type":"knet","mtu":"big"}', { CNI_COMMAND: 'STATUS' }, fakeCniKernel());
  t.is(r.exitCode, 1);
  t.like(JSON.parse(r.stdout), { cniVersion: '1.0.0', code: 7 });
  const s = await runCni('{"cniVersion":"1.1.0","name":"n","type":"knet","subnetFile":"/nonexistent/knt-c/subnet.env"}', { CNI_COMMAND: 'STATUS' }, fakeCniKernel());
  t.like(JSON.parse(s.stdout), { code: 50 });
  const ok = await runCni('{"cniVersion":"1.1.0","name":"n","type":"knet","subnet":"10.0.0.0/24"}', { CNI_COMMAND: 'STATUS' }, fakeCniKernel());
  t.deepEqual(ok, { stdout: '', exitCode: 0 });
});
