import test from 'ava';
import { cleanStaleConntrack, conntrackCleanup } from '../../src/proxy/conntrack-plan.ts';
import { buildServiceModel } from '../../src/rules/model.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import { ProxyHealth, SERVER_LIMITS, healthResponse, parseBindAddress, serveHealth } from '../../src/proxy/health.ts';
import { connect, type Socket } from 'node:net';
import { ProxyMetrics } from '../../src/proxy/metrics.ts';
import { IptablesMetrics } from '../../src/proxy/iptables-metrics.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import { makeService, makeSlice } from '../helpers/fake-apiserver.ts';

const settings = proxySettingsFromConfig(undefined, { nodeName: 'n1', nodeIPs: ['192.168.50.2'] });
function cluster(proto: string, ips: string[]): ClusterState {
  return {
    services: [makeService('default', 'dns', { clusterIP: '172.30.0.10', externalIPs: ['192.168.50.100'], type: 'NodePort', ports: [{ port: 53, protocol: proto, nodePort: 30053 }] })],
    endpointSlices: ips.length ? [makeSlice('default', 'dns', ips, [{ port: 5353, protocol: proto }])] : [],
  } as unknown as ClusterState;
}
const ports = (c: ClusterState) => buildServiceModel(c, settings).ports;

test('conntrack: a removed UDP endpoint loses its flows to every service address and the node port', (t) => {
  const f = conntrackCleanup(ports(cluster('UDP', ['10.1.0.1', '10.1.0.2'])), ports(cluster('UDP', ['10.1.0.1'])));
  t.deepEqual(f, [
    { protocol: 'udp', origDst: '172.30.0.10', dstNat: '10.1.0.2' },
    { protocol: 'udp', origDst: '192.168.50.100', dstNat: '10.1.0.2' },
    { protocol: 'udp', dport: 30053, dstNat: '10.1.0.2' },
  ]);
});

test('conntrack clean-up (every data plane\'s): each planned entry deleted, with the family; a failed deletion is logged and the rest go on', async (t) => {
  const asked: unknown[] = [];
  const logged: Array<[string, string]> = [];
  const log = { info: (_o: object, msg: string) => logged.push(['info', msg]), warn: (_o: object, msg: string) => logged.push(['warn', msg]) };
  const before = ports(cluster('UDP', ['10.1.0.1', '10.1.0.2']));
  const after = ports(cluster('UDP', ['10.1.0.1']));
  await cleanStaleConntrack(before, after, 'IPv6', async (f) => {
    asked.push(f);
    if (asked.length === 1) throw new Error('conntrack: Operation not permitted');
    return 2;
  }, log);
  t.deepEqual(asked, conntrackCleanup(before, after).map((f) => ({ ...f, family: 'IPv6' })));
  t.deepEqual(logged, [['warn', 'conntrack clean-up failed'], ['info', 'deleted stale conntrack entries'], ['info', 'deleted stale conntrack entries']]);
});

test('conntrack: 0 -> N endpoints clears flows to the service IPs and node port', (t) => {
  const f = conntrackCleanup(ports(cluster('UDP', [])), ports(cluster('UDP', ['10.1.0.1'])));
  t.deepEqual(f, [
    { protocol: 'udp', origDst: '172.30.0.10' },
    { protocol: 'udp', origDst: '192.168.50.100' },
    { protocol: 'udp', dport: 30053 },
  ]);
});

test('conntrack: TCP needs nothing, unchanged UDP needs nothing, SCTP is handled', (t) => {
  t.deepEqual(conntrackCleanup(ports(cluster('TCP', ['10.1.0.1'])), ports(cluster('TCP', []))), []);
  t.deepEqual(conntrackCleanup(ports(cluster('UDP', ['10.1.0.1'])), ports(cluster('UDP', ['10.1.0.1']))), []);
  t.is(conntrackCleanup(ports(cluster('SCTP', ['10.1.0.1'])), ports(cluster('SCTP', []))).length, 3);
});

test('health: healthy at start, unhealthy when a queued change waits longer than the timeout', (t) => {
  let now = 1000;
  const h = new ProxyHealth(60_000, () => now);
  t.true(h.status().healthy);
  h.queued();
  now += 59_000;
  t.true(h.status().healthy);
  now += 2_000;
  t.false(h.status().healthy);
  t.is(healthResponse(h, '/healthz')!.code, 503);
  t.is(healthResponse(h, '/livez')!.code, 503);
  h.updated();
  t.is(healthResponse(h, '/healthz')!.code, 200);
});

