// Bad input through the built plugin: each case gets the spec's error JSON with the right code
// and a non-zero exit, and leaves no link, address or allocation behind.
import test from 'ava';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { execPlugin, installPlugin, ipJsonIn, knetConf, linkNames, netnsPath, tempDir, type PluginCall } from '../helpers/cni.ts';

const records = (dir: string) => readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));

test('bad input table: right error code, nothing left behind', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dataDir = tempDir(t, 'knt-c-data-');
  const files = tempDir(t, 'knt-c-files-');
  const node = await testNetns(t, 'knt-c');
  const pod = await testNetns(t, 'knt-c');
  // A /30 has exactly one pod address (.2): the first ADD takes it, so the pool is then full.
  const conf = knetConf(dataDir, { subnet: '10.77.9.0/30', network: '10.77.0.0/16' });
  const first = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: 'first', netns: netnsPath(pod), ifname: 'eth0' });
  t.is(first.exitCode, 0, first.stdout);
  const other = await testNetns(t, 'knt-c');
  const notNetns = join(files, 'plain-file');
  writeFileSync(notNetns, 'x');
  const wideConf = knetConf(dataDir, { subnet: '10.77.9.0/30', network: '10.77.0.0/16', exclude: [] });

  const add = (over: Partial<PluginCall>): PluginCall => ({ nodeNs: node, command: 'ADD', conf, containerId: 'c1', netns: netnsPath(other), ifname: 'eth0', ...over });
  const cases: [string, PluginCall, number, RegExp][] = [
    ['malformed JSON', add({ conf: '{"cniVersion": "1.1.0", "name": ' }), 6, /decode/],
    ['wrong cniVersion', add({ conf: { ...conf, cniVersion: '0.2.0' } }), 1, /0\.2\.0/],
    ['unknown command', add({ command: 'FROB' as any }), 4, /CNI_COMMAND/],
    ['missing CNI_NETNS', add({ netns: undefined }), 4, /CNI_NETNS/],
    ['missing CNI_CONTAINERID', add({ containerId: undefined }), 4, /CNI_CONTAINERID/],
    ['bad ifname (too long)', add({ ifname: 'eth0-much-too-long' }), 4, /CNI_IFNAME/],
    ['bad ifname (slash)', add({ ifname: 'eth/0' }), 4, /CNI_IFNAME/],
    ['bad container id', add({ containerId: '../../etc' }), 4, /CNI_CONTAINERID/],
    ['netns path with ..', add({ netns: '/run/netns/../netns/x' }), 4, /CNI_NETNS/],
    ['dead netns', add({ netns: '/run/netns/knt-c-never-existed' }), 3, /does not exist/],
    ['netns that is a plain file', add({ netns: notNetns }), 4, /not a network namespace/],
    ['bad config field', add({ conf: { ...conf, mtu: 'big' } }), 7, /mtu/],
    ['full subnet', add({ conf: wideConf }), 100, /no free address/],
    ['subnet file missing', add({ conf: { ...conf, subnet: undefined, subnetFile: join(files, 'subnet.env') } }), 11, /does not exist/],
    ['interface already in the pod', add({ netns: netnsPath(pod), containerId: 'second', conf: knetConf(dataDir, { subnet: '10.77.10.0/24', network: '10.77.0.0/16', bridge: 'kbr1' }) }), 101, /already exists/],
  ];

  const nodeLinksBefore = (await linkNames(node)).sort();
  for (const [what, call, code, msg] of cases) {
    const r = await execPlugin(bin, call);
    t.not(r.exitCode, 0, what);
    t.is(r.json?.code, code, `${what}: ${r.stdout}`);
    t.regex(`${r.json?.msg} ${r.json?.details}`, msg, what);
    t.truthy(r.json?.cniVersion, what);
    t.deepEqual(records(dataDir), ['10.77.9.2'], `${what}: allocations`);
    t.deepEqual(await linkNames(other), ['lo'], `${what}: pod links`);
    t.deepEqual((await linkNames(pod)).sort(), ['eth0', 'lo'], `${what}: first pod untouched`);
    const nodeLinks = (await linkNames(node)).filter((n) => n !== 'kbr1').sort();
    t.deepEqual(nodeLinks, nodeLinksBefore, `${what}: node links`);
  }
  // The failed ADD on a second bridge created that bridge (node-level, shared) but no veth on it.
  const onKbr1 = (await ipJsonIn(node, ['link', 'show', 'master', 'kbr1'])).length;
  t.is(onKbr1, 0);
  t.deepEqual(readdirSync(dataDir).filter((f) => f.startsWith('.knet-tmp') || f.endsWith('.lock')), []);
});

test('STATUS: not ready (50) while the subnet file is missing, ready once it exists', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const files = tempDir(t, 'knt-c-files-');
  const node = await testNetns(t, 'knt-c');
  const subnetFile = join(files, 'subnet.env');
  const conf = { cniVersion: '1.1.0', name: 'knt-c-net', type: 'knet', subnetFile, dataDir: join(files, 'data') };
  const before = await execPlugin(bin, { nodeNs: node, command: 'STATUS', conf });
  t.is(before.exitCode, 1);
  t.is(before.json.code, 50);
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  const after = await execPlugin(bin, { nodeNs: node, command: 'STATUS', conf });
  t.is(after.exitCode, 0, after.stdout);
  t.is(after.stdout, '');
  // And ADD now takes its subnet and MTU from the file.
  const pod = await testNetns(t, 'knt-c');
  const r = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: 'p', netns: netnsPath(pod), ifname: 'eth0' });
  t.is(r.exitCode, 0, r.stdout);
  t.is(r.json.ips[0].address, '10.77.3.2/24');
  t.is(r.json.interfaces[2].mtu, 1450);
  t.is(r.json.interfaces[0].name, 'cni0');
});

test('VERSION lists the supported versions', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const node = await testNetns(t, 'knt-c');
  const r = await execPlugin(bin, { nodeNs: node, command: 'VERSION', conf: { cniVersion: '1.1.0' } });
  t.deepEqual(r.json, { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
});
