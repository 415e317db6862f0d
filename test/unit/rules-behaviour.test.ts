import test from 'ava';
import { render, rulesOf, settings, slice, svc } from '../helpers/rules.ts';
import { servicePortChains, endpointChain } from '../../src/rules/names.ts';
import { probability, renderIptables, masqueradeMark } from '../../src/rules/iptables.ts';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { localDetectorFor, parseKubeProxyConfig, parseDuration, ConfigError } from '../../src/rules/config.ts';
import { changedServices } from '../../src/rules/changes.ts';

const web = svc('web', 'clusterIP: 172.30.0.10\nports:\n- {name: p80, port: 80, protocol: TCP}');
const ep = (ip: string, extra = '') => `- {addresses: [${ip}]${extra}}`;

test('chain names hash "ns/name:port" + protocol like kube-proxy', (t) => {
  t.is(servicePortChains('ns1/svc1:p80', 'tcp').cluster, 'KUBE-SVC-XPGD46QRK7WJZT7O');
  t.is(servicePortChains('ns1/svc1:p80', 'udp').cluster === 'KUBE-SVC-XPGD46QRK7WJZT7O', false);
  t.regex(endpointChain('ns1/svc1:p80', 'tcp', '10.180.0.1:80'), /^KUBE-SEP-[A-Z2-7]{16}$/);
});

test('probabilities are 1/n, 1/(n-1), ... with ten decimals; mark from masqueradeBit', (t) => {
  t.is(probability(3), '0.3333333333');
  t.is(probability(2), '0.5000000000');
  t.is(masqueradeMark(14), '0x4000');
  const r = render(web + slice('web', [ep('10.1.0.1'), ep('10.1.0.2'), ep('10.1.0.3')].join('\n')));
  const svcChain = servicePortChains('ns1/web:p80', 'tcp').cluster;
  const lines = rulesOf(r.text, svcChain);
  t.regex(lines[1]!, /--probability 0.3333333333 /);
  t.regex(lines[2]!, /--probability 0.5000000000 /);
  t.notRegex(lines[3]!, /statistic/);
});

test('leading-zero IPv4 addresses are read as decimal, as kube-proxy does', (t) => {
  const r = render(web + slice('web', ep('10.180.00.001')));
  t.true(r.text.includes('--to-destination 10.180.0.1:80'));
  t.deepEqual(r.warnings, []);
});

test('headless and ExternalName services produce nothing', (t) => {
  const r = render(svc('h', 'clusterIP: None\nports:\n- {port: 80}') + svc('x', 'type: ExternalName\nexternalName: example.org') + slice('h', ep('10.1.0.1')));
  t.false(r.text.includes('ns1/h'));
  t.false(r.text.includes('ns1/x'));
});

test('invalid objects are skipped with a warning naming object and field; the rest still renders', (t) => {
  const bad = svc('bad', 'clusterIP: 172.30.0.300\nports:\n- {port: 80}') +
    svc('badport', 'clusterIP: 172.30.0.11\nports:\n- {port: 70000}') +
    svc('badproto', 'clusterIP: 172.30.0.12\nports:\n- {port: 80, protocol: ICMP}') +
    svc('badcidr', 'type: LoadBalancer\nclusterIP: 172.30.0.13\nloadBalancerSourceRanges: [10.0.0.0/33]\nports:\n- {port: 80, nodePort: 30001}');
  const r = render(bad + web + slice('web', ep('10.1.0.1')));
  const fields = r.warnings.map((w) => `${w.object} ${w.field}`);
  t.deepEqual(fields.sort(), [
    'Service ns1/bad spec.clusterIP',
    'Service ns1/badcidr spec.loadBalancerSourceRanges[0]',
    'Service ns1/badport spec.ports[0].port',
    'Service ns1/badproto spec.ports[0].protocol',
  ]);
  t.true(r.text.includes('ns1/web:p80 cluster IP'));
});

test('nothing from a manifest can inject into rule text', (t) => {
  const evil = svc('web', 'clusterIP: 172.30.0.10\nports:\n- {name: "p80\\" -j ACCEPT", port: 80}') +
    `apiVersion: v1\nkind: Service\nmetadata: {name: "a\\nCOMMIT", namespace: ns1}\nspec: {clusterIP: 172.30.0.11, ports: [{port: 80}]}\n`;
  const r = render(evil);
  t.is(r.warnings.length, 2);
  t.false(r.text.includes('ACCEPT"'));
  t.is(r.text.split('\n').filter((l) => l === 'COMMIT').length, 2);
});

