// The nftables data path: renders kube-proxy's table with the shared renderer (the one `knet
// rules --proxy-mode nftables` prints), writes it through `nft -f -` as planned by nft-plan.ts
// (full syncs from the kernel's chain names, partial syncs only what changed, stale chains
// flushed and deleted a second later, service chains written in front of their old rules and
// those deleted by handle in a further transaction where handles can be read), watches for
// anyone else changing or deleting the table, and deletes stale conntrack entries afterwards.
// Only the `ip kube-proxy` / `ip6 kube-proxy` tables are touched; one per IP family the node has.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Nft, NftFamily, NftWatch } from '../kernel/nft.ts';
import { conntrackDelete } from '../kernel/conntrack.ts';
import { NftablesRenderer, NFT_TABLE } from '../rules/nftables.ts';
import type { ServicePortInfo } from '../rules/model.ts';
import type { ProxySettings } from '../rules/types.ts';
import { planFull, planPartial, trimLines, type NftApplied, type NftPlan } from './nft-plan.ts';
import { NftablesMetrics } from './nftables-metrics.ts';
import { cleanStaleConntrack } from './conntrack-plan.ts';
import type { DataPlane, SyncOutcome, SyncRequest } from './dataplane.ts';

export interface NftablesApplierOptions {
  nft: Nft;
  /** Namespace for conntrack clean-up (null: the machine's). */
  netns?: string | null;
  /** One per IP family to program (IPv4 and/or IPv6). */
  settings: ProxySettings[];
  log: Logger;
  registry?: Registry;
  /** Delete stale conntrack entries after syncs (default true). */
  conntrack?: boolean;
  /**
   * Service chains per transaction in a full sync (see nft-plan.ts; default 2000: as netlink
   * batches, 1.8 MB each; transactions the batch compiler leaves to nft (netlink batches off,
   * or a vmap of ~650+ endpoints) pay nft's read of the whole table each, so fewer, larger ones are faster: 1000
   * chains made a 10k restart of the synthetic cluster 37 -> 49 s).
   */
  maxChainsPerTransaction?: number;
  /** Called when someone else changed or deleted our table: the daemon should sync soon. */
  onForeignChange?: () => void;
  now?: () => number;
}

interface FamilyState {
  settings: ProxySettings;
  renderer: NftablesRenderer;
  applied: NftApplied | null;
}

/** A transaction's text for nft's stdin in pieces of 2000 lines: never one string of all of it. */
function* pieces(lines: readonly string[]): Generator<string> {
  for (let i = 0; i < lines.length; i += 2000) yield lines.slice(i, i + 2000).join('\n') + '\n';
}

const familyOf = (s: ProxySettings) => (s.family === 'IPv6' ? 'ip6' : 'ip') as 'ip' | 'ip6';

/** Lines per transaction of a trim: a batch well under the default 128 KiB a socket takes. */
const TRIM_LINES = 1500;

export class NftablesApplier implements DataPlane {
  private families: FamilyState[];
  /** Families no longer programmed: their tables are deleted by the next sync. */
  private dropped: Array<'ip' | 'ip6'> = [];
  readonly metrics: NftablesMetrics;
  private foreign = false;
  private watches: NftWatch[] = [];
  private watching = false;
  private synced = false;
  private readonly now: () => number;

  constructor(private readonly o: NftablesApplierOptions) {
    this.families = o.settings.map((settings) => ({ settings, renderer: new NftablesRenderer(), applied: null }));
    this.metrics = new NftablesMetrics(o.registry);
    this.now = o.now ?? Date.now;
  }

  /** New settings (node facts changed): families that came or went, and the next sync is full. */
  setSettings(list: ProxySettings[]): void {
    for (const f of this.families) if (!list.some((s) => s.family === f.settings.family)) this.dropped.push(familyOf(f.settings));
    this.families = list.map((settings) => {
      const had = this.families.find((f) => f.settings.family === settings.family);
      return { settings, renderer: had?.renderer ?? new NftablesRenderer(), applied: had?.applied ?? null };
    });
    this.stopWatching();
  }

  /** Watch the tables from before the first write, so no foreign change slips between. */
  private startWatching(): void {
    if (this.watching) return;
    this.watching = true;
    for (const f of this.families) {
      const fam = familyOf(f.settings);
      this.watches.push(this.o.nft.watchForeign(fam, NFT_TABLE, (c) => {
        if (this.foreign) return;
        this.foreign = true;
        this.o.log.warn({ table: `${fam} ${NFT_TABLE}`, pid: c.pid, generation: c.generation }, 'another process changed our nftables table: full resync');
        this.o.onForeignChange?.();
      }, (err) => {
        // Without a watcher no foreign change would be seen: treat the state as unknown.
        this.o.log.warn({ err: String(err) }, 'nft monitor stopped; next sync is full and watching restarts');
        this.foreign = true;
        this.stopWatching();
        this.o.onForeignChange?.();
      }));
    }
  }

  private stopWatching(): void {
    for (const w of this.watches) w.stop();
    this.watches = [];
    this.watching = false;
  }

  close(): void {
    this.stopWatching();
  }

  async intact(): Promise<boolean> {
    return !this.foreign && this.watching && this.families.every((f) => f.applied !== null);
  }

