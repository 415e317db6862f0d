import test from 'ava';
import { parseEnv, parseNetConf, parseSubnetEnv, planNetwork, decodeStdin, checkVersion } from '../../src/cni/config.ts';
import { CniError } from '../../src/cni/errors.ts';
import { formatIPv4 } from '../../src/ipam/ipv4.ts';

const base = { cniVersion: '1.1.0', name: 'net1', type: 'knet' };
const code = (f: () => unknown): number => {
  try { f(); } catch (e) { if (e instanceof CniError) return e.code; throw e; }
  return 0;
};

test('defaults: flannel subnet file, cni0, data dir by network name', (t) => {
  const c = parseNetConf(base);
  t.is(c.subnetFile, '/run/flannel/subnet.env');
  t.is(c.bridge, 'cni0');
  t.is(c.dataDir, '/var/lib/cni/networks/net1');
  t.false(c.hairpinMode);
});

test('bad configs are error 7 and name the field; bad versions are error 1', (t) => {
  const cases: [Record<string, unknown>, number, RegExp][] = [
    [{ name: '-bad' }, 7, /name/],
    [{ type: 'bridge' }, 7, /type/],
    [{ bridge: 'a-very-long-bridge-name' }, 7, /bridge/],
    [{ bridge: 'br;rm' }, 7, /bridge/],
    [{ subnet: '10.0.0.0/33' }, 7, /subnet/],
    [{ subnet: '10.0.0.0/31' }, 7, /too small/],
    [{ mtu: 70000 }, 7, /mtu/],
    [{ hairpinMode: 'yes' }, 7, /hairpinMode/],
    [{ dataDir: 'relative/dir' }, 7, /dataDir/],
    [{ dataDir: '/var/lib/../../etc' }, 7, /dataDir/],
    [{ subnetFile: '/run/x\n' }, 7, /subnetFile/],
    [{ routes: [{ dst: '10.0.0.1/8' }] }, 7, /host bits/],
    [{ routes: [{ dst: '0.0.0.0/0', gw: 'x' }] }, 7, /routes/],
    [{ exclude: ['10.0.0.300'] }, 7, /exclude/],
    [{ cniVersion: '0.2.0' }, 1, /0\.2\.0/],
    [{ cniVersion: undefined }, 1, /cniVersion/],
  ];
  for (const [patch, want, msg] of cases) {
    const e = t.throws(() => parseNetConf({ ...base, ...patch }), { instanceOf: CniError }, JSON.stringify(patch));
    t.is(e?.code, want, JSON.stringify(patch));
    t.regex(`${e?.message} ${e?.details}`, msg);
  }
});

test('stdin that is not JSON is error 6', (t) => {
  t.is(code(() => decodeStdin('{"cniVersion":')), 6);
  t.is(code(() => decodeStdin('[1]')), 6);
  t.is(code(() => checkVersion('9.9.9')), 1);
});

