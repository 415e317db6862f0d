// knet beside Debian's reference plugins: the same config through knet and through
// bridge + host-local gives the same shape of result and of kernel state; and knet works first
// in a chain with the reference portmap after it (a hostPort reaches the pod).
import test from 'ava';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { REF_CNI_DIR, execPlugin, installPlugin, ipJsonIn, netnsPath, probe, tempDir } from '../helpers/cni.ts';
import { run } from '../../src/kernel/exec.ts';

const shapeOf = (r: any) => ({
  cniVersion: r.cniVersion,
  interfaces: r.interfaces.map((i: any) => ({ name: i.name.replace(/^veth[0-9a-f]{8}$/, 'veth*'), mac: /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(i.mac), sandbox: i.sandbox ? 'the pod netns' : null })),
  ips: r.ips.map((i: any) => ({ ...i, address: i.address.replace(/\.\d+\/24$/, '.x/24') })),
  routes: r.routes,
});

async function kernelShape(node: string, pod: string, result: any) {
  const [eth0] = await ipJsonIn(pod, ['addr', 'show', 'eth0']);
  const routes = await ipJsonIn(pod, ['route', 'show']);
  const [host] = await ipJsonIn(node, ['-d', 'link', 'show', result.interfaces[1].name]);
  const [br] = await ipJsonIn(node, ['-d', 'addr', 'show', result.interfaces[0].name]);
  return {
    podMtu: eth0.mtu, podUp: eth0.operstate,
    podAddrs: eth0.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => a.prefixlen),
    podRoutes: routes.map((r: any) => `${r.dst} ${r.gateway ?? ''}`).sort(),
    hostMaster: host.master === result.interfaces[0].name, hostMtu: host.mtu, hostKind: host.linkinfo.info_kind,
    hairpin: host.linkinfo.info_slave_data.hairpin,
    bridgeKind: br.linkinfo.info_kind, bridgeMtu: br.mtu,
    bridgeAddrs: br.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`),
  };
}

test('same config, knet vs bridge+host-local: same result shape and kernel state', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const data = tempDir(t, 'knt-c-data-');
  const [nodeK, nodeR, podK, podR] = await Promise.all([0, 1, 2, 3].map(() => testNetns(t, 'knt-c')));
  const common = { cniVersion: '1.0.0', name: 'knt-c-side', bridge: 'kbr0', mtu: 1400, hairpinMode: true, ipMasq: false };
  const knet = { ...common, type: 'knet', subnet: '10.78.1.0/24', dataDir: `${data}/knet` };
  const ref = { ...common, type: 'bridge', isGateway: true, isDefaultGateway: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.78.1.0/24' }]], dataDir: `${data}/ref` } };
  const k = await execPlugin(bin, { nodeNs: nodeK, command: 'ADD', conf: knet, containerId: 'side', netns: netnsPath(podK), ifname: 'eth0' });
  const r = await execPlugin(`${REF_CNI_DIR}/bridge`, { nodeNs: nodeR, command: 'ADD', conf: ref, containerId: 'side', netns: netnsPath(podR), ifname: 'eth0' });
  t.is(k.exitCode, 0, k.stdout);
  t.is(r.exitCode, 0, r.stdout + r.stderr);
  t.deepEqual(shapeOf(k.json), shapeOf(r.json));
  t.is(k.json.interfaces[2].sandbox, netnsPath(podK));
  t.deepEqual(await kernelShape(nodeK, podK, k.json), await kernelShape(nodeR, podR, r.json));
  // The same first address, too.
  t.is(k.json.ips[0].address, r.json.ips[0].address);
});

test('chained with the reference portmap: a hostPort reaches the pod; DEL in reverse order cleans up', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const data = tempDir(t, 'knt-c-data-');
  const [node, pod, ext] = await Promise.all([0, 1, 2].map(() => testNetns(t, 'knt-c')));
  await run('ip', ['link', 'add', 'knc-up', 'netns', node, 'type', 'veth', 'peer', 'name', 'knc-ext', 'netns', ext]);
  await run('ip', ['-n', node, '-batch', '-'], { input: 'addr add 192.168.78.1/24 dev knc-up\nlink set knc-up up\n' });
  await run('ip', ['-n', ext, '-batch', '-'], { input: 'addr add 192.168.78.2/24 dev knc-ext\nlink set knc-ext up\n' });
  await run('ip', ['netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);

  const net = { cniVersion: '1.0.0', name: 'knt-c-chain' };
  const knet = { ...net, type: 'knet', subnet: '10.78.2.0/24', bridge: 'kbr0', dataDir: data, ipMasq: true, iptablesBackend: 'nft' };
  const mappings = [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }];
  const env = { containerId: 'chain', netns: netnsPath(pod), ifname: 'eth0' };
  const first = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf: knet, ...env });
  t.is(first.exitCode, 0, first.stdout);
  const portmap = { ...net, type: 'portmap', snat: true, runtimeConfig: { portMappings: mappings }, prevResult: first.json };
  const second = await execPlugin(`${REF_CNI_DIR}/portmap`, { nodeNs: node, command: 'ADD', conf: portmap, ...env });
  t.is(second.exitCode, 0, second.stdout + second.stderr);
  t.deepEqual(second.json.ips, first.json.ips, 'portmap passes knet\'s result through');

  const podIp = first.json.ips[0].address.split('/')[0];
  const out = await probe({ port: 80, attempts: 10, timeout: 5, servers: [{ ns: pod, ip: podIp }], probes: [{ ns: ext, dst: '192.168.78.1', port: 8080, expect: podIp, icmp: false }] });
  t.true(out.results[0]!.tcp, 'ext -> node:8080 -> pod:80');

  // CHECK through the chain, then DEL in reverse order with the final result.
  const final = second.json;
  t.is((await execPlugin(bin, { nodeNs: node, command: 'CHECK', conf: { ...knet, prevResult: final }, ...env })).exitCode, 0);
  const d1 = await execPlugin(`${REF_CNI_DIR}/portmap`, { nodeNs: node, command: 'DEL', conf: { ...portmap, prevResult: final }, ...env });
  t.is(d1.exitCode, 0, d1.stdout + d1.stderr);
  const d2 = await execPlugin(bin, { nodeNs: node, command: 'DEL', conf: { ...knet, prevResult: final }, ...env });
  t.is(d2.exitCode, 0, d2.stdout);
  t.deepEqual((await ipJsonIn(pod, ['link', 'show'])).map((l: any) => l.ifname), ['lo']);
});
