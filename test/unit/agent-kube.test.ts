// `knet agent --kube-subnet-mgr` against the fake kube-apiserver (test/helpers/fake-apiserver.ts)
// through @kubernetes/client-node, with in-memory kernels and a manual clock: the subnet is the
// Node's podCIDR, the annotations and the kind of patch are flannel's, peers (knet's and
// flannel's) come and go with Nodes, a restart changes nothing, a node without a podCIDR waits,
// and the API going away leaves the data plane as it is.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FakeApiServer } from '../helpers/fake-apiserver.ts';
import { FakeClock } from '../helpers/fake-clock.ts';
import { startTestAgent, type TestAgent } from '../helpers/agent-harness.ts';
import { KubeLeaseSource } from '../../src/agent/kube-source.ts';
import { loadKubeConfig } from '../../src/k8s/kubeconfig.ts';
import type { FakeOvsGreKernel, FakeVxlanKernel } from '../helpers/fake-overlay-kernel.ts';

const P = 'flannel.alpha.coreos.com';
const VXLAN_CONF = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';

async function api(t: ExecutionContext): Promise<FakeApiServer> {
  const a = new FakeApiServer();
  await a.start();
  t.teardown(() => a.close());
  return a;
}

function netConf(t: ExecutionContext, text = VXLAN_CONF): string {
  const dir = mkdtempSync(join(tmpdir(), 'knet-netconf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'net-conf.json');
  writeFileSync(path, text);
  return path;
}

function node(name: string, podCIDR: string | null, annotations: Record<string, string> = {}, ip = '192.168.50.1') {
  return {
    metadata: { name, annotations },
    spec: podCIDR ? { podCIDR, podCIDRs: [podCIDR] } : {},
    status: { addresses: [{ type: 'InternalIP', address: ip }] },
  };
}

/** A node the way flannel itself annotates it. */
function flannelNode(name: string, podCIDR: string, ip: string, mac: string) {
  return node(name, podCIDR, {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: ip,
  }, ip);
}

interface Setup { clock: FakeClock; server: FakeApiServer; conf: string }

function startKubeAgent(t: ExecutionContext, s: Setup, name: string, ip: string, o: { env?: Record<string, string>; vxlan?: FakeVxlanKernel; ovs?: FakeOvsGreKernel; subnetFile?: string; nodeName?: boolean } = {}): TestAgent {
  const source = new KubeLeaseSource({
    kubeConfig: loadKubeConfig(s.server.kubeconfig()), netConfPath: s.conf, setNodeNetworkUnavailable: true, clock: s.clock,
    log: pino({ level: 'silent' }), env: o.env ?? {}, ...(o.nodeName === false ? {} : { nodeName: name }),
  });
  return startTestAgent(t, { clock: s.clock, source, ip, ...(o.vxlan ? { vxlan: o.vxlan } : {}), ...(o.ovs ? { ovs: o.ovs } : {}), ...(o.subnetFile ? { subnetFile: o.subnetFile } : {}) });
}

const ready = (a: TestAgent) => a.agent.readiness().ready;
const until = (clock: FakeClock, cond: () => boolean, ms = 120_000) => clock.advanceUntil(cond, ms, 200);

test('the subnet is the Node\'s podCIDR; flannel\'s annotations go on with a strategic merge patch of nodes/status', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)), a.agent.readiness().reason);
  t.is(a.subnetEnv()!.get('FLANNEL_SUBNET'), '10.244.1.1/24');
  t.is(a.subnetEnv()!.get('FLANNEL_NETWORK'), '10.244.0.0/16');
  const mac = a.vxlan.devices.get('flannel.1')!.mac;
  const got = server.get('nodes', undefined, 'n1')!;
  t.deepEqual(got.metadata.annotations, {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: '192.168.50.1',
  });
  const annotate = server.patches.find((p) => JSON.stringify(p.body).includes('annotations'))!;
  t.is(annotate.path, '/api/v1/nodes/n1/status');
  t.is(annotate.contentType, 'application/strategic-merge-patch+json');
  t.deepEqual(Object.keys(annotate.body as object), ['metadata'], 'annotations only, as flannel\'s two-way patch');
  const cond = (got.status.conditions as Array<Record<string, string>>).find((c) => c.type === 'NetworkUnavailable')!;
  t.like(cond, { status: 'False', reason: 'KnetIsUp' });
  t.deepEqual(got.spec, { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] }, 'the spec is never touched');
});

test('a Node without a podCIDR waits (a clear log line, not ready) and goes on once one is assigned', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', null));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => a.logs.some((l) => l.msg === 'acquire subnet lease: waiting')));
  const line = a.logs.find((l) => l.msg === 'acquire subnet lease: waiting')!;
  t.regex(String(line.reason), /node "n1" has no podCIDR yet \(spec\.podCIDR is empty\): waiting for kube-controller-manager/);
  t.regex(a.agent.readiness().reason, /no podCIDR yet/);
  await s.clock.advance(20_000);
  t.is(a.subnetEnv(), null);
  server.upsert('nodes', node('n1', '10.244.7.0/24'));
  t.true(await until(s.clock, () => ready(a)), a.agent.readiness().reason);
  t.is(a.subnetEnv()!.get('FLANNEL_SUBNET'), '10.244.7.1/24');
});

