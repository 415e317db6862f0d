// A bounded-frequency runner with kube-proxy's semantics (k8s.io/kubernetes pkg/util/async
// BoundedFrequencyRunner): `run()` asks for a sync; syncs never overlap; they run at most
// `burst` times in quick succession and then no more often than every `minIntervalMs` (a token
// bucket); when nothing asks, one runs anyway every `maxIntervalMs`. `retryAfter()` schedules a
// retry after a failure. Time comes from an injectable clock so the logic is unit-tested.

import { type Clock, realClock } from '../util/clock.ts';

export { type Clock, realClock };

/**
 * kube-proxy's validation of the sync periods: minSyncPeriod >= 0, syncPeriod > 0 and not below
 * minSyncPeriod (no upper bound: any length works, realClock waits in steps).
 */
export function validateSyncPeriods(syncPeriodMs: number, minSyncPeriodMs: number, section = 'iptables'): void {
  if (!(minSyncPeriodMs >= 0) || !Number.isFinite(minSyncPeriodMs)) throw new Error(`${section}.minSyncPeriod must be greater than or equal to 0`);
  if (!(syncPeriodMs > 0) || !Number.isFinite(syncPeriodMs)) throw new Error(`${section}.syncPeriod must be greater than 0`);
  if (syncPeriodMs < minSyncPeriodMs) throw new Error(`${section}.syncPeriod must be greater than or equal to ${section}.minSyncPeriod`);
}

export interface RunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  burst?: number;
  clock?: Clock;
  onError?: (err: unknown) => void;
}

export class SyncRunner {
  private readonly clock: Clock;
  private readonly burst: number;
  private tokens: number;
  private lastRefill: number;
  private lastRun: number;
  private pending = false;
  private running = false;
  private stopped = true;
  private retryAt: number | null = null;
  private timer: unknown = null;
  private timerAt = 0;
  private idle: Array<() => void> = [];

  constructor(private readonly fn: () => Promise<void>, private readonly opts: RunnerOptions) {
    this.clock = opts.clock ?? realClock;
    this.burst = Math.max(1, opts.burst ?? 2);
    this.tokens = this.burst;
    this.lastRefill = this.clock.now();
    this.lastRun = this.clock.now();
  }

  /** Starts the periodic timer and runs the first sync at once. */
  start(): void {
    this.stopped = false;
    this.run();
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  /** Asks for a sync as soon as the rate limit allows. */
  run(): void {
    this.pending = true;
    this.tick();
  }

  /** Asks for a sync no later than `ms` from now (after a failure). */
  retryAfter(ms: number): void {
    const at = this.clock.now() + ms;
    if (this.retryAt === null || at < this.retryAt) this.retryAt = at;
    this.tick();
  }

  /** Resolves when no sync is running or pending (tests, shutdown). */
  whenIdle(): Promise<void> {
    if (!this.running && (this.stopped || !this.pending)) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private refill(now: number): void {
    const min = this.opts.minIntervalMs;
    if (min <= 0) { this.tokens = this.burst; this.lastRefill = now; return; }
    const add = (now - this.lastRefill) / min;
    this.tokens = Math.min(this.burst, this.tokens + add);
    this.lastRefill = now;
  }

  private disarm(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
  }

  private arm(at: number): void {
    if (this.timer !== null && this.timerAt <= at) return;
    this.disarm();
    this.timerAt = at;
    this.timer = this.clock.setTimer(() => { this.timer = null; this.tick(); }, Math.max(0, at - this.clock.now()));
  }

  private tick(): void {
    if (this.stopped || this.running) return;
    const now = this.clock.now();
    if (this.retryAt !== null && this.retryAt <= now) { this.retryAt = null; this.pending = true; }
    if (now - this.lastRun >= this.opts.maxIntervalMs) this.pending = true;
    if (this.pending) {
      this.refill(now);
      if (this.tokens >= 1) {
        this.tokens -= 1;
        void this.execute();
        return;
      }
      const wait = Math.ceil((1 - this.tokens) * this.opts.minIntervalMs);
      this.arm(now + wait);
      return;
    }
    let next = this.lastRun + this.opts.maxIntervalMs;
    if (this.retryAt !== null) next = Math.min(next, this.retryAt);
    this.disarm();
    this.arm(next);
  }

  private async execute(): Promise<void> {
    this.disarm();
    this.running = true;
    this.pending = false;
    this.lastRun = this.clock.now();
    try {
      await this.fn();
    } catch (err) {
      this.opts.onError?.(err);
    } finally {
      this.running = false;
    }
    if (!this.pending || this.stopped) for (const r of this.idle.splice(0)) r();
    this.tick();
  }
}
