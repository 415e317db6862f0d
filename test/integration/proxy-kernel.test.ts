// The iptables applier's kernel side, for real inside knt-p namespaces: backend detection,
// idempotent jumps, cleanup of both backends, recovery after an external flush (canary) and
// after a failed restore.
import test from 'ava';
import pino from 'pino';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { makeService, makeSlice } from '../helpers/fake-apiserver.ts';
import { iptables, iptablesRestore, iptablesSave, kernelIptables, type IptablesBackend } from '../../src/kernel/iptables.ts';
import { detectBackend } from '../../src/proxy/backend.ts';
import { JUMPS, cleanupIptables } from '../../src/proxy/jumps.ts';
import { ensureJumps } from '../../src/kernel/jumps.ts';
import { IptablesApplier } from '../../src/proxy/iptables-applier.ts';
import { ProxyDaemon } from '../../src/proxy/daemon.ts';
import { ManualSource, merge, services } from '../helpers/proxy-clusters.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';

const rootTest = isRoot ? test : test.skip;
const log = pino({ level: process.env.DBG ? 'debug' : 'silent' });
const settings = proxySettingsFromConfig('clusterCIDR: 10.244.0.0/16\n', { nodeName: 'node1', nodeIPs: ['192.168.77.2'] });

function cluster(eps: string[]): ClusterState {
  return {
    services: [makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] }) as unknown as Service],
    endpointSlices: [makeSlice('default', 'web', eps, [{ port: 8080 }]) as unknown as EndpointSlice],
  };
}

rootTest('backend detection follows the backend that holds rules, and warns when both hold KUBE-* chains', async (t) => {
  const ns = await testNetns(t, 'knt-p');
  t.is((await detectBackend({ netns: ns })).backend, 'nft');
  const many = Array.from({ length: 12 }, (_, i) => `-A INPUT -s 10.9.0.${i}/32 -j ACCEPT`).join('\n');
  await iptablesRestore({ backend: 'legacy', netns: ns }, `*filter\n${many}\nCOMMIT\n`, { noflush: true });
  t.is((await detectBackend({ netns: ns })).backend, 'legacy');
  await iptablesRestore({ backend: 'nft', netns: ns }, '*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n', { noflush: true });
  t.is((await detectBackend({ netns: ns })).backend, 'nft');
  await iptablesRestore({ backend: 'legacy', netns: ns }, '*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n', { noflush: true });
  t.regex((await detectBackend({ netns: ns })).warning ?? '', /both/);
});

