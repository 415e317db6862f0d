// A restart of `knet proxy --proxy-mode nftables` over its own live table (issue 16): the first
// full sync into an empty knt-b namespace, then two restarts over the table it left: service
// chains flushed and refilled in place (--no-nftables-netlink, kube-proxy's way), and written in
// front of their old rules, which are trimmed after each transaction (the default). Runs the
// built CLI (dist/knet.js; `npm run build` first) on the synthetic cluster.
// Measured 2026-12-04 (10k services x 3 endpoints, 4287 affinity sets; 2 cores, kernel 6.18):
// first 26.0 s, restart in place 33.3 s, restart in front 36.7 s (47.3 s when every trim waited
// for the last transaction). Later that day, with affinity rules sent as batches too: first 19.6 s,
// in place 40.5 s (all through nft, a slower machine), in front 31.8 s.
// Usage (root): node --import tsx scripts/bench/nftables-restart.ts [services=10000]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { syntheticCluster } from './synthetic-cluster.ts';

const n = Number(process.argv[2] ?? 10_000);
if (!Number.isInteger(n) || n < 1 || n > 60_000) throw new Error(`services: expected 1-60000, got ${JSON.stringify(process.argv[2])}`);
const cluster = syntheticCluster(n, 3);
const dir = mkdtempSync(join(tmpdir(), 'knt-b-restart-'));
const manifests = join(dir, 'm');
mkdirSync(manifests);
writeFileSync(join(manifests, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...cluster.services, ...cluster.endpointSlices] }));
writeFileSync(join(dir, 'kube-proxy.yaml'), 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/8\n');
const env: NodeJS.ProcessEnv = { ...process.env, KNET_LOG_LEVEL: 'info' };
delete env.NODE_EXTRA_CA_CERTS;
const ns = randomNetnsName('knt-b');

/** Starts the proxy, waits for its first sync, stops it; the sync's own seconds. */
async function firstSync(extra: string[]): Promise<number> {
  const p = spawn('ip', ['netns', 'exec', ns, resolve('dist/knet.js'), 'proxy', ...extra, '--manifests', manifests, '--manifests-settle', '0s',
    '--config', join(dir, 'kube-proxy.yaml'), '--proxy-mode', 'nftables', '--node-ip', '192.168.1.2', '--hostname-override', 'bench',
    '--healthz-bind-address', '', '--metrics-bind-address', ''], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let buf = '';
  const seconds = await new Promise<number>((done, fail) => {
    p.stderr.on('data', (d: Buffer) => {
      buf += d.toString();
      const synced = buf.split('\n').find((l) => l.includes('"msg":"synced"'));
      if (synced) done(Number((JSON.parse(synced) as { seconds: number }).seconds));
    });
    p.once('exit', (code) => fail(new Error(`knet proxy exited (${code}) before its first sync: ${buf.slice(-500)}`)));
  });
  p.kill('SIGTERM');
  await new Promise((r) => p.once('exit', r));
  return seconds;
}

await addNetns(ns);
try {
  const first = await firstSync([]);
  const inPlace = await firstSync(['--no-nftables-netlink']);
  const inFront = await firstSync([]);
  console.log(`nftables, ${n} services x 3 endpoints: first full sync ${first.toFixed(1)} s; restart over the live table: ` +
    `chains flushed in place (--no-nftables-netlink) ${inPlace.toFixed(1)} s, written in front and trimmed ${inFront.toFixed(1)} s`);
} finally {
  await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
}
