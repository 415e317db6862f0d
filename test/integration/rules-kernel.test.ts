// The kernel accepts what knet renders: the conformance scenarios and a 1000-service synthetic
// cluster, loaded with iptables-restore --test and for real into a test namespace, on both the
// nft and the legacy backend. (nfacct counters are left out: they need nfacct objects.)
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { iptablesRestore, iptablesSave, type IptablesBackend } from '../../src/kernel/iptables.ts';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { renderIptables } from '../../src/rules/iptables.ts';
import { settings } from '../helpers/rules.ts';
import { syntheticCluster } from '../../scripts/bench/synthetic-cluster.ts';

const dir = 'test/fixtures/conformance';
const scenarios = readdirSync(dir).filter((d) => /^\d\d-/.test(d) && !readFileSync(`${dir}/${d}/config.json`, 'utf8').includes('"partial"'));

for (const backend of ['nft', 'legacy'] as IptablesBackend[]) {
  test(`${backend}: conformance scenarios and a 1000-service cluster load into a namespace`, async (t) => {
    if (!isRoot) { t.pass('needs root'); return; }
    const ns = await testNetns(t);
    const target = { backend, netns: ns };
    for (const s of scenarios) {
      const cluster = loadManifestText(readFileSync(`${dir}/${s}/input.yaml`, 'utf8'), s).cluster;
      const text = renderIptables({ cluster, settings: settings({ nodeName: 'test-node' }) }).text;
      await iptablesRestore(target, text, { noflush: true, test: true });
      await iptablesRestore(target, text, { noflush: true });
    }
    const big = renderIptables({ cluster: syntheticCluster(1000), settings: settings({ randomFully: true }) });
    await iptablesRestore(target, big.text, { noflush: true, test: true });
    await iptablesRestore(target, big.text, { noflush: true });
    const saved = await iptablesSave(target, 'nat');
    const chains = saved.split('\n').filter((l) => l.startsWith(':KUBE-SEP-')).length;
    t.true(chains >= 3000, `kernel holds ${chains} endpoint chains`);
    const rules = saved.split('\n').filter((l) => l.startsWith('-A ')).length;
    t.true(rules >= big.rulesTotal.nat, `kernel holds ${rules} nat rules, rendered ${big.rulesTotal.nat}`);
  });
}

test('ip6tables (nft) accepts an IPv6 rendering', async (t) => {
  if (!isRoot) { t.pass('needs root'); return; }
  const ns = await testNetns(t);
  const yaml = `apiVersion: v1\nkind: Service\nmetadata: {name: v6, namespace: ns1}\nspec:\n  type: NodePort\n  clusterIPs: ["fd00:30::50"]\n  sessionAffinity: ClientIP\n  ports: [{name: p80, port: 80, nodePort: 30123}]\n---\n` +
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: v6-1, namespace: ns1, labels: {kubernetes.io/service-name: v6}}\naddressType: IPv6\nendpoints: [{addresses: ["fd00:1::1"]}, {addresses: ["fd00:1::2"]}]\nports: [{name: p80, port: 80, protocol: TCP}]\n`;
  const r = renderIptables({ cluster: loadManifestText(yaml, 'v6').cluster, settings: settings({ family: 'IPv6', nodeIPs: ['fd00::2'], localDetector: { mode: 'ClusterCIDR', cidrs: ['fd00:1::/48'] } }) });
  await iptablesRestore({ backend: 'nft', family: 'IPv6', netns: ns }, r.text, { noflush: true });
  const saved = await iptablesSave({ backend: 'nft', family: 'IPv6', netns: ns }, 'nat');
  t.regex(saved, /--to-destination \[fd00:1::1\]:80/);
});
