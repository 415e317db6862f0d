// Bundles the knet CLI and the CNI plugin with esbuild.
// The CLI keeps npm packages external (they are installed beside it); the CNI plugin is one
// self-contained file because runtimes exec it from /opt/cni/bin, far from node_modules.
import { build } from 'esbuild';
import { chmodSync, copyFileSync, mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { compileForwarder } from './build-forwarder.mjs';

const banner = { js: '#!/usr/bin/env node' };
// The daemons hold their state for the life of the process; a 4 MB young generation (V8's default
// grows to 16 MB per semi-space) cut `knet proxy`'s peak RSS at 10k services from ~175 to ~150 MB
// with no measurable cost to sync time (scripts/bench/proxy). `env -S` splits the line (coreutils >= 8.30).
const cliBanner = { js: '#!/usr/bin/env -S node --max-semi-space-size=4' };
mkdirSync('dist/cni', { recursive: true });

// Code splitting keeps each sub-command's dependencies (etcd3, the Kubernetes client) in chunks
// that load only when that sub-command runs: `knet rules` must not pay for `knet proxy`.
await build({
  entryPoints: { knet: 'src/cli/main.ts' },
  outdir: 'dist',
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  banner: cliBanner,
  sourcemap: 'linked',
  logLevel: 'warning',
});
chmodSync('dist/knet.js', 0o755);
// The userspace mode's data path, beside the CLI (src/proxy/userspace/forwarders.ts finds it).
compileForwarder('dist/knet-userspace-forwarder');

if (existsSync('cni/main.ts')) {
  await build({
    entryPoints: ['cni/main.ts'],
    outfile: 'dist/cni/knet',
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    banner,
    logLevel: 'warning',
    metafile: false,
  });
  chmodSync('dist/cni/knet', 0o755);
  // The repository is "type": "module"; this marks the extensionless CommonJS bundle as such,
  // so dist/cni/knet runs in place as well as from /opt/cni/bin.
  writeFileSync('dist/cni/package.json', '{"type": "commonjs"}\n');
  // The plugin loads node-netlink's native addon from beside itself: ship the two together.
  const addon = `node_modules/netlink/prebuilds/${process.platform}-${process.arch}/node.napi.node`;
  if (existsSync(addon)) copyFileSync(addon, 'dist/cni/knet-netlink.node');
}
