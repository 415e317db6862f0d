// Balancing decisions of the userspace mode, pure and clock-driven so unit tests need no
// sockets: round robin over a service port's ready endpoints, ClientIP affinity with a sliding
// expiry, and what an endpoint update does to both, as kube-proxy's userspace mode does.

export interface Affinity {
  endpoint: string;
  lastUsedMs: number;
}

export interface BalancerOptions {
  /** ClientIP affinity timeout in seconds; 0: no affinity. */
  stickySeconds: number;
  /** Upper bound on remembered clients, so a scan of many sources cannot grow memory forever. */
  maxAffinity?: number;
}

export class ServicePortBalancer {
  private endpoints: string[] = [];
  private index = 0;
  private readonly affinity = new Map<string, Affinity>();
  private stickyMs: number;
  private readonly maxAffinity: number;

  constructor(o: BalancerOptions) {
    this.stickyMs = o.stickySeconds * 1000;
    this.maxAffinity = o.maxAffinity ?? 100_000;
  }

  get size(): number {
    return this.endpoints.length;
  }

  get list(): readonly string[] {
    return this.endpoints;
  }

  /** Whether picks depend on the client address (callers can skip looking it up otherwise). */
  get sticky(): boolean {
    return this.stickyMs > 0;
  }

  get affinityEntries(): number {
    return this.affinity.size;
  }

  setStickySeconds(s: number): void {
    const ms = s * 1000;
    if (ms === this.stickyMs) return;
    this.stickyMs = ms;
    if (ms === 0) this.affinity.clear();
  }

  /**
   * New endpoint list ("ip:port"). Unchanged sets keep the rotation where it was, so a resync
   * does not skew the spread; removed endpoints lose their affinity entries.
   */
  update(endpoints: readonly string[]): boolean {
    const next = [...new Set(endpoints)].sort();
    if (next.length === this.endpoints.length && next.every((e, i) => e === this.endpoints[i])) return false;
    const keep = new Set(next);
    for (const [ip, a] of this.affinity) if (!keep.has(a.endpoint)) this.affinity.delete(ip);
    // Continue the rotation after the endpoint served last, so churn does not restart at 0
    // and overload the first endpoint.
    const last = this.endpoints[(this.index + this.endpoints.length - 1) % Math.max(1, this.endpoints.length)];
    this.endpoints = next;
    const at = last === undefined ? -1 : next.findIndex((e) => e > last);
    this.index = at < 0 ? 0 : at;
    return true;
  }

  private nextRR(skip?: ReadonlySet<string>): string | null {
    const n = this.endpoints.length;
    for (let i = 0; i < n; i++) {
      const e = this.endpoints[this.index]!;
      this.index = (this.index + 1) % n;
      if (!skip?.has(e)) return e;
    }
    return null;
  }

  /**
   * The endpoint for a new connection from clientIP. `failed` holds endpoints that refused
   * this connection already: they are skipped and an affinity pointing at one is replaced.
   */
  pick(clientIP: string, nowMs: number, failed?: ReadonlySet<string>): string | null {
    if (this.endpoints.length === 0) return null;
    if (this.stickyMs > 0) {
      const a = this.affinity.get(clientIP);
      // Sliding expiry: each use within the timeout extends it.
      if (a && nowMs - a.lastUsedMs < this.stickyMs && !failed?.has(a.endpoint)) {
        a.lastUsedMs = nowMs;
        // Map order doubles as least-recently-used order for eviction.
        this.affinity.delete(clientIP);
        this.affinity.set(clientIP, a);
        return a.endpoint;
      }
      const e = this.nextRR(failed);
      if (e === null) return null;
      this.affinity.delete(clientIP);
      if (this.affinity.size >= this.maxAffinity) {
        const oldest = this.affinity.keys().next().value;
        if (oldest !== undefined) this.affinity.delete(oldest);
      }
      this.affinity.set(clientIP, { endpoint: e, lastUsedMs: nowMs });
      return e;
    }
    return this.nextRR(failed);
  }

  /** Drops expired affinity entries (run on each sync, like kube-proxy's sticky-session cleanup). */
  sweep(nowMs: number): number {
    let n = 0;
    for (const [ip, a] of this.affinity) {
      if (nowMs - a.lastUsedMs >= this.stickyMs) { this.affinity.delete(ip); n++; }
    }
    return n;
  }
}

/** Dial attempts for one connection: bounded tries, each moving to the next endpoint. */
export interface DialPlan {
  tries: number;
  timeoutsMs: number[];
}

/** kube-proxy's dial timeouts: 250 ms, 500 ms, 1 s, 2 s. */
export const DIAL_TIMEOUTS_MS: readonly number[] = [250, 500, 1000, 2000];

/** The dial schedule: at most one try per endpoint. */
export function dialPlan(endpoints: number, timeoutsMs: readonly number[] = DIAL_TIMEOUTS_MS): DialPlan {
  const tries = Math.max(1, Math.min(timeoutsMs.length, endpoints));
  return { tries, timeoutsMs: timeoutsMs.slice(0, tries) };
}
