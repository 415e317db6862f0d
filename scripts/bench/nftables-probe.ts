// Where `nft -f` spends its time on kube-proxy-shaped tables (issue 16, section 3): wall, user
// and system time of the nft process for the same table written different ways, in a throwaway
// knt-n namespace. Each row starts from an empty namespace (the table deleted).
// Usage: node --import tsx scripts/bench/nftables-probe.ts [sizes=1000,2000,4000] [experiments=all]
//   experiments: whole, split, order, tiny, anon, batched:B, session:B, interactive, applier:C (the
//   applier's own full-sync plan, C service chains per transaction; `tiny` loads the table that
//   way too, which at 10k is minutes faster than one transaction)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { NFT } from '../../src/kernel/nft.ts';
import { planFull } from '../../src/proxy/nft-plan.ts';
import { parseKubeProxyConfig, settingsFromConfig } from '../../src/rules/config.ts';
import { nftablesText, renderNftables } from '../../src/rules/nftables.ts';
import { syntheticCluster } from './synthetic-cluster.ts';

const sizes = (process.argv[2] ?? '1000,2000,4000').split(',').map(Number);
const which = new Set((process.argv[3] ?? 'whole,split,order,tiny').split(','));
const settings = settingsFromConfig(parseKubeProxyConfig('mode: nftables\nclusterCIDR: 10.0.0.0/8\n'), { nodeName: 'bench', nodeIPs: ['192.168.1.2'], interfaceAddresses: [{ iface: 'eth0', cidr: '192.168.1.2/24' }] });
const dir = mkdtempSync(join(tmpdir(), 'knt-n-probe-'));
const ns = randomNetnsName('knt-n');
await addNetns(ns);

/** nft -f under /usr/bin/time: wall, user and system seconds of the nft process. */
function measure(text: string, flags: string[] = []): { wall: number; user: number; sys: number } {
  const f = join(dir, 'tx.nft');
  writeFileSync(f, text);
  const p = spawnSync('/usr/bin/time', ['-f', 'TIME %e %U %S', 'ip', 'netns', 'exec', ns, NFT, ...flags, '-f', f], { encoding: 'utf8' });
  const m = /TIME (\S+) (\S+) (\S+)/.exec(p.stderr);
  if (p.status !== 0 || !m) throw new Error(`nft failed: ${p.stderr.slice(0, 400)}`);
  return { wall: Number(m[1]), user: Number(m[2]), sys: Number(m[3]) };
}

const reset = () => measure('add table ip kube-proxy\ndelete table ip kube-proxy\n');
const fmt = (r: { wall: number; user: number; sys: number }) => `${r.wall.toFixed(2)} s (user ${r.user.toFixed(2)}, sys ${r.sys.toFixed(2)})`;

