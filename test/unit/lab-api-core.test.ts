// The lab API's pure parts: REST paths and etcd keys, selectors, the three patch types,
// decoding against the kinds' fields, kube-apiserver's validation (422 causes named by field),
// Service and Node CIDR allocation, tokens and authorization, tables, discovery and OpenAPI.
import test from 'ava';
import { allocateService, CidrSet, keepAllocated } from '../../src/lab/api/allocate.ts';
import { authenticate, authorize, parseTokenFile, tokenLine } from '../../src/lab/api/auth.ts';
import { aggregatedDiscovery, openApiDocument, openApiIndex, resourceList } from '../../src/lab/api/discovery.ts';
import { ApiError, fieldErrorText, invalid } from '../../src/lab/api/errors.ts';
import { jsonPatch, mergePatch, strategicMergePatch } from '../../src/lab/api/patch.ts';
import { decodeProtobuf } from '../../src/lab/api/protobuf.ts';
import { parseRegistryKey, parseResourcePath, registryKey, resourceDef } from '../../src/lab/api/resources.ts';
import { decodeObject, loadSchemas } from '../../src/lab/api/schema.ts';
import { fieldsMatch, labelsMatch, parseFieldSelector, parseLabelSelector } from '../../src/lab/api/selectors.ts';
import type { Obj } from '../../src/lab/api/store.ts';
import { applyDefaults, prepareForUpdate } from '../../src/lab/api/strategy.ts';
import { humanDuration, toTable } from '../../src/lab/api/tables.ts';
import { validateObject } from '../../src/lab/api/validate.ts';

test.before(() => loadSchemas());

const svcDef = resourceDef('services');
const ranges = { serviceCIDR: '10.254.0.0/16', nodePortRange: [30000, 32767] as const };
/** A Service as the API would hold it before validation: decoded and defaulted. */
function service(spec: Record<string, unknown>, name = 'web'): Obj {
  const o = decodeObject('V1Service', { metadata: { name, namespace: 'default' }, spec }).value as Obj;
  applyDefaults(svcDef, o);
  return o;
}
const fields = (errors: { field: string }[]) => errors.map((e) => e.field);

test('paths: collections, namespaced and cluster objects, status, groups checked', (t) => {
  const p = (path: string) => {
    const r = parseResourcePath(path);
    return r && { resource: r.def.name, namespace: r.namespace, name: r.name, subresource: r.subresource };
  };
  t.deepEqual(p('/api/v1/services'), { resource: 'services', namespace: undefined, name: undefined, subresource: undefined });
  t.deepEqual(p('/api/v1/namespaces/default/services/web'), { resource: 'services', namespace: 'default', name: 'web', subresource: undefined });
  t.deepEqual(p('/api/v1/nodes/node-1/status'), { resource: 'nodes', namespace: undefined, name: 'node-1', subresource: 'status' });
  t.deepEqual(p('/api/v1/namespaces/demo'), { resource: 'namespaces', namespace: undefined, name: 'demo', subresource: undefined });
  t.deepEqual(p('/api/v1/namespaces/demo/status'), { resource: 'namespaces', namespace: undefined, name: 'demo', subresource: 'status' });
  t.deepEqual(p('/apis/discovery.k8s.io/v1/namespaces/a/endpointslices'), { resource: 'endpointslices', namespace: 'a', name: undefined, subresource: undefined });
  t.is(p('/api/v1/endpointslices'), null, 'EndpointSlices are in discovery.k8s.io');
  t.is(p('/apis/discovery.k8s.io/v1/services'), null);
  t.is(p('/api/v1/namespaces/default/nodes/x'), null, 'Nodes are not namespaced');
  t.is(p('/apis/apps/v1/deployments'), null);
  t.is(registryKey(svcDef, 'default', 'web'), '/registry/services/default/web');
  t.is(registryKey(resourceDef('nodes'), undefined, 'node-1'), '/registry/nodes/node-1');
  t.deepEqual(parseRegistryKey('/registry/endpointslices/a/b')?.name, 'b');
  t.is(parseRegistryKey('/registry/services/only-two'), null);
  t.is(parseRegistryKey('/coreos.com/network/config'), null);
});

