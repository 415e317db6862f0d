// End to end: node namespaces on an "underlay" bridge namespace that also runs etcd; one
// `knet agent` process per node; pods are namespaces on each node's cni0 bridge.
import test, { type ExecutionContext } from 'ava';
import { readFileSync, existsSync } from 'node:fs';
import { isRoot } from '../helpers/netns.ts';
import { startEtcd, type EtcdServer } from '../helpers/etcd.ts';
import {
  HEALTHZ, addPod, allPairsPing, dump, healthz, inNs, makeNodes, ping, pingBothWaysUntil, startAgent as startNodeAgent, subnetEnv, tcpEcho, vtepMac, waitFor,
  type Agent, type Node,
} from '../helpers/agent-cluster.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { readOverlayState } from '../../src/kernel/overlay-state.ts';
import { iptablesSave } from '../../src/kernel/iptables.ts';

const rootTest = isRoot ? test : test.skip;
const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';

interface Cluster { underlay: string; etcd: EtcdServer; nodes: Node[] }

async function makeCluster(t: ExecutionContext, count: number, config: string | null = CONFIG): Promise<Cluster> {
  const { underlay, nodes } = await makeNodes(t, count);
  const etcd = await startEtcd(t, { netns: underlay, host: '192.168.50.254' });
  if (config) await etcd.put(`${PREFIX}/config`, config);
  return { underlay, etcd, nodes };
}

const startAgent = (t: ExecutionContext, c: Cluster, n: Node, extra: string[] = []): Agent => startNodeAgent(t, n, ['--etcd-endpoints', c.etcd.endpoint, ...extra]);

