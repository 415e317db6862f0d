// Mistyped and hostile objects (issue 15.2): a field of the wrong JSON type, a prototype name
// where a protocol belongs, an address the API would refuse. A bad object is skipped with a
// warning naming it and its field; everything else renders and syncs unchanged. The fuzz part
// puts arbitrary JSON into every field of a Service, an EndpointSlice, a v1 Endpoints and a
// Node and runs the result through the model, the iptables renderer, the userspace portals, the
// proxy's change tracker, the nftables renderer and `knet rules` end to end.
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { renderIptables, IptablesRenderer } from '../../src/rules/iptables.ts';
import { nftablesText, renderNftables } from '../../src/rules/nftables.ts';
import { buildServiceModel } from '../../src/rules/model.ts';
import { renderPortals, type PortalPort } from '../../src/rules/portals.ts';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { readNodeFacts } from '../../src/k8s/node.ts';
import { ChangeTracker } from '../../src/proxy/tracker.ts';
import { runRules } from '../../src/cli/rules.ts';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';
import type { RenderWarning } from '../../src/rules/types.ts';
import { cluster } from '../helpers/arb-cluster.ts';
import { settings } from '../helpers/rules.ts';
import { hasRawControl, hostileValue, paths, replaced, type Path } from '../helpers/hostile.ts';

// One settings object for every render: building it parses a config each time.
const S = settings();

const others = cluster([
  { type: 'NodePort', ports: [{ name: 'a', protocol: 'TCP' }, { name: 'b', protocol: 'UDP' }], etpLocal: true, itpLocal: false, affinity: true, externalIP: true, sourceRanges: false, endpoints: [{ host: 1, local: true, ready: true, terminating: false }, { host: 2, local: false, ready: true, terminating: false }] },
  { type: 'LoadBalancer', ports: [{ name: 'c', protocol: 'TCP' }], etpLocal: false, itpLocal: true, affinity: false, externalIP: false, sourceRanges: true, endpoints: [{ host: 3, local: true, ready: false, terminating: true }] },
  { type: 'ClusterIP', ports: [{ name: 'a', protocol: 'SCTP' }], etpLocal: false, itpLocal: false, affinity: false, externalIP: false, sourceRanges: false, endpoints: [] },
]);

const richService: Service = {
  apiVersion: 'v1', kind: 'Service',
  metadata: { name: 'rich', namespace: 'ns', labels: { app: 'rich' } },
  spec: {
    type: 'LoadBalancer', clusterIP: '172.30.9.1', clusterIPs: ['172.30.9.1'], externalIPs: ['192.168.99.9'],
    loadBalancerSourceRanges: ['203.0.113.0/24'], sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 300 } },
    externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Cluster', healthCheckNodePort: 31999,
    ports: [{ name: 'a', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30999 }, { name: 'b', protocol: 'UDP', port: 53, nodePort: 30998 }],
  },
  status: { loadBalancer: { ingress: [{ ip: '198.51.100.9', ipMode: 'VIP' }] } },
};