test('peers appear and vanish with Nodes; a node flannel annotated is a peer like any other', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  server.upsert('nodes', flannelNode('flannel-2', '10.244.2.0/24', '192.168.50.2', '0e:00:00:00:00:02'));
  server.upsert('nodes', node('not-ours', '10.244.9.0/24'));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)));
  const routes = () => a.vxlan.state.routes.map((r) => `${r.dst} via ${r.via}`).sort();
  t.deepEqual(routes(), ['10.244.2.0/24 via 10.244.2.0']);
  t.deepEqual(a.vxlan.state.fdb, [{ mac: '0e:00:00:00:00:02', dst: '192.168.50.2', dev: 'flannel.1' }]);
  t.deepEqual(a.vxlan.state.neighbours, [{ ip: '10.244.2.0', mac: '0e:00:00:00:00:02', dev: 'flannel.1' }]);

  server.upsert('nodes', flannelNode('flannel-3', '10.244.3.0/24', '192.168.50.3', '0e:00:00:00:00:03'));
  t.true(await until(s.clock, () => routes().length === 2));
  // A node whose annotations went (flannel uninstalled there) is no peer any more.
  const three = server.get('nodes', undefined, 'flannel-3')!;
  delete three.metadata.annotations[`${P}/kube-subnet-manager`];
  server.upsert('nodes', three);
  t.true(await until(s.clock, () => routes().length === 1));
  server.remove('nodes', undefined, 'flannel-2');
  t.true(await until(s.clock, () => routes().length === 0 && a.vxlan.state.fdb.length === 0));
  // Garbage in a peer's annotations is skipped, and said once.
  server.upsert('nodes', node('bad', '10.244.4.0/24', { [`${P}/kube-subnet-manager`]: 'true', [`${P}/public-ip`]: '192.168.50.4', [`${P}/backend-type`]: 'vxlan', [`${P}/backend-data`]: '{nope' }));
  await s.clock.advance(30_000);
  t.is(a.logs.filter((l) => l.msg === 'ignoring malformed lease' && l.key === 'bad').length, 1);
  t.regex(String(a.logs.find((l) => l.key === 'bad')!.err), /backend-data is not JSON/);
  t.true(ready(a));
});

test('a Node with fields of the wrong type is one malformed peer: the list goes on, the others are peers', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  server.upsert('nodes', flannelNode('flannel-2', '10.244.2.0/24', '192.168.50.2', '0e:00:00:00:00:02'));
  const odd = flannelNode('odd', '10.244.5.0/24', '192.168.50.5', '0e:00:00:00:00:05');
  server.upsert('nodes', {
    ...odd, metadata: { ...odd.metadata, creationTimestamp: { toString: 1 } }, spec: { podCIDRs: 'not a list' }, status: { addresses: 'nope', conditions: 7 },
  } as unknown as typeof odd);
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)));
  t.deepEqual(a.vxlan.state.routes.map((r) => `${r.dst} via ${r.via}`), ['10.244.2.0/24 via 10.244.2.0']);
  await s.clock.advance(5_000);
  t.regex(String(a.logs.find((l) => l.msg === 'ignoring malformed lease' && l.key === 'odd')?.err), /spec\.podCIDRs is not a list/);
});

test('a restart keeps the VTEP MAC, the subnet and the annotations, and patches nothing but the condition', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  server.upsert('nodes', flannelNode('n2', '10.244.2.0/24', '192.168.50.2', '0e:00:00:00:00:02'));
  const first = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(first)));
  const before = { annotations: server.get('nodes', undefined, 'n1')!.metadata.annotations, state: JSON.stringify(first.vxlan.state), mac: first.vxlan.devices.get('flannel.1')!.mac };
  await first.agent.stop();
  // The node rebooted: the device is gone; the MAC comes back from the annotation.
  first.vxlan.devices.clear();
  const patchesBefore = server.patches.length;
  const appliedBefore = first.vxlan.applied.length;
  const second = startKubeAgent(t, s, 'n1', '192.168.50.1', { vxlan: first.vxlan, subnetFile: first.subnetFile });
  t.true(await until(s.clock, () => ready(second)), second.agent.readiness().reason);
  t.is(second.vxlan.devices.get('flannel.1')!.mac, before.mac);
  t.deepEqual(server.get('nodes', undefined, 'n1')!.metadata.annotations, before.annotations);
  t.is(JSON.stringify(second.vxlan.state), before.state);
  t.true(second.vxlan.applied.slice(appliedBefore).every((d) => d.remove.routes.length + d.remove.fdb.length + d.remove.neighbours.length === 0), 'nothing removed on the way (no reconcile against half a list)');
  const since = server.patches.slice(patchesBefore);
  t.deepEqual(since.map((p) => Object.keys((p.body as { status?: object }).status ?? {})), [['conditions']], 'only the NetworkUnavailable condition');
});

