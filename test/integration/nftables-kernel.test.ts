// The kernel accepts what knet renders in nftables mode: every conformance scenario (the --since
// ones with their flushed stale chains too), IPv6, every local-traffic detector and a
// 1000-service cluster, checked with `nft -c -f` and loaded for real into a test namespace.
import test from 'ava';
import fc from 'fast-check';
import { readFileSync, readdirSync } from 'node:fs';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { kernelNft, nftListTable } from '../../src/kernel/nft.ts';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { nftablesText, renderNftables } from '../../src/rules/nftables.ts';
import { syntheticCluster } from '../../scripts/bench/synthetic-cluster.ts';
import { nftRender, nftSettings } from '../helpers/nft.ts';
import { arbService, cluster } from '../helpers/arb-cluster.ts';

const dir = 'test/fixtures/conformance-nftables';
const scenarios = readdirSync(dir).filter((d) => /^\d\d-/.test(d));

/** Each scenario as knet prints it (with --since where the scenario has a previous one). */
function scenarioText(s: string): string {
  const config = JSON.parse(readFileSync(`${dir}/${s}/config.json`, 'utf8')) as { sync?: { previousScenario?: string } };
  const input = readFileSync(`${dir}/${s}/input.yaml`, 'utf8');
  const prev = config.sync?.previousScenario;
  return nftRender(input, nftSettings(), prev ? readFileSync(`${dir}/${prev}/input.yaml`, 'utf8') : undefined);
}

test('conformance scenarios pass nft -c and load into a namespace, each over the one before', async (t) => {
  if (!isRoot) { t.pass('needs root'); return; }
  const ns = await testNetns(t, 'knt-n');
  for (const s of scenarios) {
    const text = scenarioText(s);
    // kube-proxy's own sync starts by flushing what it rewrites: the table is replaced here instead.
    const replace = `add table ip kube-proxy\ndelete table ip kube-proxy\n${text}`;
    await kernelNft({ netns: ns }).check(replace);
    await kernelNft({ netns: ns }).apply(replace);
    const listed = await nftListTable({ netns: ns }, 'ip', 'kube-proxy');
    t.truthy(listed, s);
    for (const chain of text.split('\n').filter((l) => l.startsWith('add chain ')).map((l) => l.split(' ')[4]!)) {
      t.true(listed!.includes(`chain ${chain} {`), `${s}: ${chain} in the kernel`);
    }
  }
});

test('IPv6 and every local-traffic detector pass nft -c; a 1000-service cluster loads for real', async (t) => {
  if (!isRoot) { t.pass('needs root'); return; }
  const ns = await testNetns(t, 'knt-n');
  const input = readFileSync(`${dir}/01-overall-mixed-services/input.yaml`, 'utf8');
  const v6 = input.replaceAll('172.30.0.', 'fd00:172:30::').replaceAll('10.180.0.', 'fd00:10:180::').replaceAll('addressType: IPv4', 'addressType: IPv6')
    .replaceAll('192.168.99.', '2001:db8:99::').replaceAll(/ip: (\d+)\.(\d+)\.(\d+)\.(\d+)/g, 'ip: 2001:db8:77::$4').replace('" 203.0.113.0/25"', '"2001:db8:203::/64"')
    .replace('172.30.0.0/16', 'fd00:172:30::/112');
  const v6text = nftRender(v6, nftSettings({ family: 'IPv6' }));
  t.regex(v6text, /dnat to \[fd00:10:180::1\]:80/);
  await kernelNft({ netns: ns }).check(v6text);
  for (const localDetector of [
    { mode: 'None' as const }, { mode: 'NodeCIDR' as const, cidrs: ['10.180.0.0/24'] },
    { mode: 'BridgeInterface' as const, interface: 'cni0' }, { mode: 'InterfaceNamePrefix' as const, prefix: 'veth' },
  ]) {
    await kernelNft({ netns: ns }).check(nftRender(input, nftSettings({ localDetector, masqueradeAll: true, nodePortAddresses: ['0.0.0.0/0'] })));
  }
  const big = nftablesText(renderNftables({ cluster: syntheticCluster(1000), settings: nftSettings() }));
  await kernelNft({ netns: ns }).check(big);
  await kernelNft({ netns: ns }).apply(big);
  const listed = (await nftListTable({ netns: ns }, 'ip', 'kube-proxy'))!;
  const endpointChains = listed.split('\n').filter((l) => /^\tchain endpoint-/.test(l)).length;
  t.is(endpointChains, 3000);
  t.regex(listed, /chain service-[A-Z2-7]{8}-ns0\/svc0\/tcp\/http \{/);
  t.is(loadManifestText('', 'x').cluster.services.length, 0);
});

test('the kernel accepts random tables: every service type, policy, affinity and endpoint state', async (t) => {
  if (!isRoot) { t.pass('needs root'); return; }
  const ns = await testNetns(t, 'knt-n');
  const samples = fc.sample(fc.array(arbService, { minLength: 1, maxLength: 8 }), { numRuns: 25, seed: 16 });
  for (const specs of samples) {
    const text = nftablesText(renderNftables({ cluster: cluster(specs), settings: nftSettings() }));
    await kernelNft({ netns: ns }).check(text);
  }
  t.pass();
});
