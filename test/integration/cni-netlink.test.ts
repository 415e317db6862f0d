// The rtnetlink adapter in a namespace of its own, over both real transports (the test process
// enters none: the adapter runs in a child started with `ip netns exec`, where its socket lives).
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { ipJsonIn, tempDir } from '../helpers/cni.ts';
import { run } from '../../src/kernel/exec.ts';
import { assertIfName } from '../../src/kernel/netlink/codec.ts';
import { netlinkAddonCandidates } from '../../src/kernel/netlink/node-addon.ts';

const ROOT = resolve(import.meta.dirname, '../..');
export const BUN = join(ROOT, 'node_modules/@oven/bun-linux-x64/bin/bun');

// The same calls under both runtimes; `open` is each runtime's socket in its own namespace.
const body = (open: string) => String.raw`
import { openSync } from 'node:fs';
const [pod] = process.argv.slice(-1);
const nl = ${open}();
await nl.createLink({ name: 'tbr0', kind: 'bridge', mtu: 1400, up: true });
const br = await nl.getLink('tbr0');
const added = [await nl.addAddress4(br.index, '10.80.0.1', 24), await nl.addAddress4(br.index, '10.80.0.1', 24)];
const fd = openSync('/run/netns/' + pod, 'r');
await nl.createVeth({ name: 'tveth0', mtu: 1400, master: br.index, up: true, peer: { name: 'eth0', netnsFd: fd, mtu: 1400 } });
const host = await nl.getLink('tveth0');
await nl.setHairpin(host.index, true);
// The plugin's own route and address encoding, read back through its own dumps.
const dum = 'tdum0';
await nl.createLink({ name: dum, kind: 'bridge', up: true });
const d = await nl.getLink(dum);
await nl.addAddress4(d.index, '10.82.0.5', 24);
const routeAdded = [await nl.addRoute4({ dst: '10.83.0.0', dstLen: 16, gateway: '10.82.0.1', oif: d.index }),
  await nl.addRoute4({ dst: '10.83.0.0', dstLen: 16, gateway: '10.82.0.1', oif: d.index })];
const routes = (await nl.listRoutes4()).filter((r) => r.table === 254).map((r) => r.dst + '/' + r.dstLen + ' ' + r.gateway + ' ' + (r.oif === d.index));
const addrs = (await nl.listAddresses4()).filter((a) => a.index === d.index).map((a) => a.address + '/' + a.prefixLen);
await nl.deleteLink(dum);
const names = (await nl.listLinks()).map((l) => l.name).sort();
const missing = await nl.getLink('nope0');
let exists = '';
try { await nl.createLink({ name: 'tbr0', kind: 'bridge' }); } catch (e) { exists = e.code; }
const shared = { added, names, missing, exists, master: host.master === br.index, hostUp: host.up, routeAdded, routes, addrs };
`;

const NODE_SCRIPT = String.raw`
import { openNodeRtnl } from ${JSON.stringify(join(ROOT, 'src/kernel/netlink/node-addon.ts'))};
import { routeRequest } from ${JSON.stringify(join(ROOT, 'src/kernel/netlink/generic.ts'))};
${body('openNodeRtnl')}
try {
  // Generic route request through node-netlink's codecs (what the overlay agent uses).
  await routeRequest(nl, 24, 0x400 | 0x200, { family: 2, dstLen: 16, table: 254, protocol: 'BOOT', scope: 'UNIVERSE', type: 'UNICAST' },
    { dst: Buffer.from([10, 81, 0, 0]), gateway: Buffer.from([10, 80, 0, 9]), oif: br.index });
  console.log(JSON.stringify(shared));
} finally { nl.close(); }
`;

