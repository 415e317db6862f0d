// The proxy's nftables syncs as netlink batches (src/kernel/nft-batch.ts, sent by
// kernelNft from the proxy's own namespace) leave the kernel holding exactly what `nft -f` leaves
// for the same transactions: the same listing and the same expressions, IPv4 and IPv6, through
// endpoint changes, services coming and going, no-endpoint elements, stale chain deletions and a
// transaction the kernel refuses; service chains rewritten in front of their old rules and then
// trimmed leave the same table as flushed ones; a full sync needs nft only for its fixed part. Two namespaces, one written each way; our own
// batches are not taken for someone else's commits. And under a UDP flood no packet misses a
// service chain's vmap while it is rewritten the proxy's way. Real traffic through netlink-written rules: the nftables
// continuity test in proxy-e2e.test.ts (the proxy runs in its node's namespace there).
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { tempDir } from '../helpers/cni.ts';
import { services } from '../helpers/proxy-clusters.ts';
import { nftSettings } from '../helpers/nft.ts';
import { run } from '../../src/kernel/exec.ts';
import { NFT, kernelNft } from '../../src/kernel/nft.ts';
import { compileNftBatch } from '../../src/kernel/nft-batch.ts';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { planFull, planPartial, type NftApplied, type NftPlan } from '../../src/proxy/nft-plan.ts';
import { NftablesRenderer } from '../../src/rules/nftables.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

const rootTest = isRoot ? test : test.skip;
const CHILD = join(process.cwd(), 'test/helpers/nft-netlink-child.ts');
const env = { ...process.env, NODE_EXTRA_CA_CERTS: '' };

/** The debug listing with each run of set elements sorted (a hash set lists them in no fixed order). */
function sortedElements(text: string): string {
  const out: string[] = [];
  let run: string[] = [];
  for (const line of text.split('\n')) {
    if (/^\s*element /.test(line)) { run.push(line); continue; }
    out.push(...run.sort(), line);
    run = [];
  }
  return [...out, ...run.sort()].join('\n');
}

/**
 * The debug listing without what differs between equal tables written in a different order:
 * anonymous set names (renumbered by first appearance: a map made while the old one still exists
 * gets another number) and rule handles and positions.
 */
function canonical(text: string): string {
  const names = new Map<string, string>();
  return text
    .replace(/__(map|set)\d+/g, (n, kind: string) => names.get(n) ?? (names.set(n, `__${kind}#${names.size}`), names.get(n)!))
    .replace(/^(ip6? kube-proxy \S+)(?: \d+)+$/gm, '$1');
}

/** One sync; `full`: a full sync over what each namespace holds (as after a restart). */
interface Step { cluster: ClusterState; now: number; extra?: string[][]; full?: boolean }

