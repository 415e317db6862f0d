// Benchmark of `knet proxy` at scale (issues 5 and 16): N services x 3 endpoints loaded through
// the manifests source, the proxy running as its own process inside a throwaway knt-b namespace.
// Prints, per column (iptables mode on the nft or legacy backend, or nftables mode): time of the
// first full sync, time from one EndpointSlice change (a manifest file rewritten) to its rules
// being in the kernel (p50/p95 over 20 changes, taken from the proxy's "synced" log line), rules
// or chains in the kernel, and the proxy's peak RSS; the nftables column prints issue 16's goals
// beside its figures. The anchor column is the nftables mode's anchor (nftables-anchor.ts: the
// same table as one `nft -f` transaction, and one change as one small transaction).
// nftables-nft is the nftables mode with --no-nftables-netlink (every transaction through nft -f).
// The proxy runs with the plain env values of deploy/20-daemonset.yaml's proxy container.
// floor: the kernel's share of the nftables column's first full sync (nftables-floor.ts).
// Usage: node --import tsx scripts/bench/proxy-sync.ts [services=10000] [columns=nft,legacy,nftables,nftables-nft,anchor,floor]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { iptablesSave, type IptablesBackend } from '../../src/kernel/iptables.ts';
import { nftListTable } from '../../src/kernel/nft.ts';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';
import { proxySettingsFromConfig } from '../../src/rules/config.ts';
import { fmtTime, nftablesAnchor } from './nftables-anchor.ts';

const n = Number(process.argv[2] ?? 10_000);
const COLUMNS = ['nft', 'legacy', 'nftables', 'nftables-nft', 'anchor', 'floor'] as const;
type Column = (typeof COLUMNS)[number];
const columns = (process.argv[3] ?? COLUMNS.join(',')).split(',') as Column[];
for (const c of columns) if (!COLUMNS.includes(c)) throw new Error(`columns: expected some of ${COLUMNS.join(',')}, got ${JSON.stringify(c)}`);
if (!Number.isInteger(n) || n < 1 || n > 60_000) throw new Error(`services: expected 1-60000, got ${JSON.stringify(process.argv[2])}`);
/** Issue 16's goals for the nftables mode at 10k services x 3 endpoints. */
const GOALS = { firstSyncSeconds: 5, changeP50Ms: 100, peakRssMb: 150 };
const ANCHOR_CHANGES = 5;
const CHANGES = 20;

const ip = (i: number) => `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const svc = (i: number) => ({
  apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'bench', name: `svc-${i}` },
  spec: { type: 'ClusterIP', clusterIP: `172.30.${i >> 8}.${i & 255}`, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
});
const slice = (i: number, gen = 0) => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
  metadata: { namespace: 'bench', name: `svc-${i}-abc`, labels: { 'kubernetes.io/service-name': `svc-${i}` } },
  addressType: 'IPv4',
  endpoints: [0, 1, 2].map((e) => ({ addresses: [ip(i * 3 + e + (e === 2 ? gen * 3 * n : 0))], conditions: { ready: true } })),
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});

function writeJson(path: string, items: unknown[]): void {
  writeFileSync(`${path}.tmp`, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
  renameSync(`${path}.tmp`, path);
}

const dir = mkdtempSync(join(tmpdir(), 'knt-p-bench-'));
const manifests = join(dir, 'm');
await import('node:fs/promises').then((f) => f.mkdir(manifests));
// The hot service's slice lives in its own small file, rewritten for each change.
const items: unknown[] = [];
for (let i = 0; i < n; i++) { items.push(svc(i)); if (i !== 0) items.push(slice(i)); }
writeJson(join(manifests, 'cluster.json'), items);
writeJson(join(manifests, 'hot.json'), [slice(0)]);
const CONFIG = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/8\n';
writeFileSync(join(dir, 'kube-proxy.yaml'), CONFIG);
/**
 * The plain `value:` entries of the DaemonSet's proxy container (its glibc malloc setting), so
 * that the proxy measured here runs as deployed. KNET_BENCH_PLAIN_ENV=1 leaves them out.
 */
function daemonSetProxyEnv(): Record<string, string> {
  if (process.env.KNET_BENCH_PLAIN_ENV === '1') return {};
  const docs = parseAllDocuments(readFileSync(resolve('deploy/20-daemonset.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
  const ds = docs.find((d) => d?.kind === 'DaemonSet');
  const proxy = ds?.spec.template.spec.containers.find((c: Record<string, unknown>) => c.name === 'proxy');
  if (!proxy) throw new Error('deploy/20-daemonset.yaml: no proxy container');
  const out: Record<string, string> = {};
  for (const e of proxy.env ?? []) if (typeof e.value === 'string') out[e.name] = e.value;
  return out;
}
const deployedEnv = daemonSetProxyEnv();
const env: NodeJS.ProcessEnv = { ...process.env, ...deployedEnv, KNET_LOG_LEVEL: process.env.KNET_LOG_LEVEL ?? 'info', PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}` };
delete env.NODE_EXTRA_CA_CERTS;
console.log(`proxy environment from deploy/20-daemonset.yaml: ${Object.entries(deployedEnv).map(([k, v]) => `${k}=${v}`).join(' ') || '(none: KNET_BENCH_PLAIN_ENV=1)'}`);

