// `knet agent --kube-subnet-mgr` end to end in namespaces: two knet nodes and one node set up
// the way flanneld sets up a node (its flannel.1 device, annotations on its Node, routes,
// neighbours and FDB entries to its peers read from their annotations), all reaching each
// other's pods over VXLAN. The API is the fake kube-apiserver, reached from the nodes through
// a relay in the underlay namespace so it can go away for 60 s while pods keep talking.
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot } from '../helpers/netns.ts';
import { FakeApiServer } from '../helpers/fake-apiserver.ts';
import {
  addPod, allPairsPing, healthz, inNs, makeNodes, ping, pingBothWaysUntil, serveApiOnUnderlay, startAgent, subnetEnv, vtepMac, waitFor, type Node,
} from '../helpers/agent-cluster.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { readOverlayState } from '../../src/kernel/overlay-state.ts';

const rootTest = isRoot ? test.serial : test.skip;
const P = 'flannel.alpha.coreos.com';
const FLANNEL_MAC = '0e:f1:a0:00:00:03';

async function kubeCluster(t: ExecutionContext) {
  const { underlay, dir, nodes } = await makeNodes(t, 3);
  const api = new FakeApiServer();
  await api.start({ socket: join(dir, 'api.sock') });
  t.teardown(() => api.close());
  const kubeconfig = await serveApiOnUnderlay(t, underlay, join(dir, 'api.sock'), dir);
  const netConf = join(dir, 'net-conf.json');
  writeFileSync(netConf, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  nodes.forEach((n, i) => api.upsert('nodes', { metadata: { name: n.name }, spec: { podCIDR: `10.244.${i + 1}.0/24`, podCIDRs: [`10.244.${i + 1}.0/24`] }, status: { addresses: [{ type: 'InternalIP', address: n.ip }] } }));
  const start = (n: Node) => startAgent(t, n, ['--kube-subnet-mgr', '--kubeconfig', kubeconfig, '--net-config-path', netConf, '--node-name', n.name]);
  return { underlay, dir, nodes, api, start };
}

/** Node 3 as flanneld makes it: its device, its annotations, and its peers from theirs. */
async function flannelNode(api: FakeApiServer, n: Node, peers: Node[], dir: string): Promise<void> {
  await ipBatch(n.ns, [
    `link add flannel.1 address ${FLANNEL_MAC} type vxlan id 1 local ${n.ip} dev eth0 dstport 8472 nolearning`,
    'link set flannel.1 mtu 1450 up', 'addr add 10.244.3.0/32 dev flannel.1',
  ]);
  const node = api.get('nodes', undefined, n.name);
  node.metadata.annotations = {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${FLANNEL_MAC}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: n.ip,
  };
  api.upsert('nodes', node);
  for (const p of peers) {
    const a = api.get('nodes', undefined, p.name).metadata.annotations;
    const mac = JSON.parse(a[`${P}/backend-data`]).VtepMAC as string;
    const subnet = api.get('nodes', undefined, p.name).spec.podCIDR as string;
    const gw = subnet.replace(/\/\d+$/, '');
    await ipBatch(n.ns, [`neigh replace ${gw} lladdr ${mac} dev flannel.1 nud permanent`, `route replace ${subnet} via ${gw} dev flannel.1 onlink`]);
    await inNs(n.ns, 'bridge', ['fdb', 'append', mac, 'dev', 'flannel.1', 'dst', a[`${P}/public-ip`]]);
  }
  mkdirSync(join(dir, 'node3'), { recursive: true });
  writeFileSync(n.subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
}

rootTest('knet nodes and a flannel-made node reach each other\'s pods; annotations are flannel\'s; a restart keeps everything; a Node going removes it', async (t) => {
  const { dir, nodes, api, start } = await kubeCluster(t);
  const [a, b, f] = nodes as [Node, Node, Node];
  start(a);
  start(b);
  for (const n of [a, b]) {
    // client-node makes a cold agent start take seconds (tens on a loaded machine).
    await waitFor(`annotations of ${n.name}`, async () => api.get('nodes', undefined, n.name).metadata.annotations?.[`${P}/kube-subnet-manager`] === 'true', 90_000);
  }
  await flannelNode(api, f, [a, b], dir);
  for (const n of nodes) await addPod(t, n);
  t.is(subnetEnv(a).get('FLANNEL_SUBNET'), '10.244.1.1/24');
  t.is(subnetEnv(b).get('FLANNEL_SUBNET'), '10.244.2.1/24');
  await allPairsPing(t, nodes);

  const ann = api.get('nodes', undefined, a.name).metadata.annotations;
  t.deepEqual(ann, {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${await vtepMac(a)}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: a.ip,
  });
  t.true(api.patches.every((p) => p.path.endsWith('/status') && p.contentType === 'application/strategic-merge-patch+json'));
  // knet programmed the flannel node from flannel's annotations.
  const aState = await readOverlayState(a.ns, 'flannel.1');
  t.true(aState.fdb.some((e) => e.mac === FLANNEL_MAC && e.dst === f.ip));
  t.is(await healthz(a), '200');

  // Restart: same MAC, same kernel state, the same annotations.
  const before = { env: readFileSync(a.subnetFile, 'utf8'), mac: await vtepMac(a), state: aState };
  await a.agent!.stop();
  const restarted = start(a);
  await waitFor('restarted agent ready', async () => restarted.logs().includes('wrote subnet file') && (await healthz(a)) === '200', 90_000);
  t.is(readFileSync(a.subnetFile, 'utf8'), before.env);
  t.is(await vtepMac(a), before.mac);
  t.deepEqual(await readOverlayState(a.ns, 'flannel.1'), before.state);
  t.deepEqual(api.get('nodes', undefined, a.name).metadata.annotations, ann);
  t.true(await ping(f.pod!, a.podIP!));

  // The flannel node's Node goes: the knet nodes drop it.
  api.remove('nodes', undefined, f.name);
  for (const n of [a, b]) {
    await waitFor(`${n.name} drops ${f.name}`, async () => !(await readOverlayState(n.ns, 'flannel.1')).fdb.some((e) => e.dst === f.ip), 15_000);
  }
  t.true(await ping(a.pod!, b.podIP!));
});

rootTest('the API away for 60 s: no pod packet lost, not ready meanwhile, ready again after', async (t) => {
  const { nodes, api, start } = await kubeCluster(t);
  const [a, b] = nodes as [Node, Node, Node];
  start(a);
  start(b);
  for (const n of [a, b]) await waitFor(`subnet file of ${n.name}`, async () => existsSync(n.subnetFile), 90_000);
  for (const n of [a, b]) await addPod(t, n);
  await allPairsPing(t, [a, b]);
  await waitFor('ready', async () => (await healthz(a)) === '200' && (await healthz(b)) === '200');
  await api.stop();
  const started = Date.now();
  await waitFor('not ready while the API is away', async () => (await healthz(a)) === '503', 20_000);
  const { lost, sent } = await pingBothWaysUntil(a, b, started + 60_000);
  t.is(lost, 0, `${lost} of ${sent} pings lost while the API was away`);
  const { stdout } = await inNs(a.ns, 'curl', ['-s', 'http://127.0.0.1:10260/readyz']);
  t.regex(stdout, /not ready: the Kubernetes API unreachable/);
  await api.start();
  await waitFor('ready again', async () => (await healthz(a)) === '200' && (await healthz(b)) === '200', 30_000);
  t.true(await ping(a.pod!, b.podIP!));
});
