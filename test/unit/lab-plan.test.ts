// knet lab, pure parts: topology planning (names, addresses, configs), pod normalization,
// EndpointSlice and Endpoints derivation, manifests. (The lab API's own pure parts:
// lab-api-core.test.ts.)
import test from 'ava';
import { agentArgs, agentIface, cniConflist, kubeconfigText, kubeProxyConfig, labNodeObject, ovsNodeRoute, planLab, pluginConfFromList, podNetnsName, subnetManagerOf, underlayLinks } from '../../src/lab/topology.ts';
import { defaultWorkload, deriveEndpoints, deriveEndpointSlices, mirrorEndpointSlices, normalizePod, type LabPod } from '../../src/lab/workload.ts';
import { findProgram, parseLabManifests, kindOf } from '../../src/lab/commands.ts';
import type { Service } from '../../src/model/k8s.ts';

test('planLab: names every namespace with the prefix, addresses on the underlay, flannel config', (t) => {
  const p = planLab({ labId: 'abc123', nodes: 3 });
  t.is(p.nsPrefix, 'knl-abc123-');
  t.deepEqual(p.nodes.map((n) => [n.name, n.ns, n.ip]), [
    ['node-1', 'knl-abc123-node-1', '192.168.50.1'],
    ['node-2', 'knl-abc123-node-2', '192.168.50.2'],
    ['node-3', 'knl-abc123-node-3', '192.168.50.3'],
  ]);
  t.is(p.underlay.ns, 'knl-abc123-underlay');
  t.is(p.outside.ns, 'knl-abc123-outside');
  t.is(p.etcdEndpoint, 'http://192.168.50.254:2379');
  t.is(p.apiServer, 'http://192.168.50.254:6443');
  t.deepEqual(JSON.parse(p.networkConfig), { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
  for (const a of [p.underlay.ip, p.outside.ip, ...p.nodes.map((n) => n.ip)]) t.regex(a, /^192\.168\./);
  t.is(planLab({ labId: 'x1', nodes: 10, nsPrefix: 'knt-lq-' }).nodes[9]!.ns, 'knt-lq-node-10');
});

test('planLab: rejects what the lab cannot do, with the reason', (t) => {
  t.throws(() => planLab({ labId: 'a', nodes: 0 }), { message: /--nodes/ });
  t.throws(() => planLab({ labId: 'a', nodes: 101 }), { message: /--nodes/ });
  t.throws(() => planLab({ labId: 'a', nodes: 3, backend: 'geneve' }), { message: /vxlan or ovs-gre/ });
  t.throws(() => planLab({ labId: 'a', nodes: 3, proxyMode: 'ipvs' }), { message: /iptables, nftables or userspace/ });
  t.is(planLab({ labId: 'a', nodes: 3, proxyMode: 'userspace' }).proxyMode, 'userspace');
  t.throws(() => planLab({ labId: 'A B', nodes: 3 }), { message: /lab id/ });
  t.throws(() => planLab({ labId: 'a', nodes: 3, nsPrefix: 'bad prefix' }), { message: /prefix/ });
});

test('planLab: the kube subnet manager by default, etcd on request, anything else refused', (t) => {
  t.is(planLab({ labId: 'a', nodes: 2 }).subnetManager, 'kube');
  t.is(planLab({ labId: 'a', nodes: 2, subnetManager: 'etcd' }).subnetManager, 'etcd');
  t.throws(() => planLab({ labId: 'a', nodes: 2, subnetManager: 'zk' }), { message: '--subnet-manager must be kube or etcd, got "zk"' });
  // A state file from before the field existed ran etcd mode.
  const { subnetManager: _absent, ...old } = planLab({ labId: 'a', nodes: 2 });
  t.is(subnetManagerOf(old), 'etcd');
});

test('agentArgs: kube mode runs the kube subnet manager on the node\'s kubeconfig and net-conf.json, no etcd flags', (t) => {
  const files = { subnetFile: '/lab/nodes/node-2/subnet.env', kubeconfig: '/lab/nodes/node-2/kubeconfig', netConf: '/lab/net-conf.json', ovsRunDir: '/lab/nodes/node-2/ovs' };
  const kube = planLab({ labId: 'a', nodes: 2 });
  const args = agentArgs(kube, kube.nodes[1]!, files);
  t.deepEqual(args.slice(0, 7), ['--kube-subnet-mgr', '--kubeconfig', '/lab/nodes/node-2/kubeconfig', '--node-name', 'node-2', '--net-config-path', '/lab/net-conf.json']);
  t.false(args.some((a) => a.startsWith('--etcd')));
  t.deepEqual(args.slice(7, 13), ['--iface', 'eth0', '--public-ip', '192.168.50.2', '--subnet-file', '/lab/nodes/node-2/subnet.env']);
  t.false(args.includes('--ovs-rundir'));
  const etcd = planLab({ labId: 'a', nodes: 2, subnetManager: 'etcd', backend: 'ovs-gre' });
  const etcdArgs = agentArgs(etcd, etcd.nodes[0]!, files);
  t.deepEqual(etcdArgs.slice(0, 4), ['--etcd-endpoints', 'http://192.168.50.254:2379', '--etcd-prefix', '/coreos.com/network']);
  t.false(etcdArgs.some((a) => a.startsWith('--kube') || a === '--net-config-path'));
  t.deepEqual(etcdArgs.slice(4, 6), ['--iface', 'brphy']);
  t.deepEqual(etcdArgs.slice(-2), ['--ovs-rundir', '/lab/nodes/node-2/ovs']);
});

test('labNodeObject: kube mode leaves podCIDR to the API; etcd mode carries the lease; both report addresses and Ready', (t) => {
  const p = planLab({ labId: 'a', nodes: 1 });
  const now = new Date('2026-01-02T03:04:05.678Z');
  const kube = labNodeObject(p.nodes[0]!, null, now);
  t.deepEqual(kube.spec, {});
  t.deepEqual(kube.status?.addresses, [{ type: 'InternalIP', address: '192.168.50.1' }, { type: 'Hostname', address: 'node-1' }]);
  t.like(kube.status?.conditions?.[0], { type: 'Ready', status: 'True', lastTransitionTime: '2026-01-02T03:04:05Z' });
  t.deepEqual(labNodeObject(p.nodes[0]!, '10.244.3.0/24', now).spec, { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24'] });
});

test('planLab ovs-gre: userspace datapath in the network config, node address on brphy', (t) => {
  const p = planLab({ labId: 'o1', nodes: 2, nsPrefix: 'knt-lx-', backend: 'ovs-gre' });
  t.is(p.backend, 'ovs-gre');
  t.deepEqual(JSON.parse(p.networkConfig), { Network: '10.244.0.0/16', Backend: { Type: 'ovs-gre', DatapathType: 'netdev' } });
  t.deepEqual(underlayLinks(p).perNode.get('knt-lx-node-1'), ['link set eth0 up']);
  t.is(agentIface(p), 'brphy');
  t.is(ovsNodeRoute(p), 'route replace default via 192.168.50.254 dev brphy');
  t.is(agentIface(planLab({ labId: 'o1', nodes: 2 })), 'eth0');
});

test('underlayLinks: one veth per node into its namespace, the outside host on the same bridge', (t) => {
  const p = planLab({ labId: 'l1', nodes: 2, nsPrefix: 'knt-lx-' });
  const l = underlayLinks(p);
  t.true(l.underlay.includes('link add n1 type veth peer name eth0 netns knt-lx-node-1'));
  t.true(l.underlay.includes('link set n2 master br0 up'));
  t.true(l.underlay.includes('link add outside type veth peer name eth0 netns knt-lx-outside'));
  t.deepEqual(l.perNode.get('knt-lx-node-2'), ['addr add 192.168.50.2/24 dev eth0', 'link set eth0 up', 'route add default via 192.168.50.254']);
  t.deepEqual(l.outside, ['addr add 192.168.50.200/24 dev eth0', 'link set eth0 up']);
});

test('pod namespaces: prefixed, stable, distinct per namespace/name', (t) => {
  const a = podNetnsName('knl-x-', 'default', 'web-1');
  t.true(a.startsWith('knl-x-p-'));
  t.is(a, podNetnsName('knl-x-', 'default', 'web-1'));
  t.not(a, podNetnsName('knl-x-', 'other', 'web-1'));
  t.regex(a, /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/);
});

test('configs: conflist as a runtime reads it, kube-proxy config, kubeconfig', (t) => {
  const list = cniConflist({ subnetFile: '/lab/nodes/node-1/subnet.env', dataDir: '/lab/nodes/node-1/ipam' });
  t.deepEqual(pluginConfFromList(list), { cniVersion: '1.1.0', name: 'knet', type: 'knet', subnetFile: '/lab/nodes/node-1/subnet.env', bridge: 'cni0', hairpinMode: true, dataDir: '/lab/nodes/node-1/ipam', iptablesBackend: 'nft' });
  const p = planLab({ labId: 'a', nodes: 1 });
  const kp = kubeProxyConfig(p, p.nodes[0]!, false);
  t.regex(kp, /hostnameOverride: node-1/);
  t.regex(kp, /clusterCIDR: 10\.244\.0\.0\/16/);
  t.regex(kp, /masqueradeAll: false/);
  t.regex(kp, /^mode: iptables$/m);
  const us = planLab({ labId: 'a', nodes: 1, proxyMode: 'userspace' });
  t.regex(kubeProxyConfig(us, us.nodes[0]!, false), /^mode: userspace$/m);
  const kc = kubeconfigText(p.apiServer, 'T0KEN', 'system:node:node-1');
  t.regex(kc, /server: http:\/\/192\.168\.50\.254:6443\n {4}insecure-skip-tls-verify: true/);
  t.regex(kc, /- name: system:node:node-1\n {2}user:\n {4}token: T0KEN\n/);
});

test('normalizePod: the small shape and a real Pod\'s container ports', (t) => {
  const nodes = ['node-1', 'node-2'];
  const a = normalizePod({ metadata: { name: 'web-4', labels: { app: 'web' } }, spec: { nodeName: 'node-2', ports: [8080, { port: 5353, protocol: 'UDP' }] } }, nodes);
  t.deepEqual(a.spec.containers[0]!.ports, [{ containerPort: 8080 }, { containerPort: 5353, protocol: 'UDP' }]);
  t.is(a.metadata.namespace, 'default');
  const b = normalizePod({ metadata: { name: 'x', namespace: 'demo' }, spec: { nodeName: 'node-1', containers: [{ ports: [{ containerPort: 80, name: 'http' }] }] } }, nodes);
  t.deepEqual(b.spec.containers[0]!.ports, [{ containerPort: 80, name: 'http' }]);
  t.deepEqual(normalizePod({ metadata: { name: 'y' }, spec: { nodeName: 'node-1' } }, nodes).spec.containers[0]!.ports, [{ containerPort: 8080 }]);
  t.throws(() => normalizePod({ metadata: { name: 'z' }, spec: { nodeName: 'node-9' } }, nodes), { message: /nodeName must be one of node-1, node-2/ });
  t.throws(() => normalizePod({ metadata: { name: 'Bad_Name' }, spec: { nodeName: 'node-1' } }, nodes), { message: /DNS label/ });
  t.throws(() => normalizePod({ metadata: { name: 'p' }, spec: { nodeName: 'node-1', ports: [70000] } }, nodes), { message: /port number/ });
});

test('defaultWorkload: a client per node, three web pods on different nodes, five services', (t) => {
  const w = defaultWorkload(['node-1', 'node-2', 'node-3']);
  t.deepEqual(w.pods.map((p) => `${p.metadata.name}@${p.spec.nodeName}`), ['client-1@node-1', 'client-2@node-2', 'client-3@node-3', 'web-1@node-1', 'web-2@node-2', 'web-3@node-3']);
  t.deepEqual(w.services.map((s) => s.metadata.name), ['web', 'web-nodeport', 'web-sticky', 'dns', 'external']);
  t.is(w.services.find((s) => s.metadata.name === 'web-sticky')!.spec!.sessionAffinity, 'ClientIP');
  t.is(w.services.find((s) => s.metadata.name === 'external')!.spec!.selector, undefined);
  t.is(w.slices[0]!.endpoints![0]!.addresses[0], '192.168.50.200');
  // One node: everything on it.
  t.true(defaultWorkload(['node-1']).pods.every((p) => p.spec.nodeName === 'node-1'));
});

const withIP = (p: LabPod, ip: string): LabPod => ({ ...p, status: { podIP: ip } });

test('deriveEndpointSlices: selected, addressed pods in the namespace; target ports resolved; selector-less skipped', (t) => {
  const nodes = ['node-1', 'node-2'];
  const pods = [
    withIP(normalizePod({ metadata: { name: 'web-2', labels: { app: 'web', tier: 'a' } }, spec: { nodeName: 'node-2', ports: [{ port: 8080, name: 'http' }] } }, nodes), '10.244.2.2'),
    withIP(normalizePod({ metadata: { name: 'web-1', labels: { app: 'web' } }, spec: { nodeName: 'node-1', ports: [{ port: 8080, name: 'http' }] } }, nodes), '10.244.1.2'),
    normalizePod({ metadata: { name: 'web-pending', labels: { app: 'web' } }, spec: { nodeName: 'node-1' } }, nodes),
    withIP(normalizePod({ metadata: { name: 'other-ns', namespace: 'x', labels: { app: 'web' } }, spec: { nodeName: 'node-1' } }, nodes), '10.244.1.9'),
    withIP(normalizePod({ metadata: { name: 'db', labels: { app: 'db' } }, spec: { nodeName: 'node-1' } }, nodes), '10.244.1.3'),
  ];
  const svc = (name: string, spec: Service['spec']): Service => ({ metadata: { name, namespace: 'default' }, spec });
  const slices = deriveEndpointSlices([
    svc('web', { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'alt', port: 81, targetPort: 9000 }] }),
    svc('ext', { ports: [{ port: 1 }] }),
    svc('none', { selector: { app: 'nothing' }, ports: [{ port: 80 }] }),
  ], pods);
  t.is(slices.length, 2);
  const web = slices[0]!;
  t.is(web.metadata.name, 'web-lab');
  t.is(web.metadata.labels!['kubernetes.io/service-name'], 'web');
  t.is(web.metadata.labels!['endpointslice.kubernetes.io/managed-by'], 'lab.knet.dev');
  t.deepEqual(web.endpoints!.map((e) => [e.addresses[0], e.nodeName]), [['10.244.1.2', 'node-1'], ['10.244.2.2', 'node-2']]);
  t.deepEqual(web.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }, { name: 'alt', protocol: 'TCP', port: 9000 }]);
  t.deepEqual(slices[1]!.endpoints, []);

  // The v1 Endpoints the endpoints controller keeps: same members, resolved ports only.
  const eps = deriveEndpoints(slices);
  t.is(eps[0]!.metadata.name, 'web');
  t.deepEqual(eps[0]!.subsets, [{
    addresses: [{ ip: '10.244.1.2', nodeName: 'node-1', targetRef: { kind: 'Pod', namespace: 'default', name: 'web-1' } }, { ip: '10.244.2.2', nodeName: 'node-2', targetRef: { kind: 'Pod', namespace: 'default', name: 'web-2' } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }, { name: 'alt', port: 9000, protocol: 'TCP' }],
  }]);
  t.is(eps[1]!.subsets, undefined, 'no ready pod: no subset');
});

