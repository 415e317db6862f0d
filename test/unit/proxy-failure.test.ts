// The proxy's failure paths against an in-memory kernel (test/helpers/fake-iptables.ts): a
// failed restore puts the changes back and leads to a full sync that converges from what the
// kernel really holds; a mass delete never deletes a chain before the chains jumping to it;
// a kernel left wedged by an earlier run is recovered. The same paths run for real in
// test/integration/proxy-kernel.test.ts.
import test from 'ava';
import pino from 'pino';
import { FakeIptables } from '../helpers/fake-iptables.ts';
import { ManualSource, merge, services, within } from '../helpers/proxy-clusters.ts';
import { IptablesApplier } from '../../src/proxy/iptables-applier.ts';
import { ProxyDaemon } from '../../src/proxy/daemon.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import type { ClusterState } from '../../src/model/k8s.ts';

const log = pino({ level: 'silent' });
const settings = proxySettingsFromConfig('clusterCIDR: 10.244.0.0/16\n', { nodeName: 'node1', nodeIPs: ['192.168.77.2'] });

const state = (k: FakeIptables) => k.dump();

/** What a fresh proxy on a fresh kernel leaves for this cluster. */
async function expected(c: ClusterState): Promise<string> {
  const k = new FakeIptables();
  await new IptablesApplier({ iptables: k, settings, log, conntrack: false }).sync({ cluster: c, changed: new Set(), full: true });
  return state(k);
}

function daemonOn(k: FakeIptables, c: ClusterState, maxChainsPerRestore?: number) {
  const applier = new IptablesApplier({ iptables: k, settings, log, conntrack: false, ...(maxChainsPerRestore ? { maxChainsPerRestore } : {}) });
  const source = new ManualSource(c);
  const daemon = new ProxyDaemon({ source, dataplane: applier, log, minSyncPeriodMs: 0, syncPeriodMs: 60_000, retryMs: 10 });
  return { applier, source, daemon };
}

const failures = async (a: IptablesApplier) => ({
  all: (await a.metrics.restoreFailures.get()).values[0]?.value ?? 0,
  partial: (await a.metrics.partialRestoreFailures.get()).values[0]?.value ?? 0,
});

test('a failed partial restore: changes put back, failure counted, then a full sync from what the kernel holds converges', async (t) => {
  const k = new FakeIptables();
  const { applier, source, daemon } = daemonOn(k, services(10, 2));
  t.teardown(() => daemon.stop());
  let synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  t.is(state(k), await expected(services(10, 2)));

  // The next restore fails (as a foreign reference or a full disk would make it).
  let failNext = true;
  k.failRestore = () => (failNext ? ((failNext = false), 'injected failure') : null);
  const next = merge(services(9, 3), services(2, 1, 'other'));
  const savesBefore = k.saves;
  synced = daemon.nextSync();
  source.set(next);
  await within(synced);
  t.deepEqual(await failures(applier), { all: 1, partial: 1 });
  // The successful retry was a full sync that read the kernel again, not what it believed.
  t.true(daemon.lastOutcome!.full);
  t.true(k.saves > savesBefore);
  t.is(state(k), await expected(next));
  t.deepEqual(k.danglingJumps(), []);
  t.is(daemon.tracker.pending, 0);
});

test('a failed first sync leaves nothing half-believed: the retry rewrites every chain', async (t) => {
  const k = new FakeIptables();
  // Fail the third restore of a chunked first sync: some chains are in, some are not.
  k.failRestore = (_text, i) => (i === 2 ? 'injected failure' : null);
  const c = services(30, 3);
  const { applier, daemon } = daemonOn(k, c, 20);
  t.teardown(() => daemon.stop());
  const synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  t.is((await failures(applier)).all, 1);
  t.is(state(k), await expected(c));
});

for (const [what, before, after] of [
  ['~400 services deleted at once (a namespace deletion)', merge(services(5, 2), services(400, 2, 'doomed')), services(5, 2)],
  ['a Service with 2000 ports deleted', merge(services(5, 2), services(1, 1, 'doomed', 2000)), services(5, 2)],
] as const) {
  test(`mass delete on nft: ${what} is applied without ever deleting a chain that is still jumped to`, async (t) => {
    const k = new FakeIptables();
    const { applier, source, daemon } = daemonOn(k, before);
    t.teardown(() => daemon.stop());
    let synced = daemon.nextSync();
    await daemon.start();
    await within(synced);
    synced = daemon.nextSync();
    source.set(after);
    await within(synced);
    t.deepEqual(await failures(applier), { all: 0, partial: 0 });
    t.false(daemon.lastOutcome!.full);
    // Like kube-proxy, a partial sync leaves unchanged chains in the comment mode they were
    // written in (2000 endpoints switch large-cluster mode): compare without comments.
    const plain = (s: string) => s.split('\n').map((l) => l.replace(/ -m comment --comment (".*?"|\S+)/g, '')).sort().join('\n');
    t.is(plain(state(k)), plain(await expected(after)));
    await daemon.stop();
    // The same delete seen by a restarting proxy: a full sync that knows only what the kernel
    // holds (chain names and jumps) must be as clean.
    const k2 = new FakeIptables();
    const first = daemonOn(k2, before);
    synced = first.daemon.nextSync();
    await first.daemon.start();
    await within(synced);
    await first.daemon.stop();
    const restarted = daemonOn(k2, after);
    t.teardown(() => restarted.daemon.stop());
    synced = restarted.daemon.nextSync();
    await restarted.daemon.start();
    await within(synced);
    t.deepEqual(await failures(restarted.applier), { all: 0, partial: 0 });
    t.is(state(k2), await expected(after));
  });
}

test('a foreign rule jumping to a stale chain: one failed partial sync, then the chain is flushed and kept while everything else syncs, and deleted once the rule goes', async (t) => {
  const k = new FakeIptables();
  const { applier, source, daemon } = daemonOn(k, services(3, 2));
  t.teardown(() => daemon.stop());
  let synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  const sep = k.userChains('nat').find((c) => c.startsWith('KUBE-SEP-') && k.tables.get('nat')!.get(c)!.some((r) => r.includes('10.244.2.2:8000')))!;
  await k.restore(`*nat\n-A OUTPUT -d 10.99.99.99/32 -j ${sep}\nCOMMIT\n`, { noflush: true });

  // s2 loses that endpoint, and a new service arrives in the same change.
  const next = merge(services(2, 2), services(1, 1, 'other'));
  next.services.push(services(3, 2).services[2]!);
  next.endpointSlices.push({ ...services(3, 2).endpointSlices[2]!, endpoints: services(3, 2).endpointSlices[2]!.endpoints!.slice(0, 1) });
  synced = daemon.nextSync();
  source.set(next);
  await within(synced);
  t.deepEqual(await failures(applier), { all: 1, partial: 1 });
  t.true(daemon.lastOutcome!.full);
  t.deepEqual(await k.list('nat', sep), [`-N ${sep}`]);
  t.regex(k.dump(), /10\.244\.0\.1:8000/);
  t.notRegex(k.dump(), /DNAT --to-destination 10\.244\.2\.2:8000/);
  t.false(await applier.intact());

  // The foreign rule goes: the next idle sync is a full one and deletes the chain.
  await k.restore(`*nat\n-D OUTPUT -d 10.99.99.99/32 -j ${sep}\nCOMMIT\n`, { noflush: true });
  synced = daemon.nextSync();
  daemon.runner.run();
  await within(synced);
  t.is(await k.list('nat', sep), null);
  t.is(state(k), await expected(next));
  t.true(await applier.intact());
});
