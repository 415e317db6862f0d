// knet proxy in userspace mode, end to end in namespaces this test creates: a node namespace
// running the proxy process (its listeners plus the portal rules that steer traffic to them),
// a backend namespace holding three "pods" (one address each, plus one address nothing listens
// on) and a client namespace holding several pod addresses. Real TCP and UDP throughout.
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { makeService, makeSlice } from '../helpers/fake-apiserver.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { iptablesSave, kernelIptables, type IptablesBackend } from '../../src/kernel/iptables.ts';
import { cleanupPortals } from '../../src/proxy/userspace/dataplane.ts';
import { waitFor } from '../../src/util/wait.ts';
import { childPids, pidRunning } from '../helpers/process.ts';

const rootTest = isRoot ? test : test.skip;
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS; // makes every node start ~50 ms slower

const PODS = ['10.244.1.11', '10.244.1.12', '10.244.1.13'];
const REFUSING = '10.244.1.14';
const CLIENTS = ['10.244.2.21', '10.244.2.22', '10.244.2.23', '10.244.2.24', '10.244.2.25', '10.244.2.26'];
const NODE_IP = '192.168.77.2';

// Ports: 8080 says who it is and closes; 8081 echoes; 8082 hashes what it gets until the
// client's FIN, then answers the digest (needs half-close); 8083 sends without end, honouring
// back-pressure; 8084 sends 64 MiB of a seeded pseudo-random stream, then ends; UDP 5353
// answers who it is.
// The 1 MiB blocks of 8084's stream (xorshift32, continuing from block to block).
const STREAM = `
let x = 2463534242;
const streamBlock = () => { const b = Buffer.allocUnsafe(1 << 20); for (let i = 0; i < b.length; i += 4) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; b.writeUInt32LE(x >>> 0, i); } return b; };
`;

const SERVER = `
import net from 'node:net'; import dgram from 'node:dgram'; import { createHash } from 'node:crypto';
const ips = process.argv.slice(2);
${STREAM}
const blocks = Array.from({ length: 64 }, streamBlock);
const chunk = Buffer.alloc(65536, 7);
ips.forEach((ip, i) => {
  const id = 'pod' + (i + 1);
  const srv = (port, fn) => net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); fn(s); }).listen(port, ip);
  srv(8080, (s) => s.end(id + ' ' + s.remoteAddress + '\\n'));
  srv(8081, (s) => s.pipe(s));
  srv(8082, (s) => { const h = createHash('sha256'); s.on('data', (d) => h.update(d)); s.on('end', () => s.end(h.digest('hex'))); });
  srv(8083, (s) => { const pump = () => { while (!s.destroyed && s.write(chunk)); }; s.on('drain', pump); pump(); });
  srv(8084, (s) => { let i = 0; const pump = () => { while (i < blocks.length) if (!s.write(blocks[i++])) return; s.end(); }; s.on('drain', pump); pump(); });
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(id + ' ' + r.address, r.port, r.address));
  u.bind(5353, ip);
});
setTimeout(() => process.stdout.write('ready\\n'), 200);
`;