test('the API away for minutes: not ready, nothing removed from the kernel; changes made meanwhile arrive after', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  server.upsert('nodes', flannelNode('n2', '10.244.2.0/24', '192.168.50.2', '0e:00:00:00:00:02'));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)));
  const state = JSON.stringify(a.vxlan.state);
  const applied = a.vxlan.applied.length;
  await server.stop();
  t.true(await until(s.clock, () => !ready(a)));
  t.regex(a.agent.readiness().reason, /^the Kubernetes API unreachable/);
  await s.clock.advance(60_000);
  t.is(JSON.stringify(a.vxlan.state), state);
  t.is(a.vxlan.applied.length, applied);
  server.upsert('nodes', flannelNode('n3', '10.244.3.0/24', '192.168.50.3', '0e:00:00:00:00:03'));
  await server.start();
  t.true(await until(s.clock, () => ready(a) && a.vxlan.state.routes.length === 2), a.agent.readiness().reason);
});

test('this node\'s annotations removed by hand are put back', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)));
  const n1 = server.get('nodes', undefined, 'n1')!;
  const want = n1.metadata.annotations;
  n1.metadata.annotations = { unrelated: 'x' };
  server.upsert('nodes', n1);
  t.true(await until(s.clock, () => server.get('nodes', undefined, 'n1')!.metadata.annotations[`${P}/kube-subnet-manager`] === 'true'));
  t.deepEqual(server.get('nodes', undefined, 'n1')!.metadata.annotations, { unrelated: 'x', ...want });
  t.true(ready(a));
});

test('public-ip-overwrite is what the node publishes; a podCIDR outside the Network is refused with flannel\'s words', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24', { [`${P}/public-ip-overwrite`]: '203.0.113.7' }));
  server.upsert('nodes', node('n2', '10.99.2.0/24'));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)));
  t.is(server.get('nodes', undefined, 'n1')!.metadata.annotations[`${P}/public-ip`], '203.0.113.7');
  await s.clock.advance(30_000);
  t.true(ready(a), 'the overwritten address is not mistaken for a takeover');
  const b = startKubeAgent(t, s, 'n2', '192.168.50.2');
  t.true(await until(s.clock, () => /doesn't contain/.test(b.agent.readiness().reason)));
  t.regex(b.agent.readiness().reason, /subnet "10\.244\.0\.0\/16" specified in the flannel net config doesn't contain "10\.99\.2\.0\/24" PodCIDR of the "n2" node/);
});

test('the node name comes from the pod (POD_NAME, POD_NAMESPACE) when NODE_NAME is not set', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t) };
  server.upsert('nodes', node('n1', '10.244.1.0/24'));
  server.addPod('kube-system', 'knet-abcde', 'n1');
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1', { nodeName: false, env: { POD_NAME: 'knet-abcde', POD_NAMESPACE: 'kube-system' } });
  t.true(await until(s.clock, () => ready(a)), a.agent.readiness().reason);
  t.true(server.requests.includes('get pods/kube-system/knet-abcde'));
  const lost = startKubeAgent(t, s, 'n1', '192.168.50.1', { nodeName: false, env: {} });
  t.true(await until(s.clock, () => /the node name is unknown/.test(lost.agent.readiness().reason)));
});

test('ovs-gre on the kube subnet manager: backend-type ovs-gre, backend-data null, flows to peers', async (t) => {
  const server = await api(t);
  const s = { clock: new FakeClock(), server, conf: netConf(t, '{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre","DatapathType":"netdev"}}') };
  server.upsert('nodes', node('n1', '10.246.1.0/24'));
  server.upsert('nodes', node('n2', '10.246.2.0/24', { [`${P}/kube-subnet-manager`]: 'true', [`${P}/backend-type`]: 'ovs-gre', [`${P}/backend-data`]: 'null', [`${P}/public-ip`]: '192.168.50.2' }));
  const a = startKubeAgent(t, s, 'n1', '192.168.50.1');
  t.true(await until(s.clock, () => ready(a)), a.agent.readiness().reason);
  t.like(server.get('nodes', undefined, 'n1')!.metadata.annotations, { [`${P}/backend-type`]: 'ovs-gre', [`${P}/backend-data`]: 'null', [`${P}/public-ip`]: '192.168.50.1' });
  t.true(a.ovs.flows.get('obr0')!.some((f) => f.includes('nw_dst=10.246.2.0/24') && f.includes('192.168.50.2->tun_dst')));
  t.is(a.subnetEnv()!.get('FLANNEL_MTU'), '1458');
});