for (const backend of ['nft', 'legacy'] as IptablesBackend[]) {
  rootTest(`${backend}: jumps are idempotent; cleanup removes the proxy's and kube-proxy's rules and keeps others`, async (t) => {
    const ns = await testNetns(t, 'knt-p');
    const target = { backend, netns: ns, waitSeconds: 5 };
    const applier = new IptablesApplier({ iptables: kernelIptables(target), netns: ns, settings, log });
    await applier.sync({ cluster: cluster(['10.244.1.11']), changed: new Set(), full: true });
    t.is(await ensureJumps(kernelIptables(target), JUMPS), 0);
    const saves = { filter: await iptablesSave(target, 'filter'), nat: await iptablesSave(target, 'nat') };
    for (const j of JUMPS) t.is(saves[j.table].split('\n').filter((l) => l.startsWith(`-A ${j.from} `) && l.endsWith(`-j ${j.to}`)).length, 1, `${j.from} -> ${j.to}`);
    // Someone else's rules and a kube-proxy leftover chain.
    await iptablesRestore(target, '*nat\n:KUBE-XLB-OLDKUBEPROXY1 - [0:0]\n:OTHER - [0:0]\n-A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE\n-A OTHER -j RETURN\nCOMMIT\n', { noflush: true });
    const r = await cleanupIptables(kernelIptables(target), 3);
    t.true(r.jumps >= JUMPS.length);
    const after = await iptablesSave(target);
    t.notRegex(after, /KUBE-(SERVICES|SVC|SEP|NODEPORTS|POSTROUTING|MARK-MASQ|XLB|PROXY|EXTERNAL|FORWARD)/);
    t.regex(after, /-A POSTROUTING -s 10\.244\.0\.0\/16 -j MASQUERADE/);
    t.regex(after, /:OTHER/);
    t.deepEqual(await cleanupIptables(kernelIptables(target)), { jumps: 0, chains: 0 });
  });

  rootTest(`${backend}: an external flush is noticed (canary) and a failed restore leads to a full resync`, async (t) => {
    const ns = await testNetns(t, 'knt-p');
    const target = { backend, netns: ns, waitSeconds: 5 };
    const applier = new IptablesApplier({ iptables: kernelIptables(target), netns: ns, settings, log });
    const source = new ManualSource(cluster(['10.244.1.11', '10.244.1.12']));
    const daemon = new ProxyDaemon({ source, dataplane: applier, log, minSyncPeriodMs: 0, syncPeriodMs: 60_000, retryMs: 100 });
    t.teardown(() => daemon.stop());
    let synced = daemon.nextSync();
    await daemon.start();
    await synced;
    const nat = () => iptablesSave(target, 'nat');
    t.regex(await nat(), /10\.244\.1\.12:8080/);

    // Someone flushes and deletes our nat chains (a firewall reload): the idle periodic sync
    // sees the canary gone and rewrites everything.
    await iptables(target, ['-t', 'nat', '-F']);
    await iptables(target, ['-t', 'nat', '-X']);
    synced = daemon.nextSync();
    daemon.runner.run();
    await synced;
    t.true(daemon.lastOutcome!.full);
    t.regex(await nat(), /10\.244\.1\.12:8080/);
    t.regex(await nat(), /-A PREROUTING .*-j KUBE-SERVICES/);

    // A foreign rule holds a reference to an endpoint chain, so deleting it fails: the partial
    // restore fails (counted); the full sync that follows reads the kernel's jumps, flushes and
    // keeps that chain and applies the rest; once the rule is gone, the next sync deletes it.
    const sep = /:(KUBE-SEP-\S+)/.exec((await nat()).split('\n').filter((l) => l.includes('10.244.1.12:8080'))[0]!.replace(/^-A (\S+).*/, ':$1'))![1]!;
    await iptables(target, ['-t', 'nat', '-A', 'OUTPUT', '-d', '10.99.99.99/32', '-j', sep]);
    const syncsBefore = daemon.syncs;
    source.set(cluster(['10.244.1.11']));
    for (let i = 0; i < 400 && daemon.syncs === syncsBefore; i++) await new Promise((r) => setTimeout(r, 25));
    t.true((await applier.metrics.restoreFailures.get()).values[0]!.value >= 1);
    t.notRegex(await nat(), /10\.244\.1\.12:8080/);
    t.regex(await nat(), new RegExp(`:${sep} `));
    await iptables(target, ['-t', 'nat', '-D', 'OUTPUT', '-d', '10.99.99.99/32', '-j', sep]);
    synced = daemon.nextSync();
    daemon.runner.run();
    await synced;
    t.notRegex(await nat(), new RegExp(`:${sep} `));
    t.true(daemon.lastOutcome!.full);
  });
}

rootTest('partial syncs (changed services only) leave the kernel exactly as a full sync of the same state', async (t) => {
  const [a, b] = [await testNetns(t, 'knt-p'), await testNetns(t, 'knt-p')];
  const svc = (i: number, extra: Record<string, unknown> = {}) => makeService('default', `s${i}`, { clusterIP: `172.30.1.${i}`, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'u', port: 53, protocol: 'UDP' }], ...extra }) as unknown as Service;
  const sl = (i: number, eps: string[]) => makeSlice('default', `s${i}`, eps, [{ port: 8080 }, { name: 'u', port: 53, protocol: 'UDP' }]) as unknown as EndpointSlice;
  const states: ClusterState[] = [];
  const base = (k: number) => Array.from({ length: 20 }, (_, i) => i);
  for (let step = 0; step < 6; step++) {
    const services = base(step).map((i) => svc(i, step >= 4 && i === 3 ? { sessionAffinity: 'ClientIP' } : {}));
    if (step >= 2) services.push(svc(50)); // a new service: the always-written chains change
    const slices = base(step).map((i) => sl(i, i === 5 && step >= 3 ? [] : [`10.244.${i}.1`, `10.244.${i}.${2 + step}`]));
    states.push({ services, endpointSlices: slices });
  }
  const applier = new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: a }), netns: a, settings, log });
  let prev: ClusterState | null = null;
  for (const s of states) {
    const keys = new Set<string>();
    if (prev) for (const x of [...prev.services, ...s.services]) keys.add(`default/${x.metadata.name}`);
    await applier.sync({ cluster: s, changed: keys, full: prev === null });
    prev = s;
  }
  await new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: b }), netns: b, settings, log }).sync({ cluster: prev!, changed: new Set(), full: true });
  const norm = async (ns: string) => (await iptablesSave({ backend: 'nft', netns: ns })).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.replace(/ \[\d+:\d+\]$/, '')).sort().join('\n');
  t.is(await norm(a), await norm(b));
});

