// knet proxy end to end, for real, in namespaces this test creates: a node namespace carrying
// knet's rules (bridge br0 for backend pods, br1 for client pods, eth0 to an outside
// namespace), and real TCP/UDP traffic from small Node echo servers and clients. iptables mode
// on both iptables backends, and nftables mode. The proxy reads a manifest directory the test
// rewrites.
import test, { type ExecutionContext } from 'ava';
import pino from 'pino';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { makeService, makeSlice } from '../helpers/fake-apiserver.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { inNetns } from '../../src/kernel/netns.ts';
import { run } from '../../src/kernel/exec.ts';
import type { IptablesBackend } from '../../src/kernel/iptables.ts';
import { ManifestDirSource } from '../../src/k8s/manifest-dir.ts';
import { ProxyDaemon } from '../../src/proxy/daemon.ts';
import { iptablesSave, kernelIptables } from '../../src/kernel/iptables.ts';
import type { ChildProcess } from 'node:child_process';
import { IptablesApplier } from '../../src/proxy/iptables-applier.ts';
import { NftablesApplier } from '../../src/proxy/nftables-applier.ts';
import { NFT, kernelNft, nftListTable } from '../../src/kernel/nft.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';

/** iptables mode on one backend, or nftables mode. */
type Mode = IptablesBackend | 'nftables';
const MODES: Mode[] = ['nft', 'legacy', 'nftables'];

/** The NAT rules the mode holds in the node namespace, as text (for "is this endpoint still there"). */
const natRules = async (mode: Mode, netns: string) =>
  (mode === 'nftables' ? await nftListTable({ netns }, 'ip', 'kube-proxy') : await iptablesSave({ backend: mode, netns }, 'nat')) ?? '';

// Serial: four topologies with their node processes at once starve 2 CPUs and make TCP time out.
const rootTest = isRoot ? test.serial : test.skip;
const log = pino({ level: process.env.KNET_TEST_LOG ?? 'silent' });
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS; // makes every node start ~50 ms slower

const SERVER = `
import net from 'node:net'; import dgram from 'node:dgram';
const [id, ...ports] = process.argv.slice(2);
for (const p of ports.map(Number)) {
  net.createServer((s) => { s.on('error', () => {}); s.end(id + ' ' + s.remoteAddress.replace('::ffff:', '') + '\\n'); }).listen(p, '0.0.0.0');
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(id + ' ' + r.address, r.port, r.address));
  u.bind(p, '0.0.0.0');
}
process.stdout.write('ready\\n');
`;

// client.mjs tcp|udp HOST PORT COUNT [SRCPORT] [TIMEOUTMS] -> JSON list of "id src" or "ERR code"
const CLIENT = `
import net from 'node:net'; import dgram from 'node:dgram';
const [mode, host, port, count, src, tmo] = process.argv.slice(2);
const timeout = Number(tmo || 4000);
const tcp = () => new Promise((res) => {
  let data = ''; const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); res('ERR ETIMEDOUT'); }, timeout);
  s.on('data', (d) => { data += d; }); s.on('end', () => { clearTimeout(t); res(data.trim()); });
  s.on('error', (e) => { clearTimeout(t); res('ERR ' + e.code); });
});
const udp = () => new Promise((res) => {
  const s = dgram.createSocket('udp4');
  const t = setTimeout(() => { s.close(); res('ERR ETIMEDOUT'); }, timeout);
  s.on('message', (m) => { clearTimeout(t); s.close(); res(String(m)); });
  s.on('error', (e) => { clearTimeout(t); res('ERR ' + e.code); });
  s.bind(Number(src || 0), () => s.send('ping', Number(port), host));
});
if (mode === 'loop') {
  // New TCP connections back to back until SIGTERM; then the tally.
  // Timeouts are generous because the test machine may be loaded; slow ones are counted apart.
  const tally = { ok: 0, fail: 0, slow: 0, errors: [] }; let stop = false;
  process.on('SIGTERM', () => { stop = true; });
  while (!stop) {
    const t0 = Date.now();
    const r = await tcp();
    if (Date.now() - t0 > 900) tally.slow++;
    if (r.startsWith('ERR')) { tally.fail++; if (tally.errors.length < 20) tally.errors.push(Date.now() + ' ' + r); } else tally.ok++;
    await new Promise((res) => setTimeout(res, 5));
  }
  process.stdout.write(JSON.stringify(tally));
} else if (mode === 'http') {
  const r = await fetch('http://' + host + ':' + port + count);
  process.stdout.write(JSON.stringify([String(r.status), await r.text()]));
} else {
  const out = [];
  for (let i = 0; i < Number(count); i++) out.push(await (mode === 'udp' ? udp() : tcp()));
  process.stdout.write(JSON.stringify(out));
}
`;

