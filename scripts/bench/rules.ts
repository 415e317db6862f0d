// Renders synthetic clusters of 1k/5k/10k services x 3 endpoints (full sync, and a partial sync
// after one endpoint change), then applies the same text with iptables-restore into a fresh
// network namespace on the nft and the legacy backend, and prints render/apply ratios.
// Needs root for the apply half; prints render figures anyway.
import { performance } from 'node:perf_hooks';
import { renderIptables } from '../../src/rules/iptables.ts';
import { buildServiceModel } from '../../src/rules/model.ts';
import { changedServicesFromFingerprints } from '../../src/rules/changes.ts';
import { settingsFromConfig, parseKubeProxyConfig } from '../../src/rules/config.ts';
import { iptablesRestore } from '../../src/kernel/iptables.ts';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { syntheticCluster } from './synthetic-cluster.ts';

const sizes = process.argv.slice(2).map(Number).filter(Boolean);
const child = process.env.KNET_BENCH_CHILD === '1';
const settings = settingsFromConfig(parseKubeProxyConfig('clusterCIDR: 10.0.0.0/8'), { nodeName: 'node-0', nodeIPs: ['192.168.0.2'] });
const root = process.getuid?.() === 0;
let peakRss = 0;
const sample = () => { peakRss = Math.max(peakRss, process.memoryUsage().rss); };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const live = new Set<string>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => { void Promise.all([...live].map(deleteNetns)).finally(() => process.exit(130)); });
}

async function apply(backend: 'nft' | 'legacy', text: string): Promise<number> {
  const ns = randomNetnsName('knt-b');
  live.add(ns);
  await addNetns(ns);
  try {
    const t0 = performance.now();
    // A fresh namespace holds nothing to keep: a plain restore, as on a node's first sync.
    await iptablesRestore({ backend, netns: ns }, text);
    return performance.now() - t0;
  } finally {
    await deleteNetns(ns);
    live.delete(ns);
  }
}

if (!child) {
  // Each size runs in its own process, so peak RSS is that size's alone.
  const { execFileSync } = await import('node:child_process');
  console.log('services  rules(nat)  full render  partial render  nft apply  legacy apply  render/nft  render/legacy  peak RSS');
  for (const n of sizes.length ? sizes : [1000, 5000, 10000]) {
    process.stdout.write(execFileSync(process.execPath, [...process.execArgv, process.argv[1]!, String(n)], { env: { ...process.env, KNET_BENCH_CHILD: '1' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  }
  if (!root) console.log('(not root: apply skipped)');
  process.exit(0);
}
for (const n of sizes) {
  const cluster = syntheticCluster(n, 3);
  const fulls: number[] = [];
  let result = renderIptables({ cluster, settings });
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    result = renderIptables({ cluster, settings });
    fulls.push(performance.now() - t0);
    sample();
  }
  // One endpoint of one service changes: what a proxy's partial sync renders. As with
  // informers, every other object keeps its identity; the change set is known from the event
  // (as in the proxy), so it is not part of the timing.
  const changed = { services: cluster.services, endpointSlices: [...cluster.endpointSlices] };
  const edited = structuredClone(cluster.endpointSlices[n >> 1]!);
  edited.endpoints![0]!.addresses = ['10.99.99.99'];
  changed.endpointSlices[n >> 1] = edited;
  const changedSet = changedServicesFromFingerprints(buildServiceModel(cluster, settings).fingerprints, buildServiceModel(changed, settings).fingerprints);
  const partials: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    renderIptables({ cluster: changed, settings, partial: { previous: result.state, changedServices: changedSet } });
    partials.push(performance.now() - t0);
    sample();
  }
  let nft = NaN;
  let legacy = NaN;
  if (root) {
    nft = await apply('nft', result.text);
    legacy = await apply('legacy', result.text);
  }
  const full = median(fulls);
  console.log([
    String(n).padStart(8), String(result.rulesTotal.nat).padStart(10), `${full.toFixed(0)} ms`.padStart(12), `${median(partials).toFixed(1)} ms`.padStart(15),
    `${nft.toFixed(0)} ms`.padStart(10), `${legacy.toFixed(0)} ms`.padStart(13), `${((full / nft) * 100).toFixed(1)}%`.padStart(11), `${((full / legacy) * 100).toFixed(1)}%`.padStart(14),
    `${(peakRss / 2 ** 20).toFixed(0)} MB`.padStart(9),
  ].join(' '));
}
