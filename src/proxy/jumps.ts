// The jumps from the built-in chains into knet's chains (kube-proxy's iptablesJumpChains), made
// idempotent: each sync that needs them lists the built-in chains and inserts only what is
// missing, in one restore. Also the cleanup of everything the proxy (or kube-proxy) wrote.
import { iptables, iptablesRestore, iptablesSave, type IptablesTarget } from '../kernel/iptables.ts';
import { appliedFromSave, planRestores } from './restore-plan.ts';
import type { RenderedTables } from '../rules/types.ts';
import { isServiceChainName } from '../rules/names.ts';

export interface JumpRule {
  table: 'filter' | 'nat';
  from: string;
  to: string;
  comment: string;
  extra: string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];

export const JUMPS: JumpRule[] = [
  { table: 'filter', from: 'INPUT', to: 'KUBE-EXTERNAL-SERVICES', comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-EXTERNAL-SERVICES', comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', from: 'INPUT', to: 'KUBE-NODEPORTS', comment: 'kubernetes health check service ports', extra: [] },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-SERVICES', comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-SERVICES', comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-FORWARD', comment: 'kubernetes forwarding rules', extra: [] },
  { table: 'filter', from: 'INPUT', to: 'KUBE-PROXY-FIREWALL', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-PROXY-FIREWALL', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', from: 'FORWARD', to: 'KUBE-PROXY-FIREWALL', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'nat', from: 'OUTPUT', to: 'KUBE-SERVICES', comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', from: 'PREROUTING', to: 'KUBE-SERVICES', comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', from: 'POSTROUTING', to: 'KUBE-POSTROUTING', comment: 'kubernetes postrouting rules', extra: [] },
];

/** kubelet-style firewall chain: jumped to only when the rendered rules contain it. */
export const FIREWALL_JUMPS: JumpRule[] = [
  { table: 'filter', from: 'INPUT', to: 'KUBE-FIREWALL', comment: 'kubernetes firewall for dropping marked packets', extra: [] },
  { table: 'filter', from: 'OUTPUT', to: 'KUBE-FIREWALL', comment: 'kubernetes firewall for dropping marked packets', extra: [] },
];

export const CANARY = 'KUBE-PROXY-CANARY';

/** Chains the proxy owns: removed by --cleanup (kube-proxy's CleanupLeftovers list plus ours). */
const OWNED: Record<string, string[]> = {
  nat: ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', CANARY],
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', CANARY],
};
/** The renderer's service chains, plus KUBE-XLB-* that older kube-proxy wrote (cleaned up too). */
export function isServiceChain(chain: string): boolean {
  return isServiceChainName(chain) || chain.startsWith('KUBE-XLB-');
}

export function isOwnedChain(table: string, chain: string): boolean {
  return (table === 'nat' && isServiceChain(chain)) || (OWNED[table]?.includes(chain) ?? false);
}

const quote = (s: string) => (/^[\w.:/-]+$/.test(s) ? s : `"${s}"`);

export function jumpRuleText(j: JumpRule, op: '-I' | '-A' = '-I'): string {
  return [op, j.from, ...(op === '-I' ? ['1'] : []), ...j.extra, '-m', 'comment', '--comment', quote(j.comment), '-j', j.to].join(' ');
}

/** Whether a line of `iptables -S CHAIN` output is this jump (comment and target, any order). */
export function isJumpLine(line: string, j: JumpRule): boolean {
  return line.startsWith(`-A ${j.from} `) && line.includes(` -j ${j.to}`) && (line.endsWith(` -j ${j.to}`) || line.includes(` -j ${j.to} `)) &&
    (line.includes(`--comment "${j.comment}"`) || line.includes(`--comment ${j.comment}`));
}

/** The restore text that inserts every missing jump; '' when none is missing. Pure. */
export function missingJumpsText(jumps: readonly JumpRule[], listed: Map<string, string[]>): string {
  const byTable = new Map<string, string[]>();
  for (const j of jumps) {
    const lines = listed.get(`${j.table}/${j.from}`) ?? [];
    if (lines.some((l) => isJumpLine(l, j))) continue;
    let l = byTable.get(j.table);
    if (!l) byTable.set(j.table, (l = []));
    l.push(jumpRuleText(j));
  }
  const out: string[] = [];
  for (const [t, lines] of byTable) out.push(`*${t}`, ...lines, 'COMMIT');
  return out.length ? out.join('\n') + '\n' : '';
}

async function listBuiltins(t: IptablesTarget, jumps: readonly JumpRule[]): Promise<Map<string, string[]>> {
  const listed = new Map<string, string[]>();
  for (const key of new Set(jumps.map((j) => `${j.table}/${j.from}`))) {
    const [table, chain] = key.split('/') as [string, string];
    const out = await iptables(t, ['-t', table, '-S', chain]);
    listed.set(key, out.split('\n'));
  }
  return listed;
}

/** Inserts the jumps that are missing; returns how many were inserted. The target chains must exist. */
export async function ensureJumps(t: IptablesTarget, jumps: readonly JumpRule[]): Promise<number> {
  const text = missingJumpsText(jumps, await listBuiltins(t, jumps));
  if (text) await iptablesRestore(t, text, { noflush: true });
  return text.split('\n').filter((l) => l.startsWith('-I')).length;
}

/**
 * Removes every jump into the proxy's chains and then the chains themselves (flush first, then
 * delete, each in bounded restores so nft stays fast at scale). Safe to run twice.
 */
export async function cleanupIptables(t: IptablesTarget, maxChainsPerRestore = 1000): Promise<{ jumps: number; chains: number }> {
  const targets = new Set([...JUMPS.map((j) => j.to)]);
  const del: string[] = [];
  const byTable = new Map<string, string[]>();
  for (const [key, lines] of await listBuiltins(t, JUMPS)) {
    const table = key.split('/')[0]!;
    for (const line of lines) {
      const m = / -j (\S+)/.exec(line);
      if (line.startsWith('-A ') && m && targets.has(m[1]!)) {
        let l = byTable.get(table);
        if (!l) byTable.set(table, (l = []));
        l.push(`-D ${line.slice(3)}`);
        del.push(line);
      }
    }
  }
  if (del.length) {
    const text = [...byTable].flatMap(([tb, lines]) => [`*${tb}`, ...lines, 'COMMIT']).join('\n') + '\n';
    await iptablesRestore(t, text, { noflush: true });
  }
  let chains = 0;
  for (const table of ['filter', 'nat']) {
    const applied = appliedFromSave(await iptablesSave(t, table), (tb, c) => isOwnedChain(tb, c));
    const owned = [...(applied.get(table)?.keys() ?? [])];
    if (!owned.length) continue;
    const flush: RenderedTables = new Map([[table, { chains: new Map(owned.map((c) => [c, []])), deletes: new Set<string>() }]]);
    const p1 = planRestores(flush, applied, { full: false, isStale: () => false, maxChainsPerRestore });
    for (const r of p1.restores) await iptablesRestore(t, r, { noflush: true });
    const drop: RenderedTables = new Map([[table, { chains: new Map(), deletes: new Set(owned) }]]);
    const p2 = planRestores(drop, p1.next, { full: false, isStale: () => false, maxChainsPerRestore });
    for (const r of p2.restores) await iptablesRestore(t, r, { noflush: true });
    chains += owned.length;
  }
  return { jumps: del.length, chains };
}
