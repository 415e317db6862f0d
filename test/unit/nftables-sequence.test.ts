// kube-proxy's repeated-sync sequence for the nftables table, step by step (services and
// endpoints coming and going, stale chains flushed and then deleted, a restart over an existing
// table), through the same path as `knet rules --proxy-mode nftables [--since PREVIOUS]`. The
// expected tables are kube-proxy's own expectations for each step, with chain hashes written out.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { normalizeNft, nftRender, SERVICE_CIDR } from '../helpers/nft.ts';

const K = 'add rule ip kube-proxy';
const C = 'add chain ip kube-proxy';
const E = 'add element ip kube-proxy';

/** kube-proxy's base table for the test node: step 1's expected table without its services. */
const BASE = readFileSync('test/fixtures/conformance-nftables/04-sync-repeated-01-initial/expected.rules', 'utf8')
  .split('\n').filter((l) => !/-ns\d\//.test(l) && !/ (cluster-ips|service-ips) \{ 172\.30\./.test(l));

const service = (ns: string, name: string, ip: string, portName: string, port: number) =>
  `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n  type: ClusterIP\n  clusterIP: ${ip}\n  ports:\n  - {name: ${portName}, port: ${port}, protocol: TCP}\n---\n`;
const slice = (ns: string, name: string, ips: string[], portName: string, port: number) =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${name}-1, namespace: ${ns}, labels: {kubernetes.io/service-name: ${name}}}\n` +
  `addressType: IPv4\nendpoints:${ips.length ? '' : ' []'}\n${ips.map((ip) => `- addresses: [${ip}]\n`).join('')}ports:\n- {name: ${portName}, port: ${port}, protocol: TCP}\n---\n`;

interface Svc { ns: string; name: string; hash: string; ip: string; port: string; num: number }
const SVC1: Svc = { ns: 'ns1', name: 'svc1', hash: 'ULMVA6XW', ip: '172.30.0.41', port: 'p80', num: 80 };
const SVC2: Svc = { ns: 'ns2', name: 'svc2', hash: 'MHHHYRWA', ip: '172.30.0.42', port: 'p8080', num: 8080 };
const SVC3: Svc = { ns: 'ns3', name: 'svc3', hash: '4AT6LBPK', ip: '172.30.0.43', port: 'p80', num: 80 };
const SVC4: Svc = { ns: 'ns4', name: 'svc4', hash: 'LAUZTJTB', ip: '172.30.0.44', port: 'p80', num: 80 };
const svcName = (s: Svc) => `service-${s.hash}-${s.ns}/${s.name}/tcp/${s.port}`;
const epName = (s: Svc, hash: string, ip: string) => `endpoint-${hash}-${s.ns}/${s.name}/tcp/${s.port}__${ip}/${s.num}`;

/** The lines a ClusterIP service with endpoints [hash, ip] contributes. */
function withEndpoints(s: Svc, eps: Array<[string, string]>): string[] {
  const vmap = eps.map(([h, ip], i) => `${i} : goto ${epName(s, h, ip)}`).join(' , ');
  return [
    `${E} cluster-ips { ${s.ip} }`,
    `${E} service-ips { ${s.ip} . tcp . ${s.num} : goto ${svcName(s)} }`,
    `${C} ${svcName(s)}`,
    `${K} ${svcName(s)} ip daddr ${s.ip} ip saddr != 10.0.0.0/8 jump mark-for-masquerade`,
    `${K} ${svcName(s)} numgen random mod ${eps.length} vmap { ${vmap} }`,
    ...eps.flatMap(([h, ip]) => [
      `${C} ${epName(s, h, ip)}`,
      `${K} ${epName(s, h, ip)} ip saddr ${ip} jump mark-for-masquerade`,
      `${K} ${epName(s, h, ip)} meta l4proto tcp dnat to ${ip}:${s.num}`,
    ]),
  ];
}
const withoutEndpoints = (s: Svc) => [`${E} cluster-ips { ${s.ip} }`, `${E} no-endpoint-services { ${s.ip} . tcp . ${s.num} comment "${s.ns}/${s.name}:${s.port}" : goto reject-chain }`];
const flushed = (...chains: string[]) => chains.map((c) => `${C} ${c}`);

const yaml = {
  svc: (s: Svc) => service(s.ns, s.name, s.ip, s.port, s.num),
  eps: (s: Svc, ips: string[]) => slice(s.ns, s.name, ips, s.port, s.num),
};

// The objects after each step (the EndpointSlice of a deleted Service stays, as upstream).
const s1 = SERVICE_CIDR() + yaml.svc(SVC1) + yaml.svc(SVC2) + yaml.eps(SVC1, ['10.0.1.1']) + yaml.eps(SVC2, ['10.0.2.1']);
const s2 = s1 + yaml.svc(SVC3) + yaml.eps(SVC3, ['10.0.3.1']);
const s3 = SERVICE_CIDR() + yaml.svc(SVC1) + yaml.svc(SVC3) + yaml.eps(SVC1, ['10.0.1.1']) + yaml.eps(SVC2, ['10.0.2.1']) + yaml.eps(SVC3, ['10.0.3.1']);
const s5 = s3 + yaml.svc(SVC4);
const s6 = s5 + yaml.eps(SVC4, ['10.0.4.1']);
const withSvc3 = (ips: string[]) => s6.replace(yaml.eps(SVC3, ['10.0.3.1']), yaml.eps(SVC3, ips));
const s7 = withSvc3(['10.0.3.2']);
const s8 = withSvc3(['10.0.3.2', '10.0.3.3']);
const s9 = withSvc3([]);

const svc1 = withEndpoints(SVC1, [['5TPGNJF2', '10.0.1.1']]);
const svc2 = withEndpoints(SVC2, [['7RVP4LUQ', '10.0.2.1']]);
const svc3 = withEndpoints(SVC3, [['2OCDJSZQ', '10.0.3.1']]);
const svc4 = withEndpoints(SVC4, [['WAHRBT2B', '10.0.4.1']]);
const svc3Two = withEndpoints(SVC3, [['SWWHDC7X', '10.0.3.2'], ['TQ2QKHCZ', '10.0.3.3']]);

const steps: Array<{ name: string; now: string; since?: string; expected: string[] }> = [
  { name: '1 initial full sync', now: s1, expected: [...svc1, ...svc2] },
  { name: '2 a service is added', now: s2, since: s1, expected: [...svc1, ...svc2, ...svc3] },
  { name: '3 a service is deleted: its chains are flushed, not deleted', now: s3, since: s2,
    expected: [...svc1, ...svc3, ...flushed(svcName(SVC2), epName(SVC2, '7RVP4LUQ', '10.0.2.1'))] },
  { name: '4 a second later the stale chains are gone', now: s3, since: s3, expected: [...svc1, ...svc3] },
  { name: '5 a service without endpoints: reject element, no chains', now: s5, since: s3, expected: [...svc1, ...svc3, ...withoutEndpoints(SVC4)] },
  { name: '6 its endpoints arrive', now: s6, since: s5, expected: [...svc1, ...svc3, ...svc4] },
  { name: '7 an endpoint changes: the old endpoint chain is flushed', now: s7, since: s6,
    expected: [...svc1, ...withEndpoints(SVC3, [['SWWHDC7X', '10.0.3.2']]), ...svc4, ...flushed(epName(SVC3, '2OCDJSZQ', '10.0.3.1'))] },
  { name: '8 an endpoint is added; the chain that went stale before is deleted', now: s8, since: s7, expected: [...svc1, ...svc3Two, ...svc4] },
  { name: '9 the endpoints go: service and endpoint chains flushed', now: s9, since: s8,
    expected: [...svc1, ...withoutEndpoints(SVC3), ...svc4, ...flushed(svcName(SVC3), epName(SVC3, 'SWWHDC7X', '10.0.3.2'), epName(SVC3, 'TQ2QKHCZ', '10.0.3.3'))] },
  { name: '10 the endpoints come back at once: the chains are refilled', now: s8, since: s9, expected: [...svc1, ...svc3Two, ...svc4] },
  { name: '11 a sync with no change writes the same table', now: s8, since: s8, expected: [...svc1, ...svc3Two, ...svc4] },
];

for (const step of steps) {
  test(`repeated sync, step ${step.name}`, (t) => {
    t.is(normalizeNft(nftRender(step.now, undefined, step.since)), normalizeNft([...BASE, ...step.expected].join('\n')));
  });
}

test('step 1 equals the conformance sample; a removed service\'s slice alone adds nothing', (t) => {
  t.is(normalizeNft(nftRender(s1)), normalizeNft(readFileSync('test/fixtures/conformance-nftables/04-sync-repeated-01-initial/expected.rules', 'utf8')));
  t.is(normalizeNft(nftRender(s3)), normalizeNft(nftRender(s3 + yaml.eps({ ...SVC2, name: 'gone' }, ['10.9.9.9']))));
});

test('restart over an existing table: every chain of it is in use again, so the table is a plain full sync', (t) => {
  // The kernel holds step 1's table; the restarted proxy sees svc1 with a second endpoint and svc3.
  const now = SERVICE_CIDR() + yaml.svc(SVC1) + yaml.svc(SVC2) + yaml.svc(SVC3) + yaml.eps(SVC1, ['10.0.1.1', '10.0.1.2']) + yaml.eps(SVC2, ['10.0.2.1']);
  const expected = [...withEndpoints(SVC1, [['5TPGNJF2', '10.0.1.1'], ['ZCZBVNAZ', '10.0.1.2']]), ...svc2, ...withoutEndpoints(SVC3)];
  t.is(normalizeNft(nftRender(now, undefined, s1)), normalizeNft([...BASE, ...expected].join('\n')));
  t.is(normalizeNft(nftRender(now)), normalizeNft([...BASE, ...expected].join('\n')));
});
