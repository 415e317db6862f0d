// knet lab check and status, pure parts: which probes the check sends, how answers are judged,
// the pass/fail table, the status tables.
import test from 'ava';
import { formatCheckTable, judge, planChecks, type CheckInput, type Probe } from '../../src/lab/check.ts';
import { formatStatus } from '../../src/lab/status.ts';
import { defaultWorkload, deriveEndpointSlices, NETNS_ANNOTATION, type LabPod } from '../../src/lab/workload.ts';
import { allocateService } from '../../src/lab/api/allocate.ts';
import { resourceDef } from '../../src/lab/api/resources.ts';
import { applyDefaults } from '../../src/lab/api/strategy.ts';
import type { Obj } from '../../src/lab/api/store.ts';
import type { Service } from '../../src/model/k8s.ts';

/** A Service as the lab API stores it: defaulted, ClusterIP and NodePorts allocated. */
function completeService(s: Service, others: Service[]): Service {
  const obj = JSON.parse(JSON.stringify({ ...s, metadata: { namespace: 'default', ...s.metadata } })) as Obj;
  applyDefaults(resourceDef('services'), obj);
  allocateService(obj, others as unknown as Obj[], { serviceCIDR: '10.254.0.0/16', nodePortRange: [30000, 32767] });
  return obj as unknown as Service;
}

function lab(nodeCount: number): CheckInput {
  const names = Array.from({ length: nodeCount }, (_, i) => `node-${i + 1}`);
  const w = defaultWorkload(names);
  let n = 2;
  const pods: LabPod[] = w.pods.map((p) => ({
    ...p,
    metadata: { ...p.metadata, annotations: { [NETNS_ANNOTATION]: `knt-lq-p-${p.metadata.name}` } },
    status: { podIP: `10.244.${names.indexOf(p.spec.nodeName) + 1}.${n++}` },
  }));
  const services: Service[] = [];
  for (const s of w.services) services.push(completeService(s, services));
  return {
    nodes: names.map((name, i) => ({ name, ip: `192.168.50.${i + 1}` })),
    pods, services, slices: [...deriveEndpointSlices(services, pods), ...w.slices],
    outside: { ns: 'knt-lq-outside', ip: '192.168.50.200' },
  };
}

test('planChecks: every ordered node pair, every service port, NodePort per node, affinity, UDP, selector-less', (t) => {
  const probes = planChecks(lab(3));
  const pairs = probes.filter((p) => p.check === 'pod to pod');
  t.is(pairs.length, 6);
  t.deepEqual(pairs[0], {
    id: 'pod:node-1:node-2', check: 'pod to pod', from: 'client-1 (node-1)', fromNs: 'knt-lq-p-client-1',
    to: 'client-2 (node-2) 10.244.2.3:8080', proto: 'tcp', host: '10.244.2.3', port: 8080, count: 1, expect: { kind: 'one', name: 'client-2' },
  });
  const byId = new Map(probes.map((p) => [p.id, p]));
  const web = byId.get('svc:default/web:80/TCP')!;
  t.like(web, { check: 'ClusterIP', host: '10.254.0.10', port: 80, proto: 'tcp', from: 'client-1', count: 30 });
  t.deepEqual(web.expect, { kind: 'spread', names: ['web-1', 'web-2', 'web-3'] });
  t.deepEqual(byId.get('svc:default/web-sticky:80/TCP')!.expect, { kind: 'sticky', names: ['web-1', 'web-2', 'web-3'] });
  t.like(byId.get('svc:default/dns:53/UDP')!, { check: 'ClusterIP UDP', proto: 'udp' });
  t.like(byId.get('svc:default/dns:53/TCP')!, { check: 'ClusterIP', proto: 'tcp' });
  t.deepEqual(byId.get('svc:default/external:9090/TCP')!.expect, { kind: 'spread', names: ['outside'] });
  const np = probes.filter((p) => p.check === 'NodePort from outside');
  t.deepEqual(np.map((p) => `${p.host}:${p.port}`), ['192.168.50.1:30080', '192.168.50.2:30080', '192.168.50.3:30080']);
  t.true(np.every((p) => p.fromNs === 'knt-lq-outside'));
  // Ten nodes: 90 pairs.
  t.is(planChecks(lab(10)).filter((p) => p.check === 'pod to pod').length, 90);
  // One node: no pairs, services still checked.
  t.is(planChecks(lab(1)).filter((p) => p.check === 'pod to pod').length, 0);
});

test('planChecks: a service with no endpoints is planned and fails as such', (t) => {
  const l = lab(2);
  l.services.push(completeService({ metadata: { name: 'empty' }, spec: { selector: { app: 'none' }, ports: [{ port: 80 }] } }, l.services));
  l.slices = deriveEndpointSlices(l.services, l.pods);
  const p = planChecks(l).find((x) => x.id === 'svc:default/empty:80/TCP')!;
  t.deepEqual(p.expect, { kind: 'spread', names: [] });
  t.deepEqual(judge(p, ['ERR ECONNREFUSED']), { pass: false, detail: 'no endpoints; ERR ECONNREFUSED:1' });
});

const probe = (expect: Probe['expect']): Probe => ({ id: 'x', check: 'c', from: 'a', fromNs: 'n', to: 'b', proto: 'tcp', host: 'h', port: 1, count: 3, expect });

