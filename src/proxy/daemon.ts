// The proxy daemon: a source feeds the change tracker; the bounded-frequency runner calls
// syncOnce(), which hands the snapshot and the changed services to a data path. Health and
// metrics follow kube-proxy. Nothing here knows about iptables: every data path (iptables,
// userspace, ...) reuses it unchanged through the DataPlane seam.
import type { Logger } from 'pino';
import type { EndpointSlice, Node, Service, ServiceCIDR } from '../model/k8s.ts';
import { ChangeTracker } from './tracker.ts';
import { SyncRunner, type Clock } from './runner.ts';
import type { DataPlane, SyncOutcome } from './dataplane.ts';
import type { ProxySource, SourceHandler } from './source.ts';
import { ProxyHealth } from './health.ts';
import { collectGarbage } from '../util/gc.ts';
import { ProxyMetrics } from './metrics.ts';

export interface DaemonOptions {
  source: ProxySource;
  dataplane: DataPlane;
  log: Logger;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  /** Full re-render and reconcile at least this often (kube-proxy: 1 h). */
  fullSyncPeriodMs?: number;
  /** Delay before retrying a failed sync. */
  retryMs?: number;
  metrics?: ProxyMetrics;
  clock?: Clock;
  /** Called with this node's object; return true when settings changed (forces a full sync). */
  onNode?: (node: Node | null) => boolean;
}

export class ProxyDaemon implements SourceHandler {
  readonly tracker: ChangeTracker;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics;
  readonly runner: SyncRunner;
  private needFull = true;
  private lastFull = 0;
  private ready = false;
  private warned = new Set<string>();
  syncs = 0;
  lastOutcome: SyncOutcome | null = null;
  private syncedWaiters: Array<() => void> = [];

  constructor(private readonly o: DaemonOptions) {
    this.tracker = new ChangeTracker((obj, reason) => this.warn(obj, reason));
    this.health = new ProxyHealth(2 * o.syncPeriodMs);
    this.metrics = o.metrics ?? new ProxyMetrics();
    this.runner = new SyncRunner(() => this.syncOnce(), {
      minIntervalMs: o.minSyncPeriodMs,
      maxIntervalMs: o.syncPeriodMs,
      burst: 2,
      ...(o.clock ? { clock: o.clock } : {}),
      onError: (err) => this.o.log.error({ err: String(err) }, 'sync failed'),
    });
  }

  async start(): Promise<void> {
    await this.o.source.start(this);
  }

  async stop(): Promise<void> {
    this.runner.stop();
    await this.o.source.stop();
    await this.runner.whenIdle();
  }

  /** Resolves after the next successful sync (tests, benchmarks). */
  nextSync(): Promise<void> {
    return new Promise((r) => this.syncedWaiters.push(r));
  }

  warn(object: string, reason: string): void {
    // Event-like: each distinct problem is logged once, not on every sync.
    const k = `${object}: ${reason}`;
    if (this.warned.has(k)) return;
    if (this.warned.size > 10_000) this.warned.clear();
    this.warned.add(k);
    this.o.log.warn({ object, reason }, 'skipping invalid object');
  }

  private changed(did: boolean): void {
    if (!did) return;
    this.health.queued();
    this.metrics.lastQueued.setToCurrentTime();
    this.metrics.serviceChangesPending.set(this.tracker.pending);
    if (this.ready) this.runner.run();
  }

  upsertService(s: Service): void { this.changed(this.tracker.upsertService(s)); }
  deleteService(s: Service): void { this.changed(this.tracker.deleteService(s)); }
  upsertSlice(s: EndpointSlice): void { this.changed(this.tracker.upsertSlice(s)); }
  deleteSlice(s: EndpointSlice): void { this.changed(this.tracker.deleteSlice(s)); }

  serviceCIDRs(list: ServiceCIDR[]): void {
    if (!this.tracker.setServiceCIDRs(list)) return;
    this.health.queued();
    if (this.ready) this.runner.run();
  }

  replaceAll(services: Service[], slices: EndpointSlice[]): void {
    const before = this.tracker.pending;
    this.tracker.replaceAll(services, slices);
    this.changed(this.tracker.pending !== before || this.tracker.pending > 0);
  }

  node(n: Node | null): void {
    this.health.setNode(n);
    if (this.o.onNode?.(n)) {
      this.needFull = true;
      this.health.queued();
      if (this.ready) this.runner.run();
    }
  }

  synced(): void {
    if (this.ready) return;
    this.ready = true;
    this.o.log.info({ services: this.tracker.snapshot().services.length, slices: this.tracker.snapshot().endpointSlices.length }, 'sources synced; starting sync loop');
    this.runner.start();
  }

  async syncOnce(): Promise<void> {
    const changes = this.tracker.take();
    const now = Date.now();
    let full = this.needFull || now - this.lastFull >= (this.o.fullSyncPeriodMs ?? 3_600_000);
    if (!full && changes.services.size === 0 && !(await this.o.dataplane.intact())) full = true;
    const t0 = performance.now();
    let outcome: SyncOutcome;
    try {
      outcome = await this.o.dataplane.sync({ cluster: this.tracker.snapshot(), changed: changes.services, full });
    } catch (err) {
      this.tracker.restore(changes);
      this.needFull = true;
      this.runner.retryAfter(this.o.retryMs ?? 5000);
      throw err;
    }
    const secs = (performance.now() - t0) / 1000;
    this.syncs++;
    this.lastOutcome = outcome;
    if (outcome.full) { this.needFull = false; this.lastFull = now; }
    this.metrics.syncDuration.observe(secs);
    (outcome.full ? this.metrics.fullSyncDuration : this.metrics.partialSyncDuration).observe(secs);
    this.metrics.lastSync.setToCurrentTime();
    this.metrics.serviceChangesTotal.inc(changes.serviceEvents);
    this.metrics.endpointChangesTotal.inc(changes.endpointEvents);
    this.metrics.serviceChangesPending.set(this.tracker.pending);
    this.metrics.endpointChangesPending.set(this.tracker.pending);
    this.metrics.noLocalEndpoints.set({ traffic_policy: 'internal' }, outcome.noLocalEndpoints.internal);
    this.metrics.noLocalEndpoints.set({ traffic_policy: 'external' }, outcome.noLocalEndpoints.external);
    const done = Date.now();
    for (const t of changes.triggerTimes) if (t <= done) this.metrics.programmingLatency.observe((done - t) / 1000);
    for (const w of outcome.warnings) this.warn(w.object, `${w.message}`);
    this.health.updated();
    if (this.tracker.pending > 0) this.health.queued();
    this.o.log.info({ full: outcome.full, changed: changes.services.size, seconds: Number(secs.toFixed(3)), written: outcome.written }, 'synced');
    for (const r of this.syncedWaiters.splice(0)) r();
    // The one collection per full sync, for every data plane; after the log line, so that it
    // (tens of ms at 10k services) delays no one.
    if (outcome.full) collectGarbage();
  }
}
