// nft adapter: transactions through `nft -f -` with the commands on stdin (never on a command
// line) or, for those of services in the caller's own namespace, as netlink batches from this
// process (nft-netlink.ts); listing a table's chains and sets, deleting a table, and watching
// commits, for the machine's namespace or a named one. The data path codes against the Nft
// interface, so its failure paths have fast tests against an in-memory kernel
// (test/helpers/fake-nft.ts).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { run, ExecError } from './exec.ts';
import { assertNetnsName } from './netns.ts';
import { AddonTransport } from './netlink/node-addon.ts';
import { NftNetlink } from './nft-netlink.ts';

const NETLINK_NETFILTER = 12;

/**
 * The system's nft by absolute path: a bare "nft" can resolve to another program of that name
 * first on PATH (npm puts node_modules/.bin there, and @vercel/nft installs an `nft`).
 */
export const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/local/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p)) ?? '/usr/sbin/nft';

export type NftFamily = 'ip' | 'ip6';

export interface NftTarget {
  /** Named network namespace to work in; null or absent: the caller's own namespace. */
  netns?: string | null;
  /**
   * In the caller's own namespace, send the transactions nft-batch.ts knows (those of services)
   * as netlink batches from this process instead of running `nft` (default false here;
   * `knet proxy` turns it on unless given `--no-nftables-netlink`). A named namespace always goes through `nft`.
   */
  netlink?: boolean;
}

/** A table's chains (with their hooks, for base chains) and sets and maps, by name. */
export interface NftTableListing {
  chains: Map<string, { hook?: string; type?: string; priority?: number }>;
  sets: Set<string>;
  maps: Set<string>;
}

/** One committed transaction as `nft monitor` reports it: who made it, and the tables it touched. */
export interface NftCommit {
  generation: number;
  pid: number;
  /** "family name" of every table an event of this commit named. */
  tables: Set<string>;
}

export interface NftWatch {
  stop(): void;
}

export interface Nft {
  /** One transaction: all of it is committed or none. */
  apply(commands: string | Iterable<string>): Promise<void>;
  /** Checks a transaction without committing it (`nft -c`). */
  check(commands: string | Iterable<string>): Promise<void>;
  /** The names in one table; null when it does not exist. */
  listTable(family: NftFamily, table: string): Promise<NftTableListing | null>;
  /** Deletes a table with everything in it; false when there was none. */
  deleteTable(family: NftFamily, table: string): Promise<boolean>;
  /**
   * The handles of a chain's rules, in order. Present only where they can be read cheaply (the
   * netlink batches are on and work), which is where the data path writes a service chain in
   * two commits (new rules inserted first, then the old ones deleted by handle).
   */
  ruleHandles?(family: NftFamily, table: string, chain: string): Promise<string[]>;
  /**
   * Reports every commit that touches the table and was not made through this object (someone
   * else changed or deleted it), until stopped; `onEnd` when watching stops working.
   */
  watchForeign(family: NftFamily, table: string, onForeign: (c: NftCommit) => void, onEnd: (err: Error) => void): NftWatch;
}

function wrap(t: NftTarget, args: string[]): [string, string[]] {
  if (!t.netns) return [NFT, args];
  assertNetnsName(t.netns);
  // ip netns exec enters the namespace and execs nft: the pid stays nft's.
  return ['ip', ['netns', 'exec', t.netns, NFT, ...args]];
}

const NO_TABLE = /No such file or directory/;

interface JsonChain { chain?: { family: string; table: string; name: string; hook?: string; type?: string; prio?: number } }
interface JsonSet { set?: { family: string; table: string; name: string }; map?: { family: string; table: string; name: string } }

/** Parses `nft -j -t list chains|sets|maps FAMILY` output into one table's listing. */
export function parseListing(chainsJson: string, setsJson: string, mapsJson: string, family: NftFamily, table: string): NftTableListing | null {
  const items = (text: string) => (JSON.parse(text) as { nftables?: unknown[] }).nftables ?? [];
  const listing: NftTableListing = { chains: new Map(), sets: new Set(), maps: new Set() };
  let found = false;
  for (const it of items(chainsJson) as JsonChain[]) {
    const c = it.chain;
    if (!c || c.family !== family || c.table !== table) continue;
    found = true;
    listing.chains.set(c.name, { ...(c.hook !== undefined ? { hook: c.hook } : {}), ...(c.type !== undefined ? { type: c.type } : {}), ...(c.prio !== undefined ? { priority: c.prio } : {}) });
  }
  for (const it of [...items(setsJson), ...items(mapsJson)] as JsonSet[]) {
    const s = it.set ?? it.map;
    if (!s || s.family !== family || s.table !== table) continue;
    found = true;
    (it.set ? listing.sets : listing.maps).add(s.name);
  }
  return found ? listing : null;
}

/** Parses `nft monitor` lines: events name their table; "# new generation N by process P" ends a commit. */
export class MonitorParser {
  private tables = new Set<string>();
  constructor(private readonly onCommit: (c: NftCommit) => void) {}
  line(l: string): void {
    const gen = /^# new generation (\d+) by process (\d+)/.exec(l);
    if (gen) {
      this.onCommit({ generation: Number(gen[1]), pid: Number(gen[2]), tables: this.tables });
      this.tables = new Set();
      return;
    }
    const ev = /^(?:add|delete|flush) (?:table|chain|set|map|rule|element) (ip6?|inet|arp|bridge|netdev) (\S+)/.exec(l);
    if (ev) this.tables.add(`${ev[1]} ${ev[2]}`);
  }
}