const richSlice: EndpointSlice = {
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
  metadata: { name: 'rich-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'rich' } },
  addressType: 'IPv4',
  endpoints: [
    { addresses: ['10.9.0.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a' },
    { addresses: ['10.9.0.2'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'node-b' },
  ],
  ports: [{ name: 'a', protocol: 'TCP', port: 8080 }, { name: 'b', protocol: 'UDP', port: 5353 }],
};

const base: ClusterState = { services: [...others.services, richService], endpointSlices: [...others.endpointSlices, richSlice] };

const without = (c: ClusterState, o: unknown): ClusterState => ({ services: c.services.filter((x) => x !== o), endpointSlices: c.endpointSlices.filter((x) => x !== o) });

/** Rules of the other services (their comments name "ns/sN"): never touched by a change to "rich". */
const otherLines = (text: string) => text.split('\n').filter((l) => /\bns\/s\d\b/.test(l));

/** A string value that would legitimately change other services (their names). */
const namesOthers = (v: unknown) => typeof v === 'string' && /^(ns|s\d|s\d-x|node-a)$/.test(v);

const baseOtherLines = otherLines(renderIptables({ cluster: base, settings: S }).text).join('\n');

const EXPECTED_ENDPOINT_SKIP = /; endpoint skipped$/;

/** The checks every mutated cluster must pass; `mutated` is the changed copy of `original`. */
function checkCluster(c: ClusterState, mutated: unknown, original: unknown): string | null {
  const r = renderIptables({ cluster: c, settings: S });
  const unchecked = r.warnings.find((w) => w.field === '(unchecked)');
  if (unchecked) return `validation gap: ${unchecked.object}: ${unchecked.message}`;
  for (const w of r.warnings) if (hasRawControl(`${w.object} ${w.message}`)) return `raw control characters in warning ${JSON.stringify(w)}`;
  // The other services render exactly as before.
  if (otherLines(r.text).join('\n') !== baseOtherLines) return 'other services changed';
  // A skipped object contributes nothing: the text is that of the cluster without it, in the
  // iptables and in the nftables mode.
  const nft = renderNftables({ cluster: c, settings: S });
  if (nft.warnings.some((w) => w.field === '(unchecked)')) return 'validation gap (nftables)';
  const skipped = r.warnings.filter((w: RenderWarning) => !EXPECTED_ENDPOINT_SKIP.test(w.message));
  if (skipped.length > 0) {
    if (renderIptables({ cluster: without(c, mutated), settings: S }).text !== r.text) return `skipped (${skipped[0]!.message}) but still rendered`;
    if (nftablesText(renderNftables({ cluster: without(c, mutated), settings: S })) !== nftablesText(nft)) return `skipped (${skipped[0]!.message}) but still in the nftables table`;
  }
  // The proxy's path gives the same text: a tracker fed the objects one by one (the mutated one
  // last, as an update of the original) and a renderer that re-models what the tracker marks.
  const tracker = new ChangeTracker();
  const renderer = new IptablesRenderer();
  for (const s of c.services) tracker.upsertService(s === mutated ? (original as Service) : s);
  for (const s of c.endpointSlices) tracker.upsertSlice(s === mutated ? (original as EndpointSlice) : s);
  renderer.render({ cluster: tracker.snapshot(), settings: S });
  tracker.take();
  if (c.services.includes(mutated as Service)) { tracker.deleteService(original as Service); tracker.upsertService(mutated as Service); }
  else { tracker.deleteSlice(original as EndpointSlice); tracker.upsertSlice(mutated as EndpointSlice); }
  const changed = tracker.take().services;
  const partial = renderer.render({ cluster: tracker.snapshot(), settings: S, recompute: changed });
  if (partial.text !== r.text) return 'the tracker and re-render give other rules than a fresh render';
  // The userspace portals render every modelled port.
  const model = buildServiceModel(c, S);
  const ports: PortalPort[] = model.ports.filter((p) => p.protocol !== 'sctp').map((p, i) => ({
    portName: p.portName, protocol: p.protocol as 'tcp' | 'udp', clusterIP: p.clusterIP, port: p.port, nodePort: p.nodePort,
    externalIPs: p.externalIPs, loadBalancerIPs: p.loadBalancerVIPs, proxyPort: 40000 + i,
  }));
  const portals = renderPortals(ports, { hostIP: '192.168.0.2' });
  if (portals.warnings.length) return `portals refused a modelled port: ${portals.warnings[0]!.message}`;
  return null;
}

function mutations(obj: unknown): fc.Arbitrary<{ path: Path; value: unknown }> {
  const all = paths(obj);
  return fc.record({ path: fc.constantFrom(...all), value: hostileValue }).filter(({ value }) => !namesOthers(value));
}

for (const [what, original] of [['Service', richService], ['EndpointSlice', richSlice]] as const) {
  test(`arbitrary JSON in any field of a ${what}: no throw, nothing rendered from it, the rest unchanged`, (t) => {
    // Every path at least once, then random ones.
    const every = paths(original).map((path) => ({ path, value: { wrong: ['type'] } as unknown }));
    for (const m of every) {
      const mutated = replaced(original, m.path, m.value);
      const c: ClusterState = { services: base.services.map((s) => (s === original ? (mutated as Service) : s)), endpointSlices: base.endpointSlices.map((s) => (s === original ? (mutated as EndpointSlice) : s)) };
      const problem = checkCluster(c, mutated, original);
      t.is(problem, null, `${m.path.join('.')}`);
    }
    fc.assert(fc.property(mutations(original), ({ path, value }) => {
      const mutated = replaced(original, path, value);
      const c: ClusterState = { services: base.services.map((s) => (s === original ? (mutated as Service) : s)), endpointSlices: base.endpointSlices.map((s) => (s === original ? (mutated as EndpointSlice) : s)) };
      const problem = checkCluster(c, mutated, original);
      if (problem) throw new Error(`${path.join('.')} = ${JSON.stringify(value)?.slice(0, 200)}: ${problem}`);
    }), { numRuns: 100 });
  });
}

function runRulesOn(t: import('ava').ExecutionContext, name: string, text: string, extra: Partial<Parameters<typeof runRules>[0]> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'knet-hostile-'));
  try {
    const file = join(dir, name);
    writeFileSync(file, text);
    let out = '';
    let err = '';
    const code = runRules({ file: [file], nodeIp: ['192.168.0.2'], nodeName: 'node-a', ipFamily: 'IPv4', interfaceAddress: [], ...extra }, (s) => { out += typeof s === 'string' ? s : Buffer.from(s).toString('utf8'); }, (s) => { err += s; });
    return { code, out, err };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const endpoints = { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'rich', namespace: 'ns' }, subsets: [{ addresses: [{ ip: '10.9.1.1', nodeName: 'node-a' }], notReadyAddresses: [{ ip: '10.9.1.2' }], ports: [{ name: 'a', port: 8080, protocol: 'TCP' }] }] };
const node = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.2' }] } };

test('knet rules end to end: arbitrary JSON anywhere in a manifest (JSON and YAML) exits 0 with clean warnings', (t) => {
  const serviceCIDR = { apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['172.30.0.0/16'] } };
  const objects: Record<string, unknown> = { richService, richSlice, endpoints, node, serviceCIDR };
  const listOf = (items: unknown[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...others.services, ...others.endpointSlices, ...items] });
  const unchanged = runRulesOn(t, 'in.json', listOf(Object.values(objects)), { nodeIp: [] });
  t.is(unchanged.code, 0);
  const arb = fc.constantFrom(...Object.keys(objects)).chain((key) => fc.record({ key: fc.constant(key), path: fc.constantFrom(...paths(objects[key])), value: hostileValue, yaml: fc.boolean(), nft: fc.boolean() }));
  fc.assert(fc.property(arb, ({ key, path, value, yaml, nft }) => {
    const items = [...others.services, ...others.endpointSlices, ...Object.entries(objects).map(([k, o]) => (k === key ? replaced(o, path, value) : o))];
    const list = { apiVersion: 'v1', kind: 'List', items };
    const r = runRulesOn(t, yaml ? 'in.yaml' : 'in.json', yaml ? toYaml(list, { aliasDuplicateObjects: false }) : JSON.stringify(list), { nodeIp: [], ...(nft ? { proxyMode: 'nftables' } : {}) });
    if (r.code !== 0) throw new Error(`${key}.${path.join('.')}: exit ${r.code}: ${r.err}`);
    if (hasRawControl(r.err)) throw new Error(`${key}.${path.join('.')}: raw control characters on stderr: ${JSON.stringify(r.err)}`);
    if (r.err.includes('(unchecked)')) throw new Error(`validation gap: ${r.err}`);
    if (nft) {
      if (!r.out.startsWith('add table ip kube-proxy')) throw new Error(`no table printed: ${r.out.slice(0, 100)}`);
      return;
    }
    if (!r.out.startsWith('*filter\n') || !r.out.endsWith('COMMIT\n')) throw new Error('no rules printed');
    // The other services' rules are there, as always.
    if (otherLines(r.out).join('\n') !== otherLines(unchanged.out).join('\n')) throw new Error(`${key}.${path.join('.')}: other services changed`);
  }), { numRuns: 150 });
  t.pass();
});

