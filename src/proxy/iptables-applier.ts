// The iptables data path: renders with the shared renderer (src/rules/iptables.ts, the same
// text `knet rules` prints), writes only what changed (src/proxy/restore-plan.ts explains why
// and how), keeps the jumps from the built-in chains in place, and deletes stale conntrack
// entries afterwards. Kernel access goes through src/kernel/{iptables,conntrack}.ts.
import type { Logger } from 'pino';
import { iptables, iptablesRestore, iptablesSave, type IptablesTarget } from '../kernel/iptables.ts';
import { conntrackDelete, type ConntrackFilter } from '../kernel/conntrack.ts';
import { renderIptables } from '../rules/iptables.ts';
import { buildServiceModel } from '../rules/model.ts';
import type { ClusterState } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import type { ProxySettings } from '../rules/types.ts';
import { appliedFromSave, parseRestore, planRestores, type AppliedState } from './restore-plan.ts';
import { CANARY, FIREWALL_JUMPS, JUMPS, ensureJumps, isServiceChain } from './jumps.ts';
import { conntrackCleanup } from './conntrack-plan.ts';
import type { DataPlane, SyncOutcome, SyncRequest } from './dataplane.ts';

export interface ApplierOptions {
  target: IptablesTarget;
  settings: ProxySettings;
  log: Logger;
  /** Chain declarations per restore; default: 1000 on nft, unlimited on legacy (see restore-plan.ts). */
  maxChainsPerRestore?: number;
  /** Delete stale conntrack entries after syncs (default true). */
  conntrack?: boolean;
}

/** Only the objects of the given services. */
export function subsetOf(c: ClusterState, keys: ReadonlySet<string>): ClusterState {
  return {
    services: c.services.filter((s) => keys.has(`${s.metadata.namespace ?? 'default'}/${s.metadata.name}`)),
    endpointSlices: c.endpointSlices.filter((s) => keys.has(`${s.metadata.namespace ?? 'default'}/${s.metadata.labels?.[SERVICE_NAME_LABEL]}`)),
  };
}

export class IptablesApplier implements DataPlane {
  /** Chain hashes from the last successful restore; null: unknown (start, after a failure). */
  private applied: AppliedState | null = null;
  private previous: ClusterState | null = null;
  private settings: ProxySettings;
  private readonly maxChains: number;

  constructor(private readonly o: ApplierOptions) {
    this.settings = o.settings;
    this.maxChains = o.maxChainsPerRestore ?? (o.target.backend === 'nft' ? 1000 : Number.POSITIVE_INFINITY);
  }

  get target(): IptablesTarget {
    return this.o.target;
  }

  setSettings(s: ProxySettings): void {
    this.settings = s;
  }

  /** Forget what we know of the kernel: the next sync re-reads chain names and rewrites everything. */
  invalidate(): void {
    this.applied = null;
  }

  async intact(): Promise<boolean> {
    if (!this.applied) return false;
    try {
      await iptables(this.o.target, ['-t', 'nat', '-S', CANARY]);
      await iptables(this.o.target, ['-t', 'filter', '-S', CANARY]);
      return true;
    } catch {
      this.o.log.warn('canary chain is gone (tables were flushed by someone else): full resync');
      this.applied = null;
      return false;
    }
  }

  private async loadApplied(): Promise<AppliedState> {
    const keep = (_t: string, c: string) => c.startsWith('KUBE-');
    const [nat, filter] = await Promise.all([iptablesSave(this.o.target, 'nat'), iptablesSave(this.o.target, 'filter')]);
    const a = appliedFromSave(nat, keep);
    const f = appliedFromSave(filter, keep);
    a.set('filter', f.get('filter') ?? new Map());
    if (!a.has('nat')) a.set('nat', new Map());
    return a;
  }

  async sync(req: SyncRequest): Promise<SyncOutcome> {
    const full = req.full || this.applied === null;
    const fresh = this.applied === null;
    const applied = this.applied ?? (await this.loadApplied());
    const natChains = [...(applied.get('nat')?.keys() ?? [])].filter(isServiceChain);
    const result = renderIptables({
      cluster: req.cluster,
      settings: this.settings,
      ...(full ? { existing: { natChains } } : { partial: { previous: { natChains }, changedServices: req.changed } }),
    });
    // The canary tells a later sync whether someone flushed our tables behind our back.
    const text = full ? `${result.text}*nat\n:${CANARY} - [0:0]\nCOMMIT\n*filter\n:${CANARY} - [0:0]\nCOMMIT\n` : result.text;
    const plan = planRestores(parseRestore(text), applied, { full, isStale: (t, c) => t === 'nat' && isServiceChain(c), maxChainsPerRestore: this.maxChains });
    // Until every restore succeeded the kernel state is uncertain: a failure leaves `applied`
    // null, so the next (full) sync re-reads chain names and rewrites everything.
    this.applied = null;
    for (const r of plan.restores) await iptablesRestore(this.o.target, r, { noflush: true });
    if (full) {
      const hasFirewall = plan.next.get('filter')?.has('KUBE-FIREWALL');
      const inserted = await ensureJumps(this.o.target, hasFirewall ? [...JUMPS, ...FIREWALL_JUMPS] : JUMPS);
      if (inserted) this.o.log.info({ inserted }, 'inserted jump rules');
    }
    this.applied = plan.next;
    this.o.log.debug({ full, restores: plan.restores.length, chainsWritten: plan.chainsWritten, chainsDeleted: plan.chainsDeleted }, 'rules applied');

    const prev = this.previous;
    this.previous = req.cluster;
    if (this.o.conntrack !== false && prev && !fresh) await this.cleanConntrack(prev, req);

    return {
      full,
      rulesWritten: { filter: plan.rulesWritten.filter ?? 0, nat: plan.rulesWritten.nat ?? 0 },
      rulesTotal: result.rulesTotal,
      warnings: result.warnings,
      noLocalEndpoints: result.noLocalEndpoints,
    };
  }

  private async cleanConntrack(prev: ClusterState, req: SyncRequest): Promise<void> {
    let keys: ReadonlySet<string> = req.changed;
    if (req.full) keys = new Set([...prev.services, ...req.cluster.services].map((s) => `${s.metadata.namespace ?? 'default'}/${s.metadata.name}`));
    if (keys.size === 0) return;
    const before = buildServiceModel(subsetOf(prev, keys), this.settings).ports;
    const after = buildServiceModel(subsetOf(req.cluster, keys), this.settings).ports;
    const filters = conntrackCleanup(before, after);
    for (const f of filters) {
      const withFamily: ConntrackFilter = this.settings.family === 'IPv6' ? { ...f, family: 'IPv6' } : f;
      try {
        const n = await conntrackDelete(this.o.target.netns, withFamily);
        if (n) this.o.log.info({ filter: f, deleted: n }, 'deleted stale conntrack entries');
      } catch (err) {
        this.o.log.warn({ filter: f, err: String(err) }, 'conntrack clean-up failed');
      }
    }
  }
}