async function compare(t: ExecutionContext, family: 'ip' | 'ip6', settings: ProxySettings, steps: Step[]): Promise<{ netlink: number; nft: number; batchedFullSyncs: number }> {
  const viaNetlink = await testNetns(t, 'knt-n');
  const viaNft = await testNetns(t, 'knt-n');
  const dir = tempDir(t, 'knt-n-batch-');
  const renderer = new NftablesRenderer();
  // The netlink side rewrites service chains in front of their old rules, then trims them (as the
  // proxy does with batches); the nft side flushes them (as it does through nft -f). Both must
  // leave the same table.
  let applied: NftApplied | null = null;
  let appliedInFront: NftApplied | null = null;
  const sent = { netlink: 0, nft: 0 };
  let trimmed = 0;
  let batchedFullSyncs = 0;
  for (const [i, step] of steps.entries()) {
    const r = renderer.render({ cluster: step.cluster, settings });
    const listing = async (netns: string) => kernelNft({ netns }).listTable(family, 'kube-proxy');
    const plan: NftPlan = !applied ? planFull(r, null, null, { now: step.now })
      : step.full ? planFull(r, await listing(viaNft), null, { now: step.now }) : planPartial(r, applied, { now: step.now });
    // Full syncs with the fixed part apart, as the proxy plans them with batches: only that
    // transaction goes through nft.
    const fullStep = !appliedInFront || step.full === true;
    const inFront: NftPlan = !appliedInFront ? planFull(r, null, null, { now: step.now, fixedApart: true })
      : step.full ? planFull(r, await listing(viaNetlink), null, { now: step.now, insertThenTrim: true, fixedApart: true }) : planPartial(r, appliedInFront, { now: step.now, insertThenTrim: true });
    applied = plan.next;
    appliedInFront = inFront.next;
    trimmed += inFront.trims.length;
    const transactions = [...plan.transactions.map((tx) => [...tx()]), ...(step.extra ?? [])];
    const file = join(dir, `step${i}.json`);
    writeFileSync(file, JSON.stringify({ transactions: [...inFront.transactions.map((tx) => [...tx()]), ...(step.extra ?? [])], trims: inFront.trims, afterTrims: inFront.afterTrims }));
    const child = JSON.parse((await run('ip', ['netns', 'exec', viaNetlink, process.execPath, '--import', 'tsx', CHILD, file, family], { env })).stdout) as { sent: typeof sent; foreign: number; failures: string[] };
    const failures: string[] = [];
    for (const tx of transactions) {
      try { await kernelNft({ netns: viaNft }).apply(tx.join('\n') + '\n'); } catch (e) { failures.push(String(e)); }
    }
    t.is(child.failures.length, failures.length, `step ${i}: ${child.failures.join('; ')} / ${failures.join('; ')}`);
    t.is(child.foreign, 0, `step ${i}: our own batches were taken for someone else's`);
    // A full sync whose service lines all compile (no firewall rules, say) needs nft only for
    // its fixed part.
    if (fullStep && inFront.transactions.slice(1).every((tx) => compileNftBatch(tx(), 1) !== null)) {
      batchedFullSyncs++;
      t.is(child.sent.nft, 1, `step ${i}: a full sync's only nft transaction is its fixed part (${JSON.stringify(child.sent)})`);
    }
    sent.netlink += child.sent.netlink;
    sent.nft += child.sent.nft;
    for (const args of [['list', 'table', family, 'kube-proxy'], ['--debug=netlink', 'list', 'table', family, 'kube-proxy']]) {
      const a = await run('ip', ['netns', 'exec', viaNetlink, NFT, ...args]);
      const b = await run('ip', ['netns', 'exec', viaNft, NFT, ...args]);
      t.is(canonical(sortedElements(a.stdout + a.stderr)), canonical(sortedElements(b.stdout + b.stderr)), `step ${i}: nft ${args.join(' ')}`);
    }
  }
  t.true(trimmed > 0, 'no chain was rewritten in front of its old rules');
  return { ...sent, batchedFullSyncs };
}

rootTest('IPv4: partial syncs as netlink batches leave what nft -f leaves', async (t) => {
  const withEndpoints = (base: ClusterState, i: number, n: number) => {
    const c = { ...base, endpointSlices: [...base.endpointSlices] };
    c.endpointSlices[i] = services(8, n).endpointSlices[i]!;
    return c;
  };
  const c0 = services(6, 2);
  const c1 = withEndpoints(withEndpoints(c0, 1, 3), 2, 1);
  const c2 = { services: c1.services.filter((s) => s.metadata.name !== 's4'), endpointSlices: withEndpoints(c1, 2, 0).endpointSlices.filter((s) => !s.metadata.name?.startsWith('s4')) };
  const eight = services(8, 2);
  const c3 = { services: [...c2.services, eight.services[7]!], endpointSlices: [...withEndpoints(c2, 1, 2).endpointSlices, eight.endpointSlices[7]!] };
  const sent = await compare(t, 'ip', nftSettings(), [
    { cluster: c0, now: 0 },
    { cluster: c1, now: 100 },
    { cluster: c2, now: 200 },
    { cluster: c3, now: 1500 },
    // A restart: a full sync over the table, service chains written in front on one side.
    { cluster: withEndpoints(c3, 3, 1), now: 1600, full: true },
    // Nothing changed but the stale chains' age; then one the kernel refuses (a chain in use).
    { cluster: c3, now: 3000, extra: [['add chain ip kube-proxy extra-x', 'delete chain ip kube-proxy mark-for-masquerade']] },
  ]);
  t.true(sent.netlink >= 4, JSON.stringify(sent));
});

