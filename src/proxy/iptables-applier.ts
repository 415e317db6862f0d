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
import type { ProxySettings, RenderResult } from '../rules/types.ts';
import { appliedFromSave, parseRestore, planRestores, rulesInTable, type AppliedState, type Parsed } from './restore-plan.ts';
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
  /** Whether the last full render dropped per-endpoint comments (kube-proxy's large-cluster mode). */
  private largeCluster = false;
  /** Partial syncs that took the changed-services-only path, and those that re-rendered everything. */
  readonly stats = { fastPartial: 0, slowPartial: 0 };
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
    const t0 = performance.now();
    const natChains = [...(applied.get('nat')?.keys() ?? [])].filter(isServiceChain);
    let parsed: Parsed | null = null;
    let result: Pick<RenderResult, 'warnings' | 'noLocalEndpoints'> | null = null;
    if (!full && this.previous) {
      const fast = this.renderChangedOnly(this.previous, req, applied);
      if (fast) { ({ parsed, result } = fast); this.stats.fastPartial++; } else this.stats.slowPartial++;
    }
    if (!parsed || !result) {
      const r = renderIptables({
        cluster: req.cluster,
        settings: this.settings,
        ...(full ? { existing: { natChains } } : { partial: { previous: { natChains }, changedServices: req.changed } }),
      });
      // The canary tells a later sync whether someone flushed our tables behind our back.
      parsed = parseRestore(full ? `${r.text}*nat\n:${CANARY} - [0:0]\nCOMMIT\n*filter\n:${CANARY} - [0:0]\nCOMMIT\n` : r.text);
      if (full) this.largeCluster = isLargeCluster(parsed);
      result = r;
    }
    const plan = planRestores(parsed, applied, { full, isStale: (t, c) => t === 'nat' && isServiceChain(c), maxChainsPerRestore: this.maxChains });
    // Until every restore succeeded the kernel state is uncertain: a failure leaves `applied`
    // null, so the next (full) sync re-reads chain names and rewrites everything.
    this.applied = null;
    const t1 = performance.now();
    for (const r of plan.restores) await iptablesRestore(this.o.target, r, { noflush: true });
    if (full) {
      const hasFirewall = plan.next.get('filter')?.has('KUBE-FIREWALL');
      const inserted = await ensureJumps(this.o.target, hasFirewall ? [...JUMPS, ...FIREWALL_JUMPS] : JUMPS);
      if (inserted) this.o.log.info({ inserted }, 'inserted jump rules');
    }
    this.applied = plan.next;
    const ms = (a: number, b: number) => Math.round(b - a);
    this.o.log.debug({ full, restores: plan.restores.length, chainsWritten: plan.chainsWritten, chainsDeleted: plan.chainsDeleted,
      renderMs: ms(t0, t1), restoreMs: ms(t1, performance.now()) }, 'rules applied');

    const prev = this.previous;
    this.previous = req.cluster;
    if (this.o.conntrack !== false && prev && !fresh) await this.cleanConntrack(prev, req);

    return {
      full,
      rulesWritten: { filter: plan.rulesWritten.filter ?? 0, nat: plan.rulesWritten.nat ?? 0 },
      rulesTotal: { filter: rulesInTable(plan.next, 'filter'), nat: rulesInTable(plan.next, 'nat') },
      warnings: result.warnings,
      noLocalEndpoints: result.noLocalEndpoints,
    };
  }

  /**
   * A partial sync without rendering the whole cluster. The shared renderer rebuilds its model of
   * every service on each call (about 1 s at 10k services), so for a partial sync knet renders
   * only the changed services, before and after: when their contributions to the always-written
   * chains (KUBE-SERVICES, KUBE-NODEPORTS, filter chains) are identical, only their own service
   * chains can have changed, and those are taken from the small render; stale ones are deleted.
   * Otherwise (a new ClusterIP, endpoints 0 <-> N, near the large-cluster threshold) it returns
   * null and the caller renders the whole cluster.
   */
  private renderChangedOnly(prev: ClusterState, req: SyncRequest, applied: AppliedState):
    { parsed: Parsed; result: Pick<RenderResult, 'warnings' | 'noLocalEndpoints'> } | null {
    if (req.changed.size === 0) return { parsed: new Map(), result: { warnings: [], noLocalEndpoints: { internal: 0, external: 0 } } };
    if (req.changed.size > 100) return null;
    // Endpoint comments depend on the cluster-wide endpoint count: stay clear of the threshold.
    const seps = [...(applied.get('nat')?.keys() ?? [])].filter((c) => c.startsWith('KUBE-SEP-')).length;
    if (Math.abs(seps - this.settings.largeClusterEndpointsThreshold) < 200) return null;
    const settings = { ...this.settings, largeClusterEndpointsThreshold: this.largeCluster ? -1 : Number.MAX_SAFE_INTEGER };
    const before = renderIptables({ cluster: subsetOf(prev, req.changed), settings });
    const after = renderIptables({ cluster: subsetOf(req.cluster, req.changed), settings });
    const pb = parseRestore(before.text);
    const pa = parseRestore(after.text);
    for (const table of new Set([...pb.keys(), ...pa.keys()])) {
      const b = pb.get(table)?.chains ?? new Map<string, string[]>();
      const a = pa.get(table)?.chains ?? new Map<string, string[]>();
      for (const c of new Set([...b.keys(), ...a.keys()])) {
        if (isServiceChain(c)) continue;
        if ((b.get(c) ?? []).join('\n') !== (a.get(c) ?? []).join('\n')) return null;
      }
    }
    const nat = pa.get('nat')?.chains ?? new Map<string, string[]>();
    const chains = new Map([...nat].filter(([c]) => isServiceChain(c)));
    const known = applied.get('nat') ?? new Map<string, string>();
    const deletes = new Set(before.state.natChains.filter((c) => !chains.has(c) && known.has(c)));
    return { parsed: new Map([['nat', { chains, deletes }]]), result: after };
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

/** kube-proxy drops per-endpoint comments in large clusters; see whether this render did. */
function isLargeCluster(p: Parsed): boolean {
  for (const [chain, rules] of p.get('nat')?.chains ?? []) {
    if (chain.startsWith('KUBE-SEP-') && rules.length) return !rules[0]!.includes('--comment');
  }
  return false;
}