interface Topo {
  node: string;
  outside: string;
  client: string;
  backends: string[];
  dir: string;
  manifests: string;
}

const BACKEND_IPS = ['10.244.1.11', '10.244.1.12', '10.244.1.13'];
const CLIENT_IP = '10.244.2.21';

/** Node, three backend pods, a client pod and an outside client, wired as a kubelet+CNI would. */
async function topology(t: ExecutionContext, mode?: Mode): Promise<Topo> {
  // Each mode's tests in namespaces of their own prefix (nftables: knt-n).
  const prefix = mode === 'nftables' ? 'knt-n' : 'knt-p';
  const [node, outside, client, ...backends] = await Promise.all([0, 1, 2, 3, 4, 5].map(() => testNetns(t, prefix)));
  const dir = mkdtempSync(join(tmpdir(), 'knt-p-e2e-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const manifests = join(dir, 'manifests');
  await run('mkdir', [manifests]);
  writeFileSync(join(dir, 'server.mjs'), SERVER);
  writeFileSync(join(dir, 'client.mjs'), CLIENT);
  const nodeCmds = [
    'link add br0 type bridge', 'addr add 10.244.1.1/24 dev br0', 'link set br0 up',
    'link add br1 type bridge', 'addr add 10.244.2.1/24 dev br1', 'link set br1 up',
    `link add eth0 type veth peer name eth0 netns ${outside}`, 'addr add 192.168.77.2/24 dev eth0', 'link set eth0 up',
    // Like a real node: unknown destinations leave towards the outside network.
    'route add default via 192.168.77.1',
  ];
  backends.forEach((b, i) => nodeCmds.push(`link add vb${i} type veth peer name eth0 netns ${b}`, `link set vb${i} master br0 up`));
  nodeCmds.push(`link add vc0 type veth peer name eth0 netns ${client}`, 'link set vc0 master br1 up');
  await ipBatch(node, nodeCmds);
  await ipBatch(outside, ['addr add 192.168.77.1/24 dev eth0', 'link set eth0 up', 'route add 192.168.88.0/24 via 192.168.77.2', 'route add 10.244.0.0/16 via 192.168.77.2']);
  await ipBatch(client, [`addr add ${CLIENT_IP}/24 dev eth0`, 'link set eth0 up', 'route add default via 10.244.2.1']);
  await Promise.all(backends.map((b, i) => ipBatch(b, [`addr add ${BACKEND_IPS[i]}/24 dev eth0`, 'link set eth0 up', 'route add default via 10.244.1.1'])));
  await inNetns(node, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.route_localnet=1']);
  // Echo servers (TCP and UDP on 8080 and 5353) in every backend pod; killed with their namespace.
  await Promise.all(backends.map((b, i) => new Promise<void>((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', b, process.execPath, join(dir, 'server.mjs'), `pod${i + 1}`, '8080', '5353'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => { p.kill('SIGKILL'); });
    p.stdout.once('data', () => resolve());
    p.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  })));
  return { node, outside, client, backends, dir, manifests };
}

async function probe(topo: Topo, from: string, mode: 'tcp' | 'udp', host: string, port: number, count = 1, o: { src?: number; timeoutMs?: number } = {}): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'exec', from, process.execPath, join(topo.dir, 'client.mjs'), mode, host, String(port), String(count), String(o.src ?? 0), String(o.timeoutMs ?? 4000)], { env });
  return JSON.parse(stdout) as string[];
}

const ids = (replies: string[]) => new Set(replies.map((r) => r.split(' ')[0]!));

interface Proxy { daemon: ProxyDaemon; write(objects: unknown[]): Promise<void> }

