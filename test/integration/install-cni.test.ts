// scripts/install-cni.sh: the CNI plugin installed with its own runtime (a node binary, or a
// single executable application) behind a wrapper that passes stdin, env, arguments and the
// exit code through; the DaemonSet's init container arguments against the real script. No root
// and no kernel changes: VERSION and a decoding failure need neither.
import test, { type ExecutionContext } from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { tempDir } from '../helpers/cni.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const SCRIPT = join(ROOT, 'scripts/install-cni.sh');
const DIST = join(ROOT, 'dist/cni');

/** A copy of the build's dist/cni (without any SEA a developer may have built there). */
function distCopy(t: ExecutionContext): string {
  for (const f of ['knet', 'knet-netlink.node', 'package.json']) {
    if (!existsSync(join(DIST, f))) throw new Error(`${join(DIST, f)} is missing: run npm run build first`);
  }
  const d = join(tempDir(t, 'knt-dist-'), 'cni');
  mkdirSync(d);
  for (const f of ['knet', 'knet-netlink.node', 'package.json']) copyFileSync(join(DIST, f), join(d, f));
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

const sha256sumOf = (file: string) => `${createHash('sha256').update(readFileSync(file)).digest('hex')}  -\n`;

test('installs node, bundle and addon behind a wrapper; VERSION answers through it', (t) => {
  const dist = distCopy(t);
  const bin = join(tempDir(t, 'knt-inst-'), 'opt/cni/bin');
  const r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(readdirSync(bin).sort(), ['knet', 'knet.d']);
  t.deepEqual(readdirSync(join(bin, 'knet.d')).sort(), ['knet', 'knet-netlink.node', 'node', 'package.json']);
  t.is(statSync(join(bin, 'knet')).mode & 0o777, 0o755);
  t.is(statSync(join(bin, 'knet.d/node')).size, statSync(process.execPath).size);
  t.deepEqual(JSON.parse(readFileSync(join(bin, 'knet.d/package.json'), 'utf8')), { type: 'commonjs' });
  // No temporary file left behind.
  t.false(readdirSync(bin).some((f) => f.includes('.tmp.')));
  t.false(readdirSync(join(bin, 'knet.d')).some((f) => f.includes('.tmp.')));

  const v = runPlugin(join(bin, 'knet'), '{"cniVersion":"1.0.0"}', { CNI_COMMAND: 'VERSION' });
  t.is(v.status, 0, v.stderr);
  const out = JSON.parse(v.stdout);
  t.is(out.cniVersion, '1.0.0');
  t.deepEqual(out.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
});

test('the wrapper passes stdin, env and the exit code through unchanged, wherever the directory is mounted', (t) => {
  const dist = distCopy(t);
  const root = tempDir(t, 'knt-inst-');
  const bin = join(root, 'host/opt/cni/bin');
  t.is(install(['--dist', dist, '--bin-dir', bin]).status, 0);
  // The init container writes /host/opt/cni/bin; the host execs /opt/cni/bin/knet.
  const moved = join(root, 'opt-cni-bin');
  renameSync(bin, moved);
  const cases: Array<[string, Record<string, string>]> = [
    ['{', { CNI_COMMAND: 'VERSION' }],                                   // undecodable stdin: code 6
    ['{"cniVersion":"0.1.0"}', { CNI_COMMAND: 'VERSION' }],              // incompatible version
    ['{"cniVersion":"1.1.0","name":"n","type":"knet"}', { CNI_COMMAND: 'BOGUS' }], // invalid env
    ['{"cniVersion":"0.4.0"}', { CNI_COMMAND: 'VERSION' }],
  ];
  for (const [stdin, env] of cases) {
    const direct = runPlugin(process.execPath, stdin, env, [join(DIST, 'knet')]);
    const wrapped = runPlugin(join(moved, 'knet'), stdin, env, [], root);
    t.is(wrapped.status, direct.status, `${stdin} ${env.CNI_COMMAND}`);
    t.is(wrapped.stdout, direct.stdout, `${stdin} ${env.CNI_COMMAND}`);
  }
  t.not(runPlugin(join(moved, 'knet'), '{', { CNI_COMMAND: 'VERSION' }).status, 0);
});

test('a SEA built from the current bundle is preferred; a stale one is ignored; switching back removes it', (t) => {
  const dist = distCopy(t);
  const bin = join(tempDir(t, 'knt-inst-'), 'bin');
  // A stand-in for the SEA that shows what it was given.
  writeFileSync(join(dist, 'knet-sea'), '#!/bin/sh\nprintf "sea %s %s " "$CNI_COMMAND" "$*"; cat; exit 7\n', { mode: 0o755 });
  writeFileSync(join(dist, 'knet-sea.source'), sha256sumOf(join(dist, 'knet')));
  let r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stderr, /\(sea\)/);
  t.deepEqual(readdirSync(join(bin, 'knet.d')).sort(), ['knet-netlink.node', 'knet-sea']);
  const run = runPlugin(join(bin, 'knet'), 'stdin text', { CNI_COMMAND: 'ADD' }, ['a', 'b c']);
  t.is(run.status, 7);
  t.is(run.stdout, 'sea ADD a b c stdin text');

  // The bundle was rebuilt: the old SEA no longer matches and node + bundle go in instead.
  writeFileSync(join(dist, 'knet'), readFileSync(join(DIST, 'knet'), 'utf8') + '\n// rebuilt\n', { mode: 0o755 });
  r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stderr, /ignoring .*knet-sea/);
  t.deepEqual(readdirSync(join(bin, 'knet.d')).sort(), ['knet', 'knet-netlink.node', 'node', 'package.json']);
  t.is(runPlugin(join(bin, 'knet'), '{"cniVersion":"1.1.0"}', { CNI_COMMAND: 'VERSION' }).status, 0);
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

const postject = process.env.KNET_TEST_POSTJECT ?? join(ROOT, 'node_modules/.bin/postject');
(existsSync(postject) ? test : test.skip)('deploy/build-sea.sh builds a SEA that install-cni.sh installs and that answers VERSION (needs postject)', (t) => {
  const dist = distCopy(t);
  const b = spawnSync('sh', [join(ROOT, 'deploy/build-sea.sh'), '--dist', dist, '--postject', postject], { encoding: 'utf8' });
  t.is(b.status, 0, b.stderr);
  t.is(readFileSync(join(dist, 'knet-sea.source'), 'utf8'), sha256sumOf(join(dist, 'knet')));
  const bin = join(tempDir(t, 'knt-inst-'), 'bin');
  const r = install(['--dist', dist, '--bin-dir', bin]);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(readdirSync(join(bin, 'knet.d')).sort(), ['knet-netlink.node', 'knet-sea']);
  for (const [stdin, env] of [['{"cniVersion":"0.3.1"}', { CNI_COMMAND: 'VERSION' }], ['{', { CNI_COMMAND: 'VERSION' }]] as const) {
    const direct = runPlugin(process.execPath, stdin, env, [join(DIST, 'knet')]);
    const sea = runPlugin(join(bin, 'knet'), stdin, env);
    t.is(sea.status, direct.status);
    t.is(sea.stdout, direct.stdout);
  }
});