test('selectors: equality, sets, existence; bad ones are 400; field selectors per resource', (t) => {
  const sel = parseLabelSelector('app=web,tier!=db,env in (prod, staging),!legacy,zone');
  t.true(labelsMatch(sel, { app: 'web', env: 'prod', zone: 'a' }));
  t.false(labelsMatch(sel, { app: 'web', env: 'prod', zone: 'a', legacy: 'y' }));
  t.false(labelsMatch(sel, { app: 'web', env: 'dev', zone: 'a' }));
  t.false(labelsMatch(sel, { app: 'web', env: 'prod' }));
  t.true(labelsMatch(parseLabelSelector('a notin (x)'), {}));
  t.true(labelsMatch(parseLabelSelector(''), undefined));
  const bad = t.throws(() => parseLabelSelector('app=we b'), { instanceOf: ApiError });
  t.is(bad!.code, 400);
  t.false(labelsMatch(parseLabelSelector('constructor'), {}), 'a key matches own labels only, never Object.prototype');
  const f = parseFieldSelector('pods', 'spec.nodeName=node-1,metadata.name!=x');
  t.true(fieldsMatch(f, { metadata: { name: 'a' }, spec: { nodeName: 'node-1' } }));
  t.false(fieldsMatch(f, { metadata: { name: 'x' }, spec: { nodeName: 'node-1' } }));
  t.is(t.throws(() => parseFieldSelector('services', 'spec.nodeName=x'))!.message.includes('not a known field selector'), true);
});

test('merge patch and JSON patch follow RFC 7386 and RFC 6902', (t) => {
  t.deepEqual(mergePatch({ a: 1, b: { c: 2, d: 3 }, l: [1, 2] }, { b: { c: null, e: 4 }, l: [3], n: 'x' }), { a: 1, b: { d: 3, e: 4 }, l: [3], n: 'x' });
  const doc = { metadata: { labels: { a: '1' } }, spec: { ports: [{ port: 80 }, { port: 81 }] } };
  t.deepEqual(jsonPatch(doc, [
    { op: 'add', path: '/metadata/labels/b~1c', value: '2' },
    { op: 'replace', path: '/spec/ports/0/port', value: 8080 },
    { op: 'remove', path: '/spec/ports/1' },
    { op: 'add', path: '/spec/ports/-', value: { port: 9 } },
    { op: 'copy', from: '/spec/ports/0', path: '/spec/first' },
    { op: 'test', path: '/metadata/labels/a', value: '1' },
  ]), { metadata: { labels: { a: '1', 'b/c': '2' } }, spec: { ports: [{ port: 8080 }, { port: 9 }], first: { port: 8080 } } });
  t.is(t.throws(() => jsonPatch(doc, [{ op: 'remove', path: '/spec/nothing' }]), { instanceOf: ApiError })!.code, 400);
  t.throws(() => jsonPatch(doc, [{ op: 'test', path: '/metadata/labels/a', value: '2' }]), { message: /test failed/ });
  t.throws(() => jsonPatch(doc, { op: 'add' }), { message: /list of operations/ });
});