test('an object knet rules does not use is named in its note with its apiVersion escaped (control characters and bidi overrides)', (t) => {
  // A random run of the test above found the apiVersion printed raw.
  const hostile = '\u001b[31mred\u001b[0m\r\nCOMMIT\n2J\u202eevil';
  const list = { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: hostile, kind: 'ServiceCIDR', metadata: { name: 'kubernetes' }, spec: { cidrs: ['172.30.0.0/16'] } }] };
  for (const [name, text] of [['in.json', JSON.stringify(list)], ['in.yaml', toYaml(list)]] as const) {
    const r = runRulesOn(t, name, text, { nodeIp: [] });
    t.is(r.code, 0);
    t.false(hasRawControl(r.err), JSON.stringify(r.err));
    t.regex(r.err, /\\u001b\[31mred.*ServiceCIDR kubernetes is not used by knet rules, ignored/);
  }
});

test('node facts from a Node of any shape never throw; bad entries are warned about', (t) => {
  fc.assert(fc.property(fc.constantFrom(...paths(node)), hostileValue, (path, value) => {
    const facts = readNodeFacts(replaced(node, path, value));
    for (const ip of facts.ips) if (!/^[0-9.]+$|:/.test(ip)) throw new Error(`bad IP ${ip}`);
    for (const w of facts.warnings) if (hasRawControl(w)) throw new Error(`raw control characters: ${w}`);
  }), { numRuns: 300 });
  t.deepEqual(readNodeFacts('x'), { ips: [], podCIDRs: [], eligible: true, warnings: [] });
  t.deepEqual(readNodeFacts(node), { ips: ['192.168.0.2'], podCIDRs: ['10.244.1.0/24'], eligible: true, warnings: [] });
  const bad = readNodeFacts(replaced(node, ['status', 'addresses'], '192.168.0.2'));
  t.deepEqual(bad.ips, []);
  t.deepEqual(bad.warnings, ['status.addresses must be a list, got "192.168.0.2"; ignored']);
});