test('mirrorEndpointSlices: hand-kept Endpoints of a selector-less Service become slices; others are not mirrored', (t) => {
  const services: Service[] = [
    { metadata: { name: 'mysql', namespace: 'default' }, spec: { ports: [{ port: 3306 }] } },
    { metadata: { name: 'web', namespace: 'default' }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } },
  ];
  const endpoints = [
    { metadata: { name: 'mysql', namespace: 'default' }, subsets: [{ addresses: [{ ip: '192.168.50.200' }], notReadyAddresses: [{ ip: '192.168.50.201' }], ports: [{ port: 3306 }] }] },
    { metadata: { name: 'web', namespace: 'default' }, subsets: [{ addresses: [{ ip: '10.0.0.1' }], ports: [{ port: 80 }] }] },
    { metadata: { name: 'orphan', namespace: 'default' }, subsets: [{ addresses: [{ ip: '10.0.0.2' }], ports: [{ port: 80 }] }] },
    { metadata: { name: 'mysql', namespace: 'default', labels: { 'endpointslice.kubernetes.io/skip-mirror': 'true' } }, subsets: [{ addresses: [{ ip: '10.0.0.3' }], ports: [{ port: 1 }] }] },
  ];
  const slices = mirrorEndpointSlices(services, endpoints);
  t.is(slices.length, 1);
  t.is(slices[0]!.metadata.labels!['kubernetes.io/service-name'], 'mysql');
  t.is(slices[0]!.metadata.labels!['endpointslice.kubernetes.io/managed-by'], 'endpointslicemirroring-controller.k8s.io');
  t.deepEqual(slices[0]!.endpoints!.map((e) => [e.addresses[0], e.conditions!.ready]), [['192.168.50.200', true], ['192.168.50.201', false]]);
  t.deepEqual(slices[0]!.ports, [{ name: '', protocol: 'TCP', port: 3306 }]);
  // The same conversion as `knet rules`: an IPv6 address gets a slice of its own family, and an
  // Endpoints of the wrong shape mirrors to nothing.
  const dual = mirrorEndpointSlices(services, [
    { metadata: { name: 'mysql', namespace: 'default' }, subsets: [{ addresses: [{ ip: '192.168.50.200' }, { ip: 'fd00::200' }], ports: [{ port: 3306 }] }] },
    { metadata: { name: 'mysql', namespace: 'default' }, subsets: 'oops' } as unknown as (typeof endpoints)[number],
  ]);
  t.deepEqual(dual.map((sl) => [sl.metadata.name, sl.addressType, sl.endpoints!.map((e) => e.addresses[0])]), [
    ['mysql-mirror-0', 'IPv4', ['192.168.50.200']], ['mysql-mirror-0-v6', 'IPv6', ['fd00::200']],
  ]);
});

