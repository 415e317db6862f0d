// Concurrent plugin processes share the IPAM dir without a lock; plugins SIGKILLed at random
// instants during ADD leave only what a later GC removes completely.
import test from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { execPlugin, installPlugin, knetConf, linkNames, netnsPath, tempDir } from '../helpers/cni.ts';

const records = (dir: string) => readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));

test('32 ADDs at once get 32 distinct addresses; 32 DELs at once free them all', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dataDir = tempDir(t, 'knt-c-data-');
  const node = await testNetns(t, 'knt-c');
  const conf = knetConf(dataDir, { ipMasq: true, iptablesBackend: 'nft' });
  const pods = await Promise.all(Array.from({ length: 32 }, () => testNetns(t, 'knt-c')));
  const adds = await Promise.all(pods.map((ns, i) =>
    execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: `c${i}`, netns: netnsPath(ns), ifname: 'eth0' })));
  for (const r of adds) t.is(r.exitCode, 0, r.stdout + r.stderr);
  const ips = adds.map((r) => r.json.ips[0].address);
  t.is(new Set(ips).size, 32);
  t.is(records(dataDir).length, 32);
  t.is((await linkNames(node)).filter((n) => n.startsWith('veth')).length, 32);

  const dels = await Promise.all(pods.map((ns, i) =>
    execPlugin(bin, { nodeNs: node, command: 'DEL', conf, containerId: `c${i}`, netns: netnsPath(ns), ifname: 'eth0' })));
  for (const r of dels) t.is(r.exitCode, 0, r.stdout);
  t.deepEqual(records(dataDir), []);
  t.deepEqual((await linkNames(node)).filter((n) => n.startsWith('veth')), []);
  t.deepEqual(readdirSync(dataDir).filter((f) => f.startsWith('.knet-tmp') || f.endsWith('.lock')), []);
});

test('ADDs killed at random instants, then GC: no leaked address, link, temp file or lock', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dataDir = tempDir(t, 'knt-c-data-');
  const node = await testNetns(t, 'knt-c');
  const podNs = await Promise.all(Array.from({ length: 4 }, () => testNetns(t, 'knt-c')));
  const conf = knetConf(dataDir, { subnet: '10.77.0.0/22', ipMasq: true, iptablesBackend: 'nft' });
  const RUNS = Number(process.env.KNET_TEST_KILLS ?? 240);
  let killed = 0;
  let completed = 0;

  const one = (i: number) => new Promise<void>((resolve) => {
    const ns = podNs[i % podNs.length]!;
    const child = spawn('ip', ['netns', 'exec', node, bin], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: `kill-${i}`, CNI_NETNS: netnsPath(ns), CNI_IFNAME: `k${i}` },
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.end(JSON.stringify(conf));
    // ip netns exec replaces itself with the plugin, so this pid is the plugin's.
    const timer = setTimeout(() => child.kill('SIGKILL'), Math.random() * 400);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL') killed++;
      else if (code === 0) completed++;
      resolve();
    });
  });
  for (let i = 0; i < RUNS; i += 4) await Promise.all([0, 1, 2, 3].map((k) => one(i + k)));
  t.log(`${killed} killed, ${completed} completed`);
  t.true(killed > RUNS / 4, 'most runs were killed part-way');

  const gc = await execPlugin(bin, { nodeNs: node, command: 'GC', conf: { ...conf, 'cni.dev/valid-attachments': [] } });
  t.is(gc.exitCode, 0, gc.stdout);
  t.deepEqual(records(dataDir), []);
  t.deepEqual(readdirSync(dataDir).filter((f) => f.startsWith('.knet-tmp') || f.endsWith('.lock')), []);
  t.deepEqual((await linkNames(node)).filter((n) => n !== 'lo' && n !== 'kbr0'), []);
  for (const ns of podNs) t.deepEqual(await linkNames(ns), ['lo']);

  // The node still works afterwards.
  const r = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: 'after', netns: netnsPath(podNs[0]!), ifname: 'eth0' });
  t.is(r.exitCode, 0, r.stdout);
});

test('GC keeps valid attachments and releases the rest', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dataDir = tempDir(t, 'knt-c-data-');
  const node = await testNetns(t, 'knt-c');
  const pods = await Promise.all([0, 1, 2].map(() => testNetns(t, 'knt-c')));
  const conf = knetConf(dataDir);
  for (const [i, ns] of pods.entries()) {
    const r = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: `g${i}`, netns: netnsPath(ns), ifname: 'eth0' });
    t.is(r.exitCode, 0, r.stdout);
  }
  const valid = [{ containerID: 'g1', ifname: 'eth0' }];
  const gc = await execPlugin(bin, { nodeNs: node, command: 'GC', conf: { ...conf, 'cni.dev/valid-attachments': valid, 'cni.dev/attachments': valid } });
  t.is(gc.exitCode, 0, gc.stdout);
  t.is(records(dataDir).length, 1);
  t.deepEqual(await linkNames(pods[0]!), ['lo']);
  t.deepEqual((await linkNames(pods[1]!)).sort(), ['eth0', 'lo']);
  t.deepEqual(await linkNames(pods[2]!), ['lo']);
});