test('strategic merge patch: lists merge by key, directives, maps merge, atomic lists replace', (t) => {
  const node = {
    metadata: { name: 'n1', annotations: { keep: 'me' }, finalizers: ['a'] },
    spec: { podCIDRs: ['10.244.1.0/24'], taints: [{ key: 'x', effect: 'NoSchedule' }] },
    status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'MemoryPressure', status: 'False' }], addresses: [{ type: 'InternalIP', address: '192.168.50.1' }] },
  };
  // What flannel sends on nodes/status: annotations, then the NetworkUnavailable condition.
  const annotated = strategicMergePatch(node, { metadata: { annotations: { 'flannel.alpha.coreos.com/backend-type': 'vxlan', keep: null } } }, 'V1Node') as typeof node;
  t.deepEqual(annotated.metadata.annotations, { 'flannel.alpha.coreos.com/backend-type': 'vxlan' });
  const cond = strategicMergePatch(annotated, { status: { conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp' }, { type: 'Ready', status: 'False' }] } }, 'V1Node') as typeof node;
  t.deepEqual(cond.status.conditions.map((c) => `${c.type}=${c.status}`), ['Ready=False', 'MemoryPressure=False', 'NetworkUnavailable=False']);
  t.deepEqual(cond.status.addresses, node.status.addresses, 'untouched fields stay');
  // Atomic list (taints) is replaced; primitive merge list (finalizers) is a union.
  const p = strategicMergePatch(node, { spec: { taints: [{ key: 'y', effect: 'NoExecute' }] }, metadata: { finalizers: ['b'] } }, 'V1Node') as typeof node;
  t.deepEqual(p.spec.taints, [{ key: 'y', effect: 'NoExecute' }]);
  t.deepEqual(p.metadata.finalizers, ['a', 'b']);
  // Directives: delete an element by key, replace a list, delete from a primitive list, order.
  const svc = { spec: { ports: [{ port: 80, name: 'a' }, { port: 81, name: 'b' }, { port: 82, name: 'c' }], selector: { app: 'x', tier: 'y' } } };
  const d = strategicMergePatch(svc, { spec: { ports: [{ port: 81, $patch: 'delete' }, { port: 82, name: 'cc' }], $setElementOrder: undefined, selector: { tier: null } } }, 'V1Service') as typeof svc;
  t.deepEqual(d.spec.ports, [{ port: 80, name: 'a' }, { port: 82, name: 'cc' }]);
  t.deepEqual(d.spec.selector, { app: 'x' });
  const ordered = strategicMergePatch(svc, { spec: { '$setElementOrder/ports': [{ port: 82 }, { port: 80 }, { port: 81 }], ports: [{ port: 80, targetPort: 8080 }] } }, 'V1Service') as { spec: { ports: Array<{ port: number }> } };
  t.deepEqual(ordered.spec.ports.map((x) => x.port), [82, 80, 81]);
  const replaced = strategicMergePatch(svc, { spec: { ports: [{ $patch: 'replace' }, { port: 9 }] } }, 'V1Service') as typeof svc;
  t.deepEqual(replaced.spec.ports, [{ port: 9 }]);
  const removed = strategicMergePatch(node, { metadata: { '$deleteFromPrimitiveList/finalizers': ['a'] } }, 'V1Node') as typeof node;
  t.deepEqual(removed.metadata.finalizers, []);
  t.deepEqual(strategicMergePatch(svc, { spec: { $patch: 'replace', type: 'NodePort' } }, 'V1Service'), { spec: { type: 'NodePort' } });
  t.throws(() => strategicMergePatch(svc, { spec: { ports: [{ name: 'no-key' }] } }, 'V1Service'), { message: /merge key: port/ });
  t.throws(() => strategicMergePatch(svc, [], 'V1Service'), { message: /JSON object/ });
});

test('decoding: wrong JSON types are 400 naming the field; unknown fields reported and dropped; nulls dropped', (t) => {
  const ok = decodeObject('V1Service', { metadata: { name: 'a', labels: { x: 'y' } }, spec: { ports: [{ port: 80, targetPort: 'http', bogus: 1 }], clusterIP: null }, extra: true });
  t.deepEqual(ok.value, { metadata: { name: 'a', labels: { x: 'y' } }, spec: { ports: [{ port: 80, targetPort: 'http' }] } });
  t.deepEqual(ok.unknownFields, ['spec.ports[0].bogus', 'extra']);
  const cases: Array<[unknown, RegExp]> = [
    [{ spec: { ports: { port: 80 } } }, /spec\.ports of type \[\]v1\.ServicePort/],
    [{ spec: { externalIPs: '1.2.3.4' } }, /spec\.externalIPs/],
    [{ spec: { ports: [{ port: '80' }] } }, /spec\.ports\[0\]\.port of type int32/],
    [{ spec: { ports: [{ port: 1.5 }] } }, /int32/],
    [{ metadata: { labels: { a: 1 } } }, /metadata\.labels\[a\] of type string/],
    [{ status: { loadBalancer: { ingress: {} } } }, /status\.loadBalancer\.ingress/],
    [[], /\(root\)/],
  ];
  for (const [body, re] of cases) {
    const err = t.throws(() => decodeObject('V1Service', body), { instanceOf: ApiError });
    t.is(err!.code, 400);
    t.regex(err!.message, re);
  }
  // A null list entry is its zero value (as Go decodes it), which validation then refuses.
  t.deepEqual(decodeObject('V1Service', { spec: { ports: [null] } }).value, { spec: { ports: [{}] } });
  t.deepEqual(decodeObject('V1Pod', { spec: { containers: [{ name: 'c', resources: { limits: { cpu: 1 } } }] } }).value, { spec: { containers: [{ name: 'c', resources: { limits: { cpu: '1' } } }] } }, 'quantities may be numbers');
  const hostile = decodeObject('V1Service', JSON.parse('{"constructor": 1, "metadata": {"labels": {"__proto__": "x", "toString": "y"}}, "spec": {"__proto__": {"type": "NodePort"}}}'));
  t.deepEqual(hostile.unknownFields, ['constructor', 'spec.__proto__']);
  t.deepEqual(Object.keys(hostile.value.metadata as object), ['labels']);
  t.deepEqual(Object.entries((hostile.value.metadata as { labels: object }).labels), [['__proto__', 'x'], ['toString', 'y']], 'map keys stay own data, never the prototype');
  t.is((hostile.value.spec as { type?: string }).type, undefined);
});

test('Service validation: the fields kube-apiserver checks, named in the causes', (t) => {
  t.deepEqual(validateObject('services', service({ selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] })), []);
  const bad = service({
    type: 'Bogus', ports: [{ port: 0, protocol: 'constructor' }, { port: 70000, name: 'Bad_Name', targetPort: 'this-name-is-too-long' }],
    sessionAffinity: 'Sticky', externalIPs: ['127.0.0.1', 'nope'], externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Nowhere',
    loadBalancerSourceRanges: ['10.0.0.0/33'], selector: { 'bad key!': 'v' }, ipFamilies: ['IPv6'], clusterIP: '10.254.0.300',
  }, 'Web');
  const errs = validateObject('services', bad);
  t.deepEqual(fields(errs), [
    'metadata.name', 'spec.type', 'spec.ports[0].name', 'spec.ports[0].protocol', 'spec.ports[0].port', 'spec.ports[0].targetPort',
    'spec.ports[1].name', 'spec.ports[1].port', 'spec.ports[1].targetPort', 'spec.clusterIP', 'spec.ipFamilies[0]',
    'spec.externalIPs[0]', 'spec.externalIPs[1]', 'spec.sessionAffinity', 'spec.externalTrafficPolicy', 'spec.internalTrafficPolicy',
    'spec.loadBalancerSourceRanges', 'spec.loadBalancerSourceRanges[0]', 'spec.selector',
  ]);
  t.is(fieldErrorText(errs.find((e) => e.field === 'spec.ports[0].port')!), 'spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive');
  t.is(fieldErrorText(errs.find((e) => e.field === 'spec.type')!), 'spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"');
  t.regex(fieldErrorText(errs.find((e) => e.field === 'spec.externalIPs[0]')!), /loopback/);
  const e = invalid(svcDef, 'Web', errs);
  t.is(e.code, 422);
  t.regex(e.message, /^Service "Web" is invalid: \[metadata\.name: Invalid value: "Web": a DNS-1035 label/);
  t.is(e.details!.causes!.length, errs.length);
  // Duplicates, and the ClusterIP may not change on update.
  t.deepEqual(fields(validateObject('services', service({ ports: [{ port: 53, name: 'a' }, { port: 53, name: 'a' }] }))), ['spec.ports[1].name', 'spec.ports[1]']);
  const old = service({ ports: [{ port: 80 }], clusterIP: '10.254.0.10' });
  t.deepEqual(fields(validateObject('services', service({ ports: [{ port: 80 }], clusterIP: '10.254.0.11' }), old)), ['spec.clusterIP']);
  t.deepEqual(fields(validateObject('services', service({ type: 'ClusterIP', ports: [{ port: 80, nodePort: 30001 }] }))), ['spec.ports[0].nodePort']);
  t.deepEqual(fields(validateObject('services', service({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } }, ports: [{ port: 1 }] }))), ['spec.sessionAffinityConfig.clientIP.timeoutSeconds']);
  t.deepEqual(fields(validateObject('services', service({ type: 'ExternalName', externalName: 'db.example.com' }))), [], 'ExternalName needs no ports');
  t.deepEqual(fields(validateObject('services', service({}))), ['spec.ports']);
});

