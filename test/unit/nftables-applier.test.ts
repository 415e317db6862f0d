// The nftables data path and the proxy daemon against an in-memory kernel (test/helpers/fake-nft.ts):
// the kernel always ends up holding exactly what `knet rules --proxy-mode nftables` prints;
// partial syncs write only what changed; a failed write, a table changed or deleted by someone
// else and a failed stale-chain deletion all lead back to the rendered table; families come and
// go. The same paths run for real in test/integration/nftables-proxy.test.ts.
import test from 'ava';
import pino from 'pino';
import { FakeNft } from '../helpers/fake-nft.ts';
import { ManualSource, merge, services, within } from '../helpers/proxy-clusters.ts';
import { normalizeNft } from '../helpers/nft.ts';
import { NftablesApplier } from '../../src/proxy/nftables-applier.ts';
import { ProxyDaemon } from '../../src/proxy/daemon.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import { nftablesText, renderNftables, staleChains, type NftRenderResult } from '../../src/rules/nftables.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

const log = pino({ level: 'silent' });
const settingsFor = (family: 'IPv4' | 'IPv6' = 'IPv4') => proxySettingsFromConfig('mode: nftables\nclusterCIDR: 10.244.0.0/16,fd00:244::/64\n',
  { mode: 'nftables', family, nodeName: 'node1', nodeIPs: ['192.168.77.2', 'fd00:77::2'], interfaceAddresses: [{ iface: 'eth0', cidr: '192.168.77.2/24' }, { iface: 'eth0', cidr: 'fd00:77::2/64' }] });
const settings = settingsFor();

/** What the kernel should hold: the rendered table plus the stale chains still kept flushed. */
const rendered = (c: ClusterState, s: ProxySettings = settings, stale: string[] = []) => normalizeNft(nftablesText(renderNftables({ cluster: c, settings: s }), stale));
const held = (k: FakeNft, fam: 'ip' | 'ip6' = 'ip') => normalizeNft(k.dump(fam));
const staleIn = (k: FakeNft, r: NftRenderResult) => [...(k.tables.get('ip kube-proxy')?.chains.keys() ?? [])].filter((c) => c.includes('/') && ![...r.services.values()].some((o) => o.chains.has(c)));

function daemonOn(k: FakeNft, c: ClusterState, o: { settings?: ProxySettings[]; now?: () => number; maxChainsPerTransaction?: number } = {}) {
  let foreign = 0;
  const applier = new NftablesApplier({ nft: k, settings: o.settings ?? [settings], log, conntrack: false, onForeignChange: () => { foreign++; daemon.runner.run(); }, ...(o.now ? { now: o.now } : {}), ...(o.maxChainsPerTransaction ? { maxChainsPerTransaction: o.maxChainsPerTransaction } : {}) });
  const source = new ManualSource(c);
  const daemon = new ProxyDaemon({ source, dataplane: applier, log, minSyncPeriodMs: 0, syncPeriodMs: 60_000, retryMs: 10 });
  /** Hands the daemon a new cluster and waits for the sync it causes. */
  const syncTo = async (next: ClusterState) => {
    const synced = daemon.nextSync();
    source.set(next);
    await within(synced);
  };
  return { applier, source, daemon, syncTo, foreign: () => foreign };
}

/** `n` services with two endpoints each, but three for service `i`. */
function oneMoreEndpoint(n: number, i: number): ClusterState {
  const c = services(n, 2);
  c.endpointSlices[i] = services(n, 3).endpointSlices[i]!;
  return c;
}

const counter = async (c: { get(): Promise<{ values: Array<{ value: number }> }> }) => (await c.get()).values[0]?.value ?? 0;

