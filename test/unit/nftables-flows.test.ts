// Where packets go through the rendered nftables table, for the cases kube-proxy's own packet
// flow tests check: masquerading with and without a local-traffic detector and with
// masqueradeAll, traffic policies, terminating endpoints, no-endpoint reject/drop, unallocated
// cluster IPs, LoadBalancer source ranges and node port addresses (IPv4 and IPv6). The table is
// interpreted by test/helpers/nft-trace.ts; the kernel tests send real packets.
import test from 'ava';
import { nftRender, nftSettings, SERVICE_CIDR } from '../helpers/nft.ts';
import { traceFlow, type Packet } from '../helpers/nft-trace.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

const NODE_IPS = ['192.168.0.2', '192.168.1.2', '192.168.99.11', '2001:db8::1', '2001:db8:1::2'];
const NODE = '192.168.0.2';
const EXTERNAL_CLIENT = '203.0.113.2';
const BLOCKED_CLIENT = '203.0.113.130';

interface Flow extends Packet { name: string; output: string; masq?: boolean }

function check(t: import('ava').ExecutionContext, text: string, flows: Flow[]): void {
  for (const f of flows) {
    const r = traceFlow(text, f, NODE_IPS);
    t.is(r.output, f.output, f.name);
    if (f.masq !== undefined && !['DROP', 'REJECT', ''].includes(f.output)) t.is(r.masq, f.masq, `${f.name}: masquerade`);
  }
}

const yamlService = (ns: string, name: string, spec: string) =>
  `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec.trim().replace(/^/gm, '  ')}\n---\n`;
const yamlLB = (ns: string, name: string, spec: string, ingress: string[]) =>
  yamlService(ns, name, spec).replace(/---\n$/, `status:\n  loadBalancer:\n    ingress: [${ingress.map((ip) => `{ip: ${ip}}`).join(', ')}]\n---\n`);
