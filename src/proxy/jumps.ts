// The jumps from the built-in chains into the proxy's chains (kube-proxy's iptablesJumpChains;
// src/kernel/jumps.ts ensures them), and the cleanup of everything the proxy (or kube-proxy) wrote.
import type { Iptables } from '../kernel/iptables.ts';
import { listJumpSources } from '../kernel/jumps.ts';
import { appliedFromSave, planRestores } from './restore-plan.ts';
import type { JumpRule, RenderedTables } from '../rules/types.ts';
import { isServiceChainName } from '../rules/names.ts';

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

/**
 * Removes every jump into the proxy's chains and then the chains themselves (flush first, then
 * delete, each in bounded restores so nft stays fast at scale). Safe to run twice.
 */
export async function cleanupIptables(ipt: Iptables, maxChainsPerRestore = 1000): Promise<{ jumps: number; chains: number }> {
  const targets = new Set([...JUMPS.map((j) => j.to)]);
  const del: string[] = [];
  const byTable = new Map<string, string[]>();
  for (const [key, lines] of await listJumpSources(ipt, JUMPS)) {
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
    await ipt.restore(text, { noflush: true });
  }
  let chains = 0;
  for (const table of ['filter', 'nat']) {
    const applied = appliedFromSave(await ipt.save(table), (tb, c) => isOwnedChain(tb, c));
    const owned = [...(applied.get(table)?.keys() ?? [])];
    if (!owned.length) continue;
    const flush: RenderedTables = new Map([[table, { chains: new Map(owned.map((c) => [c, []])), deletes: new Set<string>() }]]);
    const p1 = planRestores(flush, applied, { full: false, isStale: () => false, maxChainsPerRestore });
    for (const r of p1.restores) await ipt.restore(r, { noflush: true });
    const drop: RenderedTables = new Map([[table, { chains: new Map(), deletes: new Set(owned) }]]);
    const p2 = planRestores(drop, p1.next, { full: false, isStale: () => false, maxChainsPerRestore });
    for (const r of p2.restores) await ipt.restore(r, { noflush: true });
    chains += owned.length;
  }
  return { jumps: del.length, chains };
}
