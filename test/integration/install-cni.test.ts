// scripts/install-cni.sh: the CNI plugin installed as its one executable; an older install's
// runtime directory removed; the DaemonSet's init container arguments against the real script.
// No root and no kernel changes: VERSION and a decoding failure need neither.
import test, { type ExecutionContext } from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { tempDir } from '../helpers/cni.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const SCRIPT = join(ROOT, 'scripts/install-cni.sh');
const DIST = join(ROOT, 'dist/cni');

/** A copy of the build's dist/cni. */
function distCopy(t: ExecutionContext): string {
  if (!existsSync(join(DIST, 'knet'))) throw new Error(`${join(DIST, 'knet')} is missing: run npm run build first`);
  const d = join(tempDir(t, 'knt-dist-'), 'cni');
  mkdirSync(d);
  copyFileSync(join(DIST, 'knet'), join(d, 'knet'));
  chmodSync(join(d, 'knet'), 0o755);
  return d;
}

function install(args: string[]): SpawnSyncReturns<string> {
  return spawnSync('sh', [SCRIPT, ...args], { encoding: 'utf8' });
}

function runPlugin(file: string, stdin: string, env: Record<string, string>, args: string[] = [], cwd = '/'): SpawnSyncReturns<string> {
  // A runtime's environment: nothing of the test's node (no NODE_OPTIONS, no tsx loader).
  return spawnSync(file, args, { input: stdin, encoding: 'utf8', cwd, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
}

test('installs the one executable; VERSION answers from it', (t) => {
  const dist = distCopy(t);
  const bin = join(tempDir(t, 'knt-inst-'), 'opt/cni/bin');
  const r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(readdirSync(bin), ['knet']);
  t.is(statSync(join(bin, 'knet')).mode & 0o777, 0o755);
  t.is(statSync(join(bin, 'knet')).size, statSync(join(DIST, 'knet')).size);
  const v = runPlugin(join(bin, 'knet'), '{"cniVersion":"1.0.0"}', { CNI_COMMAND: 'VERSION' });
  t.is(v.status, 0, v.stderr);
  const out = JSON.parse(v.stdout);
  t.is(out.cniVersion, '1.0.0');
  t.deepEqual(out.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
});

test('the installed plugin answers the same wherever it is mounted, whatever .env or bunfig.toml its working directory holds', (t) => {
  const dist = distCopy(t);
  const root = tempDir(t, 'knt-inst-');
  const bin = join(root, 'host/opt/cni/bin');
  t.is(install(['--dist', dist, '--bin-dir', bin]).status, 0);
  // The init container writes /host/opt/cni/bin; the host execs /opt/cni/bin/knet.
  const moved = join(root, 'opt-cni-bin');
  renameSync(bin, moved);
  // A runtime's working directory is not the plugin's: a Bun executable built without
  // --no-compile-autoload-* would load these.
  const cwd = join(root, 'runtime-cwd');
  mkdirSync(cwd);
  writeFileSync(join(cwd, '.env'), 'KNET_CNI_TRACE=1\nCNI_COMMAND=VERSION\n');
  writeFileSync(join(cwd, 'preload.ts'), 'console.log("preloaded");\n');
  writeFileSync(join(cwd, 'bunfig.toml'), 'preload = ["./preload.ts"]\n');
  const cases: Array<[string, Record<string, string>, number]> = [
    ['{', { CNI_COMMAND: 'VERSION' }, 6],                                   // undecodable stdin
    ['{"cniVersion":"1.1.0","name":"n","type":"knet"}', { CNI_COMMAND: 'BOGUS' }, 4],
    ['{"cniVersion":"1.1.0","name":"n","type":"knet"}', {}, 4],            // no CNI_COMMAND (not from .env)
  ];
  for (const [stdin, env, code] of cases) {
    const direct = runPlugin(join(DIST, 'knet'), stdin, env);
    const installed = runPlugin(join(moved, 'knet'), stdin, env, [], cwd);
    t.is(installed.status, 1, `${stdin} ${env.CNI_COMMAND}`);
    t.is(JSON.parse(installed.stdout).code, code, installed.stdout);
    t.is(installed.stdout, direct.stdout, `${stdin} ${env.CNI_COMMAND}`);
    t.is(installed.stderr, '', 'no trace: .env was not read');
  }
  const ok = runPlugin(join(moved, 'knet'), '{"cniVersion":"0.4.0"}', { CNI_COMMAND: 'VERSION' }, [], cwd);
  t.is(ok.stdout, '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n');
});

test('an older install (wrapper plus runtime in knet.d) is replaced and its directory removed', (t) => {
  const dist = distCopy(t);
  const bin = join(tempDir(t, 'knt-inst-'), 'bin');
  const old = join(bin, 'knet.d');
  mkdirSync(old, { recursive: true });
  writeFileSync(join(bin, 'knet'), '#!/bin/sh\nexec "${0%/*}/knet.d/node" "${0%/*}/knet.d/knet" "$@"\n', { mode: 0o755 });
  for (const f of ['node', 'knet', 'package.json', 'knet-netlink.node', 'knet-sea']) writeFileSync(join(old, f), 'old');
  const r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(readdirSync(bin), ['knet']);
  t.is(statSync(join(bin, 'knet')).size, statSync(join(DIST, 'knet')).size);

  // A knet.d holding something else stays, with a word about it.
  mkdirSync(old);
  writeFileSync(join(old, 'node'), 'old');
  writeFileSync(join(old, 'notes.txt'), 'the admin\'s');
  const again = install(['--dist', dist, '--bin-dir', bin]);
  t.is(again.status, 0, again.stderr);
  t.regex(again.stderr, /left .*knet\.d in place/);
  t.deepEqual(readdirSync(old), ['notes.txt']);
});

test('a plugin that does not run on this machine replaces nothing', (t) => {
  const dist = join(tempDir(t, 'knt-dist-'), 'cni');
  mkdirSync(dist);
  writeFileSync(join(dist, 'knet'), '#!/bin/sh\necho "Illegal instruction" >&2; exit 132\n', { mode: 0o755 });
  const bin = join(tempDir(t, 'knt-inst-'), 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'knet'), 'the working one', { mode: 0o755 });
  const r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 2);
  t.regex(r.stderr, /does not run on this machine: Illegal instruction/);
  t.is(readFileSync(join(bin, 'knet'), 'utf8'), 'the working one');
});

test('the DaemonSet\'s init container arguments install the plugin, the reference plugins and the ConfigMap\'s conflist', (t) => {
  const docs = readFileSync(join(ROOT, 'deploy/20-daemonset.yaml'), 'utf8');
  const ds = parseAllDocuments(docs).map((d) => d.toJS()).find((o) => o?.kind === 'DaemonSet');
  const cm = parseAllDocuments(readFileSync(join(ROOT, 'deploy/10-config.yaml'), 'utf8')).map((d) => d.toJS()).find((o) => o?.kind === 'ConfigMap');
  const init = ds.spec.template.spec.initContainers[0];
  t.is(init.command[0], '/opt/knet/scripts/install-cni.sh');

  // The container's paths, mapped to a temp tree: the image's /opt/knet is this repository.
  const root = tempDir(t, 'knt-init-');
  const dist = distCopy(t);
  const etcKnet = join(root, 'etc/knet');
  mkdirSync(etcKnet, { recursive: true });
  for (const [k, v] of Object.entries(cm.data as Record<string, string>)) writeFileSync(join(etcKnet, k), v);
  const ref = join(root, 'usr/lib/cni');
  mkdirSync(ref, { recursive: true });
  for (const p of ['portmap', 'bandwidth', 'bridge']) writeFileSync(join(ref, p), `#!/bin/sh\necho ${p}\n`, { mode: 0o755 });
  const hostBin = join(root, 'host/opt/cni/bin');
  mkdirSync(hostBin, { recursive: true });
  writeFileSync(join(hostBin, 'bandwidth'), 'the host\'s own\n', { mode: 0o755 });
  const map = (p: string): string => {
    if (p === '/opt/knet/dist/cni') return dist;
    for (const prefix of ['/host/', '/etc/knet', '/usr/lib/cni']) if (p.startsWith(prefix)) return join(root, p);
    return p;
  };
  const args = (init.args as string[]).map((a) => (a.startsWith('/') ? map(a) : a));
  t.false(args.some((a) => a.startsWith('/') && !a.startsWith(root) && a !== dist), 'every path argument is mapped: a mount or the image\'s build');
  const r = install(args);
  t.is(r.status, 0, r.stderr);
  t.is(readFileSync(join(root, 'host/etc/cni/net.d/10-knet.conflist'), 'utf8'), cm.data['10-knet.conflist']);
  t.is(readFileSync(join(hostBin, 'portmap'), 'utf8'), '#!/bin/sh\necho portmap\n');
  t.is(readFileSync(join(hostBin, 'bandwidth'), 'utf8'), 'the host\'s own\n', 'a plugin the host has is left alone');
  t.false(existsSync(join(hostBin, 'bridge')), 'only the plugins the conflist chains');
  const v = runPlugin(join(hostBin, 'knet'), '{"cniVersion":"1.1.0"}', { CNI_COMMAND: 'VERSION' });
  t.is(v.status, 0, v.stderr);
  t.truthy(JSON.parse(v.stdout).supportedVersions);
});

test('bad arguments and a broken conflist stop the install before anything is written', (t) => {
  const dist = distCopy(t);
  const root = tempDir(t, 'knt-inst-');
  const bin = join(root, 'bin');
  const bad = join(root, 'bad.conflist');
  writeFileSync(bad, '{"plugins": [{"type": "bridge"}]}');
  for (const args of [
    ['--dist', dist, '--bin-dir', bin, '--conflist', join(ROOT, 'cni/10-knet.conflist')],
    ['--dist', dist, '--bin-dir', join(root, 'a b')],
    ['--dist', dist, '--bin-dir'],
    ['--dist', dist, '--bin-dir', '--conf-dir'],
    ['--dist', dist, '--target', bin],
    ['--dist', join(root, 'nowhere'), '--bin-dir', bin],
    ['--dist', dist, '--bin-dir', bin, '--node', join(root, 'no-node')],
    ['--dist', dist, '--bin-dir', bin, '--conflist', bad, '--conf-dir', join(root, 'net.d')],
  ]) {
    const r = install(args);
    t.is(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /^install-cni: /);
  }
  t.deepEqual(readdirSync(root).sort(), ['bad.conflist']);
});