try {
  for (const n of sizes) {
    const r = renderNftables({ cluster: syntheticCluster(n), settings });
    const text = nftablesText(r);
    const lines = text.split('\n').filter(Boolean);
    const isElement = (l: string) => l.startsWith('add element ');
    const isRule = (l: string) => l.startsWith('add rule ');
    const rows: string[] = [];
    /** Loads the table as the applier's full sync does, one timing per transaction. */
    const loadAsApplier = (chainsPerTransaction: number) => planFull(r, null, null, { now: 0, maxChainsPerTransaction: chainsPerTransaction })
      .transactions.map((tx) => measure(tx().join('\n') + '\n'));
    if (which.has('whole')) {
      reset();
      rows.push(`whole table, one transaction: ${fmt(measure(text))}`);
    }
    if (which.has('split')) {
      reset();
      const noElements = lines.filter((l) => !isElement(l)).join('\n') + '\n';
      const a = measure(noElements);
      const b = measure(lines.filter(isElement).join('\n') + '\n');
      rows.push(`chains+rules, then elements: ${fmt(a)} + ${fmt(b)}`);
    }
    if (which.has('order')) {
      // Every chain declared and every element added while the table holds no anonymous sets
      // yet; the rules (and their numgen vmaps) after.
      reset();
      const decl = lines.filter((l) => !isRule(l) && !isElement(l));
      const fixedRules = lines.filter((l) => isRule(l) && !l.split(' ')[4]!.includes('/'));
      const a = measure([...decl, ...fixedRules, ...lines.filter(isElement)].join('\n') + '\n');
      const b = measure(lines.filter((l) => isRule(l) && l.split(' ')[4]!.includes('/')).join('\n') + '\n');
      rows.push(`declarations+elements first, rules after: ${fmt(a)} + ${fmt(b)}`);
    }
    for (const w of which) {
      // batched:B: declarations and elements first, then the service chains' rules B services
      // per transaction (each its own nft run).
      const session = /^session:(\d+)$/.exec(w);
      if (session) {
        // The same batches, each one line (one transaction) to a single long-lived `nft -i`.
        reset();
        const decl = lines.filter((l) => !isRule(l) && !isElement(l));
        const fixedRules = lines.filter((l) => isRule(l) && !l.split(' ')[4]!.includes('/'));
        const per = Number(session[1]);
        const svcRules = new Map<string, string[]>();
        for (const l of lines) if (isRule(l) && l.split(' ')[4]!.includes('/')) {
          const key = l.split(' ')[4]!.split('/').slice(0, 2).join('/').replace(/^\w+-\w+-/, '');
          (svcRules.get(key) ?? svcRules.set(key, []).get(key)!).push(l);
        }
        const groups = [...svcRules.values()];
        const input = [[...decl, ...fixedRules, ...lines.filter(isElement)].join(' ; ')];
        for (let i = 0; i < groups.length; i += per) input.push(groups.slice(i, i + per).flat().join(' ; '));
        const t0 = performance.now();
        const p = spawnSync('/usr/bin/time', ['-f', 'TIME %e %U %S', 'ip', 'netns', 'exec', ns, NFT, '-i'], { input: input.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 });
        const m = /TIME (\S+) (\S+) (\S+)/.exec(p.stderr);
        if (!m || /Error/.test(p.stderr)) throw new Error(p.stderr.slice(0, 800));
        rows.push(`one nft -i, ${input.length} transactions (${per} services each): ${((performance.now() - t0) / 1000).toFixed(2)} s (user ${m[2]}, sys ${m[3]})`);
        continue;
      }
      const b = /^batched:(\d+)$/.exec(w);
      if (!b) continue;
      reset();
      const decl = lines.filter((l) => !isRule(l) && !isElement(l));
      const fixedRules = lines.filter((l) => isRule(l) && !l.split(' ')[4]!.includes('/'));
      const first = measure([...decl, ...fixedRules, ...lines.filter(isElement)].join('\n') + '\n');
      const per = Number(b[1]);
      const svcRules = new Map<string, string[]>();
      for (const l of lines) if (isRule(l) && l.split(' ')[4]!.includes('/')) {
        const key = l.split(' ')[4]!.split('/').slice(0, 2).join('/').replace(/^\w+-\w+-/, '');
        (svcRules.get(key) ?? svcRules.set(key, []).get(key)!).push(l);
      }
      const groups = [...svcRules.values()];
      const times: Array<{ wall: number; user: number; sys: number }> = [];
      for (let i = 0; i < groups.length; i += per) times.push(measure(groups.slice(i, i + per).flat().join('\n') + '\n'));
      const sum = (k: 'wall' | 'user' | 'sys') => times.reduce((a, t) => a + t[k], 0);
      rows.push(`declarations+elements ${fmt(first)}, then rules ${per} services per transaction: ${times.length} transactions ${sum('wall').toFixed(2)} s (user ${sum('user').toFixed(2)}, sys ${sum('sys').toFixed(2)}); first ${fmt(times[0]!)}, last ${fmt(times[times.length - 1]!)}`);
    }
    if (which.has('anon')) {
      // The kernel's price of anonymous sets: n chains, each with one `numgen ... vmap` rule (one
      // anonymous set __map%d each, as kube-proxy's service chains have), against the same
      // chains with a plain goto; 2000 chains per transaction, in a table of their own.
      for (const kind of ['vmap', 'goto'] as const) {
        measure('add table ip probe\ndelete table ip probe\n');
        const times: Array<{ wall: number; user: number; sys: number }> = [];
        for (let at = 0; at < n; at += 2000) {
          const lines = at === 0 ? ['add table ip probe', 'add chain ip probe target'] : [];
          for (let i = at; i < Math.min(n, at + 2000); i++) {
            lines.push(`add chain ip probe c${i}`, `add rule ip probe c${i} ${kind === 'vmap' ? 'numgen random mod 1 vmap { 0 : goto target }' : 'goto target'}`);
          }
          times.push(measure(lines.join('\n') + '\n'));
        }
        measure('delete table ip probe\n');
        const sys = times.reduce((a, t) => a + t.sys, 0);
        rows.push(`${n} chains with ${kind === 'vmap' ? 'a numgen vmap (an anonymous set) each' : 'a plain goto each'}, 2000 per transaction: ${times.map((t) => t.wall.toFixed(2)).join(' + ')} s (sys ${sys.toFixed(2)} s)`);
      }
    }
    if (which.has('interactive')) {
      // One long-lived `nft -i`: is its cache reused from one command (transaction) to the next?
      reset();
      loadAsApplier(2000);
      const chain = lines.find((l) => l.startsWith('add chain ') && l.includes('endpoint-'))!.split(' ')[4]!;
      for (const n of [1, 11, 41]) {
        const cmds = Array.from({ length: n }, (_, i) => `add chain ip kube-proxy probe-${n}-${i} ; flush chain ip kube-proxy probe-${n}-${i} ; ` +
          `add rule ip kube-proxy probe-${n}-${i} numgen random mod 1 vmap { 0 : goto ${chain} } ; ` +
          `add element ip kube-proxy service-ips { 172.31.${n}.${i} . tcp . 80 : goto probe-${n}-${i} }`).join('\n') + '\n';
        const t0 = performance.now();
        const p = spawnSync('ip', ['netns', 'exec', ns, NFT, '-i'], { input: cmds, encoding: 'utf8' });
        if (p.status !== 0 || /Error/.test(p.stderr)) throw new Error(p.stderr);
        rows.push(`nft -i, ${n} partial-sync-like transactions: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
      }
    }
    for (const w of which) {
      const a = /^applier:(\d+)$/.exec(w);
      if (!a) continue;
      reset();
      const times = loadAsApplier(Number(a[1]));
      const sum = (k: 'wall' | 'user' | 'sys') => times.reduce((acc, t) => acc + t[k], 0);
      rows.push(`applier's full sync, ${a[1]} service chains per transaction: ${times.length} transactions ${sum('wall').toFixed(2)} s (user ${sum('user').toFixed(2)}, sys ${sum('sys').toFixed(2)}); first ${fmt(times[0]!)}, last ${fmt(times[times.length - 1]!)}`);
    }
    if (which.has('tiny')) {
      reset();
      loadAsApplier(2000);
      const chain = lines.find((l) => l.startsWith('add chain ') && l.includes('endpoint-'))!.split(' ')[4]!;
      rows.push(`then an add table (nothing changes, the cache is read): ${fmt(measure('add table ip kube-proxy\n'))}`);
      rows.push(`then one rule with a jump: ${fmt(measure(`add rule ip kube-proxy ${chain} jump mark-for-masquerade\n`))}`);
      rows.push(`then one rule without a jump: ${fmt(measure(`add rule ip kube-proxy ${chain} counter\n`))}`);
      rows.push(`then one set element: ${fmt(measure('add element ip kube-proxy cluster-ips { 172.31.255.1 }\n'))}`);
      rows.push(`then one set element, checked only (nft -c: the cache is read, nothing committed): ${fmt(measure('add element ip kube-proxy cluster-ips { 172.31.255.2 }\n', ['-c']))}`);
      rows.push(`then one verdict map element: ${fmt(measure(`add element ip kube-proxy service-ips { 172.31.255.1 . tcp . 80 : goto ${chain} }\n`))}`);
      rows.push(`then a chain with a numgen vmap: ${fmt(measure(`add chain ip kube-proxy probe-x\nadd rule ip kube-proxy probe-x numgen random mod 1 vmap { 0 : goto ${chain} }\n`))}`);
    }
    console.log(`${n} services (${lines.length} lines, ${r.services.size} services):`);
    for (const row of rows) console.log(`  ${row}`);
  }
} finally {
  await deleteNetns(ns);
  rmSync(dir, { recursive: true, force: true });
}