test('parseLabManifests: multi-document YAML, Lists, only lab kinds', (t) => {
  const m = parseLabManifests([
    'apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}',
    'apiVersion: v1\nkind: List\nitems:\n- {kind: Pod, metadata: {name: p1}, spec: {nodeName: node-1}}\n- {kind: EndpointSlice, metadata: {name: s1}}',
  ].join('\n---\n'), 'f.yaml');
  t.deepEqual(m.map((x) => x.kind), ['Service', 'Pod', 'EndpointSlice']);
  t.throws(() => parseLabManifests('kind: Deployment\nmetadata: {name: x}\n', 'f'), { message: /not applied by knet lab apply/ });
  t.deepEqual(parseLabManifests('kind: Namespace\nmetadata: {name: demo}\n', 'f').map((x) => x.kind), ['Namespace']);
  t.throws(() => parseLabManifests('kind: Pod\nmetadata: {name: ../x}\n', 'f'), { message: /DNS label/ });
  t.throws(() => parseLabManifests('kind: [\n', 'f'), { message: /^f:2:1: / });
  // Mistyped structure: a clear error naming the place, not a TypeError.
  t.throws(() => parseLabManifests('kind: List\nitems: {a: 1}\n', 'f'), { message: 'f document 1: items is not a list' });
  t.throws(() => parseLabManifests('kind: List\nitems: nope\n', 'f'), { message: 'f document 1: items is not a list' });
  t.throws(() => parseLabManifests('kind: {toString: 1}\n', 'f'), { message: /f document 1: kind \{"toString":1\} is not applied/ });
  t.throws(() => parseLabManifests('kind: Pod\nmetadata: x\n', 'f'), { message: 'f document 1: metadata is not an object' });
  t.is(kindOf('svc'), 'services');
  t.throws(() => kindOf('node'));
});

test('findProgram: an executable file on the PATH, or null (knet lab kubectl says how to install kubectl)', (t) => {
  t.is(findProgram('sh', '/nonexistent:/bin'), '/bin/sh');
  t.is(findProgram('sh', '/nonexistent'), null);
  t.is(findProgram('passwd', '/etc'), null, 'not executable');
  t.is(findProgram('bin', '/'), null, 'a directory is not a program');
});