rootTest('IPv4: full syncs go as batches but for the fixed part, and leave what nft -f leaves', async (t) => {
  // LoadBalancers with one source range each (a comparison, no set) among the services.
  const sent = await compare(t, 'ip', nftSettings(), [
    { cluster: services(7, 2), now: 0 },
    { cluster: services(7, 3), now: 100, full: true },
  ]);
  t.is(sent.batchedFullSyncs, 2, JSON.stringify(sent));
});

const v6Cluster = (endpoints: string[]) => loadManifestText(`apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec: {clusterIP: "fd00:30::a", ipFamilies: [IPv6], type: NodePort, ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, targetPort: 5353}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web6-x, namespace: default, labels: {kubernetes.io/service-name: web6}}
addressType: IPv6
endpoints: [${endpoints.map((a) => `{addresses: ["${a}"], conditions: {ready: true}}`).join(', ')}]
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
`, 'v6.yaml').cluster;

rootTest('IPv6: partial syncs as netlink batches leave what nft -f leaves', async (t) => {
  const sent = await compare(t, 'ip6', nftSettings({ family: 'IPv6' }), [
    { cluster: v6Cluster(['fd00:10::1', 'fd00:10::2']), now: 0 },
    { cluster: v6Cluster(['fd00:10::1', 'fd00:10::3', 'fd00:10::4']), now: 100 },
    { cluster: v6Cluster([]), now: 1500 },
    { cluster: v6Cluster(['fd00:10::5']), now: 3000 },
    { cluster: v6Cluster(['fd00:10::5', 'fd00:10::6']), now: 3100, full: true },
  ]);
  t.true(sent.netlink >= 3, JSON.stringify(sent));
  t.is(sent.batchedFullSyncs, 2, 'the first sync and the restart went as batches but for their fixed part');
});

/**
 * A ClientIP-affinity service, a NodePort with the Local external policy and a LoadBalancer with
 * source ranges (overlapping and adjacent ones, the node's own among them), v4 or v6.
 */
function affinityAndLocal(v6: boolean, timeout: number, affinityEndpoints: number[], ranges = v6 ? ['2001:db8::/32', 'fd00:77::/64', 'fd00:77::/80'] : ['10.0.0.0/9', '10.128.0.0/9', '192.168.0.0/24']): ClusterState {
  const ip = (net: string, i: number) => (v6 ? `fd00:${net}::${i}` : `10.${net}.0.${i}`);
  const family = v6 ? 'IPv6' : 'IPv4';
  const slice = (name: string, eps: Array<{ i: number; node: string }>, port: number) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-x, namespace: default, labels: {kubernetes.io/service-name: ${name}}}
