// CNI benchmark: ADD and DEL latency (p50, p95) and peak RSS of knet's plugin (the Bun
// executable) and of the reference bridge + host-local pair, interleaved in one run, each call a
// real exec inside a node namespace (as a runtime does), NODE_EXTRA_CA_CERTS unset; and the
// start-up cost, CNI_COMMAND=VERSION.
//
// The reference config is what flannel hands its delegate: bridge with hairpinMode and
// isDefaultGateway, no ipMasq, host-local; knet gets the same bridge, hairpin and no ipMasq.
// The ipMasq variant of both is printed too.
// Needs root and `npm run build`. Usage: scripts/bench/cni [pods]
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';

const PODS = Number(process.argv[2] ?? 100);
const ROOT = resolve(import.meta.dirname, '../..');
const REF = '/usr/lib/cni';
const GOALS = { addRatio: 1.0, delRatio: 1.2, versionMs: 10, rssMb: 40 };

interface Sample { ms: number; rssKb: number }

function exec(argv: string[], env: NodeJS.ProcessEnv, stdin: string): Promise<{ ms: number; code: number | null; out: string; err: string }> {
  return new Promise((resolveP) => {
    const start = process.hrtime.bigint();
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.stdin.end(stdin);
    child.on('exit', (code) => resolveP({ ms: Number(process.hrtime.bigint() - start) / 1e6, code, out, err }));
  });
}

async function call(nodeNs: string, bin: string, command: string, conf: unknown, cid: string, netns: string): Promise<Sample> {
  const env = { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: cid, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: REF };
  // GNU time reports the plugin's peak RSS on stderr's last line.
  const r = await exec(['ip', 'netns', 'exec', nodeNs, '/usr/bin/time', '-f', '%M', bin], env, JSON.stringify(conf));
  if (r.code !== 0) throw new Error(`${bin} ${command} failed: ${r.out} ${r.err}`);
  return { ms: r.ms, rssKb: Number(r.err.trim().split('\n').pop()) };
}