test('health: /healthz fails on a node being deleted, /livez does not', (t) => {
  const h = new ProxyHealth(60_000);
  h.setNode({ metadata: { name: 'n1' }, spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } });
  const hz = healthResponse(h, '/healthz')!;
  t.is(hz.code, 503);
  t.is(hz.body.nodeEligible, false);
  t.is(healthResponse(h, '/livez')!.code, 200);
  t.false('nodeEligible' in healthResponse(h, '/livez')!.body);
  h.setNode({ metadata: { name: 'n1', deletionTimestamp: '2026-01-01T00:00:00Z' } });
  t.is(healthResponse(h, '/healthz')!.code, 503);
  h.setNode({ metadata: { name: 'n1' } });
  t.is(healthResponse(h, '/healthz')!.code, 200);
});

test('health and metrics over HTTP with kube-proxy names', async (t) => {
  const h = new ProxyHealth(60_000);
  const m = new ProxyMetrics();
  const hs = await serveHealth(h, '127.0.0.1', 0, (p, c) => m.countHealth(p, c));
  const ms = await m.serve('127.0.0.1', 0);
  t.teardown(() => { hs.close(); ms.close(); });
  const hp = (hs.address() as { port: number }).port;
  const mp = (ms.address() as { port: number }).port;
  const r = await fetch(`http://127.0.0.1:${hp}/healthz`);
  t.is(r.status, 200);
  t.is(r.headers.get('content-type'), 'application/json');
  const body = await r.json() as Record<string, unknown>;
  t.true(body.nodeEligible as boolean);
  t.truthy(body.lastUpdated);
  t.is((await fetch(`http://127.0.0.1:${hp}/livez`)).status, 200);
  t.is((await fetch(`http://127.0.0.1:${hp}/other`)).status, 404);
  m.fullSyncDuration.observe(0.5);
  new IptablesMetrics(m.registry).synced({ nat: 1 }, { nat: 42 });
  const text = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text();
  for (const name of ['kubeproxy_sync_proxy_rules_duration_seconds', 'kubeproxy_sync_full_proxy_rules_duration_seconds_count 1',
    'kubeproxy_sync_partial_proxy_rules_duration_seconds', 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    'kubeproxy_sync_proxy_rules_iptables_total{table="nat"} 42', 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
    'kubeproxy_sync_proxy_rules_endpoint_changes_total', 'kubeproxy_sync_proxy_rules_service_changes_total',
    'kubeproxy_network_programming_duration_seconds', 'kubeproxy_proxy_healthz_total{code="200"} 1', 'kubeproxy_proxy_livez_total{code="200"} 1']) {
    t.true(text.includes(name), name);
  }
});

test('bind addresses parse like kube-proxy flags', (t) => {
  t.deepEqual(parseBindAddress('0.0.0.0:10256'), { host: '0.0.0.0', port: 10256 });
  t.deepEqual(parseBindAddress('[::]:10256'), { host: '::', port: 10256 });
  t.throws(() => parseBindAddress('10256'));
});

test('health: connections are capped and idle ones closed, so silent clients cannot hold the proxy\'s descriptors', async (t) => {
  t.is(SERVER_LIMITS.maxConnections, 64);
  const server = await serveHealth(new ProxyHealth(60_000), '127.0.0.1', 0, undefined, { maxConnections: 4, idleMs: 300 });
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const sockets: Socket[] = [];
  const closed: boolean[] = [];
  for (let i = 0; i < 12; i++) {
    const s = connect(port, '127.0.0.1');
    const at = i;
    closed.push(false);
    s.on('close', () => { closed[at] = true; });
    s.on('error', () => {});
    sockets.push(s);
    await new Promise((r) => s.once('connect', r).once('close', r));
  }
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  await new Promise((r) => setTimeout(r, 100));
  const open = await new Promise<number>((r, j) => server.getConnections((e, n) => (e ? j(e) : r(n))));
  t.true(open <= 4, `${open} connections held`);
  // Idle ones are closed; then a real request is served.
  for (let i = 0; i < 50 && closed.some((c) => !c); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(closed.every(Boolean));
  t.is((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
});
