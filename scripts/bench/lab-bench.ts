// Benchmarks for `knet lab` (figures printed, nothing asserted), each lab in knt-lb* namespaces
// under a temp dir, torn down afterwards (also on Ctrl-C):
//  1. wall time of `knet lab up` for 3 and for 10 nodes (default workload), and each step's share;
//  2. with 3 nodes: from starting `knet lab apply -f svc.yaml` (a new ClusterIP Service over the
//     web pods) to the first successful TCP connection to its ClusterIP from a client pod, which
//     retries every 5 ms from before the apply; and the `lab apply` command's own run time;
//  3. `knet lab check` wall time per lab size.
// Usage: scripts/bench/lab [NODES...] (default 3 10); APPLIES=N (default 5).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { podNetnsName } from '../../src/lab/topology.ts';
import type { LabState } from '../../src/lab/state.ts';

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const SIZES = sizes.length ? sizes : [3, 10];
const APPLIES = Number(process.env.APPLIES ?? 5);
const main = join(process.cwd(), 'src', 'lab', 'main.ts');
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;

function lab(args: string[], onStdout?: (text: string) => void): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', main, 'lab', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); onStdout?.(stdout); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.once('error', reject);
    p.once('exit', (code) => resolve({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

// Connects to HOST:PORT every 5 ms until one connection is answered; prints the Date.now() of it.
// Each attempt uses a new source port: a SYN sent before the rules existed leaves an un-NATed
// conntrack entry behind, and a retry on the same tuple would keep matching it.
const PROBER = `
import net from 'node:net';
const [host, port, firstLocal] = process.argv.slice(2);
process.stdout.write('started\\n');
for (let i = 0; ; i++) {
  const ok = await new Promise((res) => {
    const s = net.connect({ host, port: Number(port), localPort: Number(firstLocal) + (i % 5000) });
    const t = setTimeout(() => { s.destroy(); res(false); }, 200);
    s.on('data', () => { clearTimeout(t); s.destroy(); res(true); });
    s.on('error', () => { clearTimeout(t); res(false); });
  });
  if (ok) { process.stdout.write('ok ' + Date.now() + '\\n'); process.exit(0); }
  await new Promise((r) => setTimeout(r, 5));
}
`;

function startProber(ns: string, file: string, host: string, port: number, firstLocal: number): Promise<{ connected: Promise<number> }> {
  return new Promise((ready, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, file, host, String(port), String(firstLocal)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let done: (ms: number) => void = () => undefined;
    const finished = new Promise<number>((r) => { done = r; });
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('started\n')) ready({ connected: finished }); // not ready(finished): that would wait for it
      const m = /ok (\d+)/.exec(out);
      if (m) { clearTimeout(timer); done(Number(m[1])); }
    });
    p.once('error', reject);
    p.once('exit', () => { clearTimeout(timer); done(NaN); });
  });
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0]!.toFixed(0)} ms, median ${s[Math.floor(s.length / 2)]!.toFixed(0)} ms, max ${s[s.length - 1]!.toFixed(0)} ms (n=${s.length})`;
};

let current: string | null = null;
const base = mkdtempSync(join(tmpdir(), 'knt-lab-bench-'));
async function cleanup(): Promise<void> {
  if (current) await lab(['down', '--dir', current]);
  current = null;
  rmSync(base, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void cleanup().finally(() => process.exit(130)); });

try {
  for (const n of SIZES) {
    const dir = join(base, `lab-${n}`);
    const prefix = `knt-lb${randomBytes(2).toString('hex')}-`;
    current = dir;
    const up = await lab(['up', '--nodes', String(n), '--dir', dir, '--ns-prefix', prefix]);
    if (up.code !== 0) {
      // The failed up kept its logs; show the failing one before the temp dir goes.
      const log = /\n {2}log: (\S+)/.exec(up.stderr)?.[1];
      let tail = '';
      try { if (log) tail = readFileSync(log, 'utf8').trim().split('\n').slice(-15).join('\n'); } catch { /* not a file */ }
      throw new Error(`lab up failed:\n${up.stderr}${tail ? `\n--- ${log}\n${tail}` : ''}`);
    }
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
    const steps = state.steps ?? [];
    const total = steps.reduce((a, s) => a + s.seconds, 0);
    console.log(`\nknet lab up, ${n} nodes: ${(up.ms / 1000).toFixed(2)} s wall (${total.toFixed(2)} s in steps, the rest is CLI start-up)`);
    for (const s of steps) console.log(`  ${s.step.padEnd(14)} ${s.seconds.toFixed(2).padStart(6)} s  ${((100 * s.seconds) / total).toFixed(0).padStart(3)} %`);
    const check = await lab(['check', '--dir', dir, '--wait', '30']);
    const summary = /(\d+) passed, (\d+) failed/.exec(check.stdout);
    console.log(`knet lab check, ${n} nodes: ${(check.ms / 1000).toFixed(2)} s wall, ${summary?.[0] ?? 'no summary'}`);

    if (n === SIZES[0]) {
      const prober = join(base, 'prober.mjs');
      writeFileSync(prober, PROBER);
      const clientNs = podNetnsName(prefix, 'default', 'client-1');
      const latencies: number[] = [];
      const applyTimes: number[] = [];
      const fromAck: number[] = [];
      for (let k = 0; k < APPLIES; k++) {
        const vip = `10.254.200.${10 + k}`;
        const port = 9000 + k;
        const file = join(base, `svc-${k}.yaml`);
        writeFileSync(file, `apiVersion: v1\nkind: Service\nmetadata: {name: bench-${k}}\nspec:\n  clusterIP: ${vip}\n  selector: {app: web}\n  ports: [{port: ${port}, targetPort: 8080}]\n`);
        const { connected } = await startProber(clientNs, prober, vip, port, 20000 + 5000 * k);
        const t0 = Date.now();
        let acked = 0;
        const ap = await lab(['apply', '--dir', dir, '-f', file], (out) => { if (!acked && out.includes('applied')) acked = Date.now(); });
        if (ap.code !== 0) throw new Error(`lab apply failed: ${ap.stderr}`);
        const at = await connected;
        applyTimes.push(ap.ms);
        latencies.push(at - t0);
        fromAck.push(at - acked);
      }
      console.log(`\nlab apply of a new Service -> first connection to its ClusterIP (${n} nodes): ${stats(latencies)}`);
      console.log(`  the lab apply command's run time (CLI start-up + API write): ${stats(applyTimes)}`);
      console.log(`  from the API's acknowledgement of the write (apply prints "applied") to the first connection: ${stats(fromAck)}`);
    }
    const down = await lab(['down', '--dir', dir]);
    console.log(`knet lab down, ${n} nodes: ${(down.ms / 1000).toFixed(2)} s`);
    current = null;
  }
} finally {
  await cleanup();
}