async function startProxy(t: ExecutionContext, topo: Topo, mode: Mode, objects: unknown[]): Promise<Proxy> {
  let n = 0;
  const writeFile = (objs: unknown[]) => {
    const tmp = join(topo.dir, `.m${n++}.json`);
    writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }));
    renameSync(tmp, join(topo.manifests, 'cluster.json'));
  };
  writeFile(objects);
  const cfg = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n';
  const settings = proxySettingsFromConfig(cfg, { nodeName: 'node1', nodeIPs: ['192.168.77.2'], mode: mode === 'nftables' ? 'nftables' : 'iptables' });
  const applier = mode === 'nftables'
    ? new NftablesApplier({ nft: kernelNft({ netns: topo.node }), netns: topo.node, settings: [{ ...settings, interfaceAddresses: [{ iface: 'eth0', cidr: '192.168.77.2/24' }] }], log })
    : new IptablesApplier({ iptables: kernelIptables({ backend: mode, netns: topo.node, waitSeconds: 5 }), netns: topo.node, settings, log });
  const daemon = new ProxyDaemon({ source: new ManifestDirSource({ dir: topo.manifests, pollMs: 60_000, debounceMs: 5 }), dataplane: applier, log, minSyncPeriodMs: 0, syncPeriodMs: 30_000 });
  t.teardown(() => daemon.stop());
  const first = daemon.nextSync();
  await daemon.start();
  await first;
  return {
    daemon,
    async write(objs) {
      const s = daemon.nextSync();
      writeFile(objs);
      await s;
    },
  };
}

const NODE = 'node1';
const webSvc = (extra: Record<string, unknown> = {}) => makeService('default', 'web', { clusterIP: '172.30.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }, { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }], ...extra });
const webSlice = (n: number) => makeSlice('default', 'web', BACKEND_IPS.slice(0, n), [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }], { nodeName: NODE });

const services = (o: { lbRanges?: string[]; affinity?: boolean; n?: number } = {}) => [
  webSvc(),
  webSlice(o.n ?? 3),
  makeService('default', 'np', { type: 'NodePort', clusterIP: '172.30.0.20', externalIPs: ['192.168.88.100'], ports: [{ port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }] }),
  makeSlice('default', 'np', BACKEND_IPS, [{ port: 8080 }], { nodeName: NODE }),
  makeService('default', 'local', { type: 'NodePort', clusterIP: '172.30.0.30', externalTrafficPolicy: 'Local', ports: [{ port: 80, targetPort: 8080, nodePort: 30081, protocol: 'TCP' }] }),
  makeSlice('default', 'local', BACKEND_IPS.slice(0, 1), [{ port: 8080 }], { nodeName: NODE }),
  makeService('default', 'lb', { type: 'LoadBalancer', clusterIP: '172.30.0.40', loadBalancerSourceRanges: o.lbRanges ?? ['192.168.77.1/32'], ports: [{ port: 80, targetPort: 8080, nodePort: 30082, protocol: 'TCP' }] },
    { status: { loadBalancer: { ingress: [{ ip: '192.168.88.200' }] } } }),
  makeSlice('default', 'lb', BACKEND_IPS, [{ port: 8080 }], { nodeName: NODE }),
  makeService('default', 'sticky', { clusterIP: '172.30.0.50', sessionAffinity: o.affinity === false ? 'None' : 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 1 } }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] }),
  makeSlice('default', 'sticky', BACKEND_IPS, [{ port: 8080 }], { nodeName: NODE }),
  // Invalid: skipped with a warning, the rest still syncs.
  makeService('default', 'broken', { clusterIP: '172.30.0.60', ports: [{ port: 99999, protocol: 'TCP' }] }),
];

