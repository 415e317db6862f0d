// nft adapter: `nft -f -` with the commands on stdin (never on a command line), listing, and
// deleting kube-proxy's table, for the machine's namespace or a named one.
import { existsSync } from 'node:fs';
import { run, ExecError } from './exec.ts';
import { assertNetnsName } from './netns.ts';

/**
 * The system's nft by absolute path: a bare "nft" can resolve to another program of that name
 * first on PATH (npm puts node_modules/.bin there, and @vercel/nft installs an `nft`).
 */
export const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/local/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p)) ?? '/usr/sbin/nft';

export interface NftTarget {
  /** Named network namespace to work in; null or absent: the caller's own namespace. */
  netns?: string | null;
}

function wrap(t: NftTarget, args: string[]): [string, string[]] {
  if (!t.netns) return [NFT, args];
  assertNetnsName(t.netns);
  return ['ip', ['netns', 'exec', t.netns, NFT, ...args]];
}

/** Runs `nft -f -` (with `check`: `nft -c -f -`, which changes nothing) on the given commands. */
export async function nftApply(t: NftTarget, commands: string | Iterable<string>, o: { check?: boolean } = {}): Promise<void> {
  const [file, args] = wrap(t, [...(o.check ? ['-c'] : []), '-f', '-']);
  await run(file, args, { input: commands, timeoutMs: 15 * 60_000 });
}

/** `nft list table FAMILY NAME` (null when the table does not exist). */
export async function nftListTable(t: NftTarget, family: 'ip' | 'ip6', table: string): Promise<string | null> {
  const [file, args] = wrap(t, ['list', 'table', family, table]);
  try {
    return (await run(file, args, { timeoutMs: 5 * 60_000 })).stdout;
  } catch (e) {
    if (e instanceof ExecError && /No such file or directory/.test(e.stderr)) return null;
    throw e;
  }
}