/**
 * The lines of text given in pieces, a line possibly running on into the next piece. Split piece
 * by piece: joined first, a 10k full sync's elements would be one more 3 MB string.
 */
export function linesOf(pieces: readonly string[]): string[] {
  const lines: string[] = [];
  let carry = '';
  for (const piece of pieces) {
    const parts = (carry + piece).split('\n');
    carry = parts.pop()!;
    for (const line of parts) lines.push(line);
  }
  lines.push(carry);
  return lines;
}

/** Netlink batches from this process, or null when the addon does not load here. */
export function netfilterBatches(): NftNetlink | null {
  try {
    // Opened now to learn whether the addon loads; the batches use it first.
    // A full sync's transactions are megabytes (2000 service chains: 1.8 MB); the kernel caps
    // the buffer at net.core.wmem_max, and what does not fit goes through nft.
    const open = () => new AddonTransport(NETLINK_NETFILTER, { sendBufferBytes: 32 << 20 });
    let opened: AddonTransport | null = open();
    return new NftNetlink(() => {
      const socket = opened ?? open();
      opened = null;
      return socket;
    });
  } catch {
    return null;
  }
}

/** The real nft on a namespace; `sent` counts the transactions that went as netlink batches and through `nft`. */
export function kernelNft(t: NftTarget = {}): Nft & { sent: { netlink: number; nft: number } } {
  // Our own nft processes: commits they make are not foreign. Bounded: pids are reused.
  const ours = new Set<number>();
  const mine = (pid: number) => {
    if (ours.size > 1000) ours.delete(ours.values().next().value!);
    ours.add(pid);
  };
  const sent = { netlink: 0, nft: 0 };
  // null: not here (a named namespace, turned off, or no netlink addon).
  const batches = t.netns || !t.netlink ? null : netfilterBatches();
  return {
    sent,
    async apply(commands) {
      const nl = batches;
      let input = commands;
      if (nl) {
        // The pieces are kept: what the batch compiler declines goes to nft as it came.
        const pieces = typeof commands === 'string' ? [commands] : [...commands];
        input = pieces;
        if (await nl.apply(linesOf(pieces))) {
          sent.netlink++;
          return;
        }
      }
      const [file, args] = wrap(t, ['-f', '-']);
      await run(file, args, { input, timeoutMs: 15 * 60_000, onSpawn: mine });
      sent.nft++;
    },
    async check(commands) {
      const [file, args] = wrap(t, ['-c', '-f', '-']);
      await run(file, args, { input: commands, timeoutMs: 15 * 60_000 });
    },
    async listTable(family, table) {
      // Terse (-t) leaves set contents out: affinity sets can hold a client per connection.
      const list = async (what: string) => (await run(...wrap(t, ['-j', '-t', 'list', what, family]), { timeoutMs: 5 * 60_000 })).stdout;
      const [chains, sets, maps] = await Promise.all([list('chains'), list('sets'), list('maps')]);
      return parseListing(chains, sets, maps, family, table);
    },
    // Only with batches: through nft, each chain's listing would read the whole table first.
    ...(batches ? {
      async ruleHandles(family: NftFamily, table: string, chain: string): Promise<string[]> {
        if (table !== 'kube-proxy') throw new Error(`rule handles are read for the kube-proxy table only, not ${JSON.stringify(table)}`);
        return batches.ruleHandles(family, chain);
      },
    } : {}),
    async deleteTable(family, table) {
      try {
        await run(...wrap(t, ['delete', 'table', family, table]), { onSpawn: mine });
        return true;
      } catch (e) {
        if (e instanceof ExecError && NO_TABLE.test(e.stderr)) return false;
        throw e;
      }
    },
    watchForeign(family, table, onForeign, onEnd) {
      const [file, args] = wrap(t, ['monitor']);
      const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      // Our netlink batches are committed by this process itself.
      const parser = new MonitorParser((c) => { if (c.tables.has(`${family} ${table}`) && !ours.has(c.pid) && c.pid !== process.pid) onForeign(c); });
      createInterface({ input: child.stdout }).on('line', (l) => parser.line(l));
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      let stopped = false;
      child.on('error', (err) => { if (!stopped) onEnd(err); });
      child.on('exit', (code) => { if (!stopped) onEnd(new Error(`nft monitor exited (${code}): ${stderr.trim()}`)); });
      return { stop() { stopped = true; child.kill(); } };
    },
  };
}

/** `nft list table FAMILY NAME` (null when the table does not exist). */
export async function nftListTable(t: NftTarget, family: NftFamily, table: string): Promise<string | null> {
  const [file, args] = wrap(t, ['list', 'table', family, table]);
  try {
    return (await run(file, args, { timeoutMs: 5 * 60_000 })).stdout;
  } catch (e) {
    if (e instanceof ExecError && NO_TABLE.test(e.stderr)) return null;
    throw e;
  }
}