for (const mode of MODES) {
  rootTest(`${mode}: ClusterIP, NodePort, externalIPs, LB source ranges, affinity, scaling, Local policy, UDP continuity`, async (t) => {
    t.timeout(180_000);
    const topo = await topology(t, mode);
    const proxy = await startProxy(t, topo, mode, services());
    const { outside, client } = topo;

    // ClusterIP over TCP and UDP from a pod; spread over backends.
    const tcp = await probe(topo, client, 'tcp', '172.30.0.10', 80, 12);
    t.true(tcp.every((r) => /^pod\d /.test(r)), tcp.join());
    t.true(ids(tcp).size >= 2, `one backend only: ${tcp.join()}`);
    // Pod-to-service traffic from inside the cluster CIDR keeps its source.
    t.true(tcp.every((r) => r.endsWith(` ${CLIENT_IP}`)));
    const udp = await probe(topo, client, 'udp', '172.30.0.10', 53, 3);
    t.true(udp.every((r) => /^pod\d /.test(r)), udp.join());

    // NodePort and externalIPs from outside.
    t.regex((await probe(topo, outside, 'tcp', '192.168.77.2', 30080))[0]!, /^pod\d /);
    t.regex((await probe(topo, outside, 'tcp', '192.168.88.100', 80))[0]!, /^pod\d /);

    // externalTrafficPolicy Local keeps the client IP; Cluster masquerades it.
    t.deepEqual(await probe(topo, outside, 'tcp', '192.168.77.2', 30081), ['pod1 192.168.77.1']);
    t.notRegex((await probe(topo, outside, 'tcp', '192.168.77.2', 30080))[0]!, / 192\.168\.77\.1$/);

    // LoadBalancer source ranges: allowed, then denied.
    t.regex((await probe(topo, outside, 'tcp', '192.168.88.200', 80))[0]!, /^pod\d /);
    await proxy.write(services({ lbRanges: ['10.99.0.0/16'] }));
    t.deepEqual(await probe(topo, outside, 'tcp', '192.168.88.200', 80, 1, { timeoutMs: 700 }), ['ERR ETIMEDOUT']);
    await proxy.write(services());

    // ClientIP affinity sticks, then expires (timeoutSeconds 1): a later connection may pick
    // another backend. Random choice: up to 8 expiry rounds, each 1/3 likely to repeat.
    const sticky = await probe(topo, client, 'tcp', '172.30.0.50', 80, 8);
    t.is(ids(sticky).size, 1, sticky.join());
    const first = [...ids(sticky)][0];
    let moved = false;
    for (let i = 0; i < 8 && !moved; i++) {
      await new Promise((r) => setTimeout(r, 2100));
      moved = [...ids(await probe(topo, client, 'tcp', '172.30.0.50', 80))][0] !== first;
    }
    t.true(moved, 'affinity never expired');

    // Endpoints 3 -> 1 -> 0 -> 3.
    await proxy.write(services({ n: 1 }));
    t.deepEqual([...ids(await probe(topo, client, 'tcp', '172.30.0.10', 80, 6))], ['pod1']);
    await proxy.write(services({ n: 0 }));
    t.deepEqual(await probe(topo, client, 'tcp', '172.30.0.10', 80), ['ERR ECONNREFUSED']);
    await proxy.write(services({ n: 3 }));
    t.true(ids(await probe(topo, client, 'tcp', '172.30.0.10', 80, 12)).size >= 2);

    // UDP: a client that keeps its source port keeps reaching the service after its backend is
    // replaced (pod2 goes away; without the conntrack clean-up its flow stays DNATed to pod2).
    const one = (ip: string) => [webSvc(), makeSlice('default', 'web', [ip], [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }], { nodeName: NODE })];
    await proxy.write(one(BACKEND_IPS[1]!));
    t.deepEqual(await probe(topo, client, 'udp', '172.30.0.10', 53, 2, { src: 40053 }), [`pod2 ${CLIENT_IP}`, `pod2 ${CLIENT_IP}`]);
    await ipBatch(topo.backends[1]!, ['link set eth0 down']);
    await proxy.write(one(BACKEND_IPS[2]!));
    t.deepEqual(await probe(topo, client, 'udp', '172.30.0.10', 53, 1, { src: 40053 }), [`pod3 ${CLIENT_IP}`]);

    // The invalid Service did not stop the rest, and the proxy is healthy.
    t.true(proxy.daemon.health.status().healthy);
  });
}