test('start: a full sync leaves the rendered table; a change writes only its chains and elements', async (t) => {
  const k = new FakeNft();
  const { daemon, applier, source } = daemonOn(k, services(20, 2));
  t.teardown(() => daemon.stop());
  let synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  t.is(held(k), rendered(services(20, 2)));
  t.true(await applier.intact());

  // One service's endpoints change: one transaction, its service chain and two endpoint chains
  // written, the two old endpoint chains flushed, no element touched.
  const before = k.log.length;
  const next = oneMoreEndpoint(20, 5);
  synced = daemon.nextSync();
  source.set(next);
  await within(synced);
  t.is(k.log.length, before + 1);
  const tx = k.log.at(-1)!;
  t.is(tx.filter((l) => l.startsWith('add chain')).length, 2, tx.join('\n'));
  t.false(tx.some((l) => l.includes(' element ')));
  t.false(daemon.lastOutcome!.full);
  t.is(held(k), rendered(next, settings, staleIn(k, renderNftables({ cluster: next, settings }))));
  t.deepEqual(daemon.lastOutcome!.written, { chains: 2, elements: 0, transactions: 1 });
});

test('a failed write: counted, changes put back, and a full sync from the kernel\'s names converges', async (t) => {
  const k = new FakeNft();
  const { daemon, applier, source } = daemonOn(k, services(10, 2));
  t.teardown(() => daemon.stop());
  let synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  k.failNext('Error: Could not process rule: No buffer space available');
  const lists = k.listCalls;
  const next = merge(services(8, 3), services(3, 1, 'other'));
  synced = daemon.nextSync();
  source.set(next);
  await within(synced);
  t.is(await counter(applier.metrics.syncFailures), 1);
  t.true(daemon.lastOutcome!.full);
  t.true(k.listCalls > lists, 'the retry read the kernel');
  const r = renderNftables({ cluster: next, settings });
  t.is(held(k), rendered(next, settings, staleIn(k, r)));
});

test('where rule handles can be read, a changed service chain gets its new rules in front, then its old ones deleted; a failed deletion ends in a full sync', async (t) => {
  const k = new FakeNft({ ruleHandles: true });
  const { daemon, applier, syncTo } = daemonOn(k, services(10, 2));
  t.teardown(() => daemon.stop());
  const started = daemon.nextSync();
  await daemon.start();
  await within(started);
  const before = k.log.length;
  const next = oneMoreEndpoint(10, 4);
  await syncTo(next);
  // Two commits: the rules inserted in front, then the old ones deleted by handle.
  t.is(k.log.length, before + 2);
  t.true(k.log.at(-2)!.some((l) => /^insert rule ip kube-proxy service-/.test(l)), k.log.at(-2)!.join('\n'));
  t.false(k.log.at(-2)!.some((l) => /^flush chain ip kube-proxy service-/.test(l)));
  t.true(k.log.at(-1)!.length > 0 && k.log.at(-1)!.every((l) => /^delete rule ip kube-proxy service-\S+ handle \d+$/.test(l)), k.log.at(-1)!.join('\n'));
  t.false(daemon.lastOutcome!.full);
  t.is(held(k), rendered(next, settings, staleIn(k, renderNftables({ cluster: next, settings }))));

  // The deletion fails: the sync fails, and the next (full) one leaves the rendered table.
  k.failNext('Error: Could not process rule: No buffer space available', (lines) => lines.every((l) => l.startsWith('delete rule ')));
  const again = services(10, 2);
  await syncTo(again);
  t.is(await counter(applier.metrics.syncFailures), 1);
  t.true(daemon.lastOutcome!.full);
  t.is(held(k), rendered(again, settings, staleIn(k, renderNftables({ cluster: again, settings }))));
});

test('a restart over a live table: each transaction\'s service chains get their rules in front and are trimmed before the next transaction', async (t) => {
  const k = new FakeNft({ ruleHandles: true });
  const first = daemonOn(k, services(12, 2));
  let synced = first.daemon.nextSync();
  await first.daemon.start();
  await within(synced);
  first.daemon.stop();
  const before = k.log.length;
  const second = daemonOn(k, services(12, 3), { maxChainsPerTransaction: 12 });
  t.teardown(() => second.daemon.stop());
  synced = second.daemon.nextSync();
  await second.daemon.start();
  await within(synced);
  // The fixed part on its own (where batches carry the rest, only it needs nft), then write,
  // trim, write, trim, ...: the old rules (and their maps) leave as the sync goes.
  t.false(k.log[before]!.some((l) => /^(add|insert) (chain|rule) ip kube-proxy (service|endpoint)-[A-Z0-9]{8}-/.test(l)), k.log[before]!.join('\n'));
  const kinds = k.log.slice(before).map((tx) => (tx.every((l) => l.startsWith('delete rule ')) ? 'trim' : tx.some((l) => l.startsWith('insert rule ')) ? 'write' : 'other'));
  t.true(kinds.filter((x) => x === 'write').length >= 2, kinds.join(' '));
  for (const [i, kind] of kinds.entries()) if (kind === 'write') t.is(kinds[i + 1], 'trim', kinds.join(' '));
  t.deepEqual(k.log.slice(before).flat().filter((l) => /^flush chain ip kube-proxy service-[A-Z0-9]{8}-/.test(l)), [], 'no live service chain is flushed');
  t.is(held(k), rendered(services(12, 3), settings, staleIn(k, renderNftables({ cluster: services(12, 3), settings }))));
});