rootTest('nft: a full sync split into small restores, service chains two at a time, leaves the kernel as one restore does', async (t) => {
  const [a, b] = [await testNetns(t, 'knt-p'), await testNetns(t, 'knt-p')];
  const services: Service[] = [];
  const slices: EndpointSlice[] = [];
  for (let i = 0; i < 60; i++) {
    services.push(makeService('default', `s${i}`, { clusterIP: `172.30.2.${i + 1}`, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
      ...(i % 3 === 0 ? { sessionAffinity: 'ClientIP' } : {}), ...(i % 4 === 0 ? { type: 'NodePort' } : {}) }) as unknown as Service);
    slices.push(makeSlice('default', `s${i}`, [`10.244.${i}.1`, `10.244.${i}.2`, `10.244.${i}.3`], [{ port: 8080 }]) as unknown as EndpointSlice);
  }
  const cluster: ClusterState = { services, endpointSlices: slices };
  // 7 chains per restore: about 40 restores, most of them marked concurrent.
  await new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: a }), netns: a, settings, log, maxChainsPerRestore: 7 }).sync({ cluster, changed: new Set(), full: true });
  await new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: b }), netns: b, settings, log, maxChainsPerRestore: Infinity }).sync({ cluster, changed: new Set(), full: true });
  const norm = async (ns: string) => (await iptablesSave({ backend: 'nft', netns: ns })).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.replace(/ \[\d+:\d+\]$/, '')).sort().join('\n');
  const [ka, kb] = [await norm(a), await norm(b)];
  t.true(ka.split('\n').filter((l) => l.startsWith('-A KUBE-SEP-')).length >= 360);
  t.is(ka, kb);
});

for (const [what, before, after] of [
  ['400 services deleted at once (a namespace deletion)', merge(services(5, 2), services(400, 2, 'doomed')), services(5, 2)],
  ['a Service with 2000 ports deleted', merge(services(5, 2), services(1, 1, 'doomed', 2000)), services(5, 2)],
] as const) {
  rootTest(`nft, restores of 1000 chains: ${what}, as a partial sync and as a restarted proxy's first sync`, async (t) => {
    const [a, b, c] = [await testNetns(t, 'knt-f'), await testNetns(t, 'knt-f'), await testNetns(t, 'knt-f')];
    const on = (ns: string) => new IptablesApplier({ iptables: kernelIptables({ backend: 'nft', netns: ns }), netns: ns, settings, log, conntrack: false });
    const deleted = new Set(before.services.map((s) => `${s.metadata.namespace}/${s.metadata.name}`).filter((k) => k.startsWith('doomed/')));
    // The running proxy: the delete arrives as a partial sync.
    const running = on(a);
    await running.sync({ cluster: before, changed: new Set(), full: true });
    await running.sync({ cluster: after, changed: deleted, full: false });
    // A restarted proxy over the kernel the old one left: it knows only what iptables-save shows.
    await on(b).sync({ cluster: before, changed: new Set(), full: true });
    await on(b).sync({ cluster: after, changed: new Set(), full: true });
    await on(c).sync({ cluster: after, changed: new Set(), full: true });
    const norm = async (ns: string) => (await iptablesSave({ backend: 'nft', netns: ns }, 'nat')).split('\n').filter((l) => l && !l.startsWith('#'))
      .map((l) => l.replace(/ \[\d+:\d+\]$/, '').replace(/ -m comment --comment (".*?"|\S+)/g, '')).sort().join('\n');
    const want = await norm(c);
    t.is(want.split('\n').filter((l) => l.startsWith(':KUBE-SEP-')).length, 10);
    t.is(await norm(a), want);
    t.is(await norm(b), want);
  });
}