/** `knet proxy` as its own process inside the node namespace. */
function spawnProxy(t: ExecutionContext, topo: Topo, mode: Mode, extra: string[] = []): { p: ChildProcess; synced: Promise<void>; exited: Promise<number | null>; partialSyncs: () => number } {
  const args = ['netns', 'exec', topo.node, process.execPath, '--import', 'tsx', join(process.cwd(), 'src/cli/proxy-main.ts'), 'proxy',
    '--manifests', topo.manifests, '--config', join(topo.dir, 'kube-proxy.yaml'),
    ...(mode === 'nftables' ? ['--proxy-mode', 'nftables'] : ['--proxy-mode', 'iptables', '--iptables-backend', mode]), '--node-ip', '192.168.77.2',
    '--hostname-override', NODE, '--healthz-bind-address', '127.0.0.1:10256', '--metrics-bind-address', '127.0.0.1:10249', ...extra];
  const p = spawn('ip', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => { p.kill('SIGKILL'); });
  let partial = '';
  let tail = '';
  let partialSyncs = 0;
  const synced = new Promise<void>((resolve) => {
    p.stderr!.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.includes('"msg":"synced"')) { if (line.includes('"full":false')) partialSyncs++; resolve(); }
      tail = (tail + d.toString()).slice(-2000);
    });
  });
  const exited = new Promise<number | null>((r) => p.once('exit', (c, sig) => { if (c !== 0 && process.env.KNT_DEBUG) console.log('proxy exit', c, sig, tail); r(c); }));
  return { p, synced, exited, partialSyncs: () => partialSyncs };
}

for (const mode of MODES) {
  rootTest(`${mode}: continuity: new TCP connections never fail while endpoints churn 100 times and knet proxy restarts 5 times`, async (t) => {
    t.timeout(180_000);
    const topo = await topology(t, mode);
    writeFileSync(join(topo.dir, 'kube-proxy.yaml'), 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n' +
      'iptables:\n  minSyncPeriod: 100ms\n  syncPeriod: 30s\nnftables:\n  minSyncPeriod: 100ms\n  syncPeriod: 30s\n');
    // pod1 stays ready throughout; pod2 and pod3 come and go (their servers keep running, so
    // any failed connection is the proxy's fault).
    const variants = [[0], [0, 1], [0, 1, 2], [0, 2]];
    const write = (i: number) => {
      const eps = variants[i % variants.length]!.map((k) => BACKEND_IPS[k]!);
      const tmp = join(topo.dir, `.c${i}.json`);
      writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [webSvc(), makeSlice('default', 'web', eps, [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }], { nodeName: NODE })] }));
      renameSync(tmp, join(topo.manifests, 'cluster.json'));
    };
    write(2);
    // Every file is renamed into place whole, so the proxy reads it at once: each churn reaches
    // the kernel (with the default 500 ms settle, writes 80 ms apart would arrive as one).
    const spawnChurned = () => spawnProxy(t, topo, mode, ['--manifests-settle', '0s']);
    // Who commits to the table: by default the proxy sends partial syncs as netlink batches
    // itself (the kernel names the committing process: node), full syncs through nft.
    let committers = '';
    if (mode === 'nftables') {
      const monitor = spawn('ip', ['netns', 'exec', topo.node, NFT, 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] });
      t.teardown(() => { monitor.kill('SIGKILL'); });
      monitor.stdout.on('data', (d: Buffer) => { committers += d.toString().split('\n').filter((l) => l.startsWith('# new generation')).join('\n') + '\n'; });
    }
    let proxy = spawnChurned();
    let partialBefore = 0;
    await proxy.synced;
    const loop = spawn('ip', ['netns', 'exec', topo.client, process.execPath, join(topo.dir, 'client.mjs'), 'loop', '172.30.0.10', '80', '0'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => { loop.kill('SIGKILL'); });
    let out = '';
    loop.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    // 'close', not 'exit': the tally may arrive after the process has exited.
    const loopDone = new Promise((r) => loop.once('close', r));
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 100; i++) {
      write(i);
      if (i % 20 === 10) {
        // Restart a proxy that is up (SIGTERM before node installed its handlers would just kill it).
        await proxy.synced;
        proxy.p.kill('SIGTERM');
        t.is(await proxy.exited, 0);
        partialBefore += proxy.partialSyncs();
        proxy = spawnChurned();
      }
      await new Promise((r) => setTimeout(r, 80));
    }
    // Final state: pod1 only (variant 99 % 4 = 3 -> [0, 2]; write one more).
    write(100);
    await proxy.synced;
    for (let i = 0; i < 100 && /10\.244\.1\.1[23]:8080/.test(await natRules(mode, topo.node)); i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 300));
    // kill(1) inside the namespace: the client is `ip netns exec` -> exec'd node, same pid.
    loop.kill('SIGTERM');
    await loopDone;
    const tally = JSON.parse(out) as { ok: number; fail: number; slow: number; errors: string[] };
    t.log(`connections: ${tally.ok} ok, ${tally.fail} failed, ${tally.slow} slower than 900 ms`);
    t.is(tally.fail, 0, tally.errors.join('; '));
    t.true(tally.ok > 200, `only ${tally.ok} connections`);
    t.notRegex(await natRules(mode, topo.node), /10\.244\.1\.1[23]:8080/);

    // Health and metrics of the running process, with kube-proxy's names.
    const [code, body] = await probe(topo, topo.node, 'http' as 'tcp', '127.0.0.1', 10256, '/healthz' as unknown as number);
    t.is(code, '200');
    t.true((JSON.parse(body!) as { nodeEligible: boolean }).nodeEligible);
    const [, metrics] = await probe(topo, topo.node, 'http' as 'tcp', '127.0.0.1', 10249, '/metrics' as unknown as number);
    t.regex(metrics!, /^kubeproxy_sync_proxy_rules_last_timestamp_seconds [1-9]/m);
    if (mode === 'nftables') t.regex(metrics!, /^kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0$/m);
    else t.regex(metrics!, /^kubeproxy_sync_proxy_rules_iptables_total\{table="nat"\} [1-9]/m);
    t.regex(metrics!, /^kubeproxy_sync_full_proxy_rules_duration_seconds_count 1$/m);
    // The churn reached the kernel as partial syncs of its own (with the default settle time the
    // six proxies would have made about one, at the end; quiet, 39-55; under CI's load, 6-7).
    const partial = partialBefore + proxy.partialSyncs();
    t.log(`partial syncs: ${partial}`);
    t.true(partial >= 3, `${partial} partial syncs`);
    if (mode === 'nftables') {
      t.regex(committers, /by process \d+ \(node\)/, 'no partial sync went as a netlink batch');
      t.regex(committers, /by process \d+ \(nft\)/, 'no full sync went through nft');
    }

    // `knet proxy --cleanup` removes everything, in every mode and backend.
    proxy.p.kill('SIGTERM');
    await proxy.exited;
    const cleanup = spawnProxy(t, topo, mode, ['--cleanup']);
    t.is(await cleanup.exited, 0);
    for (const backend of ['nft', 'legacy'] as IptablesBackend[]) t.notRegex(await iptablesSave({ backend, netns: topo.node }), /KUBE-(SERVICES|SVC|SEP|POSTROUTING)/);
    t.is(await nftListTable({ netns: topo.node }, 'ip', 'kube-proxy'), null);
  });
}

