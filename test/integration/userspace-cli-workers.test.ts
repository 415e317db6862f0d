// The built CLI runs the userspace data path in forwarder processes: `knet proxy --proxy-mode
// userspace` (dist/knet.js, as installed) starts one dist/knet-userspace-forwarder (Bun,
// compiled by the build) by default, it holds the listener, and it goes away with the proxy.
// Runs in its own knt-w* namespace.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { run } from '../../src/kernel/exec.ts';
import { waitFor } from '../../src/util/wait.ts';
import { childPids, pidRunning } from '../helpers/process.ts';

const rootTest = isRoot ? test : test.skip;


test('--userspace-workers is checked before anything starts', async (t) => {
  const r = await run(process.execPath, ['dist/knet.js', 'proxy', '--proxy-mode', 'userspace', '--userspace-workers', '9', '--manifests', '/nonexistent']).catch((e: { stderr?: string }) => e);
  t.regex(String((r as { stderr?: string }).stderr), /--userspace-workers: expected 0-8/);
});

rootTest('the built CLI starts a forwarder that holds the TCP listener and stops with the proxy', async (t) => {
  const ns = await testNetns(t, 'knt-w');
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const dir = mkdtempSync(join(tmpdir(), 'knt-w-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'default', name: 'web' }, spec: { clusterIP: '172.30.0.10', ports: [{ port: 80, protocol: 'TCP' }] } },
    { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { namespace: 'default', name: 'web-1', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'] }], ports: [{ port: 8080, protocol: 'TCP' }] },
  ] }));
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  // No --userspace-workers: one forwarder is the default.
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, 'dist/knet.js', 'proxy', '--proxy-mode', 'userspace',
    '--manifests', dir, '--node-ip', '127.0.0.1', '--hostname-override', 'n1', '--healthz-bind-address', '', '--metrics-bind-address', ''],
  { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-10_000); });
  t.teardown(() => { p.kill('SIGKILL'); });
  const exited = new Promise<number | null>((r) => p.once('exit', r));
  await waitFor('first sync', async () => log.includes('"msg":"synced"'), 30_000);
  await waitFor('a forwarder process', async () => childPids(p.pid!).length === 1, 15_000);
  const [forwarder] = childPids(p.pid!);
  t.teardown(() => { try { process.kill(forwarder!, 'SIGKILL'); } catch { /* gone, as it should be */ } });
  t.is(readFileSync(`/proc/${forwarder}/cmdline`, 'utf8').split('\0')[0], join(process.cwd(), 'dist/knet-userspace-forwarder'));
  await waitFor('the forwarder to hold the listener', async () => (await run('ip', ['netns', 'exec', ns, 'ss', '-tlnpH'])).stdout.includes(`pid=${forwarder},`), 15_000);
  // The proxy process itself holds no listening socket: the data path is the forwarder's.
  t.false((await run('ip', ['netns', 'exec', ns, 'ss', '-tlnpH'])).stdout.includes(`pid=${p.pid},`));
  p.kill('SIGTERM');
  t.is(await exited, 0, log);
  await waitFor('the forwarder to exit', async () => !pidRunning(forwarder!), 5000);
});
