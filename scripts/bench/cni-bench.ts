// CNI benchmark: ADD and DEL latency (p50, p95) and peak RSS of knet's plugin and of the
// reference bridge + host-local pair, same config shape, interleaved in one run, each call a
// real exec inside a node namespace (as a runtime does), NODE_EXTRA_CA_CERTS unset.
// Needs root and `npm run build`. Usage: scripts/bench/cni [pods]
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';

const PODS = Number(process.argv[2] ?? 100);
const ROOT = resolve(import.meta.dirname, '../..');
const REF = '/usr/lib/cni';

interface Sample { ms: number; rssKb: number }

function call(nodeNs: string, bin: string, command: string, conf: unknown, cid: string, netns: string): Promise<Sample> {
  return new Promise((resolveP, reject) => {
    const env = { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: cid, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: REF };
    const start = process.hrtime.bigint();
    // GNU time reports the plugin's peak RSS on stderr's last line.
    const child = spawn('ip', ['netns', 'exec', nodeNs, '/usr/bin/time', '-f', '%M', bin], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.stdin.end(JSON.stringify(conf));
    child.on('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (code !== 0) return reject(new Error(`${bin} ${command} failed: ${out} ${err}`));
      resolveP({ ms, rssKb: Number(err.trim().split('\n').pop()) });
    });
  });
}

function stats(xs: Sample[]) {
  const s = xs.map((x) => x.ms).sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { p50: q(0.5), p95: q(0.95), rssMb: Math.max(...xs.map((x) => x.rssKb)) / 1024 };
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('run as root');
  const dir = mkdtempSync(join(tmpdir(), 'knt-c-bench-'));
  const bin = join(dir, 'knet');
  copyFileSync(join(ROOT, 'dist/cni/knet'), bin);
  copyFileSync(join(ROOT, 'node_modules/netlink/prebuilds', `linux-${arch()}`, 'node.napi.node'), join(dir, 'knet-netlink.node'));
  const nodeK = randomNetnsName('knt-c');
  const nodeR = randomNetnsName('knt-c');
  const pods = Array.from({ length: PODS }, () => randomNetnsName('knt-c'));
  const all = [nodeK, nodeR, ...pods];
  try {
    for (const ns of all) await addNetns(ns);
    const common = { cniVersion: '1.0.0', name: 'knt-c-bench', bridge: 'cni0', mtu: 1450, hairpinMode: true, ipMasq: true };
    const knet = { ...common, type: 'knet', subnet: '10.79.0.0/23', network: '10.79.0.0/16', dataDir: join(dir, 'data-knet') };
    const ref = { ...common, type: 'bridge', isGateway: true, isDefaultGateway: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.79.0.0/23' }]], dataDir: join(dir, 'data-ref') } };
    const r = { kAdd: [] as Sample[], kDel: [] as Sample[], rAdd: [] as Sample[], rDel: [] as Sample[] };
    // Pods reuse one namespace each: knet's ADD/DEL then the reference's, alternating which goes first.
    for (const [i, ns] of pods.entries()) {
      const p = `/run/netns/${ns}`;
      const order = i % 2 === 0 ? ['k', 'r'] : ['r', 'k'];
      for (const who of order) {
        if (who === 'k') r.kAdd.push(await call(nodeK, bin, 'ADD', knet, `c${i}`, p));
        else r.rAdd.push(await call(nodeR, `${REF}/bridge`, 'ADD', ref, `c${i}`, p));
        if (who === 'k') r.kDel.push(await call(nodeK, bin, 'DEL', knet, `c${i}`, p));
        else r.rDel.push(await call(nodeR, `${REF}/bridge`, 'DEL', ref, `c${i}`, p));
      }
    }
    const k = { add: stats(r.kAdd), del: stats(r.kDel) };
    const f = { add: stats(r.rAdd), del: stats(r.rDel) };
    const row = (name: string, s: ReturnType<typeof stats>) => `${name.padEnd(28)} p50 ${s.p50.toFixed(1).padStart(6)} ms  p95 ${s.p95.toFixed(1).padStart(6)} ms  peak RSS ${s.rssMb.toFixed(1)} MB`;
    console.log(`CNI benchmark, ${PODS} pods, ipMasq on, NODE_EXTRA_CA_CERTS unset`);
    console.log(row('knet ADD', k.add));
    console.log(row('bridge+host-local ADD', f.add));
    console.log(row('knet DEL', k.del));
    console.log(row('bridge+host-local DEL', f.del));
    console.log(`ADD p50 ratio knet/reference ${(k.add.p50 / f.add.p50).toFixed(2)} (goal <= 1.0)`);
    console.log(`DEL p50 ratio knet/reference ${(k.del.p50 / f.del.p50).toFixed(2)} (goal <= 0.5)`);
  } finally {
    for (const ns of all) await deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