rootTest('switching modes is clean: iptables to nftables removes the iptables rules, and back removes the nftables table', async (t) => {
  t.timeout(120_000);
  const topo = await topology(t, 'nftables');
  writeFileSync(join(topo.dir, 'kube-proxy.yaml'), 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n');
  writeFileSync(join(topo.manifests, 'cluster.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: services() }));
  const kube = (s: string) => /KUBE-(SERVICES|SVC|SEP|POSTROUTING)/.test(s);
  const runMode = async (mode: Mode) => {
    const p = spawnProxy(t, topo, mode);
    await p.synced;
    t.regex((await probe(topo, topo.client, 'tcp', '172.30.0.10', 80))[0]!, /^pod\d /, `${mode} serves`);
    p.p.kill('SIGTERM');
    t.is(await p.exited, 0);
  };
  await runMode('nft');
  t.true(kube(await iptablesSave({ backend: 'nft', netns: topo.node })));
  await runMode('nftables');
  t.false(kube(await iptablesSave({ backend: 'nft', netns: topo.node })), 'iptables rules left behind');
  t.truthy(await nftListTable({ netns: topo.node }, 'ip', 'kube-proxy'));
  await runMode('nft');
  t.is(await nftListTable({ netns: topo.node }, 'ip', 'kube-proxy'), null, 'nftables table left behind');
});
