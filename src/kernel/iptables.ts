// iptables adapter: restore and save through the real binaries, for either backend, optionally
// inside a named namespace. Rule text goes on stdin, never on a command line.
import { ExecError, run } from './exec.ts';
import { assertNetnsName } from './netns.ts';

export type IptablesBackend = 'nft' | 'legacy';
export type IpFamily = 'IPv4' | 'IPv6';

export interface IptablesTarget {
  backend: IptablesBackend;
  family?: IpFamily;
  /** Named network namespace to work in; null or absent: the caller's own namespace. */
  netns?: string | null;
  /** Seconds to wait for the xtables lock (legacy only honours it, nft ignores it). */
  waitSeconds?: number;
}

function tool(t: IptablesTarget, what: 'restore' | 'save' | ''): string {
  const base = t.family === 'IPv6' ? 'ip6tables' : 'iptables';
  return `${base}-${t.backend}${what ? `-${what}` : ''}`;
}

function wrap(t: IptablesTarget, file: string, args: string[]): [string, string[]] {
  if (!t.netns) return [file, args];
  assertNetnsName(t.netns);
  return ['ip', ['netns', 'exec', t.netns, file, ...args]];
}

export interface RestoreOptions {
  noflush?: boolean;
  counters?: boolean;
  test?: boolean;
}

/** `rules`: the restore input, whole or in pieces (see run()). */
export async function iptablesRestore(t: IptablesTarget, rules: string | Iterable<string>, o: RestoreOptions = {}): Promise<void> {
  const args: string[] = [];
  if (o.noflush) args.push('--noflush');
  if (o.counters) args.push('--counters');
  if (o.test) args.push('--test');
  if (t.waitSeconds !== undefined) args.push('-w', String(t.waitSeconds));
  const [file, a] = wrap(t, tool(t, 'restore'), args);
  await run(file, a, { input: rules, timeoutMs: 15 * 60_000 });
}

export async function iptablesSave(t: IptablesTarget, table?: string): Promise<string> {
  const args = table ? ['-t', table] : [];
  const [file, a] = wrap(t, tool(t, 'save'), args);
  return (await run(file, a, { timeoutMs: 5 * 60_000 })).stdout;
}

/** Runs one iptables command (e.g. -C/-I checks for jump rules) with an argument array. */
export async function iptables(t: IptablesTarget, args: readonly string[]): Promise<string> {
  const extra = t.waitSeconds !== undefined ? ['-w', String(t.waitSeconds)] : [];
  const [file, a] = wrap(t, tool(t, ''), [...extra, ...args]);
  return (await run(file, a)).stdout;
}

/**
 * What the proxy and the agents need from iptables, in front of the binaries: restore, save and
 * listing one chain. The real one runs the tools on a target; test/helpers/fake-iptables.ts models
 * tables, chains, jumps and the kernel's refusals in memory, so failure paths have fast tests.
 */
export interface Iptables {
  readonly backend: IptablesBackend;
  /** iptables-restore with this input (whole, or in pieces fed one after another). */
  restore(input: string | Iterable<string>, o?: RestoreOptions): Promise<void>;
  /** iptables-save of one table. */
  save(table: string): Promise<string>;
  /** `iptables -t TABLE -S CHAIN`: the chain's lines ("-P"/"-N" first, then "-A"), or null when it does not exist. */
  list(table: string, chain: string): Promise<string[] | null>;
}

/** The real tools on a target. */
export function kernelIptables(t: IptablesTarget): Iptables {
  return {
    backend: t.backend,
    restore: (input, o) => iptablesRestore(t, input, o),
    save: (table) => iptablesSave(t, table),
    async list(table, chain) {
      try {
        return (await iptables(t, ['-t', table, '-S', chain])).split('\n').filter((l) => l !== '');
      } catch (err) {
        // Exit status 1: legacy says "No chain/target/match by that name"; nft 1.8.9 says the
        // missing chain "is incompatible".
        if (err instanceof ExecError && err.code === 1 && /No chain|does not exist|incompatible/i.test(err.stderr)) return null;
        throw err;
      }
    },
  };
}