test('no endpoints: REJECT in filter KUBE-SERVICES and KUBE-EXTERNAL-SERVICES, no nat chains', (t) => {
  const r = render(svc('np', 'type: NodePort\nclusterIP: 172.30.0.20\nexternalIPs: [192.168.99.1]\nports:\n- {name: p80, port: 80, nodePort: 30080}'));
  t.regex(r.text, /-A KUBE-SERVICES -m comment --comment "ns1\/np:p80 has no endpoints" .* -j REJECT/);
  t.is(rulesOf(r.text, 'KUBE-EXTERNAL-SERVICES').length, 2);
  t.false(r.text.includes('KUBE-SVC-'));
});

test('externalTrafficPolicy Local: SVL chain with local endpoints only, EXT short-circuit, health check port', (t) => {
  const y = svc('lb', 'type: LoadBalancer\nclusterIP: 172.30.0.30\nexternalTrafficPolicy: Local\nhealthCheckNodePort: 32000\nports:\n- {name: p80, port: 80, nodePort: 30090}') +
    `status: {loadBalancer: {ingress: [{ip: 5.6.7.8}]}}\n---\n`.replace(/^/, '') ;
  const withStatus = y.replace('---\nstatus', 'status').replace(/\n---\nstatus/, '\nstatus');
  const r = render(withStatus + slice('lb', [ep('10.1.0.1', ', nodeName: node-a'), ep('10.2.0.1', ', nodeName: node-b')].join('\n')));
  const ch = servicePortChains('ns1/lb:p80', 'tcp');
  t.is(rulesOf(r.text, ch.local).length, 1, 'one local endpoint');
  t.is(rulesOf(r.text, ch.cluster).length, 3, 'masquerade rule + two endpoints');
  t.true(rulesOf(r.text, ch.external).some((l) => l.endsWith(`-j ${ch.local}`)));
  t.true(r.text.includes('"ns1/lb:p80 health check node port" -m tcp -p tcp --dport 32000 -j ACCEPT'));
});

test('internalTrafficPolicy Local without local endpoints drops cluster IP traffic', (t) => {
  const r = render(svc('it', 'clusterIP: 172.30.0.31\ninternalTrafficPolicy: Local\nports:\n- {name: p80, port: 80}') + slice('it', ep('10.2.0.1', ', nodeName: node-b')));
  t.regex(r.text, /"ns1\/it:p80 has no local endpoints" .* -j DROP/);
  t.is(r.noLocalEndpoints.internal, 1);
});

test('terminating endpoints are used only when no endpoint is ready', (t) => {
  const term = ', conditions: {ready: false, serving: true, terminating: true}';
  const r1 = render(web + slice('web', [ep('10.1.0.1', term), ep('10.1.0.2')].join('\n')));
  t.false(r1.text.includes('10.1.0.1:80'));
  const r2 = render(web + slice('web', ep('10.1.0.1', term)));
  t.true(r2.text.includes('--to-destination 10.1.0.1:80'));
  const r3 = render(web + slice('web', ep('10.1.0.1', ', conditions: {ready: false, serving: false, terminating: true}')));
  t.true(r3.text.includes('has no endpoints'));
});

test('ClientIP affinity: recent --rcheck per endpoint before the random rules, --set in SEP', (t) => {
  const r = render(svc('st', 'clusterIP: 172.30.0.40\nsessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}\nports:\n- {name: p80, port: 80}') +
    slice('st', [ep('10.1.0.1'), ep('10.1.0.2')].join('\n')));
  const ch = servicePortChains('ns1/st:p80', 'tcp').cluster;
  const lines = rulesOf(r.text, ch);
  t.regex(lines[1]!, /-m recent --name KUBE-SEP-\S+ --rcheck --seconds 300 --reap/);
  t.regex(lines[2]!, /--rcheck/);
  t.regex(lines[3]!, /statistic/);
  t.regex(r.text, /-m recent --name (KUBE-SEP-\S+) --set -m tcp -p tcp -j DNAT/);
});