test('someone else flushes a chain or deletes the table: noticed at once, and a full sync puts the table back', async (t) => {
  const k = new FakeNft();
  const { daemon, applier, foreign } = daemonOn(k, services(6, 2));
  t.teardown(() => daemon.stop());
  let synced = daemon.nextSync();
  await daemon.start();
  await within(synced);
  const want = held(k);

  synced = daemon.nextSync();
  k.foreign('flush chain ip kube-proxy services\n');
  t.is(foreign(), 1);
  t.false(await applier.intact());
  await within(synced);
  t.true(daemon.lastOutcome!.full);
  t.is(held(k), want);

  synced = daemon.nextSync();
  k.foreign('delete table ip kube-proxy\n');
  await within(synced);
  t.is(held(k), want);
  t.is(foreign(), 2);
  // Another table's changes are none of our business.
  k.foreign('add table ip other\n');
  t.is(foreign(), 2);
});

test('stale chains are deleted a second later; a failed deletion is counted and retried', async (t) => {
  const k = new FakeNft();
  let now = 1_000_000;
  const a = new NftablesApplier({ nft: k, settings: [settings], log, conntrack: false, now: () => now });
  await a.sync({ cluster: services(4, 2), changed: new Set(), full: true });
  const fewer = services(3, 2);
  await a.sync({ cluster: fewer, changed: new Set(['default/s3']), full: false });
  const r = renderNftables({ cluster: fewer, settings });
  const gone = staleChains(renderNftables({ cluster: services(4, 2), settings }), r);
  t.is(gone.length, 5);
  t.deepEqual(staleIn(k, r).sort(), gone);
  now += 1500;
  k.failNext('Error: Could not process rule: Device or resource busy', (lines) => lines.every((l) => l.startsWith('delete chain')));
  await a.sync({ cluster: fewer, changed: new Set(), full: false });
  t.is(await counter(a.metrics.cleanupFailures), 1);
  t.deepEqual(staleIn(k, r).sort(), gone);
  now += 1500;
  await a.sync({ cluster: fewer, changed: new Set(), full: false });
  t.deepEqual(staleIn(k, r), []);
  t.is(held(k), rendered(fewer));
});

