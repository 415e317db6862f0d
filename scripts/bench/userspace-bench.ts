// Benchmark of the userspace mode (issues 7 and 20): the same client load direct to the
// backends, through knet's userspace proxy (via the portal rules, as a node-local client would
// reach a ClusterIP), through a replica of kube-proxy's own userspace proxier (Go, built here
// from scripts/bench/userspace-go, reached through the same portal rules on service addresses
// of its own), and through haproxy 2.6 `mode tcp`; UDP against socat. Everything runs in one
// throw-away network namespace (knt-ub*), removed at the end, also on failure or Ctrl-C.
//   single-stream throughput  iperf3 -t S (each figure: median of --rounds, paths interleaved),
//                             client -> endpoint (the goal) and endpoint -> client (-R)
//   new connections/s         HTTP/1.1 with Connection: close (C load generator)
//   keep-alive requests/s     HTTP/1.1 keep-alive
//   UDP packets/s             64-byte datagrams with a window of outstanding ones
// --perf DIR samples each forwarder with perf while it runs each figure (where its time goes).
// Backends are haproxy `mode http` returning a fixed 200 (fast enough not to be the limit),
// iperf3 -s, and a C UDP echo. Goals (issue 20): every figure >= the Go replica, and
// throughput >= haproxy.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import { run } from '../../src/kernel/exec.ts';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { iptables, iptablesRestore, type IptablesBackend } from '../../src/kernel/iptables.ts';
import { PORTAL_JUMPS, renderPortals, type PortalPort } from '../../src/rules/portals.ts';
import { LOADGEN_C } from './userspace-loadgen.ts';
import { FORWARDER_NAME } from '../../src/proxy/userspace/forwarders.ts';
// @ts-expect-error: a plain .mjs build helper without type declarations
import { compileForwarder } from '../build-forwarder.mjs';

const { values: a } = parseArgs({ options: { seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, concurrency: { type: 'string', default: '32' }, backend: { type: 'string', default: 'nft' },
  only: { type: 'string', default: 'throughput,download,close,keepalive,udp' },
  // knet's forwarder processes (--userspace-workers; 0: the data path in the proxy process, on Node).
  workers: { type: 'string', default: '1' }, paths: { type: 'string', default: 'direct,knet,go,ref' }, 'cpu-prof': { type: 'string' },
  // --perf DIR: each forwarder's processes are sampled by `perf record` (cpu-clock, call graphs)
  // while it runs each figure, into DIR/<figure>-<path>.data (read them with `perf report -i`).
  perf: { type: 'string' } } });
const secs = Number(a.seconds);
const workers = Number(a.workers);
if (!(Number.isInteger(workers) && workers >= 0 && workers <= 8)) throw new Error('--workers 0-8');
const conc = Number(a.concurrency);
const rounds = Number(a.rounds);
if (!(rounds >= 1 && rounds <= 9)) throw new Error('--rounds 1-9');
if (!(secs > 0 && secs <= 60) || !(conc >= 1 && conc <= 1000)) throw new Error('--seconds 1-60, --concurrency 1-1000');
if (a.backend !== 'nft' && a.backend !== 'legacy') throw new Error('--backend nft|legacy');
const MEASURES = ['throughput', 'download', 'close', 'keepalive', 'udp'];
const only = new Set(a.only!.split(','));
if (![...only].every((m) => MEASURES.includes(m))) throw new Error(`--only: a comma list of ${MEASURES.join(',')}`);
// --paths: a subset of the paths (profiling one of them); ratios of skipped paths print NaN.
const paths = new Set(a.paths!.split(','));
const PATHS = ['direct', 'knet', 'go', 'ref'] as const;
type Path = typeof PATHS[number];
if (![...paths].every((p) => (PATHS as readonly string[]).includes(p))) throw new Error(`--paths: a comma list of ${PATHS.join(',')}`);