interface Line { time: number; msg: string; full?: boolean; seconds?: number }

/** The bench's cluster as objects, with the hot service's slice at change `gen`. */
function clusterAt(gen: number): ClusterState {
  const objs = items.filter((x) => (x as Service).kind === 'Service') as Service[];
  const slices = items.filter((x) => (x as EndpointSlice).kind === 'EndpointSlice') as EndpointSlice[];
  return { services: objs, endpointSlices: [slice(0, gen) as EndpointSlice, ...slices] };
}

/** The settings the proxy derives in its namespace (only lo's address there). */
const nftSettings = () => proxySettingsFromConfig(CONFIG, { mode: 'nftables', nodeName: 'bench', nodeIPs: ['192.168.1.2'], podCIDRs: [], interfaceAddresses: [{ iface: 'lo', cidr: '127.0.0.1/8' }] });

/** kube-proxy's way for the same table: one transaction for all of it, one small one per change. */
async function printAnchor(): Promise<void> {
  const a = await nftablesAnchor(clusterAt(0), nftSettings(), ANCHOR_CHANGES, (c) => ({ cluster: clusterAt(c), services: new Set(['bench/svc-0']) }));
  console.log(`anchor for nftables, kube-proxy's way (bare nft, ${a.lines} lines): whole table as one nft -f transaction ${fmtTime(a.whole)}; ` +
    `one change as one small transaction p50 ${pct(a.changeMs, 0.5)} ms (${a.changeMs.join(', ')} ms; first ${fmtTime(a.changeTimes[0]!)})`);
}

/**
 * The floor under the nftables column's first full sync: the same transactions into an empty
 * table, each batch compiled before the clock starts (nftables-floor.ts), so only the kernel's
 * commits are timed.
 */
async function printFloor(): Promise<void> {
  const ns = randomNetnsName('knt-b');
  await addNetns(ns);
  try {
    writeFileSync(join(dir, 'floor-cluster.json'), JSON.stringify(clusterAt(0)));
    writeFileSync(join(dir, 'floor-settings.json'), JSON.stringify(nftSettings()));
    const out = await new Promise<string>((res, rej) => {
      const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', resolve('scripts/bench/nftables-floor.ts'), join(dir, 'floor-cluster.json'), join(dir, 'floor-settings.json')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      p.stdout.on('data', (d: Buffer) => { text += d.toString(); });
      p.on('close', (code) => (code === 0 ? res(text) : rej(new Error(`nftables-floor.ts exited ${code}`))));
    });
    const f = JSON.parse(out.trim().split('\n').at(-1)!) as { fixedSeconds: number; seconds: number; batches: number; bytes: number; user: number; system: number };
    console.log(`floor for nftables (the proxy's first full sync, its ${f.batches} batches compiled beforehand, ${(f.bytes / 2 ** 20).toFixed(0)} MB): ` +
      `the kernel committing them ${f.seconds.toFixed(2)} s (system ${f.system.toFixed(2)} s, user ${f.user.toFixed(2)} s), the fixed part through nft before them ${f.fixedSeconds.toFixed(2)} s; ` +
      `goal (issue 16, at 10k) first full sync <= ${GOALS.firstSyncSeconds} s`);
  } finally {
    await deleteNetns(ns);
  }
}

