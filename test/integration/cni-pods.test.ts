// 50 pods on one node through the built plugin: kernel state matches the config and the
// result, every pod reaches the gateway and its next PEERS pods (ICMP and TCP), traffic leaving the
// cluster is masqueraded by the node's one chain while pod-to-pod traffic is not; CHECK, DEL
// (twice) and GC leave nothing behind.
import test from 'ava';
import { readdirSync } from 'node:fs';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { execPlugin, installPlugin, ipJsonIn, knetConf, linkNames, netnsPath, probe, tempDir } from '../helpers/cni.ts';
import { run } from '../../src/kernel/exec.ts';
import { iptablesSave } from '../../src/kernel/iptables.ts';

const PODS = Number(process.env.KNET_TEST_PODS ?? 50);
// Pod-to-pod probes go to the next PEERS pods (in a ring), not to all 49: the kernel's ARP table
// is shared by every namespace of the machine (gc_thresh3 = 1024 entries), and all pairs of 50
// pods need ~2,600 entries, which overflowed it ("neighbor table overflow") and stalled new
// neighbours machine-wide for seconds at a time.
const PEERS = Math.min(4, PODS - 1);
const peersOf = (i: number) => Array.from({ length: PEERS }, (_, k) => (i + k + 1) % PODS);

test('50 pods: addresses, routes, MTU, result, connectivity, masquerade, CHECK, DEL, GC', async (t) => {
  if (!isRoot) return t.pass('needs root');
  const bin = installPlugin(t);
  const dataDir = tempDir(t, 'knt-c-data-');
  const node = await testNetns(t, 'knt-c');
  const ext = await testNetns(t, 'knt-c');
  // An "outside world" beyond the node: 192.168.77.0/24 on a veth between node and ext.
  await run('ip', ['link', 'add', 'knc-up', 'netns', node, 'type', 'veth', 'peer', 'name', 'knc-ext', 'netns', ext]);
  await run('ip', ['-n', node, '-batch', '-'], { input: 'addr add 192.168.77.1/24 dev knc-up\nlink set knc-up up\n' });
  await run('ip', ['-n', ext, '-batch', '-'], { input: 'addr add 192.168.77.2/24 dev knc-ext\nlink set knc-ext up\n' });
  await run('ip', ['netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);

  const conf = knetConf(dataDir, { ipMasq: true, hairpinMode: true, iptablesBackend: 'nft' });
  const pods: { ns: string; cid: string; result: any }[] = [];
  for (let i = 0; i < PODS; i++) pods.push({ ns: await testNetns(t, 'knt-c'), cid: `pod-${i}`, result: undefined });
  // A few at a time, as a kubelet starting pods would.
  for (let i = 0; i < PODS; i += 5) {
    await Promise.all(pods.slice(i, i + 5).map(async (p) => {
      const r = await execPlugin(bin, { nodeNs: node, command: 'ADD', conf, containerId: p.cid, netns: netnsPath(p.ns), ifname: 'eth0' });
      t.is(r.exitCode, 0, r.stdout + r.stderr);
      p.result = r.json;
    }));
  }

  const started = Date.now();
  const phase = (what: string) => t.log(`${what} at ${((Date.now() - started) / 1000).toFixed(1)} s`);
  phase('50 ADDs done');
  const ips = pods.map((p) => p.result.ips[0].address as string);
  t.is(new Set(ips).size, PODS, 'every pod has its own address');
  for (const ip of ips) {
    t.regex(ip, /^10\.77\.1\.\d+\/24$/);
    t.not(ip, '10.77.1.0/24');
    t.not(ip, '10.77.1.1/24');
    t.not(ip, '10.77.1.255/24');
  }

  // The result matches the kernel, for every pod.
  const bridge = (await ipJsonIn(node, ['-d', 'link', 'show', 'kbr0']))[0];
  t.is(bridge.mtu, 1400);
  t.is(bridge.linkinfo.info_kind, 'bridge');
  const brAddrs = (await ipJsonIn(node, ['addr', 'show', 'kbr0']))[0].addr_info.filter((a: any) => a.family === 'inet');
  t.deepEqual(brAddrs.map((a: any) => `${a.local}/${a.prefixlen}`), ['10.77.1.1/24']);
  for (const p of pods) {
    const r = p.result;
    t.is(r.cniVersion, '1.1.0');
    t.is(r.interfaces.length, 3);
    t.like(r.interfaces[0], { name: 'kbr0', mac: bridge.address, mtu: 1400 });
    t.like(r.interfaces[2], { name: 'eth0', sandbox: netnsPath(p.ns), mtu: 1400 });
    t.like(r.ips[0], { gateway: '10.77.1.1', interface: 2 });
    t.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: '10.77.1.1' }]);
    const [eth0] = await ipJsonIn(p.ns, ['addr', 'show', 'eth0']);
    t.is(eth0.mtu, 1400);
    t.is(eth0.address, r.interfaces[2].mac);
    t.is(eth0.operstate, 'UP');
    t.deepEqual(eth0.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`), [r.ips[0].address]);
    const routes = await ipJsonIn(p.ns, ['route', 'show']);
    t.true(routes.some((x: any) => x.dst === 'default' && x.gateway === '10.77.1.1' && x.dev === 'eth0'));
    const [host] = await ipJsonIn(node, ['-d', 'link', 'show', r.interfaces[1].name]);
    t.is(host.master, 'kbr0');
    t.is(host.mtu, 1400);
    t.is(host.address, r.interfaces[1].mac);
    t.is(host.linkinfo.info_slave_data.hairpin, true);
  }

  // Connectivity: every pod to the gateway and to its next PEERS pods, ICMP and TCP; and out.
  const podIp = (i: number) => ips[i]!.split('/')[0]!;
  const spec = {
    port: 7777,
    // Replies on a local bridge take well under a millisecond: a quick first pass, and the
    // few misses get a patient second one.
    attempts: 1,
    timeout: 0.3,
    servers: [...pods.map((p, i) => ({ ns: p.ns, ip: podIp(i) })), { ns: node, ip: '10.77.1.1' }, { ns: ext, ip: '192.168.77.2' }],
    probes: pods.flatMap((p, i) => [
      { ns: p.ns, dst: '10.77.1.1' },
      { ns: p.ns, dst: '192.168.77.2', icmp: false },
      ...peersOf(i).map((j) => ({ ns: p.ns, dst: podIp(j) })),
    ]),
  };
  phase('kernel state checked');
  const out = await probe(spec);
  phase('first probe pass done');
  t.is(out.results.length, PODS * (PEERS + 2));
  // This machine is shared with other busy test runs and now and then loses a burst of
  // packets; a pair counts as broken only if it fails again in a second, later pass.
  const firstFailures = out.results.filter((r) => r.icmp === false || r.tcp === false);
  if (firstFailures.length) t.log(`${firstFailures.length} probes failed once; probing them again`, JSON.stringify(firstFailures.slice(0, 5)));
  const second = firstFailures.length ? await probe({ ...spec, attempts: 5, timeout: 3, probes: firstFailures.map((f) => ({ ns: f.ns, dst: f.dst, icmp: f.icmp === false, tcp: f.tcp === false })) }) : null;
  for (const [k, v] of Object.entries(second?.seen ?? {})) out.seen[k] = [...(out.seen[k] ?? []), ...v];
  const failed = (second?.results ?? []).filter((r) => r.icmp === false || r.tcp === false);
  t.deepEqual(failed.slice(0, 40).map((f) => `${f.ns}>${f.dst} icmp=${f.icmp} tcp=${f.tcp}`), [], `${failed.length} of ${out.results.length} probes failed twice`);
  // Pod to pod keeps the pod's address; leaving the cluster it becomes the node's.
  t.deepEqual([...new Set(out.seen[podIp(0)])].sort(), pods.map((_, i) => i).filter((i) => peersOf(i).includes(0)).map(podIp).sort());
  t.deepEqual([...new Set(out.seen['192.168.77.2'])], ['192.168.77.1']);

  // One masquerade chain for the node, however many pods.
  const nat = await iptablesSave({ backend: 'nft', netns: node }, 'nat');
  t.is(nat.split('\n').filter((l) => l.startsWith('-A POSTROUTING') && l.includes('KNET-MASQ-')).length, 1);

  // CHECK agrees with the kernel; then breaks when the pod address is removed.
  const check = { ...conf, prevResult: pods[0]!.result };
  const ok = await execPlugin(bin, { nodeNs: node, command: 'CHECK', conf: check, containerId: 'pod-0', netns: netnsPath(pods[0]!.ns), ifname: 'eth0' });
  t.is(ok.exitCode, 0, ok.stdout);
  await run('ip', ['-n', pods[0]!.ns, 'addr', 'flush', 'dev', 'eth0']);
  const bad = await execPlugin(bin, { nodeNs: node, command: 'CHECK', conf: check, containerId: 'pod-0', netns: netnsPath(pods[0]!.ns), ifname: 'eth0' });
  t.is(bad.exitCode, 1);
  t.is(bad.json.code, 103);

  phase('CHECK done');
  // DEL everything, twice: the second round must succeed too.
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < PODS; i += 5) {
      await Promise.all(pods.slice(i, i + 5).map(async (p) => {
        const r = await execPlugin(bin, { nodeNs: node, command: 'DEL', conf: { ...conf, prevResult: p.result }, containerId: p.cid, netns: netnsPath(p.ns), ifname: 'eth0' });
        t.is(r.exitCode, 0, r.stdout);
      }));
    }
  }
  t.deepEqual((await linkNames(node)).filter((n) => n.startsWith('veth')), []);
  for (const p of pods.slice(0, 5)) t.deepEqual(await linkNames(p.ns), ['lo']);
  t.deepEqual(readdirSync(dataDir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)), []);

  // DEL with the namespace already gone, and of a container never seen: success.
  const gone = await execPlugin(bin, { nodeNs: node, command: 'DEL', conf, containerId: 'never-was', netns: '/run/netns/knt-c-gone', ifname: 'eth0' });
  t.is(gone.exitCode, 0, gone.stdout);
});
