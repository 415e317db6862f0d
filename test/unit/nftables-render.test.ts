// The nftables renderer, branch by branch, beyond the conformance sample: IPv6, masqueradeAll,
// every local-traffic detector, nodePortAddresses (all, primary, loopback), the masquerade bit,
// traffic policies Local with local endpoints, affinity, unnamed ports, protocols, LoadBalancer
// IP modes and source ranges, ServiceCIDRs, no-endpoint verdicts, and the renderer's reuse of
// unchanged services.
import test from 'ava';
import fc from 'fast-check';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { activeChains, NftablesRenderer, nftablesText, renderNftables, staleChains } from '../../src/rules/nftables.ts';
import { nftEndpointBase, nftServicePortBase } from '../../src/rules/nftables-names.ts';
import { parseKubeProxyConfig, ConfigError } from '../../src/rules/config.ts';
import { arbService, cluster as arbCluster } from '../helpers/arb-cluster.ts';
import { nftChains, nftElements, nftRender, nftRules, nftSettings, normalizeNft, SERVICE_CIDR } from '../helpers/nft.ts';

const svc = (name: string, spec: string, ns = 'ns1', status = '') =>
  `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec.trim().replace(/^/gm, '  ')}\n${status}---\n`;
const slice = (name: string, endpoints: string, ports = '- {name: p80, port: 80, protocol: TCP}', ns = 'ns1', addressType = 'IPv4') =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${name}-1, namespace: ${ns}, labels: {kubernetes.io/service-name: ${name}}}\naddressType: ${addressType}\nendpoints:\n${endpoints.trim()}\nports:\n${ports}\n---\n`;
const lb = (ips: string[]) => `status:\n  loadBalancer:\n    ingress: [${ips.map((ip) => (ip.includes('=') ? `{ip: ${ip.split('=')[0]}, ipMode: ${ip.split('=')[1]}}` : `{ip: ${ip}}`)).join(', ')}]\n`;
const ULM = 'ULMVA6XW-ns1/svc1/tcp/p80';

test('names: kube-proxy\'s hash vectors, IPv6 endpoints with dots, truncation of over-long names', (t) => {
  t.is(nftServicePortBase('testing/service', 'http', 'tcp'), 'P4ZYZVCF-testing/service/tcp/http');
  t.is(nftServicePortBase('testing/service', 'https', 'tcp'), 'LZBRENCP-testing/service/tcp/https');
  t.is(nftEndpointBase('testing/service', 'http', 'tcp', '10.180.0.1', 80), 'JO2XBXZR-testing/service/tcp/http__10.180.0.1/80');
  t.is(nftEndpointBase('testing/service', 'http', 'tcp', 'fd80:abcd:12::a1b2:c3d4:e5f6:9999', 80), 'U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80');
  const ns = 'very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx/very-long-service-name-why-would-you-even-do-this-i-mean-really';
  const port = 'port-443-providing-the-hypertext-transmission-protocol-with-tls';
  t.is(nftServicePortBase(ns, port, 'sctp'), `KR6NACJP-${ns}/sctp/${port}`);
  t.is(nftEndpointBase(ns, port, 'sctp', '1234:5678:9abc:def0::abc:1234', 443), `5YS7AFEA-${ns}/sctp/${port}__1234.5678.9abc.def0..abc.1234/443`);
  t.is(nftEndpointBase(ns, port, 'sctp', '1234:5678:9abc:def0::abcd:1234:5678', 443), `CI6C53Q3-${ns}/sctp/${port}__1234.5678.9abc.def0..abcd.1234...`);
  t.is(nftEndpointBase(ns, port, 'sctp', '1234:5678:9abc:def0::abcd:1234:8765', 443), `2FLXFK6X-${ns}/sctp/${port}__1234.5678.9abc.def0..abcd.1234...`);
});

test('IPv6: ip6 table, ipv6_addr sets, ip6 matches, bracketed DNAT, dotted endpoint names; IPv4 objects ignored', (t) => {
  const text = nftRender(SERVICE_CIDR(['172.30.0.0/16', 'fd00:10:96::/112'])
    + svc('svc1', 'type: NodePort\nclusterIP: fd00:10:96::41\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]')
    + svc('svc4', 'clusterIP: 172.30.0.44\nports: [{name: p80, port: 80, protocol: TCP}]')
    + slice('svc1', '- {addresses: ["fd00:10:180::1"]}', undefined, 'ns1', 'IPv6')
    + slice('svc1', '- {addresses: [10.180.0.1]}').replace('svc1-1', 'svc1-2'), nftSettings({ family: 'IPv6' }));
  const ep = 'endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80';
  t.true(text.startsWith('add table ip6 kube-proxy { comment "rules for kube-proxy" ; }\n'));
  t.false(/ ip kube-proxy /.test(text));
  t.true(text.includes('add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }'));
  t.true(text.includes('add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ;'));
  t.deepEqual(nftRules(text, 'cluster-ips-check'), [
    'ip6 daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
    'ip6 daddr { fd00:10:96::/112 } drop comment "Drop traffic to unallocated ClusterIPs"',
  ]);
  t.deepEqual(nftElements(text, 'nodeport-ips'), ['2001:db8::1']);
  t.deepEqual(nftRules(text, `service-${ULM}`), [
    'ip6 daddr fd00:10:96::41 ip6 saddr != fd00:10::/64 jump mark-for-masquerade',
    `numgen random mod 1 vmap { 0 : goto ${ep} }`,
  ]);
  t.deepEqual(nftRules(text, ep), ['ip6 saddr fd00:10:180::1 jump mark-for-masquerade', 'meta l4proto tcp dnat to [fd00:10:180::1]:80']);
  t.deepEqual(nftElements(text, 'cluster-ips'), ['fd00:10:96::41']);
  t.deepEqual(nftElements(text, 'service-nodeports'), [`tcp . 3001 : goto external-${ULM}`]);
});

const basic = SERVICE_CIDR()
  + svc('svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nexternalTrafficPolicy: Local\nhealthCheckNodePort: 30000\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]', 'ns1', lb(['1.2.3.4']))
  + slice('svc1', '- {addresses: [10.180.0.1], nodeName: test-node}\n- {addresses: [10.180.1.1], nodeName: other}');

test('externalTrafficPolicy Local with a local endpoint: local chain, external chain ends in it, endpoint chains for both', (t) => {
  const text = nftRender(basic);
  const local = 'endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80';
  const remote = 'endpoint-B7I4G2ZB-ns1/svc1/tcp/p80__10.180.1.1/80';
  t.deepEqual(nftRules(text, `external-${ULM}`), [
    `ip saddr 10.0.0.0/8 goto service-${ULM} comment "short-circuit pod traffic"`,
    'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
    `fib saddr type local goto service-${ULM} comment "short-circuit local traffic"`,
    `goto local-${ULM}`,
  ]);
  t.deepEqual(nftRules(text, `local-${ULM}`), [`numgen random mod 1 vmap { 0 : goto ${local} }`]);
  t.deepEqual(nftRules(text, `service-${ULM}`), [
    'ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade',
    `numgen random mod 2 vmap { 0 : goto ${local} , 1 : goto ${remote} }`,
  ]);
  t.deepEqual(nftElements(text, 'no-endpoint-services'), []);
  t.deepEqual(nftElements(text, 'service-ips').sort(), [`1.2.3.4 . tcp . 80 : goto external-${ULM}`, `172.30.0.41 . tcp . 80 : goto service-${ULM}`]);
});

test('masqueradeAll masquerades all cluster IP traffic; the mark follows masqueradeBit', (t) => {
  const text = nftRender(basic, nftSettings({ masqueradeAll: true, masqueradeBit: 10 }));
  t.is(nftRules(text, `service-${ULM}`)[0], 'ip daddr 172.30.0.41 jump mark-for-masquerade');
  t.deepEqual(nftRules(text, 'mark-for-masquerade'), ['mark set mark or 0x400']);
  t.deepEqual(nftRules(text, 'masquerading'), ['mark and 0x400 == 0 return', 'mark set mark xor 0x400', 'masquerade fully-random']);
});

test('local-traffic detectors: none, NodeCIDR, bridge interface, interface name prefix', (t) => {
  const none = nftRender(basic, nftSettings({ localDetector: { mode: 'None' } }));
  t.false(nftRules(none, `service-${ULM}`)[0]!.includes('mark-for-masquerade'));
  t.is(nftRules(none, `external-${ULM}`)[0], 'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"');
  const nodeCIDR = nftRender(basic, nftSettings({ localDetector: { mode: 'NodeCIDR', cidrs: ['10.180.0.0/24'] } }));
  t.is(nftRules(nodeCIDR, `service-${ULM}`)[0], 'ip daddr 172.30.0.41 ip saddr != 10.180.0.0/24 jump mark-for-masquerade');
  const bridge = nftRender(basic, nftSettings({ localDetector: { mode: 'BridgeInterface', interface: 'cni0' } }));
  t.is(nftRules(bridge, `service-${ULM}`)[0], 'ip daddr 172.30.0.41 iifname != cni0 jump mark-for-masquerade');
  t.is(nftRules(bridge, `external-${ULM}`)[0], `iifname cni0 goto service-${ULM} comment "short-circuit pod traffic"`);
  const prefix = nftRender(basic, nftSettings({ localDetector: { mode: 'InterfaceNamePrefix', prefix: 'veth' } }));
  t.is(nftRules(prefix, `service-${ULM}`)[0], 'ip daddr 172.30.0.41 iifname != veth* jump mark-for-masquerade');
  t.is(nftRules(prefix, `external-${ULM}`)[0], `iifname veth* goto service-${ULM} comment "short-circuit pod traffic"`);
});

test('nodePortAddresses: every local address, the primary IP by default, loopback never', (t) => {
  const all = nftRender(basic, nftSettings({ nodePortAddresses: ['0.0.0.0/0'] }));
  t.false(all.includes('nodeport-ips'));
  t.deepEqual(nftRules(all, 'services')[1], 'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports');
  t.deepEqual(nftRules(all, 'nodeport-endpoints-check'), ['ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports']);
  const all6 = nftRender('', nftSettings({ family: 'IPv6', nodePortAddresses: ['::/0'] }));
  t.deepEqual(nftRules(all6, 'nodeport-endpoints-check'), ['ip6 daddr != ::1 meta l4proto . th dport vmap @no-endpoint-nodeports']);
  // nftables mode's default is the node's primary IP, not every address on the node.
  const cfg = parseKubeProxyConfig('mode: nftables');
  t.deepEqual(cfg.nodePortAddresses, ['primary']);
  t.deepEqual(nftElements(nftRender('', nftSettings({ nodePortAddresses: ['primary'] })), 'nodeport-ips'), ['192.168.0.2']);
  t.deepEqual(nftElements(nftRender('', nftSettings({ nodePortAddresses: ['127.0.0.0/8', '192.168.1.0/24'] })), 'nodeport-ips'), ['192.168.1.2']);
});

test('nodePortAddresses "primary": the first node IP of the family only; a loopback one means every local address', (t) => {
  const primary = (nodeIPs: string[], family: 'IPv4' | 'IPv6' = 'IPv4') => nftRender('', nftSettings({ family, nodePortAddresses: ['primary'], nodeIPs }));
  t.deepEqual(nftElements(primary(['192.168.0.2', '192.168.1.2']), 'nodeport-ips'), ['192.168.0.2']);
  t.deepEqual(nftElements(primary(['2001:db8::1', '192.168.1.2', '2001:db8:1::2'], 'IPv6'), 'nodeport-ips'), ['2001:db8::1']);
  const loopback = primary(['127.0.0.1']);
  t.false(loopback.includes('nodeport-ips'));
  t.deepEqual(nftRules(loopback, 'nodeport-endpoints-check'), ['ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports']);
  t.false(primary(['192.168.0.2'], 'IPv6').includes('nodeport-ips'));
});

test('ClientIP affinity: a set per reachable endpoint, checked in the service and local chains, updated in the endpoint chain', (t) => {
  const text = nftRender(basic.replace('  externalTrafficPolicy: Local', '  externalTrafficPolicy: Local\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}'));
  const sets = text.split('\n').filter((l) => l.startsWith('add set ip kube-proxy affinity-'));
  t.deepEqual(sets, [
    'add set ip kube-proxy affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }',
    'add set ip kube-proxy affinity-B7I4G2ZB-ns1/svc1/tcp/p80__10.180.1.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }',
  ]);
  t.deepEqual(nftRules(text, `local-${ULM}`), [
    'ip saddr @affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80',
    'numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }',
  ]);
  t.is(nftRules(text, 'endpoint-B7I4G2ZB-ns1/svc1/tcp/p80__10.180.1.1/80')[1], 'update @affinity-B7I4G2ZB-ns1/svc1/tcp/p80__10.180.1.1/80 { ip saddr }');
});

test('unnamed ports, UDP and SCTP: names end in "/", comments name the service alone, DNAT per protocol', (t) => {
  const text = nftRender(svc('svc1', 'clusterIP: 172.30.0.41\nports: [{port: 53, protocol: UDP}]')
    + svc('svc2', 'clusterIP: 172.30.0.42\nports: [{port: 9, protocol: SCTP}]')
    + slice('svc1', '- {addresses: [10.180.0.1]}', '- {port: 53, protocol: UDP}'));
  const udp = nftChains(text).find((c) => c.startsWith('service-') && c.includes('/'))!;
  t.regex(udp, /^service-[A-Z2-7]{8}-ns1\/svc1\/udp\/$/);
  t.true(nftRules(text, nftChains(text).find((c) => c.startsWith('endpoint-'))!).includes('meta l4proto udp dnat to 10.180.0.1:53'));
  t.deepEqual(nftElements(text, 'no-endpoint-services'), ['172.30.0.42 . sctp . 9 comment "ns1/svc2" : goto reject-chain']);
  t.deepEqual(nftElements(text, 'cluster-ips').sort(), ['172.30.0.41', '172.30.0.42']);
});

test('LoadBalancer ingress: proxy-mode IPs are not captured; source ranges that include the node also allow the VIPs', (t) => {
  const text = nftRender(svc('svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]\nloadBalancerSourceRanges: [192.168.0.0/16, 203.0.113.0/25]', 'ns1', lb(['1.2.3.4', '5.6.7.8=Proxy', '9.9.9.9=VIP']))
    + slice('svc1', '- {addresses: [10.180.0.1]}'));
  t.deepEqual(nftElements(text, 'service-ips').sort(), [`1.2.3.4 . tcp . 80 : goto external-${ULM}`, `172.30.0.41 . tcp . 80 : goto service-${ULM}`, `9.9.9.9 . tcp . 80 : goto external-${ULM}`]);
  t.deepEqual(nftRules(text, `firewall-${ULM}`), ['ip saddr != { 192.168.0.0/16 , 203.0.113.0/25 , 1.2.3.4 , 9.9.9.9 } drop']);
  t.deepEqual(nftElements(text, 'firewall-ips').sort(), [`1.2.3.4 . tcp . 80 : goto firewall-${ULM}`, `9.9.9.9 . tcp . 80 : goto firewall-${ULM}`]);
  // Without endpoints the firewall still applies (and the traffic is then rejected).
  const empty = nftRender(svc('svc1', 'type: LoadBalancer\nclusterIP: 172.30.0.41\nports: [{name: p80, port: 80, protocol: TCP}]\nloadBalancerSourceRanges: [203.0.113.0/25]', 'ns1', lb(['1.2.3.4'])));
  t.deepEqual(nftRules(empty, `firewall-${ULM}`), ['ip saddr != { 203.0.113.0/25 } drop']);
  t.deepEqual(nftElements(empty, 'no-endpoint-services').sort(), ['1.2.3.4 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain', '172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain']);
});

test('internalTrafficPolicy Local without a local endpoint: the cluster IP drops, the node port still serves', (t) => {
  const text = nftRender(svc('svc1', 'type: NodePort\nclusterIP: 172.30.0.41\ninternalTrafficPolicy: Local\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]')
    + slice('svc1', '- {addresses: [10.180.1.1], nodeName: other}'));
  t.deepEqual(nftElements(text, 'no-endpoint-services'), ['172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : drop']);
  t.deepEqual(nftElements(text, 'service-nodeports'), [`tcp . 3001 : goto external-${ULM}`]);
  t.deepEqual(renderNftables({ cluster: loadManifestText(svc('svc1', 'type: NodePort\nclusterIP: 172.30.0.41\ninternalTrafficPolicy: Local\nports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]')
    + slice('svc1', '- {addresses: [10.180.1.1], nodeName: other}'), 't').cluster, settings: nftSettings() }).noLocalEndpoints, { internal: 1, external: 0 });
});

test('ServiceCIDRs: several are joined, the other family and bad ones left out; none means no drop rule', (t) => {
  const cidrs = nftRules(nftRender(SERVICE_CIDR(['172.30.0.0/16', 'fd00::/112', '172.50.0.0/16', 'banana'])), 'cluster-ips-check');
  t.deepEqual(cidrs[1], 'ip daddr { 172.30.0.0/16,172.50.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"');
  t.deepEqual(nftRules(nftRender(''), 'cluster-ips-check'), ['ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"']);
  const r = renderNftables({ cluster: loadManifestText(SERVICE_CIDR(['banana']), 't').cluster, settings: nftSettings() });
  t.deepEqual(r.warnings.map((w) => w.field), ['spec.cidrs[0]']);
});

test('headless, ExternalName and port-less services add nothing; shared cluster IPs are one set element', (t) => {
  const empty = nftRender('');
  const text = nftRender(svc('h', 'clusterIP: None\nports: [{port: 80}]') + svc('x', 'type: ExternalName\nexternalName: example.com') + svc('n', 'clusterIP: 172.30.0.9'));
  t.is(normalizeNft(text), normalizeNft(empty));
  const shared = nftRender(svc('svc1', 'clusterIP: 172.30.0.41\nports: [{name: a, port: 80}, {name: b, port: 81}]'));
  t.deepEqual(nftElements(shared, 'cluster-ips'), ['172.30.0.41']);
});

test('config: the nftables section applies in nftables mode (masquerade settings, sync periods); bad input is a clear error', (t) => {
  const yaml = 'mode: nftables\niptables: {masqueradeBit: 3, masqueradeAll: true, syncPeriod: 5s}\nnftables: {masqueradeBit: 12, syncPeriod: 1m0s, minSyncPeriod: 500ms}';
  const cfg = parseKubeProxyConfig(yaml);
  t.is(cfg.mode, 'nftables');
  t.is(cfg.masqueradeBit, 12);
  t.is(cfg.masqueradeAll, undefined);
  t.is(cfg.syncPeriodMs, 60_000);
  t.is(cfg.minSyncPeriodMs, 500);
  t.is(parseKubeProxyConfig('nftables: {masqueradeAll: true}', 'nftables').masqueradeAll, true);
  // --proxy-mode iptables on an nftables config reads the iptables section.
  t.is(parseKubeProxyConfig(yaml, 'iptables').masqueradeBit, 3);
  t.throws(() => parseKubeProxyConfig('mode: ebpf'), { instanceOf: ConfigError, message: /unknown proxy mode "ebpf"/ });
  t.throws(() => parseKubeProxyConfig('mode: nftables\nnftables: [1]'), { instanceOf: ConfigError, message: /nftables: expected a mapping/ });
  t.throws(() => parseKubeProxyConfig('mode: nftables\nnftables: {masqueradeBit: 40}'), { instanceOf: ConfigError, message: /nftables.masqueradeBit/ });
  t.throws(() => parseKubeProxyConfig('nodePortAddresses: [primary, 10.0.0.0/8]'), { instanceOf: ConfigError, message: /primary/ });
});

test('a renderer kept between renders gives what a fresh render gives, over random changes; --since adds exactly the stale chains', (t) => {
  const settings = nftSettings();
  fc.assert(fc.property(fc.array(fc.array(arbService, { maxLength: 5 }), { minLength: 2, maxLength: 5 }), (history) => {
    const kept = new NftablesRenderer();
    // The same changes told service by service (as the proxy's partial syncs tell them).
    const partial = new NftablesRenderer();
    let keysBefore = new Set<string>();
    let previous: ReturnType<typeof renderNftables> | null = null;
    for (const specs of history) {
      const c = arbCluster(specs);
      const incremental = kept.render({ cluster: c, settings });
      const fresh = renderNftables({ cluster: structuredClone(c), settings });
      if (nftablesText(incremental) !== nftablesText(fresh)) return false;
      const keys = new Set([...c.services, ...c.endpointSlices].map((o) => `${o.metadata?.namespace ?? 'default'}/${o.metadata?.name ?? ''}`));
      const told = partial.render({ cluster: c, settings, ...(previous ? { recompute: new Set([...keysBefore, ...keys, ...fresh.services.keys(), ...previous.services.keys()]) } : {}) });
      keysBefore = keys;
      for (const r of [incremental, told]) {
        if (nftablesText(r) !== nftablesText(fresh)) return false;
        if (JSON.stringify(r.warnings) !== JSON.stringify(fresh.warnings)) return false;
        if (JSON.stringify(r.noLocalEndpoints) !== JSON.stringify(fresh.noLocalEndpoints)) return false;
        if (JSON.stringify([...r.services.keys()]) !== JSON.stringify([...fresh.services.keys()])) return false;
      }
      if (previous) {
        const stale = staleChains(previous, fresh);
        const withStale = nftablesText(fresh, stale).split('\n');
        const extra = withStale.filter((l) => !nftablesText(fresh).split('\n').includes(l));
        if (extra.length !== stale.length || !stale.every((c) => extra.includes(`add chain ip kube-proxy ${c}`))) return false;
        if (stale.some((c) => activeChains(fresh).has(c))) return false;
        // What changed says exactly which services' parts differ.
        for (const key of incremental.changed.keys()) if (!incremental.services.has(key) && !previous.services.has(key)) return false;
      }
      previous = fresh;
    }
    return true;
  }), { numRuns: 60 });
  t.pass();
});