test('EndpointSlice, Endpoints, Node, Pod, Namespace validation', (t) => {
  const slice = (x: Record<string, unknown>) => decodeObject('V1EndpointSlice', { metadata: { name: 's' }, addressType: 'IPv4', ...x }).value as Obj;
  t.deepEqual(validateObject('endpointslices', slice({ endpoints: [{ addresses: ['10.244.1.2'], nodeName: 'node-1' }], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] })), []);
  t.deepEqual(fields(validateObject('endpointslices', slice({
    endpoints: [{ addresses: ['127.0.0.1'] }, { addresses: ['169.254.1.1'] }, { addresses: ['fd00::1'] }, { addresses: [] }, { addresses: ['0.0.0.0'] }, { addresses: ['224.0.0.5'] }],
    ports: [{ port: 0, protocol: 'TCP' }, { name: 'Bad', port: 1, protocol: 'ICMP' }],
  }))), ['endpoints[0].addresses[0]', 'endpoints[1].addresses[0]', 'endpoints[2].addresses[0]', 'endpoints[3].addresses', 'endpoints[4].addresses[0]', 'endpoints[5].addresses[0]', 'ports[0].port', 'ports[1].name', 'ports[1].protocol']);
  t.deepEqual(fields(validateObject('endpointslices', slice({ addressType: 'IPv5' }))), ['addressType']);
  t.deepEqual(fields(validateObject('endpointslices', slice({ addressType: 'IPv6' }), slice({}))), ['addressType'], 'address type is immutable');
  t.deepEqual(fields(validateObject('endpoints', { metadata: { name: 'e' }, subsets: [{ addresses: [{ ip: '10.0.0.1' }, { ip: 'x' }], ports: [{ port: 1, protocol: 'TCP' }, { port: 2, protocol: 'TCP' }] }] })), ['subsets[0].addresses[1].ip', 'subsets[0].ports[0].name', 'subsets[0].ports[1].name']);
  const node = (spec: Record<string, unknown>) => { const o = { metadata: { name: 'node-1' }, spec } as Obj; applyDefaults(resourceDef('nodes'), o); return o; };
  t.deepEqual(node({ podCIDR: '10.244.1.0/24' }).spec.podCIDRs, ['10.244.1.0/24'], 'podCIDRs follows podCIDR');
  t.is(node({ podCIDR: 'x', podCIDRs: ['10.244.2.0/24'] }).spec.podCIDR, '10.244.2.0/24', 'podCIDR mirrors podCIDRs[0]');
  t.deepEqual(fields(validateObject('nodes', node({ podCIDRs: ['10.244.1.0/33'] }))), ['spec.podCIDRs[0]']);
  t.deepEqual(fields(validateObject('nodes', node({ podCIDRs: ['10.244.1.0/24', '10.244.2.0/24'] }))), ['spec.podCIDRs']);
  t.deepEqual(fields(validateObject('nodes', node({ podCIDRs: ['10.244.2.0/24'] }), node({ podCIDRs: ['10.244.1.0/24'] }))), ['spec.podCIDRs'], 'set once');
  t.deepEqual(validateObject('nodes', node({ podCIDRs: ['10.244.2.0/24'] }), node({})), [], 'from "" to valid is allowed');
  t.deepEqual(fields(validateObject('nodes', node({ taints: [{ key: 'a', effect: 'Never' }] }))), ['spec.taints[0].effect']);
  const pod = (spec: Record<string, unknown>) => { const o = { metadata: { name: 'p' }, spec } as Obj; applyDefaults(resourceDef('pods'), o); return o; };
  t.deepEqual(validateObject('pods', pod({ containers: [{ name: 'c', image: 'x', ports: [{ containerPort: 80, name: 'http' }] }] })), []);
  t.deepEqual(fields(validateObject('pods', pod({ containers: [{ name: 'c', ports: [{ containerPort: 0 }] }] }))), ['spec.containers[0].image', 'spec.containers[0].ports[0].containerPort']);
  t.deepEqual(fields(validateObject('pods', pod({}))), ['spec.containers']);
  const before = pod({ containers: [{ name: 'c', image: 'x' }], nodeName: 'node-1' });
  t.deepEqual(validateObject('pods', pod({ containers: [{ name: 'c', image: 'y' }], nodeName: 'node-1' }), before), [], 'the image may change');
  t.deepEqual(fields(validateObject('pods', pod({ containers: [{ name: 'c', image: 'x' }], nodeName: 'node-2' }), before)), ['spec']);
  t.deepEqual(fields(validateObject('namespaces', { metadata: { name: 'Bad.Name' } })), ['metadata.name']);
});