const yamlSlice = (ns: string, name: string, endpoints: string, ports = '- {name: p80, port: 80, protocol: TCP}', addressType = 'IPv4') =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${name}-1, namespace: ${ns}, labels: {kubernetes.io/service-name: ${name}}}\naddressType: ${addressType}\nendpoints:\n${endpoints.trim()}\nports:\n${ports}\n---\n`;
const ep = (ip: string, node?: string, conditions?: string) => `- {addresses: [${ip}]${node ? `, nodeName: ${node}` : ''}${conditions ? `, conditions: {${conditions}}` : ''}}\n`;

// --- masquerading: pods, the node and outside clients to cluster IPs, node ports and LBs -------

const masqCluster = SERVICE_CIDR()
  + yamlLB('ns1', 'svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]\nhealthCheckNodePort: 30001', ['1.2.3.4'])
  + yamlLB('ns2', 'svc2', 'type: LoadBalancer\nclusterIP: 172.30.0.42\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3002}]\nhealthCheckNodePort: 30002\nexternalTrafficPolicy: Local', ['5.6.7.8'])
  + yamlLB('ns3', 'svc3', 'type: LoadBalancer\nclusterIP: 172.30.0.43\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3003}]\nhealthCheckNodePort: 30003\ninternalTrafficPolicy: Local', ['9.10.11.12'])
  + yamlSlice('ns1', 'svc1', ep('10.180.0.1', 'test-node') + ep('10.180.1.1', 'remote'))
  + yamlSlice('ns2', 'svc2', ep('10.180.0.2', 'test-node') + ep('10.180.1.2', 'remote'))
  + yamlSlice('ns3', 'svc3', ep('10.180.0.3', 'test-node') + ep('10.180.1.3', 'remote'));

const POD = '10.0.0.2';
const all1 = '10.180.0.1:80, 10.180.1.1:80';
const all2 = '10.180.0.2:80, 10.180.1.2:80';
const all3 = '10.180.0.3:80, 10.180.1.3:80';
const masqFlows: Flow[] = [
  { name: 'pod to ClusterIP', src: POD, dst: '172.30.0.41', port: 80, output: all1, masq: false },
  { name: 'pod to NodePort', src: POD, dst: NODE, port: 3001, output: all1, masq: true },
  { name: 'pod to LB', src: POD, dst: '1.2.3.4', port: 80, output: all1, masq: true },
  { name: 'node to ClusterIP', src: NODE, dst: '172.30.0.41', port: 80, output: all1, masq: true },
  { name: 'node to NodePort', src: NODE, dst: NODE, port: 3001, output: all1, masq: true },
  { name: 'node to LB', src: NODE, dst: '1.2.3.4', port: 80, output: all1, masq: true },
  { name: 'external to ClusterIP', src: EXTERNAL_CLIENT, dst: '172.30.0.41', port: 80, output: all1, masq: true },
  { name: 'external to NodePort', src: EXTERNAL_CLIENT, dst: NODE, port: 3001, output: all1, masq: true },
  { name: 'external to LB', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: all1, masq: true },
  { name: 'pod to ClusterIP with eTP:Local', src: POD, dst: '172.30.0.42', port: 80, output: all2, masq: false },
  { name: 'pod to NodePort with eTP:Local', src: POD, dst: NODE, port: 3002, output: all2, masq: false },
  { name: 'pod to LB with eTP:Local', src: POD, dst: '5.6.7.8', port: 80, output: all2, masq: false },
  { name: 'node to ClusterIP with eTP:Local', src: NODE, dst: '172.30.0.42', port: 80, output: all2, masq: true },
  { name: 'node to NodePort with eTP:Local', src: NODE, dst: NODE, port: 3001, output: all1, masq: true },
  { name: 'node to LB with eTP:Local', src: NODE, dst: '5.6.7.8', port: 80, output: all2, masq: true },
  { name: 'external to ClusterIP with eTP:Local', src: EXTERNAL_CLIENT, dst: '172.30.0.42', port: 80, output: all2, masq: true },
  { name: 'external to NodePort with eTP:Local', src: EXTERNAL_CLIENT, dst: NODE, port: 3002, output: '10.180.0.2:80', masq: false },
  { name: 'external to LB with eTP:Local', src: EXTERNAL_CLIENT, dst: '5.6.7.8', port: 80, output: '10.180.0.2:80', masq: false },
  { name: 'pod to ClusterIP with iTP:Local', src: POD, dst: '172.30.0.43', port: 80, output: '10.180.0.3:80', masq: false },
  { name: 'pod to NodePort with iTP:Local', src: POD, dst: NODE, port: 3003, output: all3, masq: true },
  { name: 'pod to LB with iTP:Local', src: POD, dst: '9.10.11.12', port: 80, output: all3, masq: true },
  { name: 'node to ClusterIP with iTP:Local', src: NODE, dst: '172.30.0.43', port: 80, output: '10.180.0.3:80', masq: true },
  { name: 'node to NodePort with iTP:Local', src: NODE, dst: NODE, port: 3003, output: all3, masq: true },
  { name: 'node to LB with iTP:Local', src: NODE, dst: '9.10.11.12', port: 80, output: all3, masq: true },
  { name: 'external to ClusterIP with iTP:Local', src: EXTERNAL_CLIENT, dst: '172.30.0.43', port: 80, output: '10.180.0.3:80', masq: true },
  { name: 'external to NodePort with iTP:Local', src: EXTERNAL_CLIENT, dst: NODE, port: 3003, output: all3, masq: true },
  { name: 'external to LB with iTP:Local', src: EXTERNAL_CLIENT, dst: '9.10.11.12', port: 80, output: all3, masq: true },
];

const variants: Array<{ name: string; settings: Partial<ProxySettings>; overrides: Record<string, Partial<Flow>> }> = [
  { name: 'base', settings: {}, overrides: {} },
  {
    // Without a detector all cluster IP traffic counts as pod traffic, and there is no
    // short-circuit of pod traffic to eTP:Local external addresses.
    name: 'no local-traffic detector', settings: { localDetector: { mode: 'None' } }, overrides: {
      'node to ClusterIP': { masq: false }, 'node to ClusterIP with eTP:Local': { masq: false }, 'node to ClusterIP with iTP:Local': { masq: false },
      'external to ClusterIP': { masq: false }, 'external to ClusterIP with eTP:Local': { masq: false }, 'external to ClusterIP with iTP:Local': { masq: false },
      'pod to NodePort with eTP:Local': { output: '10.180.0.2:80' }, 'pod to LB with eTP:Local': { output: '10.180.0.2:80' },
    },
  },
  {
    name: 'masqueradeAll', settings: { masqueradeAll: true }, overrides: {
      'pod to ClusterIP': { masq: true }, 'pod to ClusterIP with eTP:Local': { masq: true }, 'pod to ClusterIP with iTP:Local': { masq: true },
    },
  },
  {
    name: 'masqueradeAll, no local-traffic detector', settings: { masqueradeAll: true, localDetector: { mode: 'None' } }, overrides: {
      'pod to ClusterIP': { masq: true }, 'pod to ClusterIP with eTP:Local': { masq: true }, 'pod to ClusterIP with iTP:Local': { masq: true },
      'pod to NodePort with eTP:Local': { output: '10.180.0.2:80' }, 'pod to LB with eTP:Local': { output: '10.180.0.2:80' },
    },
  },
];

for (const v of variants) {
  test(`masquerading, ${v.name}`, (t) => {
    const text = nftRender(masqCluster, nftSettings(v.settings));
    check(t, text, masqFlows.map((f) => ({ ...f, ...v.overrides[f.name] })));
  });
}

test('pod traffic is recognised by every detector: NodeCIDR, bridge interface, interface name prefix', (t) => {
  const flows = (iif: string): Flow[] => [
    { name: 'pod to LB with eTP:Local', src: POD, dst: '5.6.7.8', port: 80, iif, output: all2, masq: false },
    { name: 'external to LB with eTP:Local', src: EXTERNAL_CLIENT, dst: '5.6.7.8', port: 80, iif: 'eth0', output: '10.180.0.2:80', masq: false },
    { name: 'external to ClusterIP', src: EXTERNAL_CLIENT, dst: '172.30.0.41', port: 80, iif: 'eth0', output: all1, masq: true },
  ];
  check(t, nftRender(masqCluster, nftSettings({ localDetector: { mode: 'NodeCIDR', cidrs: ['10.0.0.0/24'] } })), flows('cni0'));
  check(t, nftRender(masqCluster, nftSettings({ localDetector: { mode: 'BridgeInterface', interface: 'cni0' } })), flows('cni0'));
  check(t, nftRender(masqCluster, nftSettings({ localDetector: { mode: 'InterfaceNamePrefix', prefix: 'veth' } })), flows('veth1234'));
});

// --- traffic policies and terminating endpoints --------------------------------------------

test('externalTrafficPolicy Local keeps outside clients on local endpoints, unmasqueraded; Cluster masquerades', (t) => {
  const svc = (etp: string) => SERVICE_CIDR()
    + yamlLB('ns1', 'svc1', `type: LoadBalancer\nclusterIP: 172.30.0.41\nexternalIPs: [192.168.99.11]\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001, targetPort: 80}]\nhealthCheckNodePort: 30000\nexternalTrafficPolicy: ${etp}`, ['1.2.3.4'])
    + yamlSlice('ns1', 'svc1', ep('10.180.0.1') + ep('10.180.2.1', 'test-node'));
  const both = '10.180.0.1:80, 10.180.2.1:80';
  check(t, nftRender(svc('Local')), [
    { name: 'pod to cluster IP', src: POD, dst: '172.30.0.41', port: 80, output: both, masq: false },
    { name: 'pod to external IP', src: POD, dst: '192.168.99.11', port: 80, output: both, masq: false },
    { name: 'external to external IP', src: EXTERNAL_CLIENT, dst: '192.168.99.11', port: 80, output: '10.180.2.1:80', masq: false },
    { name: 'pod to LB', src: POD, dst: '1.2.3.4', port: 80, output: both, masq: false },
    { name: 'external to LB', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: '10.180.2.1:80', masq: false },
    { name: 'pod to NodePort', src: POD, dst: NODE, port: 3001, output: both, masq: false },
    { name: 'external to NodePort', src: EXTERNAL_CLIENT, dst: NODE, port: 3001, output: '10.180.2.1:80', masq: false },
  ]);
  check(t, nftRender(svc('Cluster')), [
    { name: 'pod to cluster IP', src: POD, dst: '172.30.0.41', port: 80, output: both, masq: false },
    { name: 'pod to external IP', src: POD, dst: '192.168.99.11', port: 80, output: both, masq: true },
    { name: 'external to external IP', src: EXTERNAL_CLIENT, dst: '192.168.99.11', port: 80, output: both, masq: true },
    { name: 'pod to LB', src: POD, dst: '1.2.3.4', port: 80, output: both, masq: true },
    { name: 'external to LB', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: both, masq: true },
    { name: 'pod to NodePort', src: POD, dst: NODE, port: 3001, output: both, masq: true },
    { name: 'external to NodePort', src: EXTERNAL_CLIENT, dst: NODE, port: 3001, output: both, masq: true },
  ]);
});

const READY = 'ready: true, serving: true, terminating: false';
const TERMINATING = 'ready: false, serving: true, terminating: true';
const GONE = 'ready: false, serving: false, terminating: true';

for (const etp of ['Local', 'Cluster'] as const) {
  const svc = SERVICE_CIDR() + yamlLB('ns1', 'svc1', `type: LoadBalancer\nclusterIP: 172.30.1.1\nexternalTrafficPolicy: ${etp}\nports: [{port: 80, targetPort: 80, protocol: TCP}]\nhealthCheckNodePort: 30000`, ['1.2.3.4']);
  const slice = (eps: string) => yamlSlice('ns1', 'svc1', eps, '- {name: "", port: 80, protocol: TCP}');
  const cases: Array<{ name: string; eps: string; cluster: string; lb: string; lbMasq: boolean }> = etp === 'Local' ? [
    { name: 'ready endpoints exist', eps: ep('10.0.1.1', 'test-node', READY) + ep('10.0.1.2', 'test-node', READY) + ep('10.0.1.3', 'test-node', TERMINATING) + ep('10.0.1.4', 'test-node', GONE) + ep('10.0.1.5', 'node-1', READY),
      cluster: '10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80', lb: '10.0.1.1:80, 10.0.1.2:80', lbMasq: false },
    { name: 'only terminating endpoints exist locally', eps: ep('10.0.1.2', 'test-node', TERMINATING) + ep('10.0.1.3', 'test-node', TERMINATING) + ep('10.0.1.4', 'test-node', GONE) + ep('10.0.1.5', 'node-1', READY),
      cluster: '10.0.1.5:80', lb: '10.0.1.2:80, 10.0.1.3:80', lbMasq: false },
    { name: 'terminating endpoints on a remote node only', eps: ep('10.0.1.5', 'node-1', TERMINATING), cluster: '10.0.1.5:80', lb: 'DROP', lbMasq: false },
    { name: 'no usable endpoints on any node', eps: ep('10.0.1.5', 'test-node', GONE) + ep('10.0.1.6', 'node-1', GONE), cluster: 'REJECT', lb: 'REJECT', lbMasq: false },
  ] : [
    { name: 'ready endpoints exist', eps: ep('10.0.1.1', 'test-node', READY) + ep('10.0.1.2', 'test-node', READY) + ep('10.0.1.3', 'another-node', TERMINATING) + ep('10.0.1.4', 'another-node', GONE) + ep('10.0.1.5', 'another-node', READY),
      cluster: '10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80', lb: '10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80', lbMasq: true },
    { name: 'only terminating endpoints exist', eps: ep('10.0.1.2', 'test-node', TERMINATING) + ep('10.0.1.3', 'test-node', TERMINATING) + ep('10.0.1.4', 'another-node', GONE) + ep('10.0.1.5', 'another-node', TERMINATING),
      cluster: '10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80', lb: '10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80', lbMasq: true },
    { name: 'terminating endpoints on a remote node only', eps: ep('10.0.1.5', 'node-1', TERMINATING), cluster: '10.0.1.5:80', lb: '10.0.1.5:80', lbMasq: true },
    { name: 'no usable endpoints on any node', eps: ep('10.0.1.5', 'test-node', GONE) + ep('10.0.1.6', 'node-1', GONE), cluster: 'REJECT', lb: 'REJECT', lbMasq: false },
  ];
  for (const c of cases) {
    test(`terminating endpoints, externalTrafficPolicy ${etp}: ${c.name}; then the endpoints are deleted`, (t) => {
      check(t, nftRender(svc + slice(c.eps)), [
        { name: 'pod to clusterIP', src: POD, dst: '172.30.1.1', port: 80, output: c.cluster, masq: false },
        { name: 'external to LB', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: c.lb, masq: c.lbMasq },
      ]);
      check(t, nftRender(svc, undefined, svc + slice(c.eps)), [
        { name: 'pod to clusterIP after endpoints deleted', src: POD, dst: '172.30.1.1', port: 80, output: 'REJECT' },
        { name: 'external to LB after endpoints deleted', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: 'REJECT' },
      ]);
    });
  }
}

test('internalTrafficPolicy: Cluster reaches all, Local only this node, Local without local endpoints drops', (t) => {
  const svc = (itp: string) => yamlService('ns1', 'svc1', `clusterIP: 172.30.1.1\ninternalTrafficPolicy: ${itp}\nports: [{port: 80, protocol: TCP}]`);
  const slice = (nodes: string[]) => yamlSlice('ns1', 'svc1', nodes.map((n, i) => ep(`10.0.1.${i + 1}`, n, 'ready: true')).join(''), '- {name: "", port: 80, protocol: TCP}');
  const flow = (output: string): Flow[] => [{ name: 'pod to ClusterIP', src: POD, dst: '172.30.1.1', port: 80, output, masq: false }];
  check(t, nftRender(svc('Cluster') + slice(['test-node', 'node1', 'node2'])), flow('10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80'));
  check(t, nftRender(svc('Local') + slice(['test-node', 'node1', 'node2'])), flow('10.0.1.1:80'));
  check(t, nftRender(svc('Local') + slice(['test-node', 'test-node', 'node2'])), flow('10.0.1.1:80, 10.0.1.2:80'));
  check(t, nftRender(svc('Local') + slice(['node0', 'node1', 'node2'])), flow('DROP'));
  check(t, nftRender(svc('Local')), flow('REJECT'));
});

test('no endpoints: cluster IP, external IP, node port and LB IP all reject, from pods and from outside', (t) => {
  const text = nftRender(SERVICE_CIDR() + yamlLB('ns1', 'svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nexternalIPs: [192.168.99.11]\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]', ['1.2.3.4']));
  check(t, text, [
    { name: 'pod to cluster IP', src: POD, dst: '172.30.0.41', port: 80, output: 'REJECT' },
    { name: 'external to external IP', src: EXTERNAL_CLIENT, dst: '192.168.99.11', port: 80, output: 'REJECT' },
    { name: 'pod to NodePort', src: POD, dst: NODE, port: 3001, output: 'REJECT' },
    { name: 'external to NodePort', src: EXTERNAL_CLIENT, dst: NODE, port: 3001, output: 'REJECT' },
    { name: 'pod to LB', src: POD, dst: '1.2.3.4', port: 80, output: 'REJECT' },
    { name: 'external to LB', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: 'REJECT' },
  ]);
});

test('cluster IPs: ports, protocols and target ports; other ports reject; unallocated cluster IPs drop', (t) => {
  const text = nftRender(SERVICE_CIDR()
    + yamlService('ns1', 'svc1', 'clusterIP: 172.30.0.41\nports: [{name: http, port: 80, protocol: TCP}]')
    + yamlService('ns2', 'svc2', 'clusterIP: 172.30.0.42\nports:\n- {name: http, port: 80, protocol: TCP}\n- {name: https, port: 443, protocol: TCP, targetPort: 8443}\n- {name: dns-udp, port: 53, protocol: UDP}\n- {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}\n- {name: dns-sctp, port: 53, protocol: SCTP}')
    + yamlSlice('ns1', 'svc1', ep('10.180.0.1', 'test-node'), '- {name: http, port: 80, protocol: TCP}')
    + yamlSlice('ns2', 'svc2', ep('10.180.0.1', 'test-node') + ep('10.180.2.1', 'node2'),
      '- {name: http, port: 80, protocol: TCP}\n- {name: https, port: 8443, protocol: TCP}\n- {name: dns-udp, port: 53, protocol: UDP}\n- {name: dns-tcp, port: 5353, protocol: TCP}\n- {name: dns-sctp, port: 53, protocol: SCTP}'));
  check(t, text, [
    { name: 'simple clusterIP', src: '10.180.0.2', dst: '172.30.0.41', port: 80, output: '10.180.0.1:80', masq: false },
    { name: 'hairpin to cluster IP', src: '10.180.0.1', dst: '172.30.0.41', port: 80, output: '10.180.0.1:80', masq: true },
    { name: 'clusterIP with multiple endpoints', src: '10.180.0.2', dst: '172.30.0.42', port: 80, output: '10.180.0.1:80, 10.180.2.1:80', masq: false },
    { name: 'clusterIP with TargetPort', src: '10.180.0.2', dst: '172.30.0.42', port: 443, output: '10.180.0.1:8443, 10.180.2.1:8443', masq: false },
    { name: 'TCP on a port shared by three protocols', src: '10.180.0.2', dst: '172.30.0.42', port: 53, protocol: 'tcp', output: '10.180.0.1:5353, 10.180.2.1:5353', masq: false },
    { name: 'UDP on a port shared by three protocols', src: '10.180.0.2', dst: '172.30.0.42', port: 53, protocol: 'udp', output: '10.180.0.1:53, 10.180.2.1:53', masq: false },
    { name: 'SCTP on a port shared by three protocols', src: '10.180.0.2', dst: '172.30.0.42', port: 53, protocol: 'sctp', output: '10.180.0.1:53, 10.180.2.1:53', masq: false },
    { name: 'a TCP-only port does not take UDP', src: '10.180.0.2', dst: '172.30.0.42', port: 80, protocol: 'udp', output: 'REJECT' },
    { name: 'svc1 does not accept svc2\'s ports', src: '10.180.0.2', dst: '172.30.0.41', port: 443, output: 'REJECT' },
    { name: 'packet to an unallocated cluster IP', src: '10.180.0.2', dst: '172.30.0.50', port: 80, output: 'DROP' },
    { name: 'packet outside the service CIDR', src: '10.180.0.2', dst: '172.31.0.50', port: 80, output: '' },
  ]);
});

test('LoadBalancer source ranges: allowed and blocked clients, node ports unaffected, the node and its own VIP allowed', (t) => {
  const text = nftRender(SERVICE_CIDR()
    + yamlLB('ns1', 'svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]\nloadBalancerSourceRanges: [192.168.0.0/24, " 203.0.113.0/25"]', ['1.2.3.4', '5.6.7.8'])
    + yamlSlice('ns1', 'svc1', ep('10.180.0.1')));
  const e = '10.180.0.1:80';
  check(t, text, [
    { name: 'pod to cluster IP', src: '10.0.0.2', dst: '172.30.0.41', port: 80, output: e, masq: false },
    { name: 'external to nodePort', src: EXTERNAL_CLIENT, dst: NODE, port: 3001, output: e, masq: true },
    { name: 'nodePort bypasses LoadBalancerSourceRanges', src: BLOCKED_CLIENT, dst: NODE, port: 3001, output: e, masq: true },
    { name: 'accepted external to LB1', src: EXTERNAL_CLIENT, dst: '1.2.3.4', port: 80, output: e, masq: true },
    { name: 'accepted external to LB2', src: EXTERNAL_CLIENT, dst: '5.6.7.8', port: 80, output: e, masq: true },
    { name: 'blocked external to LB1', src: BLOCKED_CLIENT, dst: '1.2.3.4', port: 80, output: 'DROP' },
    { name: 'blocked external to LB2', src: BLOCKED_CLIENT, dst: '5.6.7.8', port: 80, output: 'DROP' },
    { name: 'pod to LB1 (blocked by LoadBalancerSourceRanges)', src: '10.0.0.2', dst: '1.2.3.4', port: 80, output: 'DROP' },
    { name: 'node to LB1 (allowed by LoadBalancerSourceRanges)', src: NODE, dst: '1.2.3.4', port: 80, output: e, masq: true },
    { name: 'same node to LB1, SNATted to LB1 (implicitly allowed)', src: '1.2.3.4', dst: '1.2.3.4', port: 80, output: e, masq: true },
    { name: 'same node to LB2, SNATted to LB2 (implicitly allowed)', src: '5.6.7.8', dst: '5.6.7.8', port: 80, output: e, masq: true },
  ]);
});

for (const c of [
  { name: 'IPv4', family: 'IPv4' as const, npa: undefined, altAllowed: false },
  { name: 'IPv4, several nodePortAddresses', family: 'IPv4' as const, npa: ['192.168.0.0/24', '192.168.1.0/24', '2001:db8::/64'], altAllowed: true },
  { name: 'IPv6', family: 'IPv6' as const, npa: undefined, altAllowed: false },
  { name: 'IPv6, several nodePortAddresses', family: 'IPv6' as const, npa: ['192.168.0.0/24', '192.168.1.0/24', '2001:db8::/64', '2001:db8:1::2/128'], altAllowed: true },
]) {
  test(`node ports, ${c.name}`, (t) => {
    const v6 = c.family === 'IPv6';
    const [svcIP, ep1, ep2, node, alt, pod, client] = v6
      ? ['fd00:172:30::41', 'fd00:10:180::1', 'fd00:10:180::2:1', '2001:db8::1', '2001:db8:1::2', 'fd00:10::2', '2600:5200::1']
      : ['172.30.0.41', '10.180.0.1', '10.180.2.1', NODE, '192.168.1.2', '10.0.0.2', EXTERNAL_CLIENT];
    const settings = nftSettings({ family: c.family, ...(c.npa ? { nodePortAddresses: c.npa } : {}) });
    const text = nftRender(SERVICE_CIDR(v6 ? ['fd00:10:96::/112'] : undefined)
      + yamlService('ns1', 'svc1', `type: NodePort\nclusterIP: ${svcIP}\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]`)
      + yamlSlice('ns1', 'svc1', ep(ep1) + ep(ep2, 'test-node'), undefined, c.family), settings);
    const both = v6 ? `[${ep1}]:80, [${ep2}]:80` : `${ep1}:80, ${ep2}:80`;
    check(t, text, [
      { name: 'pod to cluster IP', src: pod, dst: svcIP, port: 80, output: both, masq: false },
      { name: 'external to nodePort', src: client, dst: node, port: 3001, output: both, masq: true },
      { name: 'node to nodePort', src: node, dst: node, port: 3001, output: both, masq: true },
      c.altAllowed
        ? { name: 'external to nodePort on the secondary IP', src: client, dst: alt, port: 3001, output: both, masq: true }
        : { name: 'the secondary node IP ignores node ports', src: client, dst: alt, port: 3001, output: '' },
    ]);
  });
}
