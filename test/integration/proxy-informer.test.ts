// Informer path end to end against test/helpers/fake-apiserver.ts, which stands in for
// kube-apiserver (it cannot be installed here) and serves the real list/watch wire format.
// The proxy programs real iptables (nft) inside a knt-p namespace.
import test from 'ava';
import pino from 'pino';
import { FakeApiServer, makeService, makeSlice } from '../helpers/fake-apiserver.ts';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { loadKubeConfig, InformerSource } from '../../src/k8s/informer.ts';
import { ProxyDaemon } from '../../src/proxy/daemon.ts';
import { IptablesApplier } from '../../src/proxy/iptables-applier.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import { iptablesSave, kernelIptables } from '../../src/kernel/iptables.ts';
import type { EndpointSlice, Node, Service } from '../../src/model/k8s.ts';

const rootTest = isRoot ? test : test.skip;
const log = pino({ level: 'silent' });

async function until(what: string, f: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

rootTest('informers: list, watch, dropped connections and 410 Gone converge without rewriting unchanged rules', async (t) => {
  const api = new FakeApiServer();
  await api.start();
  t.teardown(() => api.close());
  const ns = await testNetns(t, 'knt-p');
  api.upsert('services', makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
  api.upsert('endpointslices', makeSlice('default', 'web', ['10.1.0.1', '10.1.0.2'], [{ name: 'http', port: 8080 }]));
  api.upsert('services', makeService('default', 'db', { clusterIP: '172.30.0.11', ports: [{ port: 5432, protocol: 'TCP' }] }));
  api.upsert('endpointslices', makeSlice('default', 'db', ['10.1.0.9'], [{ port: 5432 }]));
  // A bad object is skipped; it must not stop the others.
  api.upsert('services', makeService('default', 'bad', { clusterIP: 'not-an-ip', ports: [{ port: 1, protocol: 'TCP' }] }));
  api.upsert('nodes', { metadata: { name: 'node1' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.60.2' }] } });

  const settings = proxySettingsFromConfig(undefined, { nodeName: 'node1', nodeIPs: [] });
  const applier = new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: ns }), netns: ns, settings, log });
  const nodes: Array<Node | null> = [];
  const daemon = new ProxyDaemon({
    source: new InformerSource({ kubeConfig: loadKubeConfig(api.kubeconfig()), nodeName: 'node1', log, maxBackoffMs: 300 }),
    dataplane: applier, log, minSyncPeriodMs: 0, syncPeriodMs: 60_000,
    onNode: (n) => { nodes.push(n); return false; },
  });
  t.teardown(() => daemon.stop());
  const nat = () => iptablesSave({ backend: 'nft', netns: ns }, 'nat');
  await Promise.race([daemon.start(), new Promise((_, rej) => setTimeout(() => rej(new Error('informers did not sync')), 15_000))]);
  await until('first sync', () => daemon.syncs >= 1);
  t.regex(await nat(), /--to-destination 10\.1\.0\.2:8080/);
  t.regex(await nat(), /--to-destination 10\.1\.0\.9:5432/);
  t.deepEqual(nodes.map((n) => n?.status?.addresses?.[0]?.address), ['192.168.60.2']);

  // A watch event reaches the kernel.
  api.upsert('endpointslices', makeSlice('default', 'web', ['10.1.0.1', '10.1.0.3'], [{ name: 'http', port: 8080 }]));
  await until('endpoint change', async () => /10\.1\.0\.3:8080/.test(await nat()));
  t.notRegex(await nat(), /10\.1\.0\.2:8080/);

  // Dropped watch connections: the informer resumes from its resourceVersion (no relist).
  const listsBefore = api.requests.filter((r) => r.startsWith('list services')).length;
  api.dropWatches();
  await until('watches re-opened', () => api.openWatches >= 3);
  api.upsert('endpointslices', makeSlice('default', 'db', ['10.1.0.8'], [{ port: 5432 }]));
  await until('change after reconnect', async () => /10\.1\.0\.8:5432/.test(await nat()));
  t.is(api.requests.filter((r) => r.startsWith('list services')).length, listsBefore);
  t.true(api.requests.some((r) => /^watch services rv=[1-9]/.test(r)));

  // 410 Gone: relist. Only the service that changed meanwhile is rewritten.
  const syncsBefore = daemon.syncs;
  api.expireWatches();
  api.upsert('endpointslices', makeSlice('default', 'web', ['10.1.0.1', '10.1.0.4'], [{ name: 'http', port: 8080 }]));
  await until('relist after 410', () => api.requests.filter((r) => r.startsWith('list services')).length > listsBefore);
  await until('change seen through relist', async () => /10\.1\.0\.4:8080/.test(await nat()));
  // The sync is counted once it returns, after conntrack clean-up: the rules land first.
  await until('sync counted', () => daemon.syncs > syncsBefore);
  t.is(daemon.syncs, syncsBefore + 1);
  const o = daemon.lastOutcome!;
  t.false(o.full);
  // web's service chain and its new endpoint chain only: db's chains and KUBE-SERVICES untouched.
  t.true(o.written.nat > 0 && o.written.nat <= 6, `wrote ${o.written.nat} nat rules`);
  t.is(o.written.filter, 0);
  t.regex(await nat(), /10\.1\.0\.8:5432/);

  // A relist that finds nothing new syncs nothing.
  const s2 = daemon.syncs;
  api.expireWatches();
  await until('second relist', () => api.requests.filter((r) => r.startsWith('list services')).length > listsBefore + 1);
  await new Promise((r) => setTimeout(r, 300));
  t.is(daemon.syncs, s2);
});

test('informers: objects with fields of the wrong type are listed and handed on as sent, not thrown on', async (t) => {
  const api = new FakeApiServer();
  await api.start();
  t.teardown(() => api.close());
  api.upsert('services', makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ port: 80, protocol: 'TCP' }] }));
  // The generated client's typed list threw "data is not iterable" on this one, so nothing synced.
  api.upsert('services', makeService('default', 'bad', { clusterIP: '172.30.0.11', ports: { port: 80 }, externalIPs: '1.2.3.4' }));
  api.upsert('endpointslices', { ...makeSlice('default', 'web', ['10.1.0.1'], [{ port: 8080 }]), endpoints: { addresses: ['10.1.0.2'] } });
  api.upsert('nodes', { metadata: { name: 'node1' }, status: { addresses: '192.168.60.2' } });
  const services: Service[] = [];
  const slices: EndpointSlice[] = [];
  const nodes: Array<Node | null> = [];
  let synced = false;
  const source = new InformerSource({ kubeConfig: loadKubeConfig(api.kubeconfig()), nodeName: 'node1', log, maxBackoffMs: 300 });
  t.teardown(() => source.stop());
  await Promise.race([
    source.start({
      upsertService: (s) => services.push(s), deleteService: () => {}, upsertSlice: (s) => slices.push(s), deleteSlice: () => {},
      replaceAll: () => {}, node: (n) => nodes.push(n), synced: () => { synced = true; }, warn: () => {},
    }),
    new Promise((_, rej) => setTimeout(() => rej(new Error('informers did not sync')), 10_000)),
  ]);
  t.true(synced);
  // As the API sent it: a string stays a string (the typed client made it a list of characters).
  t.deepEqual(services.map((s) => s.spec?.externalIPs ?? null).sort(), ['1.2.3.4', null]);
  t.deepEqual(slices.map((s) => s.endpoints), [{ addresses: ['10.1.0.2'] }] as unknown as EndpointSlice['endpoints'][]);
  await until('node seen', () => nodes.length > 0);
  t.is(nodes[0]?.status?.addresses as unknown, '192.168.60.2');
});