const CLIENT = `
import net from 'node:net'; import dgram from 'node:dgram'; import { createHash, randomBytes } from 'node:crypto';
const [mode, host, portS, arg, src] = process.argv.slice(2);
${STREAM}
const port = Number(portS);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const who = (localAddress) => new Promise((res) => {
  let data = ''; const s = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
  const t = setTimeout(() => { s.destroy(); res('ERR ETIMEDOUT'); }, 5000);
  s.on('data', (d) => { data += d; }); s.on('end', () => { clearTimeout(t); res(data.trim() || 'ERR EMPTY'); });
  s.on('error', (e) => { clearTimeout(t); res('ERR ' + e.code); });
});
if (mode === 'seq') {
  const r = []; const srcs = src ? src.split(',') : [undefined];
  for (let i = 0; i < Number(arg); i++) r.push(await who(srcs[i % srcs.length]));
  out(r);
} else if (mode === 'loop') {
  const tally = { ok: 0, fail: 0, errors: [] }; let stop = false;
  process.on('SIGTERM', () => { stop = true; });
  while (!stop) {
    const r = await who();
    if (r.startsWith('ERR')) { tally.fail++; if (tally.errors.length < 20) tally.errors.push(r); } else tally.ok++;
    await sleep(5);
  }
  out(tally);
} else if (mode === 'hold') {
  // One connection kept for arg ms, echoing a ping every 50 ms.
  const s = net.connect({ host, port }); let ok = 0; let fail = 0; let buf = '';
  s.on('error', () => { fail++; });
  await new Promise((r) => s.once('connect', r));
  process.stdout.write('connected\\n');
  const end = Date.now() + Number(arg);
  while (Date.now() < end && !s.destroyed) {
    const want = 'ping' + ok + '\\n';
    s.write(want);
    const got = await new Promise((r) => { const t = setTimeout(() => r(false), 1000); s.once('data', (d) => { clearTimeout(t); buf = String(d); r(buf === want); }); });
    if (got) ok++; else fail++;
    await sleep(50);
  }
  s.destroy();
  out({ ok, fail });
} else if (mode === 'bulk') {
  // arg MiB up, then FIN; the server answers the digest only after our FIN.
  const s = net.connect({ host, port, allowHalfOpen: true }); const h = createHash('sha256');
  const block = randomBytes(1 << 20); let reply = ''; const t0 = Date.now();
  s.on('data', (d) => { reply += d; });
  const ended = new Promise((r) => s.on('end', r));
  await new Promise((r) => s.once('connect', r));
  for (let i = 0; i < Number(arg); i++) {
    block.writeUInt32BE(i, 0); const b = Buffer.from(block); h.update(b);
    if (!s.write(b)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await ended;
  out({ sent: h.digest('hex'), got: reply, secs: (Date.now() - t0) / 1000 });
} else if (mode === 'download') {
  // All of 8084's stream, pausing arg ms after every 4 MiB (so the proxy's writes back up).
  const s = net.connect({ host, port }); const h = createHash('sha256'); let n = 0; let next = 4 << 20;
  s.on('data', (d) => { h.update(d); n += d.length; if (n >= next) { next += 4 << 20; s.pause(); setTimeout(() => s.resume(), Number(arg)); } });
  await new Promise((r) => s.on('end', r));
  const want = createHash('sha256'); for (let i = 0; i < 64; i++) want.update(streamBlock());
  out({ bytes: n, same: h.digest('hex') === want.digest('hex') });
} else if (mode === 'many') {
  // arg concurrent echo connections, all open at once; 'held' when every one echoed.
  const n = Number(arg); const socks = [];
  const one = (i) => new Promise((res) => {
    const s = net.connect({ host, port }); socks.push(s);
    s.on('error', () => res(false));
    s.on('connect', () => s.write('c' + i + '\\n'));
    s.once('data', (d) => res(String(d) === 'c' + i + '\\n'));
  });
  const results = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  process.stdout.write('held\\n');
  await sleep(Number(src));
  out({ ok: results.filter(Boolean).length, open: socks.filter((s) => !s.destroyed).length });
  socks.forEach((s) => s.destroy());
} else if (mode === 'stall') {
  // Connects and never reads (a paused socket); the test watches the proxy give up on it.
  const s = net.connect({ host, port }); s.pause(); s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  process.stdout.write('stalled\\n');
  await sleep(Number(arg));
  s.destroy();
  out({});
} else if (mode === 'udp') {
  const r = [];
  for (let i = 0; i < Number(arg); i++) {
    r.push(await new Promise((res) => {
      const s = dgram.createSocket('udp4');
      const t = setTimeout(() => { s.close(); res('ERR ETIMEDOUT'); }, 1500);
      s.on('message', (m, from) => { clearTimeout(t); s.close(); res(String(m) + '|' + from.address + ':' + from.port); });
      s.bind(Number(src || 0), () => s.send('ping', port, host));
    }));
  }
  out(r);
}
`;

interface Topo { node: string; backend: string; client: string; dir: string; manifests: string }