async function version(bin: string): Promise<Sample> {
  const r = await exec(['/usr/bin/time', '-f', '%M', bin], { PATH: process.env.PATH, CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.1.0"}');
  if (r.code !== 0 || !r.out.includes('supportedVersions')) throw new Error(`${bin} VERSION failed: ${r.out} ${r.err}`);
  return { ms: r.ms, rssKb: Number(r.err.trim().split('\n').pop()) };
}

function stats(xs: Sample[]) {
  const s = xs.map((x) => x.ms).sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { p50: q(0.5), p95: q(0.95), rssMb: Math.max(...xs.map((x) => x.rssKb)) / 1024 };
}

type Variant = 'plain' | 'masq';
const VARIANTS: Variant[] = ['plain', 'masq'];

async function main() {
  if (process.getuid?.() !== 0) throw new Error('run as root');
  const dir = mkdtempSync(join(tmpdir(), 'knt-c-bench-'));
  const bin = join(dir, 'knet');
  copyFileSync(join(ROOT, 'dist/cni/knet'), bin);
  const nodes = Object.fromEntries(VARIANTS.map((v) => [v, { k: randomNetnsName('knt-c'), r: randomNetnsName('knt-c') }])) as Record<Variant, { k: string; r: string }>;
  const pods = Array.from({ length: PODS }, () => randomNetnsName('knt-c'));
  const all = [...VARIANTS.flatMap((v) => [nodes[v].k, nodes[v].r]), ...pods];
  try {
    for (const ns of all) await addNetns(ns);
    const confs = Object.fromEntries(VARIANTS.map((v) => {
      const common = { cniVersion: '1.0.0', name: 'knt-c-bench', bridge: 'cni0', mtu: 1450, hairpinMode: true, ipMasq: v === 'masq' };
      const knet = { ...common, type: 'knet', subnet: '10.79.0.0/23', network: '10.79.0.0/16', dataDir: join(dir, `data-knet-${v}`), iptablesBackend: 'nft' };
      const ref = { ...common, type: 'bridge', isGateway: true, isDefaultGateway: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.79.0.0/23' }]], dataDir: join(dir, `data-ref-${v}`) } };
      return [v, { knet, ref }];
    })) as Record<Variant, { knet: object; ref: object }>;
    const empty = () => ({ kAdd: [] as Sample[], kDel: [] as Sample[], rAdd: [] as Sample[], rDel: [] as Sample[] });
    const samples: Record<Variant, ReturnType<typeof empty>> = { plain: empty(), masq: empty() };
    const versions = { k: [] as Sample[], r: [] as Sample[] };
    // Pods reuse one namespace each: knet's ADD/DEL then the reference's, alternating which goes first.
    for (const [i, ns] of pods.entries()) {
      const p = `/run/netns/${ns}`;
      const order = i % 2 === 0 ? ['k', 'r'] : ['r', 'k'];
      for (const v of VARIANTS) {
        const s = samples[v];
        for (const who of order) {
          if (who === 'k') {
            s.kAdd.push(await call(nodes[v].k, bin, 'ADD', confs[v].knet, `c${i}`, p));
            s.kDel.push(await call(nodes[v].k, bin, 'DEL', confs[v].knet, `c${i}`, p));
          } else {
            s.rAdd.push(await call(nodes[v].r, `${REF}/bridge`, 'ADD', confs[v].ref, `c${i}`, p));
            s.rDel.push(await call(nodes[v].r, `${REF}/bridge`, 'DEL', confs[v].ref, `c${i}`, p));
          }
        }
      }
      for (const who of order) versions[who as 'k' | 'r'].push(await version(who === 'k' ? bin : `${REF}/bridge`));
    }
    const row = (name: string, s: ReturnType<typeof stats>) => `${name.padEnd(34)} p50 ${s.p50.toFixed(1).padStart(6)} ms  p95 ${s.p95.toFixed(1).padStart(6)} ms  peak RSS ${s.rssMb.toFixed(1)} MB`;
    console.log(`CNI benchmark, ${PODS} pods, interleaved, NODE_EXTRA_CA_CERTS unset (knet: ${(statSync(bin).size / 2 ** 20).toFixed(0)} MiB executable)`);
    const ratios = {} as Record<Variant, { add: number; del: number; rss: number }>;
    for (const v of VARIANTS) {
      const s = samples[v];
      const k = { add: stats(s.kAdd), del: stats(s.kDel) };
      const f = { add: stats(s.rAdd), del: stats(s.rDel) };
      console.log(v === 'plain' ? 'bridge, hairpin, no ipMasq (what flannel delegates):' : 'the same with ipMasq:');
      console.log(row('  knet ADD', k.add));
      console.log(row('  bridge+host-local ADD', f.add));
      console.log(row('  knet DEL', k.del));
      console.log(row('  bridge+host-local DEL', f.del));
      ratios[v] = { add: k.add.p50 / f.add.p50, del: k.del.p50 / f.del.p50, rss: Math.max(k.add.rssMb, k.del.rssMb) };
      console.log(`  ADD p50 knet/reference ${ratios[v].add.toFixed(2)}, DEL p50 ${ratios[v].del.toFixed(2)}`);
    }
    const kv = stats(versions.k);
    console.log(row('knet VERSION', kv));
    console.log(row('bridge VERSION', stats(versions.r)));
    const rss = Math.max(ratios.plain.rss, ratios.masq.rss, kv.rssMb);
    const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
    console.log(`goals: ADD p50 <= ${GOALS.addRatio}x: ${ratios.plain.add.toFixed(2)} ${verdict(ratios.plain.add <= GOALS.addRatio)}; ` +
      `DEL p50 <= ${GOALS.delRatio}x: ${ratios.plain.del.toFixed(2)} ${verdict(ratios.plain.del <= GOALS.delRatio)}; ` +
      `VERSION <= ${GOALS.versionMs} ms: ${kv.p50.toFixed(1)} ${verdict(kv.p50 <= GOALS.versionMs)}; ` +
      `peak RSS <= ${GOALS.rssMb} MB: ${rss.toFixed(1)} ${verdict(rss <= GOALS.rssMb)}`);
  } finally {
    for (const ns of all) await deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