  async sync(req: SyncRequest): Promise<SyncOutcome> {
    const full = req.full || this.foreign || this.families.some((f) => f.applied === null);
    // A family leaves the queue only once its table is gone: a failed delete is retried next sync.
    while (this.dropped.length > 0) {
      await this.o.nft.deleteTable(this.dropped[0]!, NFT_TABLE);
      this.dropped.shift();
    }
    if (full) {
      this.startWatching();
      // Changes from here on are seen by the watcher; what happened before is read below.
      this.foreign = false;
    }
    let chains = 0;
    let elements = 0;
    let transactions = 0;
    let fullFamilies = 0;
    const warnings: SyncOutcome['warnings'] = [];
    const noLocalEndpoints = { internal: 0, external: 0 };
    const changedPorts: Array<{ before: ServicePortInfo[]; after: ServicePortInfo[]; settings: ProxySettings }> = [];
    for (const f of this.families) {
      const fam = familyOf(f.settings);
      const r = full
        ? f.renderer.render({ cluster: req.cluster, settings: f.settings })
        : f.renderer.render({ cluster: req.cluster, settings: f.settings, recompute: req.changed });
      warnings.push(...r.warnings);
      noLocalEndpoints.internal += r.noLocalEndpoints.internal;
      noLocalEndpoints.external += r.noLocalEndpoints.external;
      // A changed fixed part (settings, ServiceCIDRs) is rewritten by a full sync.
      const familyFull = full || f.applied === null || r.fixedChanged || f.applied.fixedKey !== r.fixed.key;
      // Where rule handles can be read (netlink batches are on), service chains are rewritten
      // without a moment in which a packet can miss their endpoint vmap (PlanOptions.insertThenTrim),
      // and a full sync sends its fixed part on its own, so that, where the socket takes the
      // rest, only the fixed part (and transactions with shapes the batches lack) go through nft.
      const insertThenTrim = this.o.nft.ruleHandles !== undefined;
      const known = f.applied;
      // Until every transaction committed, the kernel state is unknown: a failure leaves it
      // null, and the next sync (full) starts from the kernel's names.
      f.applied = null;
      let plan: NftPlan;
      try {
        plan = familyFull
          ? planFull(r, await this.o.nft.listTable(fam, NFT_TABLE), known, { now: this.now(), maxChainsPerTransaction: this.o.maxChainsPerTransaction ?? 2000, insertThenTrim, fixedApart: insertThenTrim })
          : planPartial(r, known!, { now: this.now(), insertThenTrim });
        await this.run(fam, plan);
      } catch (err) {
        this.metrics.syncFailures.inc();
        throw err;
      }
      f.applied = plan.next;
      chains += plan.chainsWritten;
      elements += plan.elementsWritten;
      transactions += plan.transactions.length;
      if (this.synced) changedPorts.push({ ...f.renderer.changedPorts(), settings: f.settings });
      if (familyFull) fullFamilies++;
    }
    if (this.o.conntrack !== false) {
      for (const c of changedPorts) await cleanStaleConntrack(c.before, c.after, c.settings.family, (f) => conntrackDelete(this.o.netns ?? null, f), this.o.log);
    }
    this.synced = true;
    this.o.log.debug({ full, chains, elements, transactions }, 'nftables applied');
    return { full: fullFamilies === this.families.length, warnings, noLocalEndpoints, written: { chains, elements, transactions } };
  }

  /**
   * Deletes the old rules left behind the new ones by transaction `after` (NftPlan.trims), and
   * after the last transaction's, runs the plan's afterTrims. In transactions of whole chains of
   * at most TRIM_LINES lines (a restart's full sync at 10k services trims every service chain):
   * an old rule is out of reach of any packet already, so they need not go at once.
   */
  private async trim(family: NftFamily, plan: NftPlan, after: number): Promise<void> {
    if (!plan.trims.length || !this.o.nft.ruleHandles) return;
    let lines: string[] = [];
    for (const { chain, keep } of plan.trims.filter((x) => x.after === after)) {
      const deletes = trimLines(family, chain, await this.o.nft.ruleHandles(family, NFT_TABLE, chain), keep);
      if (lines.length && lines.length + deletes.length > TRIM_LINES) {
        await this.o.nft.apply(lines);
        lines = [];
      }
      for (const line of deletes) lines.push(`${line}\n`);
    }
    if (after === plan.transactions.length - 1) for (const line of plan.afterTrims) lines.push(`${line}\n`);
    if (lines.length) await this.o.nft.apply(lines);
  }

  /**
   * Runs a plan's transactions, each followed by the trims it allows. When the first one, which
   * deletes the due stale chains, fails, it runs again without the deletions: a chain that could
   * not go only waits for a later sync (kube-proxy does the same), and a failure of the rest
   * fails the sync.
   */
  private async run(family: NftFamily, plan: NftPlan): Promise<void> {
    for (let i = 0; i < plan.transactions.length; i++) {
      await this.runTransaction(plan, i);
      await this.trim(family, plan, i);
    }
  }

  /** One of a plan's transactions; the first without its stale chain deletions when those fail. */
  private async runTransaction(plan: NftPlan, i: number): Promise<void> {
    const lines = plan.transactions[i]!();
    if (i > 0 || plan.deletesStale.length === 0) {
      await this.o.nft.apply(pieces(lines));
      return;
    }
    try {
      await this.o.nft.apply(pieces(lines));
    } catch (err) {
      this.metrics.cleanupFailures.inc();
      this.o.log.warn({ chains: plan.deletesStale.length, err: String(err) }, 'could not delete stale chains; will retry');
      for (const c of plan.deletesStale) plan.next.stale.set(c, this.now());
      const rest = lines.slice(plan.deletesStale.length);
      if (rest.length) await this.o.nft.apply(pieces(rest));
    }
  }
}
