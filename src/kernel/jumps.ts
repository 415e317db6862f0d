// The one way knet ensures a jump rule from a built-in chain into its own chains (the proxy's
// kube-proxy jumps, the userspace portals, the agent's and the CNI plugin's masquerade): list
// the built-in chains, and insert or append only what is missing, in one restore. A rule counts
// as present when its chain, target, comment and matches are all on one listed line.
import type { JumpRule } from '../rules/types.ts';
import type { Iptables } from './iptables.ts';

const quote = (s: string) => (/^[\w.:/-]+$/.test(s) ? s : `"${s}"`);

/** The restore line that adds the jump ("-I FROM 1 ..." or "-A FROM ..."). */
export function jumpRuleText(j: JumpRule, op: '-I' | '-A' = j.position === 'append' ? '-A' : '-I'): string {
  return [op, j.from, ...(op === '-I' ? ['1'] : []), ...j.extra, '-m', 'comment', '--comment', quote(j.comment), '-j', j.to].join(' ');
}

/** `extra` cut where an option starts a new match ("-m", addresses, "!"), as iptables prints them. */
function matchGroups(extra: readonly string[]): string[] {
  const groups: string[][] = [];
  for (const tok of extra) {
    const starts = tok === '!' || tok === '-m' || tok === '-s' || tok === '-d' || tok === '-i' || tok === '-o' || tok === '-p';
    const last = groups[groups.length - 1];
    if (!last || (starts && !(last.length === 1 && last[0] === '!'))) groups.push([tok]);
    else last.push(tok);
  }
  return groups.map((g) => ` ${g.join(' ')} `);
}

/** Whether a line of `iptables -S CHAIN` output is this jump (chain, target, comment, matches). */
export function isJumpLine(line: string, j: JumpRule): boolean {
  if (!line.startsWith(`-A ${j.from} `) || !(line.endsWith(` -j ${j.to}`) || line.includes(` -j ${j.to} `))) return false;
  if (!line.includes(`--comment "${j.comment}"`) && !line.includes(`--comment ${j.comment} `)) return false;
  const padded = `${line} `;
  return matchGroups(j.extra).every((g) => padded.includes(g));
}

/** The restore text that adds every missing jump; '' when none is missing. Pure. */
export function missingJumpsText(jumps: readonly JumpRule[], listed: ReadonlyMap<string, readonly string[]>): string {
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

/** The lines of each built-in chain the jumps start from, keyed "table/chain". */
export async function listJumpSources(ipt: Iptables, jumps: readonly JumpRule[]): Promise<Map<string, string[]>> {
  const listed = new Map<string, string[]>();
  for (const key of new Set(jumps.map((j) => `${j.table}/${j.from}`))) {
    const [table, chain] = key.split('/') as [string, string];
    listed.set(key, (await ipt.list(table, chain)) ?? []);
  }
  return listed;
}

/**
 * Adds the jumps that are missing; returns how many were added. The target chains must exist.
 * Jumps inserted first go in list order, so the last one of a chain ends up first in it.
 */
export async function ensureJumps(ipt: Iptables, jumps: readonly JumpRule[]): Promise<number> {
  const text = missingJumpsText(jumps, await listJumpSources(ipt, jumps));
  if (text) await ipt.restore(text, { noflush: true });
  return text.split('\n').filter((l) => l.startsWith('-I ') || l.startsWith('-A ')).length;
}