addressType: ${family}
endpoints: [${eps.map((e) => `{addresses: ["${ip('244', e.i)}"], nodeName: ${e.node}, conditions: {ready: true}}`).join(', ')}]
ports: [{name: p, port: ${port}, protocol: TCP}]
`;
  return loadManifestText(`apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec: {clusterIP: "${v6 ? 'fd00:30::a' : '172.30.0.10'}", ipFamilies: [${family}], sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: ${timeout}}}, ports: [{name: p, port: 80, protocol: TCP, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec: {clusterIP: "${v6 ? 'fd00:30::b' : '172.30.0.11'}", ipFamilies: [${family}], type: NodePort, externalTrafficPolicy: Local, ports: [{name: p, port: 81, protocol: TCP, targetPort: 8081, nodePort: 30081}]}
---
apiVersion: v1
kind: Service
metadata: {name: guarded, namespace: default}
spec: {clusterIP: "${v6 ? 'fd00:30::c' : '172.30.0.12'}", ipFamilies: [${family}], type: LoadBalancer, loadBalancerSourceRanges: [${ranges.join(', ')}], ports: [{name: p, port: 82, protocol: TCP, targetPort: 8082, nodePort: 30082}]}
status: {loadBalancer: {ingress: [{ip: "${v6 ? '2001:db8:99::7' : '198.51.100.7'}"}]}}
---
${slice('sticky', affinityEndpoints.map((i) => ({ i, node: 'other-node' })), 8080)}---
${slice('local', [{ i: 50, node: 'test-node' }, { i: 51, node: 'other-node' }], 8081)}---
${slice('guarded', [{ i: 60, node: 'other-node' }], 8082)}`, 'affinity.yaml').cluster;
}

for (const v6 of [false, true]) {
  rootTest(`${v6 ? 'IPv6' : 'IPv4'}: affinity sets and rules, fib and commented rules, source ranges go as batches, partial and full syncs, and leave what nft -f leaves`, async (t) => {
    const sent = await compare(t, v6 ? 'ip6' : 'ip', nftSettings(v6 ? { family: 'IPv6' } : {}), [
      { cluster: affinityAndLocal(v6, 300, [1, 2, 3]), now: 0 },
      // An endpoint leaves: its affinity set goes once the old rules using it are trimmed.
      { cluster: affinityAndLocal(v6, 300, [1, 2]), now: 100 },
      // A new timeout: the sets are declared again.
      { cluster: affinityAndLocal(v6, 600, [1, 2]), now: 200 },
      // Other source ranges (one runs to the last address; then one from the first address, then
      // a single one, compared without a set).
      { cluster: affinityAndLocal(v6, 600, [1, 2], v6 ? ['fd00:77::/64', 'ff00::/8'] : ['203.0.113.0/24', '240.0.0.0/4']), now: 250 },
      { cluster: affinityAndLocal(v6, 600, [1, 2], v6 ? ['::/1', 'fd00:77::/64'] : ['0.0.0.0/2', '203.0.113.0/24']), now: 260 },
      { cluster: affinityAndLocal(v6, 600, [1, 2], v6 ? ['fd00:77::/64'] : ['203.0.113.0/25']), now: 270 },
      // A restart over the table, an endpoint added meanwhile.
      { cluster: affinityAndLocal(v6, 600, [1, 2, 4]), now: 300, full: true },
    ]);
    t.is(sent.batchedFullSyncs, 2, JSON.stringify(sent));
    // nft ran only the two full syncs' fixed parts: every partial sync went as batches.
    t.is(sent.nft, 2, JSON.stringify(sent));
  });
}

for (const [mode, config] of [['BridgeInterface', 'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cni0}\n'], ['InterfaceNamePrefix', 'detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}\n']] as const) {
  rootTest(`IPv4, local detector ${mode}: its iifname rules go as batches and leave what nft -f leaves`, async (t) => {
    const sent = await compare(t, 'ip', nftSettings({}, config), [
      { cluster: affinityAndLocal(false, 300, [1, 2]), now: 0 },
      { cluster: affinityAndLocal(false, 300, [1, 3]), now: 100 },
      { cluster: affinityAndLocal(false, 300, [1, 3, 4]), now: 200, full: true },
    ]);
    t.is(sent.batchedFullSyncs, 2, JSON.stringify(sent));
    t.is(sent.nft, 2, JSON.stringify(sent));
  });
}

rootTest('under a UDP flood, a service chain rewritten in front of its old rules never lets a packet miss its vmap', async (t) => {
  t.timeout(120_000);
  // scripts/nftables-vmap-race.ts in its own knt-r namespace: flush-and-add loses packets at
  // some commits (a kernel race, logged here); the same insert-then-delete-by-handle writes the
  // planner plans (tested above) lose none.
  const out = (await run(process.execPath, ['--import', 'tsx', 'scripts/nftables-vmap-race.ts', '500', 'netlink,in-front'], { env, timeoutMs: 110_000 })).stdout;
  t.log(out.trim());
  t.regex(out, /^in-front +500 rewrites in [\d.]+ s: 0 packets missed/m);
});
