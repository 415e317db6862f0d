// The paths a config names: dataDir in a kernel file system is error 7 for every command (it
// once spun at 100 % CPU), an unusable dataDir is error 5 saying why (it once said ENOENT), and
// a subnet file that is not one is refused without quoting it (it once echoed /etc/passwd).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCni } from '../../src/cni/plugin.ts';
import { dataDirError, ensureDataDir, readSubnetFile } from '../../src/cni/paths.ts';
import { SUBNET_FILE_MAX } from '../../src/subnet/subnet-env.ts';
import { lockFile } from '../../src/ipam/lockfile.ts';
import { fakeCniKernel } from '../helpers/fake-cni-kernel.ts';

function scratch(t: { teardown(f: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'knt-c-paths-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const conf = (extra: Record<string, unknown>) => JSON.stringify({ cniVersion: '1.1.0', name: 'paths', type: 'knet', subnet: '10.61.0.0/24', bridge: 'pbr0', ...extra });
const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/pod1', CNI_IFNAME: 'eth0' });

test('dataDir in a kernel file system is error 7 for every command that uses it, at once', async (t) => {
  t.timeout(20_000);
  const k = fakeCniKernel();
  k.kernel.netns('pod1');
  for (const dataDir of ['/proc', '/proc/knt-c-data', '/proc/self/fd', '/proc/sys/net', '/sys/knt-c', '/sys/fs/cgroup/knt-c', '/dev/knt-c', '/dev/shm/knt-c']) {
    for (const command of ['ADD', 'DEL', 'CHECK', 'GC']) {
      const extra: Record<string, unknown> = { dataDir, prevResult: { interfaces: [], ips: [], routes: [] }, 'cni.dev/valid-attachments': [] };
      const r = await runCni(conf(extra), env(command), k);
      t.is(r.exitCode, 1, `${command} ${dataDir}`);
      const err = JSON.parse(r.stdout);
      t.is(err.code, 7, `${command} ${dataDir}: ${r.stdout}`);
      t.regex(err.details, /dataDir .* cannot hold IPAM records: it is (under \/(proc|sys|dev)|on \w+), a kernel file system/);
    }
  }
  t.deepEqual(k.kernel.netns('pod1').snapshot(), { links: [{ name: 'lo', kind: '', mtu: 65536, up: true, master: '', hairpin: false }], addresses: [], routes: [] });
});

test('a dataDir that cannot be made or written is error 5 with the reason, not ENOENT', async (t) => {
  const d = scratch(t);
  const file = join(d, 'a-file');
  writeFileSync(file, 'x');
  const k = fakeCniKernel();
  k.kernel.netns('pod1');
  const r = await runCni(conf({ dataDir: join(file, 'data') }), env('ADD'), k);
  const err = JSON.parse(r.stdout);
  t.is(err.code, 5, r.stdout);
  t.regex(err.details, /dataDir .*a-file\/data is not usable: a part of the path is not a directory \(ENOTDIR\)/);
  t.notRegex(err.details, /ENOENT/);
  // The reasons for the errors a read-only or full file system gives.
  const rofs = Object.assign(new Error('EROFS: read-only file system, open'), { code: 'EROFS' });
  t.regex(dataDirError('/var/lib/knet', rofs).details, /^dataDir \/var\/lib\/knet is not usable: read-only file system \(EROFS\)$/);
  const full = Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' });
  t.is(dataDirError('/d', full).code, 5);
  t.regex(dataDirError('/d', full).details, /no space left/);
  t.notThrows(() => ensureDataDir(join(d, 'new/deep/dir')));
});

test('a subnet file that is not one is refused without quoting it (ADD 7, STATUS 50)', async (t) => {
  t.timeout(20_000);
  const d = scratch(t);
  const secret = join(d, 'secret.txt');
  writeFileSync(secret, 'root:x:0:0:the-first-line-of-a-secret\ntoken=abc123\n');
  const secretKeyed = join(d, 'keyed.env');
  writeFileSync(secretKeyed, 'FLANNEL_SUBNET=hunter2-not-a-cidr\nFLANNEL_MTU=also-secret\n');
  const fifo = join(d, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const big = join(d, 'big.env');
  writeFileSync(big, 'FLANNEL_SUBNET=10.1.0.1/24\n' + '#'.repeat(SUBNET_FILE_MAX));
  const dir = join(d, 'a-dir');
  mkdirSync(dir);
  const k = fakeCniKernel();
  k.kernel.netns('pod1');
  const cases: [string, RegExp][] = [
    ['/etc/passwd', /line 1 is not KEY=VALUE/],
    [secret, /line 1 is not KEY=VALUE/],
    [secretKeyed, /FLANNEL_SUBNET \(line 1\) is not an IPv4 CIDR/],
    [fifo, /not a regular file/],
    [dir, /not a regular file/],
    [big, /at most 65536/],
    ['/dev/zero', /under \/dev, a kernel file system/],
    ['/proc/self/environ', /under \/proc, a kernel file system/],
    ['/sys/kernel/notes', /under \/sys, a kernel file system/],
  ];
  for (const [subnetFile, why] of cases) {
    const base = { subnet: undefined, subnetFile, dataDir: join(d, 'data') };
    const add = await runCni(conf(base), env('ADD'), k);
    const addErr = JSON.parse(add.stdout);
    t.is(addErr.code, 7, `${subnetFile}: ${add.stdout}`);
    t.regex(addErr.details, why, subnetFile);
    const status = await runCni(conf(base), { CNI_COMMAND: 'STATUS' }, k);
    const statusErr = JSON.parse(status.stdout);
    t.is(statusErr.code, 50, `${subnetFile}: ${status.stdout}`);
    t.regex(statusErr.details, why, subnetFile);
    for (const out of [add.stdout, status.stdout]) {
      t.notRegex(out, /root:|the-first-line|abc123|hunter2|also-secret|daemon:/, `${subnetFile} quoted in ${out}`);
    }
  }
  t.is(readSubnetFile(join(d, 'missing.env')), null);
});

test('a lock path that cannot be read or removed times out instead of spinning', async (t) => {
  const d = scratch(t);
  const lock = join(d, 'masq.lock');
  mkdirSync(lock);
  const started = Date.now();
  await t.throwsAsync(lockFile(lock, 300), { message: /timed out waiting for the lock/ });
  t.true(Date.now() - started < 5000);
});