async function topology(t: ExecutionContext): Promise<Topo> {
  const [node, backend, client] = await Promise.all([0, 1, 2].map(() => testNetns(t, 'knt-u')));
  const dir = mkdtempSync(join(tmpdir(), 'knt-u-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const manifests = join(dir, 'manifests');
  await run('mkdir', [manifests]);
  writeFileSync(join(dir, 'server.mjs'), SERVER);
  writeFileSync(join(dir, 'client.mjs'), CLIENT);
  await ipBatch(node, [
    // The node's own NIC (no dummy module here): a veth pair whose peer stays unused.
    'link add eth0 type veth peer name eth0p', `addr add ${NODE_IP}/24 dev eth0`, 'link set eth0p up', 'link set eth0 up',
    'route add default via 192.168.77.1', // like a real node: service VIPs need a route to be sent at all
    `link add vb type veth peer name eth0 netns ${backend}`, 'addr add 10.244.1.1/24 dev vb', 'link set vb up',
    `link add vc type veth peer name eth0 netns ${client}`, 'addr add 10.244.2.1/24 dev vc', 'link set vc up',
  ]);
  await ipBatch(backend, [...[...PODS, REFUSING].map((ip) => `addr add ${ip}/24 dev eth0`), 'link set eth0 up', 'route add default via 10.244.1.1']);
  await ipBatch(client, [...CLIENTS.map((ip) => `addr add ${ip}/24 dev eth0`), 'link set eth0 up', 'route add default via 10.244.2.1']);
  await run('ip', ['netns', 'exec', node, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await new Promise<void>((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', backend, process.execPath, join(dir, 'server.mjs'), ...PODS], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => { p.kill('SIGKILL'); });
    p.stdout.once('data', () => resolve());
    p.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  return { node, backend, client, dir, manifests };
}

/** Runs the client in a namespace; every line it prints but the last goes to onLine. */
function client(topo: Topo, ns: string, args: Array<string | number>, onLine?: (l: string) => void): { p: ChildProcess; result: Promise<unknown> } {
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, join(topo.dir, 'client.mjs'), ...args.map(String)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    let i;
    while ((i = out.indexOf('\n')) >= 0 && !out.slice(0, i).startsWith('{') && !out.slice(0, i).startsWith('[')) {
      onLine?.(out.slice(0, i));
      out = out.slice(i + 1);
    }
  });
  // 'close', not 'exit': the last of stdout may arrive after the process has exited.
  const result = new Promise((resolve, reject) => p.once('close', (c) => {
    try { resolve(JSON.parse(out)); } catch { reject(new Error(`client ${args.join(' ')} exited ${c}: ${out}`)); }
  }));
  return { p, result };
}

const call = async <T>(topo: Topo, ns: string, args: Array<string | number>) => (await client(topo, ns, args).result) as T;

interface Proxy { p: ChildProcess; write(objs: unknown[]): Promise<void>; metrics(): Promise<string>; rssKiB(): number }

async function startProxy(t: ExecutionContext, topo: Topo, backend: IptablesBackend, objs: unknown[], extra: string[] = []): Promise<Proxy> {
  let n = 0;
  const writeFile = (o: unknown[]) => {
    const tmp = join(topo.dir, `.m${n++}.json`);
    writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: o }));
    renameSync(tmp, join(topo.manifests, 'cluster.json'));
  };
  writeFile(objs);
  const p = spawn('ip', ['netns', 'exec', topo.node, process.execPath, '--import', 'tsx', join(process.cwd(), 'src/proxy/userspace/main.ts'),
    '--manifests', topo.manifests, '--node-ip', NODE_IP, '--backend', backend, '--metrics', '127.0.0.1:10249', ...extra], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => { p.kill('SIGKILL'); });
  let syncs = 0;
  let log = '';
  const waiters: Array<() => void> = [];
  p.stderr!.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-20_000);
    const k = log.split('"msg":"synced"').length - 1;
    if (k > 0) { syncs += k; log = log.slice(log.lastIndexOf('"msg":"synced"') + 10); for (const w of waiters.splice(0)) w(); }
  });
  p.once('exit', (c) => { if (c && process.env.KNT_DEBUG) console.log('proxy exited', c, log); });
  const nextSync = () => new Promise<void>((r) => waiters.push(r));
  if (syncs === 0) await nextSync();
  return {
    p,
    async write(o) { const s = nextSync(); writeFile(o); await s; },
    async metrics() { return (await run('ip', ['netns', 'exec', topo.node, 'curl', '-sf', 'http://127.0.0.1:10249/metrics'])).stdout; },
    rssKiB() { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))![1]); },
  };
}

const metric = (text: string, name: string, labels: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((x) => l.includes(x)));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
};

const NODE = 'node1';
const tcpPorts = [{ name: 'who', port: 8080 }, { name: 'echo', port: 8081 }, { name: 'sink', port: 8082 }, { name: 'source', port: 8083 }, { name: 'stream', port: 8084 }];
const svc = (name: string, ip: string, extra: Record<string, unknown> = {}, status: Record<string, unknown> = {}) => makeService('default', name, {
  clusterIP: ip,
  ports: [...tcpPorts.map((p, i) => ({ name: p.name, port: 80 + i, targetPort: p.port, protocol: 'TCP' })), { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }],
  ...extra,
}, status);
const slice = (name: string, ips: string[]) => makeSlice('default', name, ips, [...tcpPorts, { name: 'dns', port: 5353, protocol: 'UDP' }], { nodeName: NODE });
const ids = (rs: string[]) => rs.map((r) => r.split(' ')[0]!);
const tally = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