test('masqueradeAll masquerades every cluster IP packet', (t) => {
  const r = render(web + slice('web', ep('10.1.0.1')), { masqueradeAll: true });
  t.regex(r.text, /"ns1\/web:p80 cluster IP" -m tcp -p tcp -d 172.30.0.10 --dport 80 -j KUBE-MARK-MASQ/);
});

test('local traffic detectors: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix, none', (t) => {
  const y = web + slice('web', ep('10.1.0.1'));
  t.true(render(y, { localDetector: { mode: 'BridgeInterface', interface: 'cni0' } }).text.includes('! -i cni0 -j KUBE-MARK-MASQ'));
  t.true(render(y, { localDetector: { mode: 'InterfaceNamePrefix', prefix: 'veth' } }).text.includes('! -i veth+ -j KUBE-MARK-MASQ'));
  t.true(render(y, { localDetector: { mode: 'NodeCIDR', cidrs: ['10.1.0.0/24'] } }).text.includes('! -s 10.1.0.0/24 -j KUBE-MARK-MASQ'));
  t.false(render(y, { localDetector: { mode: 'None' } }).text.includes('KUBE-MARK-MASQ\n-A KUBE-SVC'));
  const cfg = parseKubeProxyConfig('detectLocalMode: NodeCIDR');
  t.deepEqual(localDetectorFor(cfg, 'IPv4', ['10.9.0.0/24', 'fd00::/64']), { mode: 'NodeCIDR', cidrs: ['10.9.0.0/24'] });
  t.deepEqual(localDetectorFor(parseKubeProxyConfig('clusterCIDR: "10.0.0.0/8,fd00::/48"'), 'IPv6'), { mode: 'ClusterCIDR', cidrs: ['fd00::/48'] });
  t.throws(() => localDetectorFor(parseKubeProxyConfig('detectLocalMode: BridgeInterface'), 'IPv4'), { instanceOf: ConfigError });
});

test('nodePortAddresses: one KUBE-NODEPORTS jump per matching node address; localhost only with localhostNodePorts', (t) => {
  const y = web + slice('web', ep('10.1.0.1'));
  const r = render(y, { nodePortAddresses: ['192.168.0.0/24', '127.0.0.0/8'] });
  const last = rulesOf(r.text, 'KUBE-SERVICES').filter((l) => l.includes('must be the last rule'));
  t.deepEqual(last.map((l) => l.split(' -d ')[1]), ['192.168.0.2 -j KUBE-NODEPORTS', '127.0.0.1 -j KUBE-NODEPORTS']);
  const r2 = render(y, { nodePortAddresses: ['192.168.0.0/24'] });
  t.false(r2.text.includes('KUBE-FIREWALL'), 'no loopback in nodePortAddresses: no localnet firewall');
  const r3 = render(y, { localhostNodePorts: false });
  t.true(r3.text.includes('--dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS'));
  const r4 = render(y, { nodePortAddresses: ['primary'] });
  t.true(r4.text.includes('-d 192.168.0.2 -j KUBE-NODEPORTS'));
});

test('IPv6: bracketed endpoints, no localhost node ports, IPv4 objects ignored', (t) => {
  const y = svc('v6', 'clusterIPs: [172.30.0.50, "fd00:30::50"]\nports:\n- {name: p80, port: 80, nodePort: 30123}\ntype: NodePort') +
    slice('v6', ep('"fd00:1::1"'), undefined, 'ns1', 'IPv6') + slice('v6', ep('10.1.0.1')).replace('v6-1', 'v6-2');
  const r = render(y, { family: 'IPv6', nodeIPs: ['fd00::2'], localDetector: { mode: 'ClusterCIDR', cidrs: ['fd00:1::/48'] } });
  t.true(r.text.includes('--to-destination [fd00:1::1]:80'));
  t.false(r.text.includes('10.1.0.1'));
  t.false(r.text.includes('KUBE-FIREWALL'));
  t.true(r.text.includes('! -d ::1/128 -j KUBE-NODEPORTS'));
});

