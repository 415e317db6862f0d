import test from 'ava';
import { desiredFlows, diffFlows, normalizeFlow } from '../../src/overlay/ovs-gre/flows.ts';
import { parseOvsGreConfig, GRE_OVERHEAD } from '../../src/overlay/ovs-gre/config.ts';
import { OvsGreBackend, ovsGreBackendFromConfig } from '../../src/overlay/ovs-gre/backend.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';

const network = parseCidr('10.246.0.0/16');
const lease = (cidr: string, ip: string, type: string | undefined = 'ovs-gre'): Lease => {
  const subnet = parseCidr(cidr);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, ...(type ? { BackendType: type } : {}) }, etcdLease: '1', expiresAt: null };
};
const own = lease('10.246.1.0/24', '192.168.50.1');
const ports = { tunnelOfport: 10, internalOfport: 9 };

test('the seed\'s table: tunnel to local subnet goes to port 9, one IP and one ARP flow per peer to port 10 with tun_dst', (t) => {
  const d = desiredFlows({ network, own, peers: [lease('10.246.2.0/24', '192.168.50.2'), own, lease('10.246.0.0/24', '192.168.50.3')], ...ports });
  t.deepEqual(d.flows, [
    'priority=100,ip,in_port=10,nw_dst=10.246.1.0/24 actions=output:9',
    'priority=100,arp,in_port=10,arp_tpa=10.246.1.0/24 actions=output:9',
    'priority=100,ip,in_port=9,nw_dst=10.246.0.0/24 actions=set_field:192.168.50.3->tun_dst,output:10',
    'priority=100,arp,in_port=9,arp_tpa=10.246.0.0/24 actions=set_field:192.168.50.3->tun_dst,output:10',
    'priority=100,ip,in_port=9,nw_dst=10.246.2.0/24 actions=set_field:192.168.50.2->tun_dst,output:10',
    'priority=100,arp,in_port=9,arp_tpa=10.246.2.0/24 actions=set_field:192.168.50.2->tun_dst,output:10',
  ]);
  t.is(d.programmed, 2);
  t.deepEqual(d.skipped, []);
});

test('configured port numbers are used', (t) => {
  const d = desiredFlows({ network, own, peers: [lease('10.246.2.0/24', '192.168.50.2')], tunnelOfport: 20, internalOfport: 21 });
  t.true(d.flows.every((f) => /in_port=(20|21)/.test(f)));
  t.true(d.flows[2]!.endsWith('output:20'));
  t.true(d.flows[0]!.endsWith('output:21'));
});