rootTest('three nodes: pods reach each other; restart, lease deletion, hand edits and masquerade', async (t) => {
  const c = await makeCluster(t, 3);
  const [a, b, cc] = c.nodes as [Node, Node, Node];
  for (const n of c.nodes) startAgent(t, c, n);
  for (const n of c.nodes) await addPod(t, n);
  const subnets = c.nodes.map((n) => subnetEnv(n).get('FLANNEL_SUBNET'));
  t.is(new Set(subnets).size, 3, 'three different subnets');
  t.is(subnetEnv(a).get('FLANNEL_MTU'), '1450');
  t.is(subnetEnv(a).get('FLANNEL_NETWORK'), '10.5.0.0/16');
  await allPairsPing(t, c.nodes);
  for (const [s, cl] of [[a, b], [b, cc], [cc, a]] as const) t.is(await tcpEcho(t, s, cl), `hello from ${cl.podIP}\n`);

  // Leases in flannel's exact shape.
  const leases = await c.etcd.list(`${PREFIX}/subnets/`);
  t.is(leases.length, 3);
  for (const l of leases) {
    t.regex(l.key, /^\/coreos\.com\/network\/subnets\/10\.5\.\d+\.0-24$/);
    t.not(l.lease, '0');
    const v = JSON.parse(l.value);
    t.deepEqual(Object.keys(v), ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
    t.deepEqual(Object.keys(v.BackendData), ['VNI', 'VtepMAC']);
  }

  // Masquerade: the underlay has no route to pods, so only a masqueraded ping comes back.
  t.true(await ping(a.pod!, '192.168.50.254'), 'pod reaches the underlay through masquerade');
  t.regex(await iptablesSave({ backend: 'nft', netns: a.ns }, 'nat'), /-A KNET-POSTRTG -m comment --comment "knet masq" -m mark --mark 0x4000\/0x4000 -j RETURN/);
  t.is(await healthz(a), '200');
  const { stdout: metrics } = await inNs(a.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ + 1}/metrics`]);
  t.regex(metrics, /knet_agent_peers_programmed 2/);
  t.regex(metrics, /knet_agent_lease_expiry_timestamp_seconds \d/);

  // Restart node A's agent: same subnet, same VTEP MAC, no entry lost.
  const before = { env: readFileSync(a.subnetFile, 'utf8'), mac: await vtepMac(a), state: await readOverlayState(a.ns, 'flannel.1') };
  await a.agent!.stop();
  const restarted = startAgent(t, c, a);
  await waitFor('restarted agent reconciles', async () => restarted.logs().includes('"how":"reused"') && (await healthz(a)) === '200');
  t.is(readFileSync(a.subnetFile, 'utf8'), before.env);
  t.is(await vtepMac(a), before.mac);
  const afterRestart = await readOverlayState(a.ns, 'flannel.1');
  if (JSON.stringify(afterRestart) !== JSON.stringify(before.state)) await dump(t, [a]);
  t.deepEqual(afterRestart, before.state);
  t.true(await ping(b.pod!, a.podIP!));

  // Hand-delete a route and an FDB entry on A: the next periodic reconcile restores them.
  const cSubnet = subnetEnv(cc).get('FLANNEL_SUBNET')!.replace(/\.1\/24$/, '.0/24');
  const cFdb = before.state.fdb.find((f) => f.dst === cc.ip)!;
  await ipBatch(a.ns, [`route del ${cSubnet}`]);
  await run('bridge', ['-n', a.ns, 'fdb', 'del', cFdb.mac, 'dev', 'flannel.1', 'dst', cc.ip, 'self']);
  await waitFor('route and FDB restored', async () => {
    const s = await readOverlayState(a.ns, 'flannel.1');
    return s.routes.some((r) => r.dst === cSubnet) && s.fdb.some((f) => f.dst === cc.ip);
  }, 10_000);
  t.true(await ping(a.pod!, cc.podIP!));

  // Someone deletes A's own lease while A runs: A puts the same subnet back.
  const aKey = leases.find((l) => JSON.parse(l.value).PublicIP === a.ip)!.key;
  await c.etcd.del(aKey);
  await waitFor('A re-creates its lease', async () => (await c.etcd.get(aKey)) !== null, 10_000);
  t.is(JSON.parse((await c.etcd.get(aKey))!).PublicIP, a.ip);

  // Node C goes away and its lease is deleted: A and B remove C's entries.
  await cc.agent!.stop('SIGKILL');
  const cKey = leases.find((l) => JSON.parse(l.value).PublicIP === cc.ip)!.key;
  await c.etcd.del(cKey);
  for (const n of [a, b]) {
    await waitFor(`${n.ip} drops node C`, async () => {
      const s = await readOverlayState(n.ns, 'flannel.1');
      return !s.routes.some((r) => r.dst === cSubnet) && !s.fdb.some((f) => f.dst === cc.ip) && s.neighbours.length === 1;
    }, 10_000);
  }
  t.true(await ping(a.pod!, b.podIP!), 'A and B still talk');
});

rootTest('config missing at start is retried; etcd stopped for 60 s: traffic flows, not ready, then the lease is renewed', async (t) => {
  const c = await makeCluster(t, 2, null);
  const [a, b] = c.nodes as [Node, Node];
  for (const n of c.nodes) startAgent(t, c, n);
  await waitFor('clear config error', async () => a.agent!.logs().includes('flannel config not found in etcd store'), 15_000);
  t.is(await healthz(a), '503');
  await c.etcd.put(`${PREFIX}/config`, '{"Network":"10.5.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan"}}');
  for (const n of c.nodes) await addPod(t, n);
  t.regex(subnetEnv(a).get('FLANNEL_SUBNET')!, /\/26$/);
  await allPairsPing(t, c.nodes);
  await waitFor('ready', async () => (await healthz(a)) === '200' && (await healthz(b)) === '200');
  const leaseOf = async (n: Node) => (await c.etcd.list(`${PREFIX}/subnets/`)).find((l) => JSON.parse(l.value).PublicIP === n.ip)!;
  const before = await leaseOf(a);

  await c.etcd.stop();
  const started = Date.now();
  await waitFor('not ready while etcd is down', async () => (await healthz(a)) === '503', 15_000);
  const { lost, sent } = await pingBothWaysUntil(a, b, started + 60_000);
  t.is(lost, 0, `${lost} of ${sent} pings lost while etcd was down`);
  t.is(await healthz(a), '503');
  await c.etcd.start();
  await waitFor('ready again', async () => (await healthz(a)) === '200', 20_000);
  const after = await waitFor('lease renewed', async () => {
    const l = await leaseOf(a);
    return l.lease !== before.lease ? l : null;
  });
  t.is(after.key, before.key, 'same subnet');
  // The agent logs after its etcd write returns, so the line may trail the new lease a little.
  await waitFor('renewal logged', async () => a.agent!.logs().includes('renewed subnet lease'), 5_000);
  t.true(await ping(a.pod!, b.podIP!));
});

rootTest('15.19: a node with net.ipv4.ip_forward=0 says so at start and on /readyz; turning it on makes it ready', async (t) => {
  const c = await makeCluster(t, 1);
  const [a] = c.nodes as [Node];
  await inNs(a.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  startAgent(t, c, a, ['--resync-period', '1']);
  await waitFor('the warning', async () => a.agent!.logs().includes('net.ipv4.ip_forward is 0'));
  await waitFor('subnet file', async () => existsSync(a.subnetFile));
  const { stdout } = await inNs(a.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ}/readyz`]);
  t.regex(stdout, /^not ready: net\.ipv4\.ip_forward is 0: this node drops traffic between its pods and other nodes/);
  await inNs(a.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await waitFor('ready', async () => (await healthz(a)) === '200', 15_000);
  t.pass();
});

rootTest('two agents racing for the last free subnet: one gets it, the other reports "out of subnets"', async (t) => {
  const c = await makeCluster(t, 2, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.7.0","Backend":{"Type":"vxlan"}}');
  for (const n of c.nodes) startAgent(t, c, n);
  const outcome = await waitFor('one winner and one clear loser', async () => {
    const won = c.nodes.filter((n) => existsSync(n.subnetFile));
    const lost = c.nodes.filter((n) => n.agent!.logs().includes('out of subnets: every /24 between 10.5.7.0 and 10.5.7.0 in 10.5.0.0/16 is leased or reserved'));
    return won.length === 1 && lost.length === 1 && won[0] !== lost[0] ? { won: won[0]!, lost: lost[0]! } : null;
  });
  const leases = await c.etcd.list(`${PREFIX}/subnets/`);
  t.deepEqual(leases.map((l) => l.key), [`${PREFIX}/subnets/10.5.7.0-24`]);
  t.is(JSON.parse(leases[0]!.value).PublicIP, outcome.won.ip);
  t.is(subnetEnv(outcome.won).get('FLANNEL_SUBNET'), '10.5.7.1/24');
  const { stdout } = await inNs(outcome.lost.ns, 'curl', ['-s', `http://127.0.0.1:${HEALTHZ}/healthz`]);
  t.regex(stdout, /not ready: acquire subnet lease: out of subnets/);
});