const ns = randomNetnsName('knt-ub');
const dir = mkdtempSync(join(tmpdir(), 'knt-ub-'));
const children: ChildProcess[] = [];
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;
let cleaned = false;
let knet: ChildProcess | null = null;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  // knet first and gently: it exits on SIGTERM (writing its --cpu-prof profile).
  if (knet && knet.exitCode === null) {
    const exited = new Promise((r) => knet!.once('exit', r));
    knet.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
  for (const c of children) c.kill('SIGKILL');
  await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
}
process.once('SIGINT', () => { void cleanup().then(() => process.exit(130)); });

const inNs = (file: string, args: string[]) => ['netns', 'exec', ns, file, ...args];
/** Starts a long-running process in the namespace; resolves once `ready` (text or delay) is seen. */
function daemon(file: string, args: string[], ready: string | number, stream: 'stdout' | 'stderr' = 'stdout'): Promise<ChildProcess> {
  const p = spawn('ip', inNs(file, args), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  return new Promise((resolveP, reject) => {
    const resolve = () => resolveP(p);
    let buf = '';
    const seen = (d: Buffer) => { buf = (buf + d.toString()).slice(-10_000); if (typeof ready === 'string' && buf.includes(ready)) resolve(); };
    // Both streams are read (also so a chatty child never blocks on a full pipe).
    p.stdout!.on('data', stream === 'stdout' ? seen : () => {});
    p.stderr!.on('data', stream === 'stderr' ? seen : (d: Buffer) => { buf = (buf + d.toString()).slice(-10_000); });
    p.once('exit', (c) => reject(new Error(`${file} exited ${c}: ${buf}`)));
    if (typeof ready === 'number') setTimeout(resolve, ready);
  });
}
const inNsOut = async (file: string, args: string[]) => (await run('ip', inNs(file, args), { timeoutMs: (secs + 30) * 1000 })).stdout;

const NODE = '10.99.0.1';
const EPS = ['10.99.1.1', '10.99.1.2', '10.99.1.3'];
// Service addresses: knet's from the manifests below, the Go replica's steered by the bench.
const KNET_VIP = { http: '172.30.0.10', iperf: '172.30.0.11', udp: '172.30.0.12' };
const GO_VIP = { http: '172.30.1.10', iperf: '172.30.1.11', udp: '172.30.1.12' };
const GO_PORT = { http: 26080, iperf: 26201, udp: 26000 };

async function setup(): Promise<string> {
  await addNetns(ns);
  await ipBatch(ns, [
    'link add eth0 type veth peer name eth0p', `addr add ${NODE}/24 dev eth0`, 'link set eth0p up', 'link set eth0 up',
    'route add default via 10.99.0.254',
    ...EPS.map((ip) => `addr add ${ip}/32 dev lo`),
  ]);
  await run('ip', inNs('sysctl', ['-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000', 'net.ipv4.tcp_tw_reuse=1']));
  const loadgen = join(dir, 'loadgen');
  writeFileSync(`${loadgen}.c`, LOADGEN_C);
  await run('gcc', ['-O2', '-o', loadgen, `${loadgen}.c`]);

  // Backends.
  writeFileSync(join(dir, 'backend.cfg'), [
    'global', '  maxconn 8000', 'defaults', '  mode http', '  timeout client 30s', '  timeout server 30s', '  timeout connect 5s',
    ...EPS.map((ip, i) => `frontend be${i}\n  bind ${ip}:8080\n  http-request return status 200 content-type text/plain string ok`), '',
  ].join('\n'));
  await daemon('haproxy', ['-db', '-f', join(dir, 'backend.cfg')], 500);
  await daemon('iperf3', ['-s', '-B', EPS[0]!, '-p', '5201', '--forceflush'], 'Server listening');
  await daemon(loadgen, ['udpecho', EPS[0]!, '9000'], 'ready');

  // haproxy 2.6 mode tcp and socat, the reference forwarders.
  writeFileSync(join(dir, 'fwd.cfg'), [
    'global', '  maxconn 8000', 'defaults', '  mode tcp', '  timeout client 30s', '  timeout server 30s', '  timeout connect 5s',
    `listen http\n  bind ${NODE}:28080\n  balance roundrobin\n${EPS.map((ip, i) => `  server s${i} ${ip}:8080`).join('\n')}`,
    `listen iperf\n  bind ${NODE}:25201\n  server s0 ${EPS[0]}:5201`, '',
  ].join('\n'));
  pids.ref = (await daemon('haproxy', ['-db', '-f', join(dir, 'fwd.cfg')], 500)).pid!;
  pids.socat = (await daemon('socat', [`UDP4-LISTEN:29000,bind=${NODE},reuseaddr,fork`, `UDP4:${EPS[0]}:9000`], 300)).pid!;
  await startGoReplica();

  // knet, userspace mode, from a manifest directory.
  const manifests = join(dir, 'manifests');
  await run('mkdir', [manifests]);
  const svc = (name: string, ip: string, port: number, proto: string, target: number, eps: string[]) => [
    { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'bench', name }, spec: { clusterIP: ip, ports: [{ port, targetPort: target, protocol: proto }] } },
    { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { namespace: 'bench', name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } }, addressType: 'IPv4',
      endpoints: eps.map((e) => ({ addresses: [e], conditions: { ready: true } })), ports: [{ port: target, protocol: proto }] },
  ];
  writeFileSync(join(manifests, 'bench.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    ...svc('http', KNET_VIP.http, 80, 'TCP', 8080, EPS), ...svc('iperf', KNET_VIP.iperf, 5201, 'TCP', 5201, [EPS[0]!]), ...svc('udp', KNET_VIP.udp, 9000, 'UDP', 9000, [EPS[0]!]),
  ] }));
  // Bundled like dist/knet.js (no tsx loader, no source-map stack rewriting at run time).
  const main = join(dir, 'knet-userspace.mjs');
  const bundle = (entry: string, outfile: string) => build({ entryPoints: [join(process.cwd(), entry)], outfile, bundle: true, platform: 'node', target: 'node20', format: 'esm',
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" }, logLevel: 'error' });
  await bundle('src/proxy/userspace/main.ts', main);
  // The data path's forwarder, found beside the bundle (src/proxy/userspace/forwarders.ts).
  if (workers > 0 && !compileForwarder(join(dir, FORWARDER_NAME))) throw new Error('the userspace forwarder needs Bun (npm ci)');
  // --cpu-prof DIR: knet writes a V8 CPU profile there when stopped with SIGTERM at the end.
  const prof = a['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', a['cpu-prof']] : [];
  knet = await daemon(process.execPath, [...prof, main, '--manifests', manifests, '--node-ip', NODE, '--backend', a.backend!, '--workers', String(workers)], '"msg":"synced"', 'stderr');
  pids.knet = knet.pid!;
  return loadgen;
}

/**
 * The kube-proxy userspace replica: built with Debian's Go (no modules), listening on the
 * node IP, and reached through knet's own portal rules (src/rules/portals.ts, rendered for its
 * ports and service addresses into chains of its own, jumped to from the same built-in chains).
 */
async function startGoReplica(): Promise<void> {
  const bin = join(dir, 'kube-proxy-userspace');
  await run('go', ['build', '-o', bin, join(process.cwd(), 'scripts/bench/userspace-go/main.go')], { env: { ...env, GO111MODULE: 'off', GOCACHE: join(dir, 'go-cache'), GOFLAGS: '' }, timeoutMs: 300_000 });
  pids.go = (await daemon(bin, [
    '-tcp', `${NODE}:${GO_PORT.http}=${EPS.map((e) => `${e}:8080`).join(',')}`, '-tcp', `${NODE}:${GO_PORT.iperf}=${EPS[0]}:5201`, '-udp', `${NODE}:${GO_PORT.udp}=${EPS[0]}:9000`,
  ], 'ready')).pid!;
  const port = (name: keyof typeof GO_VIP, protocol: 'tcp' | 'udp', servicePort: number): PortalPort => ({
    portName: `bench/go-${name}:p`, protocol, clusterIP: GO_VIP[name], port: servicePort, nodePort: 0, externalIPs: [], loadBalancerIPs: [], proxyPort: GO_PORT[name] });
  const text = renderPortals([port('http', 'tcp', 80), port('iperf', 'tcp', 5201), port('udp', 'udp', 9000)], { hostIP: NODE }).text.replaceAll('KUBE-', 'GO-');
  const target = { backend: a.backend as IptablesBackend, netns: ns };
  await iptablesRestore(target, text, { noflush: true });
  for (const j of PORTAL_JUMPS) await iptables(target, ['-t', j.table, '-A', j.from, ...j.extra, '-j', j.to.replace('KUBE-', 'GO-')]);
}

async function iperf(host: string, port: number, reverse = false): Promise<number> {
  const j = JSON.parse(await inNsOut('iperf3', ['-c', host, '-p', String(port), '-t', String(secs), '-J', ...(reverse ? ['-R'] : [])])) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

async function rate(loadgen: string, mode: string, host: string, port: number, n: number): Promise<number> {
  const out = await inNsOut(loadgen, [mode, host, String(port), String(n), String(secs)]);
  const m = /rate (\d+)/.exec(out);
  if (!m) throw new Error(`loadgen: ${out}`);
  return Number(m[1]);
}

/** The forwarders' processes (`ip netns exec` execs, so these are theirs), for CPU accounting. */
const pids: { knet?: number; go?: number; ref?: number; socat?: number } = {};
/** A process and its live descendants. */
function processTree(pid: number): number[] {
  const out = [pid];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) out.push(...processTree(Number(c)));
    }
  } catch { /* exited meanwhile */ }
  return out;
}

