// Renders synthetic clusters of 1k/5k/10k services x 3 endpoints (full sync, and a partial sync
// after one endpoint change), then applies the same text with iptables-restore into a fresh
// network namespace on the nft and the legacy backend, and prints render/apply ratios.
// Needs root for the apply half; prints render figures anyway.
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { IptablesRenderer, renderIptables } from '../../src/rules/iptables.ts';
import type { RenderRequest } from '../../src/rules/types.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import { ClusterStore } from '../../src/rules/cluster-index.ts';
import { settingsFromConfig, parseKubeProxyConfig } from '../../src/rules/config.ts';
import { iptablesRestore } from '../../src/kernel/iptables.ts';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { syntheticCluster } from './synthetic-cluster.ts';

const sizes = process.argv.slice(2).map(Number).filter(Boolean);
const child = process.env.KNET_BENCH_CHILD === '1';
const settings = settingsFromConfig(parseKubeProxyConfig('clusterCIDR: 10.0.0.0/8'), { nodeName: 'node-0', nodeIPs: ['192.168.0.2'] });
const root = process.getuid?.() === 0;
// The kernel's high-water mark of this process's resident memory (catches peaks between samples).
const peakRssBytes = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;
// Collect before each repetition (outside the timings), once the previous one's result is
// unreachable, so the peak is one render's working set and not garbage from earlier repetitions
// that V8 had not yet reclaimed.
const sample = () => { (globalThis as { gc?: () => void }).gc?.(); };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const live = new Set<string>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => { void Promise.all([...live].map(deleteNetns)).finally(() => process.exit(130)); });
}

function* slices(text: string, size: number): Generator<string> {
  for (let at = 0; at < text.length; at += size) yield text.slice(at, at + size);
}

async function apply(backend: 'nft' | 'legacy', text: string): Promise<number> {
  const ns = randomNetnsName('knt-b');
  live.add(ns);
  await addNetns(ns);
  try {
    const t0 = performance.now();
    // A fresh namespace holds nothing to keep: a plain restore, as on a node's first sync. The
    // text goes in 1 MiB pieces, as the proxy feeds its restores, not as one 12 MB buffer.
    await iptablesRestore({ backend, netns: ns }, slices(text, 1 << 20));
    return performance.now() - t0;
  } finally {
    await deleteNetns(ns);
    live.delete(ns);
  }
}

if (!child) {
  // Each size runs in its own process, so peak RSS is that size's alone.
  const { execFileSync } = await import('node:child_process');
  console.log('services  rules(nat)  full render (cold)  full render (warm)  partial render  nft apply  legacy apply  cold/nft  warm/nft  cold/legacy  peak RSS');
  for (const n of sizes.length ? sizes : [1000, 5000, 10000]) {
    process.stdout.write(execFileSync(process.execPath, [...process.execArgv, process.argv[1]!, String(n)], { env: { ...process.env, KNET_BENCH_CHILD: '1' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  }
  if (!root) console.log('(not root: apply skipped)');
  process.exit(0);
}
// Each repetition runs in its own function so that its results die with its frame: values left in
// a top-level loop's interpreter registers would stay reachable through the next repetition and
// count twice in the peak.
function coldRender(cluster: ClusterState): { ms: number; text: string; natRules: number } {
  const t0 = performance.now();
  const r = renderIptables({ cluster, settings });
  const text = r.text;
  return { ms: performance.now() - t0, text, natRules: r.rulesTotal.nat };
}

/** A render down to its restore text (and, with `tables`, the per-chain view the proxy applies). */
function timedRender(renderer: IptablesRenderer, req: RenderRequest, tables = false): number {
  const t0 = performance.now();
  const r = renderer.render(req);
  if (r.text.length === 0 || (tables && r.tables.size === 0)) throw new Error('empty render');
  return performance.now() - t0;
}

/** Cold renders, then the apply of their text; the text dies with this frame. */
async function coldPhase(cluster: ClusterState): Promise<{ fulls: number[]; natRules: number; nft: number; legacy: number }> {
  const fulls: number[] = [];
  let text = '';
  let natRules = 0;
  for (let i = 0; i < 5; i++) {
    text = '';
    sample();
    const r = coldRender(cluster);
    fulls.push(r.ms);
    text = r.text;
    natRules = r.natRules;
  }
  let nft = NaN;
  let legacy = NaN;
  if (root) {
    nft = await apply('nft', text);
    legacy = await apply('legacy', text);
  }
  return { fulls, natRules, nft, legacy };
}

for (const n of sizes) {
  const cluster = syntheticCluster(n, 3);
  // Full render: a fresh renderer (no memory) down to the restore text, as `knet rules` prints it,
  // and the apply half with that text.
  const { fulls, natRules, nft, legacy } = await coldPhase(cluster);
  // Partial render: one endpoint of one service changes, as in the proxy. The objects live in a
  // grouped store (the proxy's change tracker plays that part) and the changed service is known
  // from the event, so the renderer re-models that service alone; the timing covers the render
  // and its restore text (always-written chains in full plus the changed service's chains).
  const store = new ClusterStore();
  for (const s of cluster.services) store.upsertService(s);
  for (const s of cluster.endpointSlices) store.upsertSlice(s);
  const renderer = new IptablesRenderer();
  const indexed = { services: [], endpointSlices: [], index: store };
  sample();
  timedRender(renderer, { cluster: indexed, settings });
  // Warm full render: what every later full sync of the proxy costs (unchanged services reused),
  // down to the whole restore text.
  const warms: number[] = [];
  for (let i = 0; i < 5; i++) {
    sample();
    warms.push(timedRender(renderer, { cluster: indexed, settings }));
  }
  const original = cluster.endpointSlices[n >> 1]!;
  const edited = structuredClone(original);
  edited.endpoints![0]!.addresses = ['10.99.99.99'];
  const partials: number[] = [];
  for (let i = 0; i < 20; i++) {
    const key = store.upsertSlice(i % 2 ? original : edited);
    sample();
    const changed = new Set([key]);
    partials.push(timedRender(renderer, { cluster: indexed, settings, recompute: changed, partial: { changedServices: changed } }, true));
  }
  const full = median(fulls);
  console.log([
    String(n).padStart(8), String(natRules).padStart(10), `${full.toFixed(0)} ms`.padStart(19), `${median(warms).toFixed(0)} ms`.padStart(19), `${median(partials).toFixed(1)} ms`.padStart(15),
    `${nft.toFixed(0)} ms`.padStart(10), `${legacy.toFixed(0)} ms`.padStart(13), `${((full / nft) * 100).toFixed(1)}%`.padStart(9), `${((median(warms) / nft) * 100).toFixed(1)}%`.padStart(9), `${((full / legacy) * 100).toFixed(1)}%`.padStart(12),
    `${(peakRssBytes() / 2 ** 20).toFixed(0)} MB`.padStart(9),
  ].join(' '));
}