rootTest('nftables mode: ServiceCIDRs from the API drop traffic to unallocated cluster IPs, and follow changes; an API without them is no error', async (t) => {
  const { NftablesApplier } = await import('../../src/proxy/nftables-applier.ts');
  const { kernelNft, nftListTable } = await import('../../src/kernel/nft.ts');
  const api = new FakeApiServer();
  await api.start();
  t.teardown(() => api.close());
  const ns = await testNetns(t, 'knt-n');
  api.upsert('services', makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
  api.upsert('endpointslices', makeSlice('default', 'web', ['10.1.0.1'], [{ name: 'http', port: 8080 }]));
  api.upsert('servicecidrs', { metadata: { name: 'kubernetes' }, spec: { cidrs: ['172.30.0.0/16', 'fd00:30::/112'] } });
  const settings = proxySettingsFromConfig('mode: nftables\n', { mode: 'nftables', nodeName: 'node1', nodeIPs: ['192.168.60.2'] });
  const daemon = new ProxyDaemon({
    source: new InformerSource({ kubeConfig: loadKubeConfig(api.kubeconfig()), nodeName: 'node1', log, maxBackoffMs: 300 }),
    dataplane: new NftablesApplier({ nft: kernelNft({ netns: ns }), netns: ns, settings: [settings], log }), log, minSyncPeriodMs: 0, syncPeriodMs: 60_000,
  });
  t.teardown(() => daemon.stop());
  const table = async () => (await nftListTable({ netns: ns }, 'ip', 'kube-proxy')) ?? '';
  await daemon.start();
  await until('the drop rule', async () => /ip daddr 172\.30\.0\.0\/16 drop comment "Drop traffic to unallocated ClusterIPs"/.test(await table()));
  api.upsert('servicecidrs', { metadata: { name: 'extra' }, spec: { cidrs: ['172.40.0.0/16'] } });
  await until('the second range', async () => /ip daddr \{ 172\.30\.0\.0\/16, 172\.40\.0\.0\/16 \} drop/.test(await table()));
  api.remove('servicecidrs', undefined, 'extra');
  api.remove('servicecidrs', undefined, 'kubernetes');
  await until('no drop rule', async () => !/Drop traffic to unallocated/.test(await table()));

  // An API that serves no ServiceCIDRs: the proxy syncs as before, without the rule.
  const old = new FakeApiServer();
  old.serviceCIDRs = false;
  await old.start();
  t.teardown(() => old.close());
  old.upsert('services', makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
  const ns2 = await testNetns(t, 'knt-n');
  const d2 = new ProxyDaemon({
    source: new InformerSource({ kubeConfig: loadKubeConfig(old.kubeconfig()), nodeName: 'node1', log, maxBackoffMs: 300 }),
    dataplane: new NftablesApplier({ nft: kernelNft({ netns: ns2 }), netns: ns2, settings: [settings], log }), log, minSyncPeriodMs: 0, syncPeriodMs: 60_000,
  });
  t.teardown(() => d2.stop());
  await d2.start();
  await until('a sync', () => d2.syncs >= 1);
  t.regex((await nftListTable({ netns: ns2 }, 'ip', 'kube-proxy')) ?? '', /no-endpoint-services/);
  t.false(old.requests.some((r) => r.includes('servicecidrs')));
});