/** Starts `perf record` on pid's process tree; the returned function stops it and waits for its file. */
function perfRecord(pid: number | undefined, file: string): () => Promise<void> {
  if (!pid) return async () => {};
  const p = spawn('perf', ['record', '-q', '-e', 'cpu-clock', '-F', '999', '-g', '-o', file, '-p', processTree(pid).join(',')], { stdio: 'ignore' });
  return () => new Promise((resolve) => { p.once('exit', () => resolve()); p.kill('SIGINT'); });
}

/** CPU seconds of a process, its live descendants and its reaped children (/proc, 100 Hz ticks). */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    let t = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) t += cpuSeconds(Number(c));
    }
    return t;
  } catch {
    return 0; // exited meanwhile: counted in its parent once reaped
  }
}

/** One figure per path; `vsRef` marks the figures whose goal includes >= haproxy. */
interface Row { what: string; unit: string; refName: string; vsRef: boolean; rate: Record<Path, number>; eff: Record<Path, number> }

try {
  const lg = await setup();
  const rows: Row[] = [];
  // Each figure is the median of --rounds runs, the paths interleaved within a round, so load
  // from elsewhere on the machine falls on all of them alike. Besides the rate, each
  // forwarder's work per CPU second (its processes' user+system time during its run): on a
  // shared machine the rate follows the CPU share, this does much less.
  const measure = async (figure: string, fns: Record<Path, () => Promise<number>>, refPid = pids.ref) => {
    const got = Object.fromEntries(PATHS.map((k) => [k, [] as number[]])) as Record<Path, number[]>;
    const eff = Object.fromEntries(PATHS.map((k) => [k, [] as number[]])) as Record<Path, number[]>;
    const pidOf: Record<Path, number | undefined> = { direct: undefined, knet: pids.knet, go: pids.go, ref: refPid };
    for (let i = 0; i < rounds; i++) {
      for (const k of PATHS) {
        if (!paths.has(k)) continue;
        const c0 = cpuSeconds(pidOf[k]);
        const perf = a.perf && i === 0 ? perfRecord(pidOf[k], join(a.perf, `${figure}-${k}.data`)) : null;
        const r = await fns[k]();
        await perf?.();
        got[k].push(r);
        eff[k].push(r * secs / (cpuSeconds(pidOf[k]) - c0));
      }
    }
    const med = (xs: number[]) => xs.length ? [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]! : NaN;
    const each = (xs: Record<Path, number[]>) => Object.fromEntries(PATHS.map((k) => [k, med(xs[k])])) as Record<Path, number>;
    return { rate: each(got), eff: each(eff) };
  };
  const tcp = (mode: string) => ({ direct: () => rate(lg, mode, EPS[0]!, 8080, conc), knet: () => rate(lg, mode, KNET_VIP.http, 80, conc), go: () => rate(lg, mode, GO_VIP.http, 80, conc), ref: () => rate(lg, mode, NODE, 28080, conc) });
  const stream = (reverse: boolean) => ({ direct: () => iperf(EPS[0]!, 5201, reverse), knet: () => iperf(KNET_VIP.iperf, 5201, reverse), go: () => iperf(GO_VIP.iperf, 5201, reverse), ref: () => iperf(NODE, 25201, reverse) });
  if (only.has('throughput')) rows.push({ what: 'single stream, client -> endpoint', unit: 'Gbit/s', refName: 'haproxy', vsRef: true, ...await measure('throughput', stream(false)) });
  if (only.has('download')) rows.push({ what: 'single stream, endpoint -> client', unit: 'Gbit/s', refName: 'haproxy', vsRef: true, ...await measure('download', stream(true)) });
  if (only.has('close')) rows.push({ what: 'new connections/s (Connection: close)', unit: '', refName: 'haproxy', vsRef: false, ...await measure('close', tcp('close')) });
  if (only.has('keepalive')) rows.push({ what: 'keep-alive requests/s', unit: '', refName: 'haproxy', vsRef: false, ...await measure('keepalive', tcp('keepalive')) });
  if (only.has('udp')) rows.push({ what: 'UDP packets/s (64 B, window 64)', unit: '', refName: 'socat', vsRef: false,
    ...await measure('udp', { direct: () => rate(lg, 'udp', EPS[0]!, 9000, 64), knet: () => rate(lg, 'udp', KNET_VIP.udp, 9000, 64), go: () => rate(lg, 'udp', GO_VIP.udp, 9000, 64), ref: () => rate(lg, 'udp', NODE, 29000, 64) }, pids.socat) });

  const f = (x: number) => (x >= 100 ? Math.round(x).toString() : x.toFixed(2));
  const unit = (r: Row) => (r.unit ? ` ${r.unit}` : '');
  console.log(`# knet userspace mode benchmark (median of ${rounds} x ${secs} s per figure, ${conc} connections, iptables ${a.backend}, knet with ${workers} forwarder process(es), Go replica with GOMAXPROCS ${availableParallelism()}, haproxy with its default nbthread ${availableParallelism()})\n`);
  console.log('| measure | direct | knet | kube-proxy userspace (Go replica) | haproxy / socat | knet/Go | knet/ref | goal |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const { direct, knet: k, go, ref } = r.rate;
    const met = k / go >= 1 && (!r.vsRef || k / ref >= 1);
    const goal = `>= Go${r.vsRef ? ` and >= ${r.refName}` : ''}: ${met ? 'met' : 'NOT met'}`;
    console.log(`| ${r.what} | ${f(direct)}${unit(r)} | ${f(k)} | ${f(go)} | ${r.refName} ${f(ref)} | ${(k / go).toFixed(2)} | ${(k / ref).toFixed(2)} | ${goal} |`);
  }
  console.log('\n| work per CPU second of the forwarder | knet | Go replica | haproxy / socat | knet/Go | knet/ref |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) {
    const { knet: k, go, ref } = r.eff;
    console.log(`| ${r.what} | ${f(k)}${r.unit ? ` ${r.unit.replace('/s', '')}` : ''} | ${f(go)} | ${r.refName} ${f(ref)} | ${(k / go).toFixed(2)} | ${(k / ref).toFixed(2)} |`);
  }
} finally {
  await cleanup();
}