const cluster = () => [
  svc('web', '172.30.0.10', { type: 'NodePort', externalIPs: ['192.168.88.100'], ports: [{ name: 'who', port: 80, targetPort: 8080, nodePort: 30080, protocol: 'TCP' }, { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' }] }),
  slice('web', PODS),
  svc('sticky', '172.30.0.11', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 1 } } }),
  slice('sticky', PODS),
  svc('lb', '172.30.0.12', { type: 'LoadBalancer', ports: [{ name: 'who', port: 80, targetPort: 8080, nodePort: 30081, protocol: 'TCP' }] }, { status: { loadBalancer: { ingress: [{ ip: '192.168.88.200' }] } } }),
  slice('lb', PODS),
  svc('flaky', '172.30.0.13'),
  slice('flaky', [PODS[0]!, REFUSING]),
  svc('empty', '172.30.0.14'),
  svc('dead', '172.30.0.15'),
  slice('dead', [REFUSING]),
];

// The data path in a forwarder process (the default) and in the proxy process itself (on Node).
for (const [path, workers] of [['forwarder', '1'], ['in-process', '0']] as const) {
  rootTest(`nft, ${path}: TCP and UDP from pods and the node, round robin, affinity, node ports, external and LB IPs, refusing endpoint, metrics`, async (t) => {
    t.timeout(120_000);
    const topo = await topology(t);
    // A UDP idle timeout of 2 s (not kube-proxy's 250 ms): the flow must still be there when the
    // metrics are scraped right after its last datagram, which took over 1 s on a loaded machine.
    const proxy = await startProxy(t, topo, 'nft', cluster(), ['--max-udp-flows', '4', '--udp-idle-ms', '2000', '--workers', workers]);
    const { client: pod, node } = topo;

    // Warm-up: neighbour entries and first-use costs of a freshly built topology are not what
    // is under test (on a loaded machine they have cost a first connection its 3 s budget).
    await call<string[]>(topo, pod, ['seq', '172.30.0.10', 80, 3]);
    // Round robin from one pod: exactly even.
    const rr = await call<string[]>(topo, pod, ['seq', '172.30.0.10', 80, 30]);
    t.deepEqual([...tally(ids(rr))].sort(), [['pod1', 10], ['pod2', 10], ['pod3', 10]], JSON.stringify(rr));
    // From the node itself (KUBE-PORTALS-HOST).
    t.true(ids(await call<string[]>(topo, node, ['seq', '172.30.0.10', 80, 3])).every((x) => /^pod\d$/.test(x)));
    // Node port from a pod and from the node; external IP and LB IP from a pod.
    t.regex((await call<string[]>(topo, pod, ['seq', '10.244.2.1', 30080, 1]))[0]!, /^pod\d /);
    t.regex((await call<string[]>(topo, node, ['seq', NODE_IP, 30080, 1]))[0]!, /^pod\d /);
    t.regex((await call<string[]>(topo, pod, ['seq', '192.168.88.100', 80, 1]))[0]!, /^pod\d /);
    t.regex((await call<string[]>(topo, pod, ['seq', '192.168.88.200', 80, 1]))[0]!, /^pod\d /);
    t.regex((await call<string[]>(topo, pod, ['seq', '10.244.2.1', 30081, 1]))[0]!, /^pod\d /);

    // UDP from a pod and from the node; replies come from the service address and port.
    for (const from of [pod, node]) {
      const u = await call<string[]>(topo, from, ['udp', '172.30.0.10', 53, 3]);
      t.true(u.every((r) => /^pod\d 10\.244\.1\.1\|172\.30\.0\.10:53$/.test(r)), u.join());
    }
    // A client that keeps its source port keeps its flow (same endpoint), within the idle timeout.
    const flow = await call<string[]>(topo, pod, ['udp', '172.30.0.10', 53, 4, 40053]);
    t.is(new Set(ids(flow)).size, 1, flow.join());
    t.true(metric(await proxy.metrics(), 'knet_userspace_udp_flows', 'service="default/web:dns"') >= 1);
    await new Promise((r) => setTimeout(r, 3500)); // udp idle timeout 2 s
    t.is(metric(await proxy.metrics(), 'knet_userspace_udp_flows', 'service="default/web:dns"'), 0);
    // Eight clients (source ports) at once against a table of four: the oldest flows are
    // evicted, every datagram is still answered.
    const burst = await call<string[]>(topo, pod, ['udp', '172.30.0.10', 53, 8]);
    t.true(burst.every((r) => /^pod\d /.test(r)), burst.join());
    const mu = await proxy.metrics();
    t.true(metric(mu, 'knet_userspace_udp_flows', 'service="default/web:dns"') <= 4);
    t.true(metric(mu, 'knet_userspace_udp_flow_evictions_total', 'service="default/web:dns"') >= 1);

    // ClientIP affinity: one client sticks; after 1 s idle it expires (the next round-robin
    // pick is another endpoint); six clients spread and each sticks.
    const one = ids(await call<string[]>(topo, pod, ['seq', '172.30.0.11', 80, 8, CLIENTS[0]!]));
    t.is(new Set(one).size, 1, one.join());
    await new Promise((r) => setTimeout(r, 1300));
    t.not(ids(await call<string[]>(topo, pod, ['seq', '172.30.0.11', 80, 1, CLIENTS[0]!]))[0], one[0]);
    const manyRaw = await call<string[]>(topo, pod, ['seq', '172.30.0.11', 80, 12, CLIENTS.join(',')]);
    const many = ids(manyRaw);
    t.is(new Set(many).size, 3, manyRaw.join());
    for (let i = 0; i < 6; i++) t.is(many[i], many[i + 6], `client ${i} moved: ${many.join()}`);

    // An endpoint that refuses connections is skipped: every connection lands on pod1.
    const flaky = ids(await call<string[]>(topo, pod, ['seq', '172.30.0.13', 80, 10]));
    t.deepEqual([...new Set(flaky)], ['pod1'], flaky.join());
    // Only a refusing endpoint: one bounded try, then the client is reset.
    t.regex((await call<string[]>(topo, pod, ['seq', '172.30.0.15', 80, 1]))[0]!, /^ERR /);
    // No endpoints: the client is reset at once.
    t.regex((await call<string[]>(topo, pod, ['seq', '172.30.0.14', 80, 1]))[0]!, /^ERR /);

    const m = await proxy.metrics();
    t.true(metric(m, 'knet_userspace_dial_failures_total', 'service="default/flaky:who"') >= 4, 'dial failures counted');
    t.true(metric(m, 'knet_userspace_connections_total', 'service="default/web:who"') >= 33);
    t.true(metric(m, 'knet_userspace_bytes_total', 'service="default/web:who",direction="to_client"') > 0);
    t.true(metric(m, 'knet_userspace_no_endpoint_total', 'service="default/empty:who"') >= 1);
    t.is(metric(m, 'knet_userspace_dial_failures_total', 'service="default/dead:who"'), 1);
    t.regex(m, /^kubeproxy_sync_proxy_rules_last_timestamp_seconds [1-9]/m);

    // The rules are knet's portal chains; removing a service closes its port and its rules.
    const nat = await iptablesSave({ backend: 'nft', netns: topo.node }, 'nat');
    t.regex(nat, /-A PREROUTING .*-j KUBE-PORTALS-CONTAINER/);
    t.regex(nat, /-A KUBE-PORTALS-HOST .*-d 172\.30\.0\.10\/32 .*-j DNAT --to-destination 192\.168\.77\.2:\d+/);
    await proxy.write(cluster().filter((o) => (o as { metadata: { name: string } }).metadata.name !== 'lb'));
    t.notRegex(await iptablesSave({ backend: 'nft', netns: topo.node }, 'nat'), /192\.168\.88\.200/);
    t.regex((await call<string[]>(topo, pod, ['seq', '172.30.0.12', 80, 1]))[0]!, /^ERR /);

    // Stops cleanly on SIGTERM; the cleanup removes every jump and chain it wrote, twice safely.
    const exited = new Promise((r) => proxy.p.once('exit', r));
    proxy.p.kill('SIGTERM');
    t.is(await exited, 0);
    const target = { backend: 'nft' as const, netns: topo.node };
    t.true(await cleanupPortals(kernelIptables(target)) > 0);
    t.is(await cleanupPortals(kernelIptables(target)), 0);
    t.notRegex(await iptablesSave(target), /KUBE-(PORTALS|NODEPORT)-/);
  });
}

rootTest('nft: traffic policies Local choose this node\'s endpoints, each for its own traffic (one endpoint policy with the iptables mode)', async (t) => {
  t.timeout(120_000);
  const topo = await topology(t);
  const who = [{ name: 'who', port: 8080 }];
  // pod1 runs on this node (node1), pod2 and pod3 on another.
  const spread = (name: string) => [
    makeSlice('default', name, [PODS[0]!], who, { name: `${name}-here`, nodeName: NODE }),
    makeSlice('default', name, [PODS[1]!, PODS[2]!], who, { name: `${name}-there`, nodeName: 'node2' }),
  ];
  const port = (nodePort?: number) => [{ name: 'who', port: 80, targetPort: 8080, protocol: 'TCP', ...(nodePort ? { nodePort } : {}) }];
  await startProxy(t, topo, 'nft', [
    makeService('default', 'itp', { clusterIP: '172.30.0.30', internalTrafficPolicy: 'Local', ports: port() }), ...spread('itp'),
    makeService('default', 'etp', { type: 'NodePort', clusterIP: '172.30.0.31', externalTrafficPolicy: 'Local', externalIPs: ['192.168.88.131'], ports: port(30131) }), ...spread('etp'),
    makeService('default', 'remote', { clusterIP: '172.30.0.32', internalTrafficPolicy: 'Local', ports: port() }),
    makeSlice('default', 'remote', [PODS[1]!], who, { nodeName: 'node2' }),
  ]);
  const pod = topo.client;
  const seen = async (host: string, p: number) => [...new Set(ids(await call<string[]>(topo, pod, ['seq', host, p, 9])))].sort();
  await call<string[]>(topo, pod, ['seq', '172.30.0.30', 80, 1]); // warm-up
  // internalTrafficPolicy Local: the cluster IP reaches only the local pod.
  t.deepEqual(await seen('172.30.0.30', 80), ['pod1']);
  // externalTrafficPolicy Local: traffic from outside (node port, external IP) stays on this
  // node; the cluster IP still reaches every endpoint.
  t.deepEqual(await seen('10.244.2.1', 30131), ['pod1']);
  t.deepEqual(await seen('192.168.88.131', 80), ['pod1']);
  t.deepEqual(await seen('172.30.0.31', 80), ['pod1', 'pod2', 'pod3']);
  // internalTrafficPolicy Local without a local endpoint: nowhere to go, the client is reset.
  t.regex((await call<string[]>(topo, pod, ['seq', '172.30.0.32', 80, 1]))[0]!, /^ERR /);
});

rootTest('nft: endpoints churn under load with zero failed new connections; an established connection outlives its endpoint', async (t) => {
  t.timeout(120_000);
  const topo = await topology(t);
  const objs = (eps: string[], echo: string[]) => [svc('web', '172.30.0.10'), slice('web', eps), svc('echo', '172.30.0.20'), slice('echo', echo)];
  const proxy = await startProxy(t, topo, 'nft', objs(PODS, [PODS[1]!]), ['--min-sync-ms', '20']);
  // The held connection goes to pod2, the only echo endpoint; then pod2 leaves the service.
  let connected!: () => void;
  const isConnected = new Promise<void>((r) => { connected = r; });
  const hold = client(topo, topo.client, ['hold', '172.30.0.20', 81, 5000], (l) => { if (l === 'connected') connected(); });
  await isConnected;
  const loop = client(topo, topo.client, ['loop', '172.30.0.10', 80]);
  t.teardown(() => { loop.p.kill('SIGKILL'); hold.p.kill('SIGKILL'); });
  const variants = [[0], [0, 1], [0, 1, 2], [0, 2], [2], [1, 2]];
  for (let i = 0; i < 40; i++) {
    await proxy.write(objs(variants[i % variants.length]!.map((k) => PODS[k]!), [PODS[i % 2 === 0 ? 0 : 2]!]));
    await new Promise((r) => setTimeout(r, 40));
  }
  loop.p.kill('SIGTERM');
  const r = (await loop.result) as { ok: number; fail: number; errors: string[] };
  t.is(r.fail, 0, r.errors.join('; '));
  t.true(r.ok > 100, `only ${r.ok} connections`);
  const h = (await hold.result) as { ok: number; fail: number };
  t.is(h.fail, 0);
  t.true(h.ok > 20, `held connection echoed ${h.ok} times`);
});

rootTest('legacy: 1 GiB arrives intact across a half-close, 1000 concurrent connections, a client that never reads keeps memory bounded and is cut when idle', async (t) => {
  t.timeout(180_000);
  const topo = await topology(t);
  const proxy = await startProxy(t, topo, 'legacy', [svc('big', '172.30.0.30'), slice('big', PODS)], ['--tcp-idle-ms', '4000']);

  // 1 GiB up; the digest comes back only after the client's FIN went through the proxy.
  const bulk = await call<{ sent: string; got: string; secs: number }>(topo, topo.client, ['bulk', '172.30.0.30', 82, 1024]);
  t.is(bulk.got, bulk.sent);
  t.log(`1 GiB through the proxy in ${bulk.secs} s`);
  // 64 MiB down to a client that keeps pausing: intact (the upstream's reused read buffer is
  // not overwritten while the client socket still queues part of it).
  t.deepEqual(await call(topo, topo.client, ['download', '172.30.0.30', 84, 30]), { bytes: 64 << 20, same: true });

  // 1000 connections open at once, every one echoing.
  let held!: () => void;
  const isHeld = new Promise<void>((r) => { held = r; });
  const many = client(topo, topo.client, ['many', '172.30.0.30', 81, 1000, 300], (l) => { if (l === 'held') held(); });
  await isHeld;
  t.is(metric(await proxy.metrics(), 'knet_userspace_active_connections', 'service="default/big:echo"'), 1000);
  t.deepEqual(await many.result, { ok: 1000, open: 1000 });

  // A client that stops reading while the endpoint sends as fast as it can: the proxy stops
  // reading from the endpoint (back-pressure) instead of buffering, and the idle timeout
  // (4 s here) resets the stalled pair.
  const active = async () => metric(await proxy.metrics(), 'knet_userspace_active_connections', 'service="default/big:source"');
  const before = proxy.rssKiB();
  let stalled!: () => void;
  const isStalled = new Promise<void>((r) => { stalled = r; });
  const stall = client(topo, topo.client, ['stall', '172.30.0.30', 83, 15_000], (l) => { if (l === 'stalled') stalled(); });
  t.teardown(() => { stall.p.kill('SIGKILL'); });
  stall.result.catch(() => { /* killed in teardown */ });
  await isStalled;
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 2000));
  const during = proxy.rssKiB();
  const sent = metric(await proxy.metrics(), 'knet_userspace_bytes_total', 'service="default/big:source",direction="to_client"');
  t.is(await active(), 1);
  while ((await active()) > 0 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 100));
  const cutAfter = Date.now() - t0;
  t.log(`rss ${before} KiB -> ${during} KiB while stalled; ${sent} bytes reached the client socket; cut after ${cutAfter} ms`);
  t.true(during - before < 64 * 1024, `proxy memory grew by ${during - before} KiB`);
  t.true(sent < 64 * 1024 * 1024, `${sent} bytes buffered towards a client that never reads`);
  t.true(cutAfter >= 3500 && cutAfter < 9000, `cut after ${cutAfter} ms`);
});