// ---- the examples from the issue, one by one ----

const svcYaml = (name: string, spec: string) => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ns}\nspec: ${spec}\n---\n`;
const good = svcYaml('good', '{clusterIP: 172.30.0.2, ports: [{name: p, port: 80}]}') +
  'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: good-1, namespace: ns, labels: {kubernetes.io/service-name: good}}\nendpoints: [{addresses: [10.1.0.1]}]\nports: [{name: p, port: 8080}]\n---\n';
const goodOnly = loadManifestText(good, 'good.yaml').cluster;

const cases: Array<[string, string, RegExp]> = [
  ['spec.ports an object', svcYaml('bad', '{clusterIP: 172.30.0.3, ports: {port: 80}}'), /Service ns\/bad: skipped: spec\.ports must be a list, got \{"port":80\}/],
  ['externalIPs a string', svcYaml('bad', '{clusterIP: 172.30.0.3, externalIPs: "1.2.3.4", ports: [{port: 80}]}'), /spec\.externalIPs must be a list, got "1\.2\.3\.4"/],
  ['ingress not a list', svcYaml('bad', '{type: LoadBalancer, clusterIP: 172.30.0.3, ports: [{port: 80, nodePort: 30001}]}').replace('---', 'status: {loadBalancer: {ingress: {ip: 1.2.3.4}}}\n---'), /status\.loadBalancer\.ingress must be a list/],
  ['a null port entry', svcYaml('bad', '{clusterIP: 172.30.0.3, ports: [null]}'), /spec\.ports\[0\] must be an object, got null/],
  ['protocol constructor', svcYaml('bad', '{clusterIP: 172.30.0.3, ports: [{port: 80, protocol: constructor}]}'), /spec\.ports\[0\]\.protocol unknown protocol "constructor"/],
  ['protocol toString', svcYaml('bad', '{clusterIP: 172.30.0.3, ports: [{port: 80, protocol: toString}]}'), /unknown protocol "toString"/],
  ['protocol __proto__', svcYaml('bad', '{clusterIP: 172.30.0.3, ports: [{port: 80, protocol: __proto__}]}'), /unknown protocol "__proto__"/],
  ['slice endpoints not a list', 'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad-1, namespace: ns, labels: {kubernetes.io/service-name: good}}\nendpoints: {addresses: [10.1.0.9]}\n', /EndpointSlice ns\/bad-1: skipped: endpoints must be a list/],
  ['slice ports not a list', 'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad-1, namespace: ns, labels: {kubernetes.io/service-name: good}}\nendpoints: [{addresses: [10.1.0.9]}]\nports: 8080\n', /EndpointSlice ns\/bad-1: skipped: ports must be a list, got 8080/],
  ['a slice condition of the wrong type', 'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: bad-1, namespace: ns, labels: {kubernetes.io/service-name: good}}\nendpoints: [{addresses: [10.1.0.9], conditions: {ready: "yes"}}]\nports: [{name: p, port: 8080}]\n', /endpoints\[0\]\.conditions\.ready must be true or false, got "yes"/],
  ['v1 Endpoints subsets malformed', 'apiVersion: v1\nkind: Endpoints\nmetadata: {name: bad, namespace: ns}\nsubsets: {addresses: [{ip: 10.1.0.9}]}\n', /Endpoints ns\/bad skipped: subsets must be a list/],
  ['v1 Endpoints address without an object', 'apiVersion: v1\nkind: Endpoints\nmetadata: {name: bad, namespace: ns}\nsubsets: [{addresses: [10.1.0.9], ports: [{port: 80}]}]\n', /Endpoints ns\/bad skipped: subsets\[0\]\.addresses\[0\] must be an object/],
  ['a name with terminal escapes', svcYaml('"bad\\e[31m\\nCOMMIT"', '{clusterIP: 172.30.0.3, ports: [{port: 80}]}'), /Service ns\/bad\\u001b\[31m\\u000aCOMMIT: skipped: metadata\.name invalid name/],
];

for (const [what, yaml, message] of cases) {
  test(`knet rules: ${what} skips that object with a warning naming it; the rest renders`, (t) => {
    const r = runRulesOn(t, 'in.yaml', good + yaml);
    t.is(r.code, 0, r.err);
    t.regex(r.err, message);
    t.false(hasRawControl(r.err));
    t.is(r.out, runRulesOn(t, 'good.yaml', good).out);
  });
}

test('the proxy: one mistyped Service does not stop the sync of the others', (t) => {
  const tracker = new ChangeTracker();
  const bad = loadManifestText(svcYaml('bad', '{clusterIP: 172.30.0.3, ports: {port: 80}}'), 'bad.yaml').cluster.services[0]!;
  tracker.replaceAll([...goodOnly.services, bad], goodOnly.endpointSlices);
  const r = new IptablesRenderer().render({ cluster: tracker.snapshot(), settings: S });
  t.deepEqual(r.warnings.map((w) => `${w.object} ${w.field}`), ['Service ns/bad spec.ports']);
  t.is(r.text, renderIptables({ cluster: goodOnly, settings: S }).text);
});

test('endpoint addresses the API refuses (unspecified, loopback, link-local, link-local multicast) are skipped, each with a warning', (t) => {
  const sliceWith = (addressType: string, ips: string[]) => `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: good-2, namespace: ns, labels: {kubernetes.io/service-name: good}}\naddressType: ${addressType}\nendpoints:\n${ips.map((ip) => `- {addresses: ["${ip}"]}`).join('\n')}\nports: [{name: p, port: 8080}]\n`;
  const refused4 = ['0.0.0.0', '127.0.0.1', '127.255.0.9', '169.254.169.254', '224.0.0.5', '::ffff:127.0.0.1', '10.1.0.300'];
  const r = runRulesOn(t, 'in.yaml', good + sliceWith('IPv4', [...refused4, '10.1.0.2', '224.0.1.1']));
  t.is(r.code, 0);
  t.is(r.err.split('\n').filter((l) => l.includes('endpoint skipped')).length, refused4.length, r.err);
  t.regex(r.err, /EndpointSlice ns\/good-2: skipped: endpoints\[1\]\.addresses\[0\] 127\.0\.0\.1 is in the loopback range \(127\.0\.0\.0\/8\); endpoint skipped/);
  t.regex(r.err, /169\.254\.169\.254 is in the link-local range/);
  t.notRegex(r.out, /DNAT --to-destination (0\.0\.0\.0|127\.|169\.254\.|224\.0\.0\.)/);
  // The slice's usable endpoints (global multicast is not refused by the API) and the other slice still serve.
  t.regex(r.out, /--to-destination 10\.1\.0\.2:8080/);
  t.regex(r.out, /--to-destination 10\.1\.0\.1:8080/);
  t.regex(r.out, /--to-destination 224\.0\.1\.1:8080/);
  const refused6 = ['::', '::1', 'fe80::1', 'febf::1', 'ff02::1', 'ff12::2'];
  const v6svc = svcYaml('good', '{clusterIP: fd00::10, clusterIPs: [fd00::10], ports: [{name: p, port: 80}]}');
  const r6 = runRulesOn(t, 'in.yaml', v6svc + sliceWith('IPv6', [...refused6, 'fd00::2', 'ff05::1']), { ipFamily: 'IPv6', nodeIp: ['fd00::99'] });
  t.is(r6.code, 0, r6.err);
  t.is(r6.err.split('\n').filter((l) => l.includes('endpoint skipped')).length, refused6.length, r6.err);
  t.regex(r6.out, /--to-destination \[fd00::2\]:8080/);
  t.regex(r6.out, /--to-destination \[ff05::1\]:8080/);
  t.notRegex(r6.out, /--to-destination \[(::|::1|fe80::1|febf::1|ff02::1|ff12::2)\]/);
});

test('duplicate EndpointSlice names: knet rules and the proxy both keep the later one, with a warning', (t) => {
  const sliceOf = (ip: string) => `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: dup, namespace: ns, labels: {kubernetes.io/service-name: good}}\nendpoints: [{addresses: [${ip}]}]\nports: [{name: p, port: 8080}]\n---\n`;
  const text = good + sliceOf('10.1.0.7') + sliceOf('10.1.0.8');
  const r = runRulesOn(t, 'in.yaml', text);
  t.is(r.code, 0);
  t.regex(r.err, /EndpointSlice ns\/dup: skipped: duplicate EndpointSlice; the later one wins/);
  t.notRegex(r.out, /10\.1\.0\.7/);
  t.regex(r.out, /--to-destination 10\.1\.0\.8:8080/);
  // The proxy, fed the same objects as one listing (a manifest directory), says and renders the same.
  const loaded = loadManifestText(text, 'in.yaml').cluster;
  const warnings: string[] = [];
  const tracker = new ChangeTracker((o, reason) => warnings.push(`${o}: ${reason}`));
  tracker.replaceAll(loaded.services, loaded.endpointSlices);
  t.deepEqual(warnings, ['EndpointSlice ns/dup: duplicate EndpointSlice; the later one wins']);
  t.is(new IptablesRenderer().render({ cluster: tracker.snapshot(), settings: S }).text, renderIptables({ cluster: loaded, settings: S }).text);
  // Listing the same again changes nothing (no flip-flop between the two).
  tracker.take();
  tracker.replaceAll(loaded.services, loaded.endpointSlices);
  t.is(tracker.take().services.size, 0);
});

test('the proxy: ServiceCIDRs of any shape from the API are kept as sent and never throw; the nftables render warns and drops only the bad ranges', (t) => {
  const good = { metadata: { name: 'kubernetes' }, spec: { cidrs: ['172.30.0.0/16'] } };
  fc.assert(fc.property(fc.constantFrom(...paths(good)), hostileValue, (path, value) => {
    const tracker = new ChangeTracker();
    tracker.replaceAll(goodOnly.services, goodOnly.endpointSlices);
    const bad = replaced(good, path, value);
    tracker.setServiceCIDRs([good, bad] as never);
    tracker.setServiceCIDRs([bad, null, 'x', 7] as never);
    const r = renderNftables({ cluster: tracker.snapshot(), settings: S });
    if (!nftablesText(r).startsWith('add table ip kube-proxy')) throw new Error('no table');
  }), { numRuns: 200 });
  t.pass();
});
