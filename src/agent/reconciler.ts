// The overlay reconcile loop: any number of requests while one runs coalesce into one more
// run, each run hands the backend this node's lease and every peer lease as they are now.
// Peers the backend skips are logged when they first appear or their reason changes, not on
// every run.
import type { Logger } from '../util/log.ts';
import type { Lease } from '../subnet/lease.ts';
import type { OverlayBackend } from '../overlay/backend.ts';
import type { AgentMetrics } from './http.ts';

export interface ReconcilerOptions {
  backend: OverlayBackend;
  own: () => Lease | null;
  leases: () => Lease[];
  metrics: AgentMetrics;
  log: Logger;
  signal: AbortSignal;
}

export class Reconciler {
  private running: Promise<void> | null = null;
  private dirty = false;
  private error: string | null = null;
  private skipped = new Map<string, string>();

  constructor(private readonly o: ReconcilerOptions) {}

  /** The first error of the last run, or null when it applied everything. */
  get lastError(): string | null {
    return this.error;
  }

  request(): void {
    this.dirty = true;
    this.running ??= this.loop().finally(() => { this.running = null; });
  }

  /** Requests a run and waits until no run is pending. */
  async runNow(): Promise<void> {
    this.request();
    await this.idle();
  }

  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    while (this.dirty && !this.o.signal.aborted) {
      this.dirty = false;
      const own = this.o.own();
      if (!own) return;
      const end = this.o.metrics.reconcileDuration.startTimer();
      try {
        const peers = this.o.leases().filter((l) => l.key !== own.key);
        const r = await this.o.backend.reconcile(own, peers);
        const seconds = end();
        this.o.metrics.peersProgrammed.set(r.peers);
        this.o.metrics.reconcileChanges.inc(r.changes);
        this.error = r.errors[0] ?? null;
        this.logSkipped(r.skipped);
        if (r.errors.length) this.o.log.error({ errors: r.errors }, 'reconcile could not apply every change; will retry');
        if (r.changes > 0 || r.errors.length) this.o.log.info({ peers: r.peers, changes: r.changes, ms: Math.round(seconds * 1000) }, 'reconciled overlay');
      } catch (err) {
        end();
        this.error = (err as Error).message;
        this.o.log.error({ err: this.error }, 'reconcile failed; will retry');
      }
    }
  }

  private logSkipped(skipped: readonly { key: string; reason: string }[]): void {
    const now = new Map(skipped.map((s) => [s.key, s.reason]));
    for (const [key, reason] of now) {
      if (this.skipped.get(key) !== reason) this.o.log.warn({ key, reason }, 'peer lease not programmed');
    }
    for (const key of this.skipped.keys()) {
      if (!now.has(key)) this.o.log.info({ key }, 'peer lease no longer skipped (programmed now, or gone)');
    }
    this.skipped = now;
  }
}
