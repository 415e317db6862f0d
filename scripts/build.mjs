// Builds the knet CLI (esbuild; npm packages stay external, installed beside it) and the CNI
// plugin (one self-contained executable compiled by Bun, because runtimes exec it from
// /opt/cni/bin, far from node_modules and maybe from any Node.js).
import { build } from 'esbuild';
import { chmodSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { BUN, compileForwarder } from './build-forwarder.mjs';

// The daemons hold their state for the life of the process; a 1 MB young generation (V8's default
// grows to 16 MB per semi-space) cut `knet proxy`'s peak RSS at 10k services from ~175 to ~140 MB
// with no measurable cost to sync time (scripts/bench/proxy), and `knet rules` on a 10k-service
// dump gets faster with it (1.12 -> 1.05 s: less fresh memory to fault in). `env -S` splits the
// line (coreutils >= 8.30).
const cliBanner = { js: '#!/usr/bin/env -S node --max-semi-space-size=1' };
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

// The CNI plugin: one executable compiled by Bun (the npm package @oven/bun-linux-x64 holds the
// compiler; nothing is downloaded). Runtimes exec it from /opt/cni/bin, where no Node.js need
// be; it starts in a few milliseconds where Node takes ~30. A compiled executable would read
// .env and bunfig.toml from the runtime's working directory unless told not to.
const bun = resolve(BUN);
if (!existsSync(bun)) {
  console.error(`build: ${bun} is missing: run npm ci (the devDependency @oven/bun-linux-x64 holds the Bun compiler)`);
  process.exit(1);
}
rmSync('dist/cni', { recursive: true, force: true });
mkdirSync('dist/cni', { recursive: true });
execFileSync(bun, ['build', 'cni/main.ts', '--compile', '--bytecode', '--minify', '--target=bun',
  '--no-compile-autoload-dotenv', '--no-compile-autoload-bunfig', '--outfile', 'dist/cni/knet'],
{ stdio: ['ignore', 'ignore', 'inherit'] });
chmodSync('dist/cni/knet', 0o755);