test('status subresource and main resource each keep what they may not change', (t) => {
  const nodes = resourceDef('nodes');
  const old = { metadata: { name: 'n', uid: 'u1', creationTimestamp: 't0' }, spec: { podCIDR: 'a' }, status: { addresses: [1] } } as unknown as Obj;
  const viaStatus = { metadata: { name: 'n', uid: 'forged', annotations: { x: 'y' } }, spec: { podCIDR: 'b' }, status: { addresses: [2] } } as unknown as Obj;
  prepareForUpdate(nodes, viaStatus, old, 'status');
  t.deepEqual(viaStatus.spec, { podCIDR: 'a' });
  t.deepEqual(viaStatus.status, { addresses: [2] });
  t.deepEqual(viaStatus.metadata.annotations, { x: 'y' }, 'node status writes may change metadata (flannel relies on it)');
  t.is(viaStatus.metadata.uid, 'u1');
  const viaMain = { metadata: { name: 'n' }, spec: { podCIDR: 'b' }, status: { addresses: [3] } } as unknown as Obj;
  prepareForUpdate(nodes, viaMain, old, undefined);
  t.deepEqual(viaMain.status, { addresses: [1] });
  t.is(viaMain.metadata.creationTimestamp, 't0');
});

test('Service allocation: first free ClusterIP from .10, NodePorts, kept on update, conflicts as field errors', (t) => {
  const a = service({ type: 'NodePort', ports: [{ port: 80 }, { port: 53, protocol: 'UDP', name: 'u' }, { port: 53, protocol: 'TCP', name: 't' }] }, 'a');
  t.deepEqual(allocateService(a, [], ranges), []);
  t.is(a.spec.clusterIP, '10.254.0.10');
  t.deepEqual(a.spec.ports.map((p: { nodePort: number }) => p.nodePort), [30000, 30001, 30001], 'one port number, one NodePort for both protocols');
  const b = service({ ports: [{ port: 80 }] }, 'b');
  allocateService(b, [a], ranges);
  t.is(b.spec.clusterIP, '10.254.0.11');
  t.is(b.spec.ports[0].nodePort, undefined);
  const again = service({ type: 'NodePort', ports: [{ port: 80, targetPort: 8080 }] }, 'a');
  keepAllocated(again, a);
  allocateService(again, [b], ranges);
  t.is(again.spec.clusterIP, '10.254.0.10');
  t.is(again.spec.ports[0].nodePort, 30000);
  t.regex(allocateService(service({ clusterIP: '10.254.0.11', ports: [{ port: 1 }] }, 'c'), [b], ranges)[0]!.detail!, /already allocated/);
  t.regex(allocateService(service({ clusterIP: '10.1.0.1', ports: [{ port: 1 }] }, 'c'), [], ranges)[0]!.detail!, /not in the valid range/);
  t.regex(allocateService(service({ type: 'NodePort', ports: [{ port: 1, nodePort: 30000 }] }, 'c'), [a], ranges)[0]!.detail!, /already allocated/);
  t.regex(allocateService(service({ type: 'NodePort', ports: [{ port: 1, nodePort: 80 }] }, 'c'), [], ranges)[0]!.detail!, /30000-32767/);
  const lb = service({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 80 }] }, 'lb');
  allocateService(lb, [a], ranges);
  t.is(lb.spec.ports[0].nodePort, 30002);
  t.is(lb.spec.healthCheckNodePort, 30003, 'LoadBalancer with Local policy gets a health-check NodePort');
  const headless = service({ clusterIP: 'None', ports: [{ port: 1 }] }, 'h');
  allocateService(headless, [], ranges);
  t.deepEqual(headless.spec.clusterIPs, ['None']);
});