test('large cluster mode drops per-endpoint comments above the threshold', (t) => {
  const y = web + slice('web', [ep('10.1.0.1'), ep('10.1.0.2')].join('\n'));
  const r = render(y, { largeClusterEndpointsThreshold: 1 });
  t.true(r.text.includes('-A KUBE-SVC-'));
  t.false(r.text.split('\n').some((l) => l.startsWith('-A KUBE-SEP-') && l.includes('comment')));
});

test('large cluster mode counts the endpoints services use, not every endpoint in the slices', (t) => {
  // The renderer guesses the mode from the slices before modelling, then corrects it: these
  // slices hold 3 endpoints, but only the one of the service that exists counts.
  const orphans = slice('gone', [ep('10.2.0.1'), ep('10.2.0.2')].join('\n'));
  const y = web + slice('web', ep('10.1.0.1')) + orphans;
  const sep = (text: string) => text.split('\n').filter((l) => l.startsWith('-A KUBE-SEP-'));
  t.true(sep(render(y, { largeClusterEndpointsThreshold: 2 }).text).every((l) => l.includes('comment')));
  t.false(sep(render(y, { largeClusterEndpointsThreshold: 0 }).text).some((l) => l.includes('comment')));
});

test('random-fully and nfacct counters', (t) => {
  const r = render(web, { randomFully: true, nfacctCounters: true });
  t.true(r.text.includes('-j MASQUERADE --random-fully'));
  t.true(r.text.includes('--nfacct-name ct_state_invalid_dropped_pkts'));
});

test('v1 Endpoints are mirrored into EndpointSlices; kind List is unpacked', (t) => {
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'mysql', namespace: 'default' }, spec: { clusterIP: '10.254.162.44', ports: [{ port: 3036, targetPort: 3306 }] } },
    { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'mysql', namespace: 'default' }, subsets: [{ addresses: [{ ip: '192.168.3.180' }], ports: [{ port: 3306 }] }] },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } },
  ] });
  const loaded = loadManifestText(list, 'l.json');
  t.is(loaded.warnings.length, 1);
  const r = renderIptables({ cluster: loaded.cluster, settings: settings() });
  t.true(r.text.includes('--to-destination 192.168.3.180:3306'));
});

test('partial sync writes changed services only and deletes stale chains', (t) => {
  const a = web + slice('web', ep('10.1.0.1')) + svc('other', 'clusterIP: 172.30.0.60\nports:\n- {name: p80, port: 80}') + slice('other', ep('10.1.0.9'));
  const b = web + slice('web', ep('10.1.0.2')) + svc('other', 'clusterIP: 172.30.0.60\nports:\n- {name: p80, port: 80}') + slice('other', ep('10.1.0.9'));
  const ca = loadManifestText(a, 'a').cluster;
  const cb = loadManifestText(b, 'b').cluster;
  const prev = renderIptables({ cluster: ca, settings: settings() });
  const changed = changedServices(ca, cb, settings());
  t.deepEqual([...changed], ['ns1/web']);
  const r = renderIptables({ cluster: cb, settings: settings(), partial: { previous: prev.state, changedServices: changed } });
  const oldSep = endpointChain('ns1/web:p80', 'tcp', '10.1.0.1:80');
  t.true(r.text.includes(`-X ${oldSep}`));
  t.false(r.text.includes(servicePortChains('ns1/other:p80', 'tcp').cluster + ' - [0:0]'));
  t.true(r.text.includes('ns1/other:p80 cluster IP'), 'KUBE-SERVICES is always written in full');
  t.is(r.rulesTotal.nat, renderIptables({ cluster: cb, settings: settings() }).rulesTotal.nat);
});

test('config: durations and field types are checked', (t) => {
  t.is(parseDuration('1m30s', 'x'), 90_000);
  t.is(parseDuration('500ms', 'x'), 500);
  t.throws(() => parseDuration('soon', 'iptables.syncPeriod'), { message: /iptables.syncPeriod/ });
  t.throws(() => parseKubeProxyConfig('iptables: {masqueradeBit: 40}'), { message: /masqueradeBit/ });
  t.throws(() => parseKubeProxyConfig('kind: Pod'), { message: /KubeProxyConfiguration/ });
  const c = parseKubeProxyConfig('linux: {masqueradeAll: true}\niptables: {syncPeriod: 10s}');
  t.true(c.masqueradeAll);
  t.is(c.syncPeriodMs, 10_000);
});
