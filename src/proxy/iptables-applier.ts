// The iptables data path: renders with the shared renderer (src/rules/iptables.ts, the same
// text `knet rules` prints), writes only what changed (src/proxy/restore-plan.ts explains why
// and how), keeps the jumps from the built-in chains in place, and deletes stale conntrack
// entries afterwards. Kernel access goes through src/kernel/{iptables,conntrack}.ts; iptables
// itself through the Iptables interface, so tests can run it against an in-memory kernel.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Iptables } from '../kernel/iptables.ts';
import { ensureJumps } from '../kernel/jumps.ts';
import { conntrackDelete } from '../kernel/conntrack.ts';
import { IptablesRenderer } from '../rules/iptables.ts';
import type { ProxySettings } from '../rules/types.ts';
import { appliedFromSave, jumpsFromSave, planRestores, rulesInTable, type AppliedState, type KernelJumps } from './restore-plan.ts';
import { CANARY, FIREWALL_JUMPS, JUMPS, isServiceChain } from './jumps.ts';
import { IptablesMetrics } from './iptables-metrics.ts';
import { cleanStaleConntrack } from './conntrack-plan.ts';
import type { DataPlane, SyncOutcome, SyncRequest } from './dataplane.ts';

export interface ApplierOptions {
  /**
   * How iptables is run: the real tools in a namespace (kernelIptables), or a fake. Required, so
   * that no applier falls back to the machine's own namespace by omission.
   */
  iptables: Iptables;
  /** The namespace conntrack clean-up works in (the one `iptables` acts on; absent: this one). */
  netns?: string;
  /** Where the iptables metrics are registered (the daemon's registry; default: a private one). */
  registry?: Registry;
  settings: ProxySettings;
  log: Logger;
  /** Chain declarations per restore; default: 1000 on nft, unlimited on legacy (see restore-plan.ts). */
  maxChainsPerRestore?: number;
  /** Delete stale conntrack entries after syncs (default true). */
  conntrack?: boolean;
}

export class IptablesApplier implements DataPlane {
  /** Chain contents from the last successful restore; null: unknown (start, after a failure). */
  private applied: AppliedState | null = null;
  /** Remembers each service's model and rules: a partial sync re-renders only changed services. */
  private readonly renderer = new IptablesRenderer();
  private synced = false;
  private settings: ProxySettings;
  private readonly maxChains: number;
  private readonly ipt: Iptables;
  readonly metrics: IptablesMetrics;
  /** Stale chains the last sync had to keep (flushed) because a foreign rule jumps to them. */
  private kept = '';

  constructor(private readonly o: ApplierOptions) {
    this.settings = o.settings;
    this.ipt = o.iptables;
    this.metrics = new IptablesMetrics(o.registry);
    this.maxChains = o.maxChainsPerRestore ?? (this.ipt.backend === 'nft' ? 1000 : Number.POSITIVE_INFINITY);
  }

  setSettings(s: ProxySettings): void {
    this.settings = s;
  }

  /** Forget what we know of the kernel: the next sync re-reads chain names and rewrites everything. */
  invalidate(): void {
    this.applied = null;
  }

  async intact(): Promise<boolean> {
    // Kept chains are retried on every full sync, with the kernel's jumps read again.
    if (!this.applied || this.kept) return false;
    if ((await this.ipt.list('nat', CANARY)) && (await this.ipt.list('filter', CANARY))) return true;
    this.o.log.warn('canary chain is gone (tables were flushed by someone else): full resync');
    this.applied = null;
    return false;
  }

  /** What the kernel holds: our chains' names (content unknown) and every chain's jumps. */
  private async readKernel(): Promise<{ applied: AppliedState; jumps: KernelJumps }> {
    const keep = (_t: string, c: string) => c.startsWith('KUBE-');
    const [nat, filter] = await Promise.all([this.ipt.save('nat'), this.ipt.save('filter')]);
    const a = appliedFromSave(nat, keep);
    const f = appliedFromSave(filter, keep);
    a.set('filter', f.get('filter') ?? new Map());
    if (!a.has('nat')) a.set('nat', new Map());
    const jumps = jumpsFromSave(nat);
    jumps.set('filter', jumpsFromSave(filter).get('filter') ?? new Map());
    return { applied: a, jumps };
  }

