// The UDP flow table: one entry per client address ("ip:port", or a number), expiring after an idle timeout, bounded
// in size (the least recently active flow is evicted first). Pure bookkeeping over a clock;
// the socket side (src/proxy/userspace/udp.ts) closes what this table hands back.

export interface FlowTableOptions {
  idleMs: number;
  maxFlows: number;
}

interface Entry<V> {
  value: V;
  lastMs: number;
}

export class FlowTable<V, K = string> {
  // Map order is (roughly) recency order: eviction takes the first entry.
  private readonly m = new Map<K, Entry<V>>();

  constructor(readonly o: FlowTableOptions) {
    if (!(o.idleMs > 0) || !(o.maxFlows >= 1)) throw new Error('FlowTable: idleMs and maxFlows must be positive');
  }

  get size(): number {
    return this.m.size;
  }

  /** The live flow for key, refreshed; undefined when absent or idle too long (then removed via expired). */
  get(key: K, nowMs: number): V | undefined {
    const e = this.m.get(key);
    if (!e) return undefined;
    if (nowMs - e.lastMs >= this.o.idleMs) return undefined;
    this.touchEntry(key, e, nowMs);
    return e.value;
  }

  /** Marks activity (a reply) on a flow without a lookup result. */
  touch(key: K, nowMs: number): void {
    const e = this.m.get(key);
    if (e) this.touchEntry(key, e, nowMs);
  }

  private touchEntry(key: K, e: Entry<V>, nowMs: number): void {
    // Re-inserting per packet would cost a delete and a set on the hot path; moving a flow only
    // when it is a quarter of the idle time stale keeps the order close enough to recency for
    // eviction, and expire() scans everything anyway.
    if (nowMs - e.lastMs > this.o.idleMs / 4) {
      this.m.delete(key);
      this.m.set(key, e);
    }
    e.lastMs = nowMs;
  }

  /** Adds a flow; returns the flows that had to go (the stale one under the same key, evictions). */
  add(key: K, value: V, nowMs: number): V[] {
    const out: V[] = [];
    const old = this.m.get(key);
    if (old) { out.push(old.value); this.m.delete(key); }
    while (this.m.size >= this.o.maxFlows) {
      const [k, e] = this.m.entries().next().value as [K, Entry<V>];
      this.m.delete(k);
      out.push(e.value);
    }
    this.m.set(key, { value, lastMs: nowMs });
    return out;
  }

  delete(key: K, value?: V): boolean {
    const e = this.m.get(key);
    if (!e || (value !== undefined && e.value !== value)) return false;
    return this.m.delete(key);
  }

  /** Removes and returns every flow idle for idleMs or more (run a few times per idle period). */
  expire(nowMs: number): V[] {
    const out: V[] = [];
    for (const [k, e] of this.m) {
      if (nowMs - e.lastMs < this.o.idleMs) continue;
      this.m.delete(k);
      out.push(e.value);
    }
    return out;
  }

  /** Removes and returns every flow. */
  clear(): V[] {
    const out = [...this.m.values()].map((e) => e.value);
    this.m.clear();
    return out;
  }
}