/** CPU seconds of a process and of its waited-for children, from /proc (clock ticks of 10 ms). */
function cpuTimes(pid: number): { user: number; system: number; childUser: number; childSystem: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at the state, field 3.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = (field: number) => Number(f[field - 3]) / 100;
  return { user: ticks(14), system: ticks(15), childUser: ticks(16), childSystem: ticks(17) };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

try {
  for (const column of columns) {
    if (column === 'anchor') { await printAnchor(); continue; }
    if (column === 'floor') { await printFloor(); continue; }
    const nftables = column === 'nftables' || column === 'nftables-nft';
    const backend: IptablesBackend = nftables ? 'nft' : column as IptablesBackend;
    const ns = randomNetnsName('knt-b');
    await addNetns(ns);
    try {
      writeJson(join(manifests, 'hot.json'), [slice(0)]);
      const t0 = Date.now();
      // The built CLI, run as users run it: by its #! line, which carries its node flags (a tsx
      // loader would add its own memory and start-up).
      // Files are renamed into place whole, so they are read at once (no settle time).
      const p = spawn('ip', ['netns', 'exec', ns, resolve('dist/knet.js'), 'proxy', '--manifests', manifests, '--manifests-settle', '0s',
        '--config', join(dir, 'kube-proxy.yaml'), ...(nftables ? ['--proxy-mode', 'nftables', ...(column === 'nftables-nft' ? ['--no-nftables-netlink'] : [])] : ['--iptables-backend', backend]), '--node-ip', '192.168.1.2', '--hostname-override', 'bench',
        '--healthz-bind-address', '127.0.0.1:10256', '--metrics-bind-address', ''], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      const lines: Line[] = [];
      let buf = '';
      const waiters: Array<() => void> = [];
      p.stderr.on('data', (d: Buffer) => {
        buf += d.toString();
        let k;
        while ((k = buf.indexOf('\n')) >= 0) {
          const l = buf.slice(0, k); buf = buf.slice(k + 1);
          try { lines.push(JSON.parse(l) as Line); } catch { /* not JSON */ }
          for (const w of waiters.splice(0)) w();
        }
      });
      let exited = false;
      p.once('exit', () => { exited = true; for (const w of waiters.splice(0)) w(); });
      const nextSynced = async (after: number): Promise<Line> => {
        for (;;) {
          const l = lines.slice(after).find((x) => x.msg === 'synced');
          if (l) return l;
          // A proxy that died (a bad flag, say) never syncs: say so rather than wait forever.
          if (exited) throw new Error(`knet proxy exited before it synced: ${lines.slice(-3).map((x) => JSON.stringify(x)).join(' ')} ${buf.slice(-400)}`);
          await new Promise<void>((r) => waiters.push(r));
        }
      };
      // KNET_BENCH_RSS=1: the proxy's RSS every 50 ms, printed with the log line before each
      // sample, to show where the peak comes from.
      const rssSamples: Array<{ ms: number; mb: number; after: string }> = [];
      const sampler = process.env.KNET_BENCH_RSS ? setInterval(() => {
        try {
          const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1] ?? 0);
          rssSamples.push({ ms: Date.now() - t0, mb: kb / 1024, after: JSON.stringify(lines.at(-1) ?? {}).slice(0, 160) });
        } catch { /* gone */ }
      }, 50) : undefined;
      const first = await nextSynced(0).finally(() => { if (sampler && exited) clearInterval(sampler); });
      const firstCpu = cpuTimes(p.pid!);
      if (process.env.KNET_BENCH_TRACE) for (const l of lines) console.log('start', JSON.stringify(l).slice(0, 300));
      const wall = (first.time - t0) / 1000;
      const lat: number[] = [];
      // The sync's own time (source delivered the change to rules in the kernel), beside the time
      // from the file's rename (which adds noticing the file and reading it).
      const syncMs: number[] = [];
      for (let c = 1; c <= CHANGES; c++) {
        // kube-proxy's default minSyncPeriod is 1 s: space changes so each is a separate sync.
        await new Promise((r) => setTimeout(r, 1100));
        const mark = lines.length;
        const at = Date.now();
        writeJson(join(manifests, 'hot.json'), [slice(0, c)]);
        const s = await nextSynced(mark);
        lat.push(s.time - at);
        syncMs.push(Math.round((s.seconds ?? 0) * 1000));
        if (process.env.KNET_BENCH_TRACE) for (const l of lines.slice(mark)) console.log(at, JSON.stringify(l).slice(0, 300));
      }
      const newest = `${ip(2 + CHANGES * 3 * n)}`;
      let inKernel: boolean;
      let count: string;
      if (nftables) {
        const table = (await nftListTable({ netns: ns }, 'ip', 'kube-proxy')) ?? '';
        inKernel = table.includes(`${newest}:8080`);
        count = `chains ${table.split('\n').filter((l) => /^\s*chain /.test(l)).length}`;
      } else {
        const save = await iptablesSave({ backend, netns: ns }, 'nat');
        inKernel = save.includes(`${newest}:8080`);
        count = `nat rules ${save.split('\n').filter((l) => l.startsWith('-A')).length}`;
      }
      if (sampler) {
        clearInterval(sampler);
        let shown = -1;
        for (const x of rssSamples) {
          if (Math.floor(x.mb / 5) === shown) continue;
          shown = Math.floor(x.mb / 5);
          console.log(`  rss ${x.mb.toFixed(0)} MB at ${x.ms} ms after ${x.after}`);
        }
        const top = rssSamples.reduce((a, b) => (b.mb > a.mb ? b : a), rssSamples[0]!);
        console.log(`  highest sample ${top.mb.toFixed(0)} MB at ${top.ms} ms after ${top.after}`);
      }
      const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
      const label = nftables ? column : `iptables ${backend}`;
      console.log(`${label}: ${n} services x 3 endpoints: first full sync ${first.seconds?.toFixed(2)} s (process start to synced ${wall.toFixed(2)} s), ` +
        `one EndpointSlice change to kernel p50 ${pct(lat, 0.5)} ms p95 ${pct(lat, 0.95)} ms max ${Math.max(...lat)} ms ` +
        `(file rewritten to synced; the sync alone p50 ${pct(syncMs, 0.5)} ms p95 ${pct(syncMs, 0.95)} ms), ` +
        `${count}, last change in kernel: ${inKernel}, peak RSS ${hwm.toFixed(0)} MB`);
      // Kernel time is what the kernel spent accepting the table (the proxy's netlink batches
      // are its own system time, nft's are its children's): no way of writing it can go below.
      console.log(`  CPU from start to the first sync: proxy user ${firstCpu.user.toFixed(2)} s, system ${firstCpu.system.toFixed(2)} s; ` +
        `its children (${nftables ? 'nft' : 'iptables-restore'}) user ${firstCpu.childUser.toFixed(2)} s, system ${firstCpu.childSystem.toFixed(2)} s`);
      if (nftables) {
        console.log(`  goals (issue 16, at 10k): first full sync <= ${GOALS.firstSyncSeconds} s: ${first.seconds?.toFixed(2)} s; ` +
          `one change p50 <= ${GOALS.changeP50Ms} ms: ${pct(syncMs, 0.5)} ms after the source delivers it; peak RSS <= ${GOALS.peakRssMb} MB: ${hwm.toFixed(0)} MB`);
      }
    } finally {
      await deleteNetns(ns);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
