// The lab API (the lab's kube-apiserver stand-in) against a real etcd: objects stored under
// /registry/ with the etcd revision as resourceVersion, writes compare-and-swap in etcd,
// @kubernetes/client-node's informer reads lists and watches, Services get ClusterIPs and
// EndpointSlices follow pod labels, a restarted API resumes from etcd (old resourceVersions get
// 410 Gone), a value someone else wrote into /registry/ is skipped, and a node agent does with
// client-node exactly what flannel's kube subnet manager does.
import test from 'ava';
import pino from 'pino';
import { CoreV1Api, KubeConfig, ListWatch, PatchStrategy, setHeaderOptions, Watch, type KubernetesListObject, type V1Node } from '@kubernetes/client-node';
import { startEtcd } from '../helpers/etcd.ts';
import { call, eventually, NODE_TOKENS, openWatch, startLabApi } from '../helpers/lab-api.ts';
import { LabApiClient } from '../../src/lab/client.ts';
import { EtcdKv } from '../../src/lab/api/kv.ts';
import { normalizePod, NETNS_ANNOTATION, type LabPod } from '../../src/lab/workload.ts';
import { runningStatus } from '../../src/lab/pods.ts';
import { InformerSource } from '../../src/k8s/informer.ts';
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';

const log = pino({ level: 'silent' });

function kubeConfig(port: number, token: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'l', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token }], contexts: [{ name: 'l', cluster: 'l', user: 'u' }], currentContext: 'l',
  });
  return kc;
}

async function labPod(c: LabApiClient, name: string, labels: Record<string, string>, ip: string): Promise<LabPod> {
  const p = normalizePod({ metadata: { name, labels }, spec: { nodeName: 'node-1', ports: [8080] } }, ['node-1']);
  p.metadata.annotations = { [NETNS_ANNOTATION]: `knt-k-${name}` };
  const made = await c.putPod(p);
  return c.putPodStatus({ ...made, status: runningStatus(made, ip, '192.168.50.1') });
}

test('etcd store: compare-and-swap writes, skip of values that are not objects', async (t) => {
  const etcd = await startEtcd(t);
  const kv = new EtcdKv(etcd.endpoint);
  t.teardown(() => kv.close());
  const created = await kv.create('/registry/x/a', '1');
  t.true(created.ok);
  t.false((await kv.create('/registry/x/a', '2')).ok, 'create only if absent');
  const rev = created.ok ? created.revision : 0;
  t.false((await kv.update('/registry/x/a', '3', rev - 1)).ok, 'update only from the revision read');
  t.true((await kv.update('/registry/x/a', '3', rev)).ok);
  t.false((await kv.remove('/registry/x/a', rev)).ok);

  const lab = await startLabApi(t, { etcdEndpoint: etcd.endpoint });
  await etcd.put('/registry/services/default/garbage', '{{{ not json');
  const made = await call(lab.port, 'POST', '/api/v1/namespaces/default/services', { metadata: { name: 'web' }, spec: { ports: [{ port: 80 }] } });
  t.is(made.status, 201);
  const stored = JSON.parse((await etcd.get('/registry/services/default/web'))!);
  t.is(stored.spec.clusterIP, '10.254.0.10');
  t.is(stored.metadata.resourceVersion, undefined, 'the revision is not stored in the value');
  const entry = (await etcd.list('/registry/services/default/web'))[0]!;
  t.truthy(entry);
  t.deepEqual((await call(lab.port, 'GET', '/api/v1/services')).body.items.map((s: Service) => s.metadata.name), ['web']);
  t.is((await call(lab.port, 'GET', '/healthz')).status, 200);
});