// Under Bun, also the pod side through a socket made inside the pod's namespace, and what that
// costs the process: every thread must still be in the node's namespace afterwards.
const BUN_SCRIPT = String.raw`
import { readdirSync, statSync } from 'node:fs';
import { openFfiRtnl, openFfiRtnlIn } from ${JSON.stringify(join(ROOT, 'src/kernel/netlink/ffi.ts'))};
${body('openFfiRtnl')}
try {
  const pod = openFfiRtnlIn(fd);
  const eth0 = await pod.getLink('eth0');
  await pod.setLink(eth0.index, { up: true });
  await pod.addAddress4(eth0.index, '10.80.0.2', 24);
  await pod.addRoute4({ dst: '0.0.0.0', dstLen: 0, gateway: '10.80.0.1', oif: eth0.index });
  pod.close();
  for (let i = 0; i < 200; i++) {
    const again = openFfiRtnlIn(fd);
    if (!(await again.getLink('eth0'))) throw new Error('eth0 not seen from the pod socket');
    again.close();
  }
  let badFd = '';
  try { openFfiRtnlIn(987654); } catch (e) { badFd = e.code; }
  const nodeIno = statSync('/run/netns/' + process.argv[process.argv.length - 2]).ino;
  const threads = readdirSync('/proc/self/task').map((tid) => statSync('/proc/self/task/' + tid + '/ns/net').ino);
  const strays = threads.filter((ino) => ino !== nodeIno).length;
  console.log(JSON.stringify({ ...shared, badFd, threads: threads.length, strays }));
} finally { nl.close(); }
`;

async function checkShared(t: ExecutionContext, r: any, node: string, pod: string) {
  t.deepEqual(r.added, [true, false], 'second add reports "already there"');
  t.deepEqual(r.names, ['lo', 'tbr0', 'tveth0']);
  t.is(r.missing, null);
  t.is(r.exists, 'EEXIST');
  t.true(r.master);
  t.true(r.hostUp);
  const [eth0] = await ipJsonIn(pod, ['link', 'show', 'eth0']);
  t.is(eth0.mtu, 1400);
  const [veth] = await ipJsonIn(node, ['-d', 'link', 'show', 'tveth0']);
  t.true(veth.linkinfo.info_slave_data.hairpin);
  t.deepEqual(r.routeAdded, [true, false]);
  t.true(r.routes.includes('10.83.0.0/16 10.82.0.1 true'), JSON.stringify(r.routes));
  t.true(r.routes.includes('10.82.0.0/24  true'), JSON.stringify(r.routes));
  t.deepEqual(r.addrs, ['10.82.0.5/24']);
}

test('Node (node-netlink socket): bridge, veth into another namespace, hairpin, address, route, errors', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const node = await testNetns(t, 'knt-c');
  const pod = await testNetns(t, 'knt-c');
  const { stdout } = await run('ip', ['netns', 'exec', node, 'node', '--import=tsx', '--input-type=module', '-e', NODE_SCRIPT, pod], { env: { ...process.env, NODE_EXTRA_CA_CERTS: '' } });
  const r = JSON.parse(stdout);
  await checkShared(t, r, node, pod);
  const routes = await ipJsonIn(node, ['route', 'show', '10.81.0.0/16']);
  t.is(routes[0]?.gateway, '10.80.0.9');
});

test('Bun (libc through bun:ffi): the same, plus the pod side from a socket made in the pod; no thread stays there', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const node = await testNetns(t, 'knt-c');
  const pod = await testNetns(t, 'knt-c');
  const script = join(tempDir(t, 'knt-c-ffi-'), 'ffi-check.ts');
  writeFileSync(script, BUN_SCRIPT);
  const { stdout } = await run('ip', ['netns', 'exec', node, BUN, 'run', script, node, pod]);
  const r = JSON.parse(stdout);
  await checkShared(t, r, node, pod);
  const [addr] = await ipJsonIn(pod, ['addr', 'show', 'eth0']);
  t.is(addr.operstate, 'UP');
  t.deepEqual(addr.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`), ['10.80.0.2/24']);
  const routes = await ipJsonIn(pod, ['route', 'show', 'default']);
  t.is(routes[0]?.gateway, '10.80.0.1');
  t.is(r.badFd, 'EBADF');
  t.true(r.threads >= 1);
  t.is(r.strays, 0, `${r.strays} of ${r.threads} threads were left in another namespace`);
});

test('interface names and addon search path', (t) => {
  for (const bad of ['', 'a'.repeat(16), 'a/b', 'a b', '..', 'eth0\n']) t.throws(() => assertIfName(bad), undefined, JSON.stringify(bad));
  assertIfName('eth0');
  const c = netlinkAddonCandidates(['/opt/cni/bin'], { KNET_NETLINK_ADDON: '/x/addon.node' });
  t.is(c[0], '/x/addon.node');
  t.is(c[1], '/opt/cni/bin/knet-netlink.node');
  t.true(c.includes('/node_modules/netlink/prebuilds/linux-' + process.arch + '/node.napi.node'));
});