test('peers of other backend types, stale own-IP leases, outside or overlapping subnets are skipped with a reason', (t) => {
  const d = desiredFlows({
    network, own, ...ports,
    peers: [
      lease('10.246.2.0/24', '192.168.50.2', 'vxlan'),
      lease('10.246.3.0/24', '192.168.50.3', ''),
      lease('10.246.4.0/24', '192.168.50.1'),
      lease('10.99.5.0/24', '192.168.50.5'),
      lease('10.246.1.0/25', '192.168.50.6'),
      lease('10.246.6.0/24', '192.168.50.6'),
    ],
  });
  t.is(d.programmed, 1);
  t.is(d.flows.length, 4);
  t.deepEqual(d.skipped.map((s) => s.key), ['10.246.1.0-25', '10.246.2.0-24', '10.246.3.0-24', '10.246.4.0-24', '10.99.5.0-24']);
  t.regex(d.skipped.find((s) => s.key === '10.246.2.0-24')!.reason, /not ovs-gre/);
  t.regex(d.skipped.find((s) => s.key === '10.246.1.0-25')!.reason, /is a \/25; every node's subnet here is a \/24/);
});

test('a peer\'s lease removed: its flows leave the desired table and the diff removes exactly them', (t) => {
  const two = desiredFlows({ network, own, peers: [lease('10.246.2.0/24', '192.168.50.2'), lease('10.246.3.0/24', '192.168.50.3')], ...ports });
  const one = desiredFlows({ network, own, peers: [lease('10.246.2.0/24', '192.168.50.2')], ...ports });
  const d = diffFlows(one.flows, two.flows);
  t.deepEqual(d.add, []);
  t.deepEqual(d.remove.sort(), two.flows.filter((f) => f.includes('10.246.3.0')).sort());
});

test('normalisation: what ovs-ofctl prints (stats, field order, zero cookie/table) compares equal to what was written', (t) => {
  const written = 'priority=100,ip,in_port=9,nw_dst=10.246.2.0/24 actions=set_field:192.168.50.2->tun_dst,output:10';
  const dumped = ' cookie=0x0, duration=5.604s, table=0, n_packets=1, n_bytes=71, in_port=9,priority=100,nw_dst=10.246.2.0/24,ip actions=set_field:192.168.50.2->tun_dst,output:10';
  t.is(normalizeFlow(dumped), normalizeFlow(written));
  t.deepEqual(diffFlows([written], [dumped]), { add: [], remove: [] });
  // A changed action, a non-zero cookie or another table is a different flow.
  t.not(normalizeFlow(written.replace('50.2->', '50.9->')), normalizeFlow(written));
  t.not(normalizeFlow(`cookie=0x1,${written}`), normalizeFlow(written));
  t.not(normalizeFlow(`table=1,${written}`), normalizeFlow(written));
  t.is(normalizeFlow('ip actions=drop'), normalizeFlow('priority=32768,ip actions=drop'));
});

test('config: defaults are the seed\'s names and port numbers; bad values are rejected', (t) => {
  const cfg = parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre"}}');
  t.deepEqual(parseOvsGreConfig(cfg.backend), {
    bridge: 'obr0', tunnelPort: 'gre0', internalPort: 'tun0', podBridge: 'cni0', tunnelOfport: 10, internalOfport: 9, datapathType: 'system', mtu: null,
  });
  const custom = parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"type":"OVS-GRE","bridge":"br-k","datapathtype":"netdev","MTU":9000,"PodBridge":"docker0"}}');
  t.like(parseOvsGreConfig(custom.backend), { bridge: 'br-k', datapathType: 'netdev', mtu: 9000, podBridge: 'docker0' });
  const bad = (b: string) => t.throws(() => parseOvsGreConfig(parseNetworkConfig(`{"Network":"10.246.0.0/16","Backend":${b}}`).backend));
  bad('{"Type":"vxlan"}');
  bad('{"Type":"ovs-gre","Bridge":"a b"}');
  bad('{"Type":"ovs-gre","Bridge":"waytoolongbridgename"}');
  bad('{"Type":"ovs-gre","TunnelOfport":65280}');
  bad('{"Type":"ovs-gre","TunnelOfport":9}');
  bad('{"Type":"ovs-gre","Bridge":"cni0"}');
  bad('{"Type":"ovs-gre","DatapathType":"dpdk"}');
  bad('{"Type":"ovs-gre","MTU":600}');
});

test('MTU leaves room for Ethernet over GRE with a key (42 bytes); Backend.MTU overrides the underlay', (t) => {
  const config = parseOvsGreConfig(parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre"}}').backend);
  const ovs = { netns: null, runDir: '/nonexistent' };
  t.is(GRE_OVERHEAD, 20 + 4 + 4 + 14);
  t.is(new OvsGreBackend({ ovs, config, underlay: { publicIP: '192.168.50.1', mtu: 1500 }, network }).mtu, 1458);
  t.is(new OvsGreBackend({ ovs, config: { ...config, mtu: 9000 }, underlay: { publicIP: '192.168.50.1', mtu: 1500 }, network }).mtu, 8958);
  t.is(new OvsGreBackend({ ovs, config, underlay: { publicIP: '192.168.50.1', mtu: 1500 }, network, tunnelType: 'vxlan' }).mtu, 1450);
});

test('ovsGreBackendFromConfig: the agent\'s entry point parses Backend options and uses the system OVS run directory by default', (t) => {
  const cfg = parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre","MTU":1400}}');
  const b = ovsGreBackendFromConfig({ backend: cfg.backend, network, underlay: { publicIP: '192.168.50.1', mtu: 1500 } });
  t.is(b.type, 'ovs-gre');
  t.is(b.mtu, 1400 - 42);
  t.throws(() => ovsGreBackendFromConfig({ backend: parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"vxlan"}}').backend, network, underlay: { publicIP: '192.168.50.1', mtu: 1500 } }));
});