test('lab API on etcd: list/watch, allocation, derived slices, the informer a proxy runs, restart', async (t) => {
  const etcd = await startEtcd(t);
  const lab = await startLabApi(t, { etcdEndpoint: etcd.endpoint, flannel: { etcdEndpoint: etcd.endpoint, prefix: '/coreos.com/network', networkConfig: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}' } });
  const c = new LabApiClient(lab.socketPath);
  t.true(await c.healthy());
  t.is(await etcd.get('/coreos.com/network/config'), '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', 'flannel network config written for the agents');
  const web = await c.putService({ metadata: { name: 'web', namespace: 'default' }, spec: { type: 'NodePort', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  t.is(web.spec!.clusterIP, '10.254.0.10');
  t.is(web.spec!.ports![0]!.nodePort, 30000);
  await t.throwsAsync(c.putService({ metadata: { name: 'dup', namespace: 'default' }, spec: { clusterIP: '10.254.0.10', ports: [{ port: 1 }] } }), { message: /already allocated/ });

  // A watch from the list's resourceVersion sees the pods' slice grow.
  const list = await c.call<{ metadata: { resourceVersion: string } }>('GET', '/apis/discovery.k8s.io/v1/endpointslices');
  const w = openWatch(lab.port, `/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${list.metadata.resourceVersion}`, NODE_TOKENS['node-1']!);
  t.teardown(() => w.close());
  await labPod(c, 'web-1', { app: 'web' }, '10.244.1.2');
  await labPod(c, 'web-2', { app: 'web' }, '10.244.2.2');
  await labPod(c, 'db-1', { app: 'db' }, '10.244.2.3');
  const ev = await w.until((e) => e.some((x) => (x.object as EndpointSlice).endpoints?.length === 2));
  const last = ev[ev.length - 1]!.object as EndpointSlice;
  t.is(last.metadata.name, 'web-lab');
  t.deepEqual(last.endpoints!.map((e) => e.addresses[0]), ['10.244.1.2', '10.244.2.2']);
  t.deepEqual(last.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
  t.true(ev.every((e) => Number(e.object.metadata.resourceVersion) > Number(list.metadata.resourceVersion)));

  // The informer a node's proxy runs reads the same API, with a node's token.
  const seen = { services: new Map<string, Service>(), slices: new Map<string, EndpointSlice>(), synced: false };
  const inf = new InformerSource({ kubeConfig: kubeConfig(lab.port, NODE_TOKENS['node-1']!), log });
  t.teardown(() => inf.stop());
  await inf.start({
    upsertService: (s) => { seen.services.set(s.metadata.name!, s); }, deleteService: (s) => { seen.services.delete(s.metadata.name!); },
    upsertSlice: (s) => { seen.slices.set(s.metadata.name!, s); }, deleteSlice: (s) => { seen.slices.delete(s.metadata.name!); },
    replaceAll: () => undefined, warn: () => undefined,
    synced: () => { seen.synced = true; },
  });
  t.true(seen.synced);
  t.deepEqual([...seen.services.keys()], ['web']);
  t.deepEqual([...seen.slices.keys()], ['web-lab']);
  const web2 = (await c.pods()).find((p) => p.metadata.name === 'web-2')!;
  const relabeled = await c.putPod({ ...web2, metadata: { ...web2.metadata, labels: { app: 'other' } } });
  t.is(relabeled.status?.podIP, '10.244.2.2', 'a relabel keeps the status');
  await eventually('the slice to shrink', () => seen.slices.get('web-lab')?.endpoints?.length === 1);
  await c.delete('services', 'default', 'web');
  await eventually('the slice to go', () => !seen.slices.has('web-lab'));
  await inf.stop();

  // Restart: state comes back from etcd; allocation continues; a too-old watch gets 410.
  const before = await c.call<{ metadata: { resourceVersion: string } }>('GET', '/api/v1/pods');
  await lab.restart();
  t.deepEqual((await c.pods()).map((p) => p.metadata.name), ['db-1', 'web-1', 'web-2']);
  t.is((await c.putService({ metadata: { name: 'b', namespace: 'default' }, spec: { ports: [{ port: 1 }] } })).spec!.clusterIP, '10.254.0.10', 'the deleted web\'s address is free again');
  const gone = openWatch(lab.port, `/api/v1/pods?watch=true&resourceVersion=${Number(before.metadata.resourceVersion) - 1}`);
  await eventually('the 410', () => gone.ended);
  t.like(gone.events[0], { type: 'ERROR', object: { code: 410, reason: 'Expired' } });
});

// What flannel's kube subnet manager does (and knet's agent in kube mode), through the real
// client: wait on a Node watch until the Node has a pod CIDR, patch flannel's annotations on
// nodes/status with a strategic merge patch, set NetworkUnavailable=False the same way, and
// learn peers from other Nodes' annotations through the watch.
test('a node agent with client-node, as flannel\'s kube subnet manager: podCIDR, annotations, condition, peers', async (t) => {
  const etcd = await startEtcd(t);
  const lab = await startLabApi(t, { etcdEndpoint: etcd.endpoint });
  const node1 = kubeConfig(lab.port, NODE_TOKENS['node-1']!);
  const core = node1.makeApiClient(CoreV1Api);
  const watch = new Watch(node1);
  const nodes = new Map<string, V1Node>();
  const lw = new ListWatch<V1Node>('/api/v1/nodes', watch, () => core.listNode() as Promise<KubernetesListObject<V1Node>>, false);
  lw.on('add', (n) => nodes.set(n.metadata!.name!, n));
  lw.on('update', (n) => nodes.set(n.metadata!.name!, n));
  lw.on('delete', (n) => nodes.delete(n.metadata!.name!));
  t.teardown(() => lw.stop());
  await lw.start();

  // The kubelets register their Nodes (with a Ready condition); the API allocates pod CIDRs.
  for (const n of ['node-1', 'node-2']) {
    const kubelet = kubeConfig(lab.port, NODE_TOKENS[n]!).makeApiClient(CoreV1Api);
    await kubelet.createNode({ body: { metadata: { name: n }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: n === 'node-1' ? '192.168.50.1' : '192.168.50.2' }] } } });
  }
  const cidr = await eventually('node-1\'s pod CIDR', () => nodes.get('node-1')?.spec?.podCIDR);
  t.is(cidr, '10.244.0.0/24');
  t.deepEqual(nodes.get('node-1')!.spec!.podCIDRs, ['10.244.0.0/24']);

  // AcquireLease: a two-way strategic merge patch of the annotations, on the status subresource.
  const prefix = 'flannel.alpha.coreos.com';
  const annotations = {
    [`${prefix}/backend-data`]: '{"VNI":1,"VtepMAC":"5a:1e:9b:3c:00:01"}',
    [`${prefix}/backend-type`]: 'vxlan',
    [`${prefix}/kube-subnet-manager`]: 'true',
    [`${prefix}/public-ip`]: '192.168.50.1',
  };
  const patched = await core.patchNodeStatus({ name: 'node-1', body: { metadata: { annotations } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  t.deepEqual(patched.metadata!.annotations, annotations);
  t.is(patched.spec!.podCIDR, '10.244.0.0/24');
  // CompleteLease: NetworkUnavailable=False merges into the conditions by type.
  const condition = { type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node', lastTransitionTime: new Date(), lastHeartbeatTime: new Date() };
  const ready = await core.patchNodeStatus({ name: 'node-1', body: { status: { conditions: [condition] } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  t.deepEqual(ready.status!.conditions!.map((c) => `${c.type}=${c.status}`), ['Ready=True', 'NetworkUnavailable=False']);
  // A node may not patch another node.
  await t.throwsAsync(core.patchNodeStatus({ name: 'node-2', body: { metadata: { annotations } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch)), { message: /403|forbidden/i });

  // Peers: node-2's agent publishes its annotations; node-1's watch sees them arrive.
  const core2 = kubeConfig(lab.port, NODE_TOKENS['node-2']!).makeApiClient(CoreV1Api);
  await core2.patchNodeStatus({ name: 'node-2', body: { metadata: { annotations: { ...annotations, [`${prefix}/public-ip`]: '192.168.50.2' } } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
  const peer = await eventually('node-2 as a peer', () => {
    const n = nodes.get('node-2');
    return n?.metadata?.annotations?.[`${prefix}/public-ip`] === '192.168.50.2' && n;
  });
  t.is(peer.spec!.podCIDR, '10.244.1.0/24');
  // The peer goes: the watch sees it deleted.
  await call(lab.port, 'DELETE', '/api/v1/nodes/node-2');
  await eventually('node-2 to vanish', () => !nodes.has('node-2'));
  await lw.stop();
  await lab.restart();
  t.like((await call(lab.port, 'GET', '/api/v1/nodes/node-1')).body, { spec: { podCIDR: '10.244.0.0/24' }, metadata: { annotations } }, 'kept across an API restart');
});