test('CidrSet: node-sized blocks, next free after the last, wraps, releases, refuses outside blocks', (t) => {
  const s = new CidrSet('10.244.0.0/22', 24);
  t.is(s.allocateNext(), '10.244.0.0/24');
  t.true(s.occupy('10.244.2.0/24'));
  t.is(s.allocateNext(), '10.244.1.0/24');
  t.is(s.allocateNext(), '10.244.3.0/24');
  s.release('10.244.0.0/24');
  t.is(s.allocateNext(), '10.244.0.0/24', 'wraps to the released block');
  t.is(s.allocateNext(), null, 'full');
  t.false(s.occupy('10.245.0.0/24'));
  t.false(s.occupy('10.244.1.0/25'));
  const fresh = new CidrSet('10.244.0.0/22', 24);
  fresh.allocateNext();
  fresh.allocateNext();
  fresh.release('10.244.0.0/24');
  t.is(fresh.allocateNext(), '10.244.2.0/24', 'a released block is not handed out again at once');
  t.throws(() => new CidrSet('10.244.0.0/16', 16), { message: /does not fit/ });
  t.throws(() => new CidrSet('nope', 24), { message: /IPv4 CIDR/ });
});

test('tokens and authorization: masters do anything, nodes read and change only their own Node', (t) => {
  const tokens = parseTokenFile([tokenLine('A', 'admin', ['system:masters']), tokenLine('N1', 'system:node:node-1', ['system:nodes']), '# comment', ''].join('\n'));
  t.deepEqual(authenticate(tokens, 'Bearer A'), { name: 'admin', groups: ['system:masters'] });
  t.is(authenticate(tokens, 'Bearer nope'), null);
  t.is(authenticate(tokens, undefined), null);
  t.throws(() => parseTokenFile('justtoken\n', 'tokens.csv'), { message: /tokens\.csv:1/ });
  const node = authenticate(tokens, 'bearer N1')!;
  const nodes = resourceDef('nodes');
  t.is(authorize(node, { verb: 'watch', def: svcDef }), null);
  t.is(authorize(node, { verb: 'patch', def: nodes, name: 'node-1', subresource: 'status' }), null);
  t.regex(authorize(node, { verb: 'patch', def: nodes, name: 'node-2', subresource: 'status' })!, /only its own Node/);
  t.is(authorize(node, { verb: 'delete', def: svcDef, namespace: 'default', name: 'web' }), 'User "system:node:node-1" cannot delete resource "services" in API group "" in the namespace "default"');
  t.is(authorize(authenticate(tokens, 'Bearer A')!, { verb: 'delete', def: svcDef }), null);
});