  async sync(req: SyncRequest): Promise<SyncOutcome> {
    const full = req.full || this.applied === null;
    let applied = this.applied;
    // After a start or a failure nothing is believed: the plan starts from what the kernel
    // holds, its jumps included, so that no sync can be wedged by an earlier one's leftovers.
    let kernelJumps: KernelJumps | undefined;
    if (!applied || (full && this.kept)) {
      const k = await this.readKernel();
      kernelJumps = k.jumps;
      applied ??= k.applied;
    }
    const t0 = performance.now();
    const r = full
      ? this.renderer.render({ cluster: req.cluster, settings: this.settings,
        existing: { natChains: [...(applied.get('nat')?.keys() ?? [])].filter(isServiceChain) } })
      : this.renderer.render({ cluster: req.cluster, settings: this.settings, recompute: req.changed, partial: { changedServices: req.changed } });
    let tables = r.tables;
    if (full) {
      // The canary tells a later sync whether someone flushed our tables behind our back.
      tables = new Map([...tables].map(([t, pt]) => [t, { chains: new Map([...pt.chains, [CANARY, []]]), deletes: pt.deletes }]));
    }
    // Until every restore succeeded the kernel state is uncertain: a failure leaves `applied`
    // null, so the next (full) sync re-reads chain names and rewrites everything. So the plan
    // may update the state in place.
    this.applied = null;
    const plan = planRestores(tables, applied, { full, isStale: (t, c) => t === 'nat' && isServiceChain(c), maxChainsPerRestore: this.maxChains,
      inDependencyOrder: true, inPlace: true, concurrency: SERVICE_CHAIN_CONCURRENCY, ...(kernelJumps ? { kernelJumps } : {}) });
    const t1 = performance.now();
    try {
      await runRestores(plan.chunks, plan.concurrent, (chunk) => this.ipt.restore(chunk.pieces(), { noflush: true }));
      if (full) {
        const hasFirewall = plan.next.get('filter')?.has('KUBE-FIREWALL');
        const inserted = await ensureJumps(this.ipt, hasFirewall ? [...JUMPS, ...FIREWALL_JUMPS] : JUMPS);
        if (inserted) this.o.log.info({ inserted }, 'inserted jump rules');
      }
    } catch (err) {
      this.metrics.failed(full);
      throw err;
    }
    this.applied = plan.next;
    const kept = plan.kept.map((k) => `${k.table}/${k.chain} <- ${k.referrers.join(',')}`).join(' ');
    if (full && kept !== this.kept) {
      if (kept) this.o.log.warn({ kept: plan.kept }, 'stale chains still jumped to by rules knet does not own: flushed and kept until those rules go');
      else if (this.kept) this.o.log.info('kept stale chains are gone');
      this.kept = kept;
    }
    const ms = (a: number, b: number) => Math.round(b - a);
    this.o.log.debug({ full, restores: plan.chunks.length, chainsWritten: plan.chainsWritten, chainsDeleted: plan.chainsDeleted,
      renderMs: ms(t0, t1), restoreMs: ms(t1, performance.now()) }, 'rules applied');

    if (this.o.conntrack !== false && this.synced) {
      // The services whose objects this render saw change, before and after.
      const { before, after } = this.renderer.changedPorts();
      await cleanStaleConntrack(before, after, this.settings.family, (f) => conntrackDelete(this.o.netns, f), this.o.log);
    }
    this.synced = true;

    const written = { filter: plan.rulesWritten.filter ?? 0, nat: plan.rulesWritten.nat ?? 0 };
    this.metrics.synced(written, { filter: rulesInTable(plan.next, 'filter'), nat: rulesInTable(plan.next, 'nat') });
    return {
      full,
      written,
      warnings: r.warnings,
      noLocalEndpoints: r.noLocalEndpoints,
    };
  }
}

/** Only the service chains' restores run two at a time (what was measured); restore-plan.ts checks their jumps. */
export const SERVICE_CHAIN_CONCURRENCY = {
  eligible: (table: string, chain: string) => table === 'nat' && isServiceChain(chain),
};

/**
 * Runs restores in order; consecutive ones marked concurrent two at a time (measured on
 * iptables-nft 1.8.9 at 10k services: 2.0 s instead of 3.8 s for the service chains, with the
 * kernel serialising the commits), every other one alone. Fails after in-flight ones settle.
 */
export async function runRestores<T>(restores: readonly T[], concurrent: readonly boolean[], apply: (restore: T) => Promise<unknown>, width = 2): Promise<void> {
  for (let i = 0; i < restores.length;) {
    if (!concurrent[i]) { await apply(restores[i]!); i++; continue; }
    let end = i;
    while (end < restores.length && concurrent[end]) end++;
    let next = i;
    const lane = async () => { while (next < end) await apply(restores[next++]!); };
    const results = await Promise.allSettled(Array.from({ length: width }, lane));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    i = end;
  }
}
