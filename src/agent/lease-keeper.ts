// This node's lease: acquired once, then kept. It is renewed before it expires (margin before
// expiry, at most half the TTL), put back when it is deleted, overwritten by hand or missing
// from a relist, and renewed again after every outage of the store (its fate is then unknown:
// expired, or the store restored from a backup). A renewal that fails is retried every 10 s
// while the store answers, and at once when it comes back. It never moves running pods to
// another subnet: what it puts back is always the same subnet.
import type { Logger } from '../util/log.ts';
import type { Clock } from '../util/clock.ts';
import { formatCidr } from '../subnet/cidr.ts';
import { type Lease, type LeaseAttrs, describeLease } from '../subnet/lease.ts';
import { LeaseTakenError } from '../subnet/etcd-registry.ts';
import type { AcquireRequest, Acquired, LeaseSource, LeaseStreamEvent } from './lease-source.ts';
import type { LeaseWatcher } from './lease-watcher.ts';
import type { AgentMetrics } from './http.ts';

export const RENEW_RETRY_MS = 10_000;

export interface KeeperOptions {
  source: LeaseSource;
  /** What this node asks for; the lease holds what was published (which may differ, e.g. an overwritten public IP). */
  attrs: LeaseAttrs;
  /** Renew this long before expiry (capped at half the lease's lifetime). */
  renewMarginMs: number;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
  signal: AbortSignal;
}

/** Whether two lease values say the same thing (the subnet aside). */
export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return a.PublicIP === b.PublicIP && (a.BackendType ?? '') === (b.BackendType ?? '') &&
    JSON.stringify(a.BackendData ?? null) === JSON.stringify(b.BackendData ?? null);
}

export class LeaseKeeper {
  private own: Lease | null = null;
  private acquiredAt = 0;
  private renewDue = false;
  private renewing: Promise<void> | null = null;
  private renewTimer: unknown = null;
  private retryTimer: unknown = null;
  private conflict: string | null = null;
  private watcher: LeaseWatcher | null = null;

  constructor(private readonly o: KeeperOptions) {
    o.signal.addEventListener('abort', () => this.clearTimers(), { once: true });
  }

  get lease(): Lease | null {
    return this.own;
  }

  /** Set while another node holds this node's subnet: the node is not ready then. */
  get problem(): string | null {
    return this.conflict;
  }

  async acquire(req: Omit<AcquireRequest, 'attrs'>): Promise<Acquired> {
    const got = await this.o.source.acquire({ ...req, attrs: this.o.attrs });
    for (const note of got.notes) this.o.log.warn(note);
    this.setOwn(got.lease);
    return got;
  }

  /** Keeps the lease in line with what the watcher sees. */
  follow(watcher: LeaseWatcher): void {
    this.watcher = watcher;
    watcher.on((e) => this.onEvent(e));
  }

  private onEvent(e: LeaseStreamEvent): void {
    const own = this.own;
    if (!own) return;
    switch (e.type) {
      case 'synced': {
        const current = this.watcher?.get(own.key);
        if (!current || !sameAttrs(current.attrs, own.attrs)) this.renewDue = true;
        if (this.renewDue) void this.renewNow();
        break;
      }
      case 'put':
        if (e.lease.key !== own.key || sameAttrs(e.lease.attrs, own.attrs)) break;
        if (e.lease.attrs.PublicIP !== own.attrs.PublicIP) {
          this.o.log.error({ lease: describeLease(e.lease) }, 'this node\'s subnet was taken over by another node');
        } else {
          this.o.log.warn({ lease: describeLease(e.lease) }, 'this node\'s lease was changed by someone else; putting it back');
        }
        void this.renewNow();
        break;
      case 'invalid':
      case 'delete':
        if (e.key !== own.key) break;
        this.o.log.warn({ subnet: formatCidr(own.subnet) }, e.type === 'delete' ? 'this node\'s lease was deleted; re-creating it' : 'this node\'s lease was overwritten with a malformed value; re-creating it');
        void this.renewNow();
        break;
      case 'down':
        this.renewDue = true;
        break;
    }
  }

  private clearTimers(): void {
    for (const t of [this.renewTimer, this.retryTimer]) if (t !== null) this.o.clock.clearTimer(t);
    this.renewTimer = null;
    this.retryTimer = null;
  }

  private setOwn(lease: Lease): void {
    this.own = lease;
    this.acquiredAt = this.o.clock.now();
    this.o.metrics.leaseExpiry.set(lease.expiresAt === null ? 0 : lease.expiresAt / 1000);
    if (this.renewTimer !== null) this.o.clock.clearTimer(this.renewTimer);
    this.renewTimer = null;
    if (lease.expiresAt === null || this.o.signal.aborted) return;
    const lifetime = lease.expiresAt - this.acquiredAt;
    const margin = Math.min(this.o.renewMarginMs, lifetime / 2);
    // Timers cap at 2^31-1 ms (~24.8 days); a 24 h lease fits.
    const due = Math.max(1000, lease.expiresAt - margin - this.o.clock.now());
    this.renewTimer = this.o.clock.setTimer(() => {
      this.renewTimer = null;
      this.renewDue = true;
      void this.renewNow();
    }, due);
  }

  /** Renews now (one at a time); on failure keeps renewDue so the next relist renews. */
  renewNow(): Promise<void> {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      const own = this.own;
      if (!own || this.o.signal.aborted) return;
      try {
        const fresh = await this.o.source.renew(own, this.o.attrs);
        this.renewDue = false;
        this.conflict = null;
        this.setOwn(fresh);
        this.o.log.info({ subnet: formatCidr(fresh.subnet), etcdLease: fresh.etcdLease }, 'renewed subnet lease');
      } catch (err) {
        this.o.metrics.etcdErrors.inc();
        this.renewDue = true;
        const msg = (err as Error).message;
        if (err instanceof LeaseTakenError) this.conflict = msg;
        this.o.log.error({ err: msg, retryInMs: RENEW_RETRY_MS }, 'lease renewal failed; will retry');
        if (this.retryTimer === null && !this.o.signal.aborted) {
          this.retryTimer = this.o.clock.setTimer(() => {
            this.retryTimer = null;
            if (this.renewDue && (this.watcher?.up ?? true)) void this.renewNow();
          }, RENEW_RETRY_MS);
        }
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }
}
