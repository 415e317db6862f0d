// The lab API over HTTP on an in-memory store (no etcd, fast): kube-apiserver's status codes
// and Status errors, tokens and node authorization, the status subresource, Node pod CIDRs
// from the cluster CIDR, namespaces, the derived endpoints, watches with selectors and their
// bounds, bounded bodies, and stored values that are not objects.
import test from 'ava';
import { request } from 'node:http';
import { connect } from 'node:net';
import { call, eventually, NODE_TOKENS, openWatch, startLabApi } from '../helpers/lab-api.ts';
import { MemoryKv } from '../../src/lab/api/kv.ts';

const SVC = '/api/v1/namespaces/default/services';
const web = (extra: Record<string, unknown> = {}) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', labels: { app: 'web' } }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }, ...extra });

test('create, get, replace, patch, delete: codes and Status errors as kube-apiserver answers', async (t) => {
  const { port } = await startLabApi(t);
  const created = await call(port, 'POST', SVC, web());
  t.is(created.status, 201);
  t.is(created.body.spec.clusterIP, '10.254.0.10');
  t.like(created.body.metadata, { name: 'web', namespace: 'default' });
  t.truthy(created.body.metadata.uid);
  const dup = await call(port, 'POST', SVC, web());
  t.like(dup.body, { kind: 'Status', code: 409, reason: 'AlreadyExists', message: 'services "web" already exists', details: { name: 'web', kind: 'services' } });
  const missing = await call(port, 'GET', `${SVC}/nope`);
  t.like(missing.body, { code: 404, reason: 'NotFound', message: 'services "nope" not found' });
  t.is((await call(port, 'GET', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/nope')).body.message, 'endpointslices.discovery.k8s.io "nope" not found');

  // Replace with the current resourceVersion works; with a stale one it is a Conflict.
  const rv = created.body.metadata.resourceVersion;
  const replaced = await call(port, 'PUT', `${SVC}/web`, { ...created.body, spec: { ...created.body.spec, ports: [{ name: 'http', port: 80, targetPort: 9090 }] } });
  t.is(replaced.status, 200);
  t.is(replaced.body.spec.clusterIP, '10.254.0.10');
  const stale = await call(port, 'PUT', `${SVC}/web`, { ...created.body, metadata: { ...created.body.metadata, resourceVersion: rv } });
  t.like(stale.body, { code: 409, reason: 'Conflict', message: 'Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again' });
  // Replace without a ClusterIP keeps it; changing it is invalid.
  t.is((await call(port, 'PUT', `${SVC}/web`, web())).body.spec.clusterIP, '10.254.0.10');
  const moved = await call(port, 'PUT', `${SVC}/web`, web({ spec: { clusterIP: '10.254.0.99', ports: [{ port: 80 }] } }));
  t.like(moved.body, { code: 422, reason: 'Invalid', details: { name: 'web', kind: 'Service', causes: [{ field: 'spec.clusterIP', reason: 'FieldValueInvalid' }] } });

  // 422 names the field; 400 for a body that is not JSON, a wrong JSON type, a kind mismatch.
  const bad = await call(port, 'POST', SVC, { metadata: { name: 'bad' }, spec: { ports: [{ port: 0 }] } });
  t.is(bad.status, 422);
  t.regex(bad.body.message, /^Service "bad" is invalid: \[spec\.ports\[0\]\.port: Invalid value: 0: must be between 1 and 65535, inclusive, spec\.ports\[0\]\.targetPort: /);
  t.deepEqual(bad.body.details.causes.map((c: any) => c.field), ['spec.ports[0].port', 'spec.ports[0].targetPort']);
  const garbage = await call(port, 'POST', SVC, '{"metadata": {');
  t.like(garbage.body, { code: 400, reason: 'BadRequest' });
  t.regex(garbage.body.message, /not valid JSON/);
  const typed = await call(port, 'POST', SVC, { metadata: { name: 'typed' }, spec: { ports: { port: 80 } } });
  t.is(typed.status, 400);
  t.regex(typed.body.message, /^Service in version "v1" cannot be handled as a Service: json: cannot unmarshal object into field spec\.ports/);
  t.is((await call(port, 'POST', SVC, { kind: 'Pod', metadata: { name: 'x' } })).status, 400);
  t.is((await call(port, 'POST', SVC, 'null')).status, 400);

  // Unknown fields: refused under Strict (what kubectl sends), a warning by default.
  const strict = await call(port, 'POST', `${SVC}?fieldValidation=Strict`, web({ metadata: { name: 'strict' }, spex: {} }));
  t.like(strict.body, { code: 400, message: 'strict decoding error: unknown field "spex"' });
  const warned = await call(port, 'POST', SVC, web({ metadata: { name: 'warned' }, spex: {} }));
  t.is(warned.status, 201);
  t.is(warned.headers.warning, '299 - "unknown field \\"spex\\""');
  t.is((await call(port, 'POST', `${SVC}?fieldValidation=Loose`, web())).status, 400);

  // Patches of each type; a patch that breaks the object is 422; an unknown patch type 415.
  const strategic = await call(port, 'PATCH', `${SVC}/web`, { spec: { ports: [{ port: 80, targetPort: 7000 }] } }, { contentType: 'application/strategic-merge-patch+json' });
  t.deepEqual(strategic.body.spec.ports, [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 7000 }]);
  const merge = await call(port, 'PATCH', `${SVC}/web`, { metadata: { labels: { tier: 'front' } } }, { contentType: 'application/merge-patch+json' });
  t.deepEqual(merge.body.metadata.labels, { app: 'web', tier: 'front' });
  const json = await call(port, 'PATCH', `${SVC}/web`, [{ op: 'replace', path: '/spec/type', value: 'NodePort' }], { contentType: 'application/json-patch+json' });
  t.is(json.body.spec.ports[0].nodePort, 30000);
  t.is((await call(port, 'PATCH', `${SVC}/web`, { spec: { type: 'Nope' } }, { contentType: 'application/merge-patch+json' })).status, 422);
  t.is((await call(port, 'PATCH', `${SVC}/web`, {}, { contentType: 'application/apply-patch+yaml' })).status, 415);
  // A media type named like an Object.prototype member is no patch type.
  t.is((await call(port, 'PATCH', `${SVC}/web`, {}, { contentType: 'constructor' })).status, 415);
  const proto = await call(port, 'POST', SVC, 'k8s\0', { contentType: 'application/vnd.kubernetes.protobuf' });
  t.is(proto.status, 415);
  t.regex(proto.body.message, /protobuf only for Namespaces and Services/);

  // Dry run stores nothing; generateName makes a name.
  t.is((await call(port, 'POST', `${SVC}?dryRun=All`, web({ metadata: { name: 'dry' } }))).status, 201);
  t.is((await call(port, 'GET', `${SVC}/dry`)).status, 404);
  const generated = await call(port, 'POST', SVC, web({ metadata: { generateName: 'gen-' } }));
  t.regex(generated.body.metadata.name, /^gen-[a-z0-9]{5}$/);

  // Delete returns the object; preconditions are checked; then it is gone.
  const pre = await call(port, 'DELETE', `${SVC}/web`, { preconditions: { uid: 'not-it' } });
  t.is(pre.status, 409);
  const del = await call(port, 'DELETE', `${SVC}/web`);
  t.is(del.status, 200);
  t.is(del.body.metadata.name, 'web');
  t.is((await call(port, 'GET', `${SVC}/web`)).status, 404);
  t.is((await call(port, 'DELETE', `${SVC}/web`)).status, 404);
  t.is((await call(port, 'PUT', `${SVC}/web`, web())).status, 404, 'PUT does not create Services');
  t.is((await call(port, 'PUT', '/api/v1/namespaces/default/endpoints/x', { metadata: { name: 'x' } })).status, 201, 'it does create Endpoints');
  t.is((await call(port, 'POST', `${SVC}/web`, web())).status, 405);
  t.is((await call(port, 'GET', '/apis/apps/v1/deployments')).status, 404);
});

test('tokens: 401 without one, nodes read everything and write only their own Node; the local socket is trusted', async (t) => {
  const { port, socketPath } = await startLabApi(t);
  t.is((await call(port, 'GET', '/version', undefined, { token: null })).status, 200);
  t.is((await call(port, 'GET', '/healthz', undefined, { token: null })).status, 200);
  const anon = await call(port, 'GET', SVC, undefined, { token: null });
  t.like(anon.body, { code: 401, reason: 'Unauthorized' });
  t.is((await call(port, 'DELETE', `${SVC}/x`, undefined, { token: 'forged' })).status, 401);
  const n1 = NODE_TOKENS['node-1']!;
  t.is((await call(port, 'GET', SVC, undefined, { token: n1 })).status, 200);
  const write = await call(port, 'POST', SVC, web(), { token: n1 });
  t.like(write.body, { code: 403, reason: 'Forbidden' });
  t.regex(write.body.message, /User "system:node:node-1" cannot create resource "services"/);
  t.is((await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-1' } }, { token: n1 })).status, 201);
  t.is((await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-2' } }, { token: n1 })).status, 403);
  t.is((await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-2' } })).status, 201);
  const own = await call(port, 'PATCH', '/api/v1/nodes/node-1/status', { metadata: { annotations: { a: 'b' } } }, { token: n1, contentType: 'application/strategic-merge-patch+json' });
  t.is(own.status, 200);
  t.is((await call(port, 'PATCH', '/api/v1/nodes/node-2/status', { metadata: { annotations: { a: 'b' } } }, { token: n1, contentType: 'application/strategic-merge-patch+json' })).status, 403);
  const local = await new Promise<number>((resolve, reject) => {
    const req = request({ socketPath, method: 'DELETE', path: '/api/v1/nodes/node-2' }, (res) => { res.resume(); resolve(res.statusCode!); });
    req.on('error', reject);
    req.end();
  });
  t.is(local, 200);
});

test('Nodes: pod CIDRs from the cluster CIDR like kube-controller-manager, kept across a restart; status subresource semantics', async (t) => {
  const lab = await startLabApi(t);
  const { port } = lab;
  const podCIDR = async (name: string) => (await eventually(`${name}'s podCIDR`, async () => (await call(lab.port, 'GET', `/api/v1/nodes/${name}`)).body.spec?.podCIDR));
  const list = await call(port, 'GET', '/api/v1/nodes');
  const watch = openWatch(port, `/api/v1/nodes?watch=true&resourceVersion=${list.body.metadata.resourceVersion}`);
  t.teardown(() => watch.close());
  await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-1' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.50.1' }] } });
  await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-2' } });
  t.is(await podCIDR('node-1'), '10.244.0.0/24');
  t.is(await podCIDR('node-2'), '10.244.1.0/24');
  // A watcher sees the Node added without a pod CIDR, then given one (as an agent waits for it).
  const seen = await watch.until((ev) => ev.some((e) => e.type === 'MODIFIED' && e.object.metadata.name === 'node-2' && e.object.spec.podCIDR));
  t.deepEqual(seen.filter((e) => e.object.metadata.name === 'node-1').map((e) => [e.type, e.object.spec?.podCIDRs ?? []]), [['ADDED', []], ['MODIFIED', ['10.244.0.0/24']]]);
  t.deepEqual((await call(port, 'GET', '/api/v1/nodes/node-1')).body.status.addresses, [{ type: 'InternalIP', address: '192.168.50.1' }], 'a Node may be created with its status');
  // Released on delete, but the next block is handed out first.
  await call(port, 'DELETE', '/api/v1/nodes/node-1');
  await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-3' } });
  t.is(await podCIDR('node-3'), '10.244.2.0/24');
  // A Node created with a pod CIDR keeps it; the pod CIDR is set once.
  await call(port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-9' }, spec: { podCIDR: '10.244.9.0/24' } });
  t.is(await podCIDR('node-9'), '10.244.9.0/24');
  const change = await call(port, 'PATCH', '/api/v1/nodes/node-9', { spec: { podCIDR: '10.244.8.0/24', podCIDRs: ['10.244.8.0/24'] } }, { contentType: 'application/merge-patch+json' });
  t.like(change.body, { code: 422, details: { causes: [{ field: 'spec.podCIDRs', reason: 'FieldValueForbidden' }] } });
  // Restart: what the Nodes carry is in use; the search starts at the beginning again.
  await lab.restart();
  await call(lab.port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-4' } });
  t.is(await podCIDR('node-4'), '10.244.0.0/24');
  await call(lab.port, 'POST', '/api/v1/nodes', { metadata: { name: 'node-5' } });
  t.is(await podCIDR('node-5'), '10.244.3.0/24');
  // nodes/status changes status and metadata, never spec; the main resource never changes status.
  const viaStatus = await call(lab.port, 'PUT', '/api/v1/nodes/node-5/status', { metadata: { name: 'node-5', annotations: { x: 'y' } }, spec: { podCIDR: '10.244.7.0/24' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
  t.is(viaStatus.status, 200);
  t.like(viaStatus.body, { metadata: { annotations: { x: 'y' } }, spec: { podCIDR: '10.244.3.0/24' }, status: { conditions: [{ type: 'Ready', status: 'True' }] } });
  const viaMain = await call(lab.port, 'PATCH', '/api/v1/nodes/node-5', { status: { conditions: [] }, spec: { unschedulable: true } }, { contentType: 'application/merge-patch+json' });
  t.deepEqual(viaMain.body.status.conditions, [{ type: 'Ready', status: 'True' }]);
  t.true(viaMain.body.spec.unschedulable);
  t.is((await call(lab.port, 'GET', '/api/v1/services/status')).status, 404);
  t.is((await call(lab.port, 'PUT', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/x/status', {})).status, 404, 'EndpointSlices have no status');
});

test('namespaces: objects need one; deleting one empties it; the default ones stay', async (t) => {
  const { port } = await startLabApi(t);
  t.deepEqual((await call(port, 'GET', '/api/v1/namespaces')).body.items.map((n: any) => n.metadata.name), ['default', 'kube-node-lease', 'kube-public', 'kube-system']);
  const nowhere = await call(port, 'POST', '/api/v1/namespaces/demo/services', web());
  t.like(nowhere.body, { code: 404, message: 'namespaces "demo" not found' });
  await call(port, 'POST', '/api/v1/namespaces', { metadata: { name: 'demo' } });
  t.is((await call(port, 'POST', '/api/v1/namespaces/demo/services', web())).status, 201);
  const del = await call(port, 'DELETE', '/api/v1/namespaces/demo');
  t.is(del.body.status.phase, 'Terminating');
  await eventually('the namespace to go', async () => (await call(port, 'GET', '/api/v1/namespaces/demo')).status === 404);
  t.deepEqual((await call(port, 'GET', '/api/v1/namespaces/demo/services')).body.items, []);
  t.like((await call(port, 'DELETE', '/api/v1/namespaces/default')).body, { code: 403, message: 'namespaces "default" is forbidden: this namespace may not be deleted' });
});

test('controllers: EndpointSlices and Endpoints from pod labels; hand-kept Endpoints mirrored; finalizers hold a delete', async (t) => {
  const { port } = await startLabApi(t);
  await call(port, 'POST', SVC, web());
  const pod = (name: string, ip: string, labels = { app: 'web' }) => ({ metadata: { name, labels }, spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'x', ports: [{ containerPort: 8080 }] }] }, status: { podIP: ip, podIPs: [{ ip }] } });
  for (const [n, ip] of [['web-1', '10.244.0.2'], ['web-2', '10.244.1.2']] as const) {
    await call(port, 'POST', '/api/v1/namespaces/default/pods', pod(n, ip));
    const r = await call(port, 'PUT', `/api/v1/namespaces/default/pods/${n}/status`, pod(n, ip));
    t.is(r.body.status.podIP, ip, 'the status subresource sets the pod address');
  }
  const slice = await eventually('the derived slice', async () => {
    const s = (await call(port, 'GET', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-lab')).body;
    return s.endpoints?.length === 2 && s;
  });
  t.deepEqual(slice.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
  const eps = await eventually('the Endpoints', async () => (await call(port, 'GET', '/api/v1/namespaces/default/endpoints/web')).body.subsets?.[0]);
  t.deepEqual(eps.addresses.map((a: any) => a.ip), ['10.244.0.2', '10.244.1.2']);
  // The book's mysql: a Service without selector and Endpoints kept by hand.
  await call(port, 'POST', SVC, { metadata: { name: 'mysql' }, spec: { ports: [{ port: 3306 }] } });
  await call(port, 'POST', '/api/v1/namespaces/default/endpoints', { metadata: { name: 'mysql' }, subsets: [{ addresses: [{ ip: '192.168.50.200' }], ports: [{ port: 3306 }] }] });
  const mirrored = await eventually('the mirrored slice', async () => (await call(port, 'GET', '/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io/service-name%3Dmysql')).body.items[0]);
  t.deepEqual(mirrored.endpoints.map((e: any) => e.addresses[0]), ['192.168.50.200']);
  t.is(mirrored.metadata.labels['endpointslice.kubernetes.io/managed-by'], 'endpointslicemirroring-controller.k8s.io');
  // Finalizers: delete marks the object, removing the last finalizer removes it.
  await call(port, 'POST', SVC, { metadata: { name: 'held', finalizers: ['example.com/hold'] }, spec: { ports: [{ port: 1 }] } });
  const marked = await call(port, 'DELETE', `${SVC}/held`);
  t.truthy(marked.body.metadata.deletionTimestamp);
  t.is((await call(port, 'GET', `${SVC}/held`)).status, 200);
  await call(port, 'PATCH', `${SVC}/held`, { metadata: { finalizers: null } }, { contentType: 'application/merge-patch+json' });
  t.is((await call(port, 'GET', `${SVC}/held`)).status, 404);
});

test('lists and watches: selectors, Tables, resume from a resourceVersion, objects leaving a selector', async (t) => {
  const { port } = await startLabApi(t);
  await call(port, 'POST', SVC, web());
  await call(port, 'POST', SVC, web({ metadata: { name: 'db', labels: { app: 'db' } } }));
  t.deepEqual((await call(port, 'GET', `${SVC}?labelSelector=app%3Dweb`)).body.items.map((s: any) => s.metadata.name), ['web']);
  t.deepEqual((await call(port, 'GET', '/api/v1/services?fieldSelector=metadata.name%3Ddb')).body.items.map((s: any) => s.metadata.name), ['db']);
  t.is((await call(port, 'GET', `${SVC}?labelSelector=app%3D%3D%3D`)).status, 400);
  const table = await call(port, 'GET', SVC, undefined, { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json' });
  t.is(table.body.kind, 'Table');
  t.deepEqual(table.body.rows.map((r: any) => r.cells.slice(0, 3)), [['db', 'ClusterIP', '10.254.0.11'], ['web', 'ClusterIP', '10.254.0.10']]);
  const list = await call(port, 'GET', SVC);
  const rv = list.body.metadata.resourceVersion;
  const w = openWatch(port, `${SVC}?watch=true&labelSelector=app%3Dweb&resourceVersion=${rv}`);
  t.teardown(() => w.close());
  await call(port, 'PATCH', `${SVC}/db`, { metadata: { labels: { app: 'web' } } }, { contentType: 'application/merge-patch+json' });
  await call(port, 'PATCH', `${SVC}/web`, { metadata: { labels: { app: 'other' } } }, { contentType: 'application/merge-patch+json' });
  await call(port, 'PATCH', `${SVC}/web`, { metadata: { labels: { x: 'y' } } }, { contentType: 'application/merge-patch+json' });
  const ev = await w.until((e) => e.length >= 2);
  t.deepEqual(ev.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED db', 'DELETED web'], 'db enters the selector, web leaves it; web\'s later change is not seen');
  // A watch from the beginning replays the current state; from an old version, the changes since.
  const all = openWatch(port, `${SVC}?watch=true`);
  t.teardown(() => all.close());
  t.deepEqual((await all.until((e) => e.length >= 2)).map((e) => e.type), ['ADDED', 'ADDED']);
  const since = openWatch(port, `${SVC}?watch=true&resourceVersion=${rv}`);
  t.teardown(() => since.close());
  t.deepEqual((await since.until((e) => e.length >= 3)).map((e) => `${e.type} ${e.object.metadata.name}`), ['MODIFIED db', 'MODIFIED web', 'MODIFIED web']);
  const tw = openWatch(port, `${SVC}?watch=true`, undefined, 'application/json;as=Table;v=v1;g=meta.k8s.io');
  t.teardown(() => tw.close());
  const te = await tw.until((e) => e.length >= 2);
  t.is(te[0]!.object.kind, 'Table');
  t.truthy(te[0]!.object.columnDefinitions);
  t.is(te[1]!.object.columnDefinitions, null, 'column definitions come with the first event only');
  const initial = openWatch(port, `${SVC}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`);
  t.teardown(() => initial.close());
  const ie = await initial.until((e) => e.some((x) => x.type === 'BOOKMARK'));
  t.deepEqual(ie.map((e) => e.type), ['ADDED', 'ADDED', 'BOOKMARK']);
  t.is(ie[2]!.object.metadata.annotations['k8s.io/initial-events-end'], 'true');
});

test('a watch ends after the timeoutSeconds its client asked for; 0 means the server\'s own timeout', async (t) => {
  const { port } = await startLabApi(t);
  const started = Date.now();
  const w = openWatch(port, `${SVC}?watch=true&timeoutSeconds=1`);
  await eventually('the watch to end', () => w.ended, 5000);
  t.true(Date.now() - started >= 900);
  const forever = openWatch(port, `${SVC}?watch=true&timeoutSeconds=0`);
  t.teardown(() => forever.close());
  await new Promise((r) => setTimeout(r, 300));
  t.false(forever.ended);
});

test('a watch from a resourceVersion the API no longer keeps gets 410 Expired', async (t) => {
  const { port } = await startLabApi(t, { historySize: 2 });
  for (const n of ['a', 'b', 'c', 'd']) await call(port, 'POST', SVC, web({ metadata: { name: n } }));
  const w = openWatch(port, `${SVC}?watch=true&resourceVersion=1`);
  await eventually('the watch to end', () => w.ended);
  t.like(w.events[0], { type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
});

test('watch bounds: a client holds a bounded number of watches (429); a watcher that does not read is closed', async (t) => {
  const { api, port } = await startLabApi(t, { watchLimits: { perClient: 3, maxBufferedBytes: 64 * 1024, stallMs: 60_000 } });
  const held = [1, 2, 3].map(() => openWatch(port, `${SVC}?watch=true`));
  t.teardown(() => held.forEach((w) => w.close()));
  await eventually('three watches', () => api.watchStats().open === 3);
  const refused = await call(port, 'GET', `${SVC}?watch=true`);
  t.like(refused.body, { kind: 'Status', code: 429, reason: 'TooManyRequests' });
  t.is(refused.headers['retry-after'], '1');
  t.is((await call(port, 'GET', `${SVC}?watch=true`, undefined, { token: NODE_TOKENS['node-1'] })).status, 429, 'the limit is per address');
  held.forEach((w) => w.close());
  await eventually('the watches to close', () => api.watchStats().open === 0);

  // A client that opens a watch and never reads: once the kernel's socket buffers are full
  // (a few MB on loopback) and more than 64 KiB of events wait in the API for it, the API closes
  // it instead of buffering without end. A reading watcher sees every event.
  const reader = openWatch(port, `${SVC}?watch=true`);
  t.teardown(() => reader.close());
  const slow = connect(port, '127.0.0.1');
  t.teardown(() => slow.destroy());
  await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
  slow.write(`GET ${SVC}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token\r\n\r\n`);
  slow.pause();
  await eventually('both watches', () => api.watchStats().open === 2);
  const big = 'x'.repeat(200_000);
  let made = 0;
  while (api.watchStats().closedSlow === 0 && made < 150) await call(port, 'POST', SVC, web({ metadata: { name: `big-${made++}`, annotations: { pad: big } } }));
  t.is(api.watchStats().closedSlow, 1, `closed after ${made} events of 200 kB`);
  await reader.until((e) => e.length === made);
  t.is(api.watchStats().open, 1, 'the reading watcher stays open');
});

test('request bodies are bounded: a large declared or streamed body is refused with 413 without being read', async (t) => {
  const { port } = await startLabApi(t, { maxBodyBytes: 1 << 20 });
  const declared = await call(port, 'PUT', `${SVC}/web`, 'x'.repeat((1 << 20) + 1));
  t.like(declared.body, { code: 413, reason: 'RequestEntityTooLarge', message: 'Request entity too large: limit is 1048576' });
  // A 200 MB PUT, streamed: the answer comes after about the limit, not after 200 MB.
  const started = Date.now();
  const result = await new Promise<{ status: number; sent: number }>((resolve) => {
    let sent = 0;
    const req = request({ host: '127.0.0.1', port, method: 'PUT', path: `${SVC}/web`, headers: { Authorization: 'Bearer admin-token', 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve({ status: res.statusCode!, sent });
      req.destroy();
    });
    req.on('error', () => resolve({ status: -1, sent }));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const pump = () => {
      while (sent < 200 * 1024 * 1024) {
        sent += chunk.length;
        if (!req.write(chunk)) { req.once('drain', pump); return; }
      }
      req.end();
    };
    pump();
  });
  t.is(result.status, 413);
  t.true(result.sent < 50 * 1024 * 1024, `refused after ${result.sent} bytes`);
  t.true(Date.now() - started < 20_000);
  t.is((await call(port, 'GET', SVC)).status, 200, 'the API still serves');
});

test('stored values that are not objects are skipped with a warning, never fatal (etcd written behind the API)', async (t) => {
  const kv = new MemoryKv();
  await kv.put('/registry/services/default/garbage', 'not json {');
  await kv.put('/registry/services/default/typed', JSON.stringify({ metadata: {}, spec: { ports: 'eighty' } }));
  const lab = await startLabApi(t, { kv });
  const { port } = lab;
  t.deepEqual((await call(port, 'GET', SVC)).body.items, [], 'bad values at start are skipped');
  await call(port, 'POST', SVC, web());
  const list = await call(port, 'GET', SVC);
  const w = openWatch(port, `${SVC}?watch=true&resourceVersion=${list.body.metadata.resourceVersion}`);
  t.teardown(() => w.close());
  await kv.put('/registry/services/default/later', '\u0000\u0001');
  await kv.put('/registry/services/default/web', '[1, 2');
  await kv.put('/registry/nodes/n1', JSON.stringify({ metadata: { name: 'forged-name' } }));
  const ev = await w.until((e) => e.length >= 1);
  t.deepEqual(ev.map((e) => `${e.type} ${e.object.metadata.name}`), ['DELETED web'], 'an object overwritten with garbage is gone');
  t.is((await call(port, 'GET', '/api/v1/nodes/n1')).body.metadata.name, 'n1', 'the key names the object');
  t.is((await call(port, 'GET', '/healthz')).status, 200);
  await lab.restart();
  t.deepEqual((await call(lab.port, 'GET', SVC)).body.items, []);
});
