// Benchmark of `knet proxy` at scale (issue 5): N services x 3 endpoints loaded through the
// manifests source, the proxy running as its own process inside a throwaway knt-p namespace.
// Prints, per iptables backend: time of the first full sync, time from one EndpointSlice change
// (a manifest file rewritten) to its rules being in the kernel (p50/p95 over 20 changes, taken
// from the proxy's "synced" log line), rules in the kernel, and the proxy's peak RSS.
// Usage: node --import tsx scripts/bench/proxy-sync.ts [services=10000] [backends=nft,legacy]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { iptablesSave, type IptablesBackend } from '../../src/kernel/iptables.ts';

const n = Number(process.argv[2] ?? 10_000);
const backends = (process.argv[3] ?? 'nft,legacy').split(',') as IptablesBackend[];
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
writeFileSync(join(dir, 'kube-proxy.yaml'), 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/8\n');
const env: NodeJS.ProcessEnv = { ...process.env, KNET_LOG_LEVEL: process.env.KNET_LOG_LEVEL ?? 'info', PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}` };
delete env.NODE_EXTRA_CA_CERTS;

interface Line { time: number; msg: string; full?: boolean; seconds?: number }

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

try {
  for (const backend of backends) {
    const ns = randomNetnsName('knt-p');
    await addNetns(ns);
    try {
      writeJson(join(manifests, 'hot.json'), [slice(0)]);
      const t0 = Date.now();
      // The built CLI, run as users run it: by its #! line, which carries its node flags (a tsx
      // loader would add its own memory and start-up).
      const p = spawn('ip', ['netns', 'exec', ns, resolve('dist/knet.js'), 'proxy', '--manifests', manifests,
        '--config', join(dir, 'kube-proxy.yaml'), '--iptables-backend', backend, '--node-ip', '192.168.1.2', '--hostname-override', 'bench',
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
      const nextSynced = async (after: number): Promise<Line> => {
        for (;;) {
          const l = lines.slice(after).find((x) => x.msg === 'synced');
          if (l) return l;
          await new Promise<void>((r) => waiters.push(r));
        }
      };
      const first = await nextSynced(0);
      if (process.env.KNET_BENCH_TRACE) for (const l of lines) console.log('start', JSON.stringify(l).slice(0, 300));
      const wall = (first.time - t0) / 1000;
      const lat: number[] = [];
      for (let c = 1; c <= CHANGES; c++) {
        // kube-proxy's default minSyncPeriod is 1 s: space changes so each is a separate sync.
        await new Promise((r) => setTimeout(r, 1100));
        const mark = lines.length;
        const at = Date.now();
        writeJson(join(manifests, 'hot.json'), [slice(0, c)]);
        const s = await nextSynced(mark);
        lat.push(s.time - at);
        if (process.env.KNET_BENCH_TRACE) for (const l of lines.slice(mark)) console.log(at, JSON.stringify(l).slice(0, 300));
      }
      const save = await iptablesSave({ backend, netns: ns }, 'nat');
      const ok = save.includes(`${ip(2 + CHANGES * 3 * n)}:8080`);
      const rules = save.split('\n').filter((l) => l.startsWith('-A')).length;
      const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
      console.log(`${backend}: ${n} services x 3 endpoints: first full sync ${first.seconds?.toFixed(2)} s (process start to synced ${wall.toFixed(2)} s), ` +
        `one EndpointSlice change to kernel p50 ${pct(lat, 0.5)} ms p95 ${pct(lat, 0.95)} ms max ${Math.max(...lat)} ms, ` +
        `nat rules ${rules}, last change in kernel: ${ok}, peak RSS ${hwm.toFixed(0)} MB`);
    } finally {
      await deleteNetns(ns);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