test('judge: one, spread, sticky, any', (t) => {
  t.true(judge(probe({ kind: 'one', name: 'b' }), ['b']).pass);
  t.false(judge(probe({ kind: 'one', name: 'b' }), ['ERR ETIMEDOUT']).pass);
  t.false(judge(probe({ kind: 'one', name: 'b' }), []).pass);
  const spread = probe({ kind: 'spread', names: ['w1', 'w2', 'w3'] });
  t.deepEqual(judge(spread, ['w1', 'w2', 'w3', 'w1']), { pass: true, detail: 'spread w1:2 w2:1 w3:1' });
  t.deepEqual(judge(spread, ['w1', 'w1', 'w2']), { pass: false, detail: 'w1:2 w2:1; never answered: w3' });
  t.false(judge(spread, ['w1', 'w2', 'w3', 'ERR ETIMEDOUT']).pass);
  t.false(judge(spread, ['w1', 'w2', 'w3', 'stranger']).pass);
  const sticky = probe({ kind: 'sticky', names: ['w1', 'w2'] });
  t.deepEqual(judge(sticky, ['w2', 'w2', 'w2']), { pass: true, detail: 'all 3 to w2' });
  t.false(judge(sticky, ['w2', 'w1', 'w2']).pass);
  t.true(judge(probe({ kind: 'any', names: ['w1', 'w2'] }), ['w1', 'w1', 'w2']).pass);
  t.false(judge(probe({ kind: 'any', names: ['w1', 'w2'] }), ['w1', 'ERR ECONNREFUSED']).pass);
});

test('formatCheckTable: aligned columns, PASS/FAIL, summary', (t) => {
  const a = probe({ kind: 'one', name: 'b' });
  const text = formatCheckTable([{ probe: a, verdict: { pass: true, detail: 'answered by b' } }, { probe: { ...a, check: 'longer check' }, verdict: { pass: false, detail: 'ERR x:1' } }]);
  t.is(text, [
    'CHECK         FROM  TO  RESULT  DETAIL',
    'c             a     b   PASS    answered by b',
    'longer check  a     b   FAIL    ERR x:1',
    '1 passed, 1 failed', '',
  ].join('\n'));
});

test('formatStatus: nodes with subnet and VTEP from leases, pods, services with endpoints', (t) => {
  const l = lab(2);
  const text = formatStatus({
    labId: 'abc', dir: '/run/knet-lab', summary: '2 nodes, vxlan overlay',
    nodes: [{ name: 'node-1', ns: 'knl-abc-node-1', ip: '192.168.50.1', agent: true, proxy: true }, { name: 'node-2', ns: 'knl-abc-node-2', ip: '192.168.50.2', agent: true, proxy: false }],
    subnetManager: 'etcd',
    apiNodes: [],
    leases: [{ key: '10.244.1.0-24', value: JSON.stringify({ PublicIP: '192.168.50.1', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:01' } }) }],
    pods: l.pods, services: l.services, slices: l.slices,
  });
  t.true(text.startsWith('lab abc (/run/knet-lab): 2 nodes, vxlan overlay\n'));
  t.regex(text, /node-1 +192\.168\.50\.1 +10\.244\.1\.0\/24 +aa:bb:cc:dd:ee:01 +running +running/);
  t.regex(text, /node-2 +192\.168\.50\.2 +- +- +running +DOWN/);
  t.regex(text, /web-2 +node-2 +10\.244\.2\.\d+ +5353,8080 +app=web/);
  t.regex(text, /web-nodeport +NodePort +10\.254\.0\.11 +80:30080\/TCP/);
  t.regex(text, /web-sticky +ClusterIP +10\.254\.0\.12 +80\/TCP +ClientIP/);
  t.regex(text, /external +ClusterIP +10\.254\.0\.14 +9090\/TCP +- +192\.168\.50\.200:9090/);
  t.regex(text, /dns .*10\.244\.1\.\d+:5353,/);
});

test('formatStatus kube mode: subnet from the Node\'s podCIDR, VTEP MAC from its flannel annotations', (t) => {
  const l = lab(2);
  const annotated = {
    metadata: { name: 'node-1', annotations: {
      'flannel.alpha.coreos.com/kube-subnet-manager': 'true', 'flannel.alpha.coreos.com/public-ip': '192.168.50.1',
      'flannel.alpha.coreos.com/backend-type': 'vxlan', 'flannel.alpha.coreos.com/backend-data': '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
    } },
    spec: { podCIDR: '10.244.7.0/24', podCIDRs: ['10.244.7.0/24'] },
  };
  const text = formatStatus({
    labId: 'abc', dir: '/run/knet-lab', subnetManager: 'kube',
    nodes: [{ name: 'node-1', ns: 'knl-abc-node-1', ip: '192.168.50.1', agent: true, proxy: true }, { name: 'node-2', ns: 'knl-abc-node-2', ip: '192.168.50.2', agent: true, proxy: true }],
    // node-2: a podCIDR, but its agent has not annotated the Node yet.
    apiNodes: [annotated, { metadata: { name: 'node-2' }, spec: { podCIDR: '10.244.8.0/24' } }],
    // A stale etcd lease for the same address is not what kube mode shows.
    leases: [{ key: '10.244.1.0-24', value: JSON.stringify({ PublicIP: '192.168.50.1', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:99' } }) }],
    pods: l.pods, services: l.services, slices: l.slices,
  });
  t.regex(text, /node-1 +192\.168\.50\.1 +10\.244\.7\.0\/24 +aa:bb:cc:dd:ee:01 +running +running/);
  t.regex(text, /node-2 +192\.168\.50\.2 +10\.244\.8\.0\/24 +- +running +running/);
});