test('subnet.env as flanneld writes it', (t) => {
  const env = parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  t.deepEqual(env, { network: '10.244.0.0/16', subnet: '10.244.3.1/24', mtu: 1450, ipMasq: true });
  t.is(code(() => parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\n')), 7);
  t.is(code(() => parseSubnetEnv('FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=abc\n')), 7);
  // FLANNEL_IPMASQ as a Go boolean; anything else is refused, not read as false.
  for (const [text, want] of [['1', true], ['T', true], ['True', true], ['0', false], ['F', false], ['FALSE', false]] as const) {
    t.is(parseSubnetEnv(`FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=${text}\n`).ipMasq, want, text);
  }
  for (const text of ['yes', 'treu', '', ' true']) {
    t.is(code(() => parseSubnetEnv(`FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=${text}\n`)), 7, text);
  }
  const err = t.throws(() => parseSubnetEnv('FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=yes\n', '/run/flannel/subnet.env')) as { details?: string };
  t.is(err.details, '/run/flannel/subnet.env: FLANNEL_IPMASQ (line 2) is not true or false');
});

test('plan from the subnet file: gateway is the first address, flanneld masquerading turns ours off', (t) => {
  const env = parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  const p = planNetwork(parseNetConf(base), env);
  t.is(formatIPv4(p.subnet.ip), '10.244.3.0');
  t.is(formatIPv4(p.gateway), '10.244.3.1');
  t.is(p.mtu, 1450);
  t.false(p.ipMasq);
  t.deepEqual(p.routes, [{ dst: '0.0.0.0/0', gw: '10.244.3.1' }]);
  const q = planNetwork(parseNetConf(base), { ...env, ipMasq: false });
  t.true(q.ipMasq);
  // The config wins over the file.
  const r = planNetwork(parseNetConf({ ...base, mtu: 1400, ipMasq: false, routes: [{ dst: '10.244.0.0/16' }] }), { ...env, ipMasq: false });
  t.is(r.mtu, 1400);
  t.false(r.ipMasq);
  t.deepEqual(r.routes, [{ dst: '10.244.0.0/16', gw: '10.244.3.1' }]);
});

test('plan without any subnet is "try again later" (11); subnet outside the network is 7', (t) => {
  t.is(code(() => planNetwork(parseNetConf(base), null)), 11);
  t.is(code(() => planNetwork(parseNetConf({ ...base, subnet: '10.1.0.0/24', network: '10.2.0.0/16' }), null)), 7);
  t.is(code(() => planNetwork(parseNetConf({ ...base, subnet: '10.1.0.0/24', routes: [{ dst: '0.0.0.0/0', gw: '10.9.9.9' }] }), null)), 7);
});

test('exclude reserves single addresses and ranges', (t) => {
  const p = planNetwork(parseNetConf({ ...base, subnet: '10.1.0.0/24', exclude: ['10.1.0.10', '10.1.0.32/30'] }), null);
  t.deepEqual([...p.reserved].map(formatIPv4), ['10.1.0.10', '10.1.0.32', '10.1.0.33', '10.1.0.34', '10.1.0.35']);
});

test('environment: required variables per command, validated names (error 4)', (t) => {
  const ok = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0' };
  t.like(parseEnv(ok), { command: 'ADD', ifname: 'eth0' });
  t.like(parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0' }), { command: 'DEL', netns: '' });
  t.like(parseEnv({ CNI_COMMAND: 'GC' }), { command: 'GC' });
  const bad: [Record<string, string | undefined>, RegExp][] = [
    [{ CNI_COMMAND: 'FROB' }, /CNI_COMMAND/],
    [{ CNI_NETNS: undefined }, /CNI_NETNS/],
    [{ CNI_IFNAME: 'eth0/../x' }, /CNI_IFNAME/],
    [{ CNI_IFNAME: 'a-name-far-too-long' }, /CNI_IFNAME/],
    [{ CNI_IFNAME: '..' }, /CNI_IFNAME/],
    [{ CNI_CONTAINERID: '-x' }, /CNI_CONTAINERID/],
    [{ CNI_NETNS: 'relative' }, /CNI_NETNS/],
    [{ CNI_NETNS: '/run/netns/../../etc' }, /CNI_NETNS/],
  ];
  for (const [patch, msg] of bad) {
    const env = { ...ok, ...patch };
    for (const k of Object.keys(env)) if ((env as any)[k] === undefined) delete (env as any)[k];
    const e = t.throws(() => parseEnv(env), { instanceOf: CniError });
    t.is(e?.code, 4);
    t.regex(e!.details, msg);
  }
});

test('GC attachments: either key, checked shape', (t) => {
  const c = parseNetConf({ ...base, 'cni.dev/attachments': [{ containerID: 'a', ifname: 'eth0' }] });
  t.deepEqual(c.validAttachments, [{ containerID: 'a', ifname: 'eth0' }]);
  t.is(code(() => parseNetConf({ ...base, 'cni.dev/valid-attachments': [{ containerID: 1 }] })), 7);
});