test('a change a second after stale chains appeared deletes them in its own transaction; if that fails, the change is written without them', async (t) => {
  const k = new FakeNft();
  let now = 1_000_000;
  const a = new NftablesApplier({ nft: k, settings: [settings], log, conntrack: false, now: () => now });
  await a.sync({ cluster: services(4, 2), changed: new Set(), full: true });
  await a.sync({ cluster: services(3, 2), changed: new Set(['default/s3']), full: false });
  const gone = staleChains(renderNftables({ cluster: services(4, 2), settings }), renderNftables({ cluster: services(3, 2), settings }));
  now += 1500;
  // One transaction: the deletions, then the change.
  let before = k.log.length;
  const grown = services(3, 2);
  grown.endpointSlices[0] = services(3, 3).endpointSlices[0]!;
  await a.sync({ cluster: grown, changed: new Set(['default/s0']), full: false });
  t.is(k.log.length, before + 1);
  t.deepEqual(k.log.at(-1)!.slice(0, gone.length), gone.map((c) => `delete chain ip kube-proxy ${c}`));
  t.is(held(k), rendered(grown, settings, staleIn(k, renderNftables({ cluster: grown, settings }))));
  t.deepEqual(staleIn(k, renderNftables({ cluster: grown, settings })).filter((c) => gone.includes(c)), []);
  // s1 loses an endpoint (its chain goes stale); a second later a change to s2 meets a failing deletion.
  const shrunk = structuredClone(grown);
  shrunk.endpointSlices[1] = services(3, 1).endpointSlices[1]!;
  await a.sync({ cluster: shrunk, changed: new Set(['default/s1']), full: false });
  const stale = staleIn(k, renderNftables({ cluster: shrunk, settings }));
  t.is(stale.length, 1);
  now += 1500;
  const last = structuredClone(shrunk);
  last.endpointSlices[2] = services(3, 3).endpointSlices[2]!;
  k.failNext('Error: Could not process rule: Device or resource busy', (lines) => lines.some((l) => l.startsWith('delete chain')));
  before = k.log.length;
  await a.sync({ cluster: last, changed: new Set(['default/s2']), full: false });
  t.is(await counter(a.metrics.cleanupFailures), 1);
  t.is(k.log.length, before + 1, 'the failed transaction left nothing; the retry without deletions committed');
  t.false(k.log.at(-1)!.some((l) => l.startsWith('delete chain')));
  const r = renderNftables({ cluster: last, settings });
  t.deepEqual(staleIn(k, r), stale, 'the chain waits for a later sync');
  t.is(held(k), rendered(last, settings, stale));
  now += 1500;
  await a.sync({ cluster: last, changed: new Set(), full: false });
  t.deepEqual(staleIn(k, r), []);
  t.is(held(k), rendered(last));
});

test('dual stack: one table per family in the same sync; a family that goes has its table deleted', async (t) => {
  const k = new FakeNft();
  const v6 = settingsFor('IPv6');
  const c: ClusterState = {
    services: [{ metadata: { namespace: 'ns', name: 'dual' }, spec: { clusterIPs: ['172.30.0.5', 'fd00:30::5'], ports: [{ name: 'p', port: 80, protocol: 'TCP' }] } }],
    endpointSlices: [
      { metadata: { namespace: 'ns', name: 'dual-4', labels: { 'kubernetes.io/service-name': 'dual' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.244.0.5'] }], ports: [{ name: 'p', port: 8080, protocol: 'TCP' }] },
      { metadata: { namespace: 'ns', name: 'dual-6', labels: { 'kubernetes.io/service-name': 'dual' } }, addressType: 'IPv6', endpoints: [{ addresses: ['fd00:244::5'] }], ports: [{ name: 'p', port: 8080, protocol: 'TCP' }] },
    ],
  };
  const a = new NftablesApplier({ nft: k, settings: [settings, v6], log, conntrack: false });
  await a.sync({ cluster: c, changed: new Set(), full: true });
  t.is(held(k, 'ip'), rendered(c, settings));
  t.is(held(k, 'ip6'), rendered(c, v6));
  t.regex(k.dump('ip6'), /dnat to \[fd00:244::5\]:8080/);
  a.setSettings([settings]);
  await a.sync({ cluster: c, changed: new Set(), full: true });
  t.is(k.dump('ip6'), '');
  t.is(held(k, 'ip'), rendered(c, settings));
});

test('a family that goes: a failed delete of its table is retried by the next sync, not forgotten', async (t) => {
  const k = new FakeNft();
  const c: ClusterState = { services: [], endpointSlices: [] };
  const a = new NftablesApplier({ nft: k, settings: [settings, settingsFor('IPv6')], log, conntrack: false });
  await a.sync({ cluster: c, changed: new Set(), full: true });
  t.not(k.dump('ip6'), '');
  a.setSettings([settings]);
  k.failNext('Error: Could not process rule: Device or resource busy', (lines) => lines[0] === 'delete table ip6 kube-proxy');
  await t.throwsAsync(a.sync({ cluster: c, changed: new Set(), full: true }), { message: /Device or resource busy/ });
  t.not(k.dump('ip6'), '');
  await a.sync({ cluster: c, changed: new Set(), full: true });
  t.is(k.dump('ip6'), '');
});
