// Bad input through the built executable on the real kernel: a fixed sample of fuzzed calls
// (test/helpers/cni-fuzz.ts; the unit test runs many more against the in-memory kernel) gets the
// spec's error JSON and code and leaves no link, record, temp file or lock; and a read-only
// dataDir is error 5 that says so.
import test from 'ava';
import fc from 'fast-check';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { installPlugin, linkNames, netnsPath, tempDir } from '../helpers/cni.ts';
import { CNI_CODES, fuzzCall } from '../helpers/cni-fuzz.ts';
import { ExecError, run } from '../../src/kernel/exec.ts';

async function exec(argv: string[], stdin: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(argv[0]!, argv.slice(1), { input: stdin, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, timeoutMs: 30_000 });
    return { code: 0, ...r };
  } catch (e) {
    if (!(e instanceof ExecError)) throw e;
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout, stderr: e.stderr };
  }
}

test('a sample of fuzzed calls through the executable: the spec\'s error JSON, nothing left behind', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dir = tempDir(t, 'knt-c-fuzz-');
  const node = await testNetns(t, 'knt-c');
  const pod = await testNetns(t, 'knt-c');
  const samples = fc.sample(fuzzCall(dir, netnsPath(pod)), { numRuns: Number(process.env.KNET_FUZZ_EXEC_RUNS ?? 24), seed: 1517 });
  let refused = 0;
  for (const sample of samples) {
    const stdin = sample.stdin;
    // exec(2) cannot carry a NUL in an environment variable: no runtime can send one.
    const env = Object.fromEntries(Object.entries(sample.env).map(([k, v]) => [k, v.replace(/\0/g, '')]));
    const what = JSON.stringify({ stdin: stdin.slice(0, 300), env });
    const r = await exec(['ip', 'netns', 'exec', node, bin], stdin, env);
    if (r.code === 0) {
      if (env.CNI_COMMAND === 'ADD') t.is((await exec(['ip', 'netns', 'exec', node, bin], stdin, { ...env, CNI_COMMAND: 'DEL' })).code, 0, what);
    } else {
      refused++;
      t.is(r.code, 1, what);
      const err = JSON.parse(r.stdout);
      t.true(CNI_CODES.includes(err.code), `${what}: ${r.stdout}`);
      t.is(typeof err.cniVersion, 'string');
    }
    t.deepEqual(await linkNames(pod), ['lo'], what);
    t.deepEqual((await linkNames(node)).filter((n) => n.startsWith('veth')), [], what);
    t.deepEqual(readdirSync(dir, { recursive: true }).map(String).filter((f) => /(^|\/)(\d+\.\d+\.\d+\.\d+|\.knet-tmp-.*|.*\.lock)$/.test(f)), [], what);
  }
  t.true(refused > samples.length / 2);
});

test('a read-only dataDir is error 5 that says so (not ENOENT), and nothing is made', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const ro = tempDir(t, 'knt-c-ro-');
  const node = await testNetns(t, 'knt-c');
  const pod = await testNetns(t, 'knt-c');
  const conf = JSON.stringify({ cniVersion: '1.1.0', name: 'ro', type: 'knet', subnet: '10.64.0.0/24', bridge: 'rbr0', dataDir: join(ro, 'networks/ro') });
  const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: netnsPath(pod), CNI_IFNAME: 'eth0' };
  // A read-only tmpfs over the temp dir, in a mount namespace of the plugin's own: the
  // machine's mounts are untouched.
  const r = await exec(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o ro knt-c-ro "$1" && exec ip netns exec "$2" "$3"', 'sh', ro, node, bin], conf, env);
  t.is(r.code, 1, r.stdout + r.stderr);
  const err = JSON.parse(r.stdout);
  t.is(err.code, 5);
  t.regex(err.details, /dataDir .*networks\/ro is not usable: read-only file system \(EROFS\)/);
  t.notRegex(err.details, /ENOENT/);
  t.deepEqual(await linkNames(pod), ['lo']);
  t.deepEqual((await linkNames(node)).filter((n) => n !== 'lo'), [], 'no bridge either: the data dir is checked first');
});