test('tables: kube-apiserver\'s columns and cells; ages as kubectl prints them', (t) => {
  t.deepEqual([0, 59_000, 119_000, 125_000, 600_000, 3 * 3600_000 + 120_000, 30 * 3600_000, 3 * 86400_000 + 3600_000, 400 * 86400_000, 800 * 86400_000].map(humanDuration),
    ['0s', '59s', '119s', '2m5s', '10m', '3h2m', '30h', '3d1h', '400d', '2y70d']);
  const now = Date.parse('2026-01-01T00:10:00Z');
  const svc = { metadata: { name: 'web', creationTimestamp: '2026-01-01T00:00:00Z' }, spec: { type: 'NodePort', clusterIPs: ['10.254.0.10'], ports: [{ port: 80, nodePort: 30080, protocol: 'TCP' }, { port: 53, protocol: 'UDP' }], selector: { b: '2', a: '1' } } } as unknown as Obj;
  const table = toTable('services', [svc], { resourceVersion: '7', include: 'Metadata', now }) as { columnDefinitions: Array<{ name: string; priority: number }>; rows: Array<{ cells: unknown[]; object: { kind: string } }> };
  t.deepEqual(table.columnDefinitions.map((c) => `${c.name}${c.priority ? '*' : ''}`), ['Name', 'Type', 'Cluster-IP', 'External-IP', 'Port(s)', 'Age', 'Selector*']);
  t.deepEqual(table.rows[0]!.cells, ['web', 'NodePort', '10.254.0.10', '<none>', '80:30080/TCP,53/UDP', '10m', 'a=1,b=2']);
  t.is(table.rows[0]!.object.kind, 'PartialObjectMetadata');
  const lb = { metadata: { name: 'lb' }, spec: { type: 'LoadBalancer', clusterIPs: ['10.254.0.11'], ports: [] }, status: { loadBalancer: {} } } as unknown as Obj;
  t.deepEqual((toTable('services', [lb], { resourceVersion: '1', include: 'None', now }) as { rows: Array<{ cells: unknown[] }> }).rows[0]!.cells.slice(3, 5), ['<pending>', '<none>']);
  const slice = { metadata: { name: 's' }, addressType: 'IPv4', ports: [{ port: 80 }, { name: 'x' }, {}, { port: 1 }], endpoints: [{ addresses: ['1.1.1.1'] }, { addresses: ['2.2.2.2'] }, { addresses: ['3.3.3.3'] }, { addresses: ['4.4.4.4'] }] } as unknown as Obj;
  t.deepEqual((toTable('endpointslices', [slice], { resourceVersion: '1', include: 'None', now }) as { rows: Array<{ cells: unknown[] }> }).rows[0]!.cells.slice(0, 4), ['s', 'IPv4', '80,x,* + 1 more...', '1.1.1.1,2.2.2.2,3.3.3.3 + 1 more...']);
  const pod = { metadata: { name: 'p' }, spec: { nodeName: 'node-1', containers: [{ name: 'c' }] }, status: { phase: 'Running', podIPs: [{ ip: '10.244.0.5' }], containerStatuses: [{ name: 'c', ready: true, restartCount: 0, state: { running: {} } }] } } as unknown as Obj;
  t.deepEqual((toTable('pods', [pod], { resourceVersion: '1', include: 'None', now }) as { rows: Array<{ cells: unknown[] }> }).rows[0]!.cells, ['p', '1/1', 'Running', '0', '<unknown>', '10.244.0.5', 'node-1', '<none>', '<none>']);
  const node = { metadata: { name: 'n', labels: { 'node-role.kubernetes.io/control-plane': '' } }, spec: { unschedulable: true }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: '192.168.50.1' }] } } as unknown as Obj;
  t.deepEqual((toTable('nodes', [node], { resourceVersion: '1', include: 'None', now }) as { rows: Array<{ cells: unknown[] }> }).rows[0]!.cells.slice(0, 3), ['n', 'Ready,SchedulingDisabled', 'control-plane']);
  const ep = { metadata: { name: 'e' }, subsets: [{ addresses: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }], ports: [{ port: 80 }, { port: 81 }] }] } as unknown as Obj;
  t.is((toTable('endpoints', [ep], { resourceVersion: '1', include: 'None', now }) as { rows: Array<{ cells: unknown[] }> }).rows[0]!.cells[1], '10.0.0.1:80,10.0.0.2:80,10.0.0.1:81 + 1 more...');
});