const until = (what: string, f: () => boolean | Promise<boolean>, ms = 10_000) => waitFor(what, async () => f(), ms, 50);
/** Established sockets towards an endpoint port in the node namespace, by owning pid. */
async function socketsByPid(topo: Topo, port: number): Promise<Map<number, number>> {
  const out = (await run('ip', ['netns', 'exec', topo.node, 'ss', '-tnpH', 'state', 'established', `( dport = :${port} )`])).stdout;
  const m = new Map<number, number>();
  for (const x of out.matchAll(/pid=(\d+)/g)) m.set(Number(x[1]), (m.get(Number(x[1])) ?? 0) + 1);
  return m;
}

/** The proxy's forwarder processes (children running the built knet-userspace-forwarder). */
const forwarders = (pid: number) => childPids(pid).filter((c) => { try { return readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('knet-userspace-forwarder'); } catch { return false; } });

rootTest('nft: two forwarder processes share the TCP ports (round robin, half-close, metrics summed, affinity and UDP in the first alone); one that dies is restarted on the same ports; they die with the proxy', async (t) => {
  t.timeout(120_000);
  const topo = await topology(t);
  const objs = [svc('web', '172.30.0.10'), slice('web', PODS),
    svc('sticky', '172.30.0.11', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }), slice('sticky', PODS)];
  const proxy = await startProxy(t, topo, 'nft', objs, ['--workers', '2']);
  const pid = proxy.p.pid!;
  await until('two forwarders', () => forwarders(pid).length === 2);
  const [first, second] = forwarders(pid).sort((a, b) => a - b);
  t.teardown(() => { for (const f of [first, second]) { try { process.kill(f!, 'SIGKILL'); } catch { /* gone, as it should be */ } } });
  const { client: pod } = topo;
  const listeners = async () => (await run('ip', ['netns', 'exec', topo.node, 'ss', '-tlnpH'])).stdout;
  await until('both forwarders to listen', async () => { const l = await listeners(); return l.includes(`pid=${first},`) && l.includes(`pid=${second},`); });

  // 200 echo connections held at once: both forwarders serve some of them (the kernel spreads
  // new connections over the sockets of one port by a hash, so up to three tries), and the
  // active-connection gauge is their sum.
  await call<string[]>(topo, pod, ['seq', '172.30.0.10', 80, 3]);
  let owners = new Map<number, number>();
  for (let i = 0; i < 3 && !((owners.get(first!) ?? 0) > 0 && (owners.get(second!) ?? 0) > 0); i++) {
    let held!: () => void;
    const isHeld = new Promise<void>((r) => { held = r; });
    const many = client(topo, pod, ['many', '172.30.0.10', 81, 200, 1500], (l) => { if (l === 'held') held(); });
    await isHeld;
    owners = await socketsByPid(topo, 8081);
    t.is(metric(await proxy.metrics(), 'knet_userspace_active_connections', 'service="default/web:echo"'), 200);
    t.deepEqual(await many.result, { ok: 200, open: 200 });
  }
  t.true((owners.get(first!) ?? 0) > 0 && (owners.get(second!) ?? 0) > 0, `echo connections by pid: ${JSON.stringify([...owners])}, forwarders ${first} ${second}`);
  t.true(metric(await proxy.metrics(), 'knet_userspace_connections_total', 'service="default/web:echo"') >= 200);

  // Round robin in each forwarder: the spread stays even (within one per process).
  const rr = tally(ids(await call<string[]>(topo, pod, ['seq', '172.30.0.10', 80, 30])));
  t.true(PODS.every((_, i) => Math.abs((rr.get(`pod${i + 1}`) ?? 0) - 10) <= 2), JSON.stringify([...rr]));
  // Half-close through whichever forwarder accepts.
  for (let i = 0; i < 2; i++) {
    const bulk = await call<{ sent: string; got: string }>(topo, pod, ['bulk', '172.30.0.10', 82, 16]);
    t.is(bulk.got, bulk.sent);
  }
  // ClientIP affinity is served by the first forwarder alone, so one client keeps one endpoint.
  const sticky = ids(await call<string[]>(topo, pod, ['seq', '172.30.0.11', 80, 12, CLIENTS[0]!]));
  t.is(new Set(sticky).size, 1, sticky.join());
  // UDP too.
  const dns = await call<string[]>(topo, pod, ['udp', '172.30.0.10', 53, 3]);
  t.true(dns.every((r) => /^pod\d 10\.244\.1\.1\|172\.30\.0\.10:53$/.test(r)), dns.join());

  // The first forwarder (every port) dies: another takes its place on the same ports, so the
  // rules need no change; connections keep working meanwhile through the second.
  const ports = (await listeners()).split('\n').filter((l) => l.includes(`pid=${first},`)).map((l) => l.split(/\s+/)[3]).sort();
  process.kill(first!, 'SIGKILL');
  await until('a new forwarder', () => forwarders(pid).length === 2 && !forwarders(pid).includes(first!));
  const third = forwarders(pid).find((f) => f !== second)!;
  t.teardown(() => { try { process.kill(third, 'SIGKILL'); } catch { /* gone */ } });
  await until('the new forwarder to listen on the same ports', async () => {
    const mine = (await listeners()).split('\n').filter((l) => l.includes(`pid=${third},`)).map((l) => l.split(/\s+/)[3]).sort();
    return JSON.stringify(mine) === JSON.stringify(ports);
  });
  t.true(ids(await call<string[]>(topo, pod, ['seq', '172.30.0.10', 80, 12])).every((x) => /^pod\d$/.test(x)));
  t.is(new Set(ids(await call<string[]>(topo, pod, ['seq', '172.30.0.11', 80, 4, CLIENTS[1]!]))).size, 1);
  t.regex((await call<string[]>(topo, pod, ['udp', '172.30.0.10', 53, 1]))[0]!, /^pod\d /);

  // The proxy crashing (SIGKILL, no clean-up) takes the forwarders with it.
  proxy.p.kill('SIGKILL');
  await until('the forwarders to exit after the proxy', () => !pidRunning(second!) && !pidRunning(third), 5000);

  // And a clean stop (SIGTERM) stops them too.
  const again = await startProxy(t, topo, 'nft', objs, ['--workers', '1']);
  await until('the forwarder', () => forwarders(again.p.pid!).length === 1);
  const [fourth] = forwarders(again.p.pid!);
  t.teardown(() => { try { process.kill(fourth!, 'SIGKILL'); } catch { /* gone */ } });
  const exited = new Promise((r) => again.p.once('exit', r));
  again.p.kill('SIGTERM');
  t.is(await exited, 0);
  await until('the forwarder to exit after SIGTERM', () => !pidRunning(fourth!), 5000);
});