test('discovery and OpenAPI: every served resource, the status subresources, fieldValidation and patch keys for kubectl', (t) => {
  const core = aggregatedDiscovery(true) as { items: Array<{ versions: Array<{ resources: Array<{ resource: string; scope: string; shortNames?: string[]; subresources?: unknown[] }> }> }> };
  t.deepEqual(core.items[0]!.versions[0]!.resources.map((r) => r.resource), ['namespaces', 'nodes', 'pods', 'services', 'endpoints']);
  t.deepEqual(core.items[0]!.versions[0]!.resources.find((r) => r.resource === 'services')!.shortNames, ['svc']);
  const groups = aggregatedDiscovery(false) as { items: Array<{ metadata: { name: string } }> };
  t.deepEqual(groups.items.map((g) => g.metadata.name), ['discovery.k8s.io']);
  const list = resourceList('/api/v1') as { resources: Array<{ name: string }> };
  t.true(list.resources.some((r) => r.name === 'nodes/status'));
  t.is(resourceList('/apis/apps/v1'), null);
  const index = openApiIndex() as { paths: Record<string, { serverRelativeURL: string }> };
  t.deepEqual(Object.keys(index.paths), ['api/v1', 'apis/discovery.k8s.io/v1']);
  const doc = JSON.parse(openApiDocument('/openapi/v3/api/v1')!);
  const patch = doc.paths['/api/v1/namespaces/{namespace}/services/{name}'].patch;
  t.deepEqual(patch['x-kubernetes-group-version-kind'], { group: '', version: 'v1', kind: 'Service' });
  t.true(patch.parameters.some((p: { name: string }) => p.name === 'fieldValidation'));
  t.true('application/strategic-merge-patch+json' in patch.requestBody.content);
  t.like(doc.components.schemas.V1ServiceSpec.properties.ports, { 'x-kubernetes-patch-merge-key': 'port', 'x-kubernetes-patch-strategy': 'merge' });
  t.deepEqual(doc.components.schemas.V1Service['x-kubernetes-group-version-kind'], [{ group: '', version: 'v1', kind: 'Service' }]);
  t.is(openApiDocument('/openapi/v3/apis/apps/v1'), null);
});

// Protobuf as kubectl's typed clients write it: length-delimited fields by number.
const varint = (n: number | bigint): Buffer => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do { let b = Number(v & 0x7fn); v >>= 7n; if (v) b |= 0x80; out.push(b); } while (v);
  return Buffer.from(out);
};
const field = (n: number, value: Buffer | string | number | bigint): Buffer => {
  if (typeof value === 'number' || typeof value === 'bigint') return Buffer.concat([varint(n << 3), varint(value)]);
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([varint((n << 3) | 2), varint(bytes.length), bytes]);
};
const msg = (...parts: Buffer[]) => Buffer.concat(parts);
const envelope = (kind: string, raw: Buffer) => Buffer.concat([Buffer.from('k8s\0', 'latin1'), field(1, msg(field(1, 'v1'), field(2, kind))), field(2, raw), field(3, ''), field(4, '')]);
// ObjectMeta as Go marshals it: every plain field present, zero or not.
const meta = (name: string, labels: Record<string, string> = {}) => msg(field(1, name), field(2, ''), field(3, ''), field(4, ''), field(5, ''), field(6, ''), field(7, 0),
  field(8, msg(field(1, -62135596800n), field(2, 0))), ...Object.entries(labels).map(([k, v]) => field(11, msg(field(1, k), field(2, v)))));

test('protobuf bodies of kubectl create namespace and create service decode to their JSON form; anything else is refused', (t) => {
  t.deepEqual(decodeProtobuf(envelope('Namespace', msg(field(1, meta('demo')), field(2, msg()), field(3, msg(field(1, '')))))), { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' }, spec: {} });
  const port = msg(field(1, '80-8080'), field(2, 'TCP'), field(3, 80), field(4, msg(field(1, 0), field(2, 8080), field(3, ''))), field(5, 30080));
  const spec = msg(field(1, port), field(2, msg(field(1, 'app'), field(2, 'web'))), field(3, ''), field(4, 'NodePort'), field(7, ''), field(8, ''), field(10, ''), field(11, ''), field(12, 0), field(13, 0), field(20, 0));
  t.deepEqual(decodeProtobuf(envelope('Service', msg(field(1, meta('web', { app: 'web' })), field(2, spec), field(3, msg(field(1, msg())))))), {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', labels: { app: 'web' } },
    spec: { ports: [{ name: '80-8080', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }], selector: { app: 'web' }, type: 'NodePort', allocateLoadBalancerNodePorts: false },
  });
  const named = decodeProtobuf(envelope('Service', msg(field(1, meta('s')), field(2, msg(field(1, msg(field(3, 53), field(4, msg(field(1, 1), field(3, 'dns'))))))))));
  t.deepEqual((named.spec as { ports: unknown[] }).ports, [{ port: 53, targetPort: 'dns' }]);
  t.is(t.throws(() => decodeProtobuf(envelope('Pod', msg(field(1, meta('p'))))), { instanceOf: ApiError })!.code, 415);
  const unknownField = envelope('Service', msg(field(2, msg(field(15, 'x')))));
  t.regex(t.throws(() => decodeProtobuf(unknownField))!.message, /field 15 of spec/);
  t.is(t.throws(() => decodeProtobuf(Buffer.from('{"json": true}')), { instanceOf: ApiError })!.code, 400);
  t.regex(t.throws(() => decodeProtobuf(Buffer.concat([envelope('Service', msg()), Buffer.from([0x12, 0x50])])))!.message, /malformed/);
});
