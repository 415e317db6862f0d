// Every lease the source knows, kept current from its stream, and the stream's events passed
// on, typed, to whoever listens (the lease keeper, the reconcile loop). It logs what an
// operator needs once per change: a malformed lease when it appears or its error changes, the
// store going away (once per reason) and coming back.
import type { Logger } from '../util/log.ts';
import { whenAborted } from '../util/clock.ts';
import type { Lease } from '../subnet/lease.ts';
import type { LeaseSource, LeaseStreamEvent } from './lease-source.ts';

export type LeaseListener = (e: LeaseStreamEvent) => void;

export class LeaseWatcher {
  private readonly leases = new Map<string, Lease>();
  /** Keys that are not usable leases, with why (logged once per change). */
  private readonly invalid = new Map<string, string>();
  private readonly listeners = new Set<LeaseListener>();
  private connected = false;
  private hasSynced = false;
  private downReason: string | null = null;
  private firstSync: Promise<void>;
  private markSynced: () => void = () => undefined;
  private running: Promise<void> | null = null;

  constructor(private readonly source: LeaseSource, private readonly log: Logger) {
    this.firstSync = new Promise((resolve) => { this.markSynced = resolve; });
  }

  /** Subscribes to every event after it was applied; returns the unsubscribe function. */
  on(listener: LeaseListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Starts streaming; resolves once the first full list arrived (or `signal` aborted). */
  async start(signal: AbortSignal): Promise<void> {
    this.running = this.source.stream((e) => this.apply(e), signal);
    await Promise.race([this.firstSync, whenAborted(signal)]);
  }

  /** Resolves when the stream has ended (after the start signal aborted). */
  async stopped(): Promise<void> {
    await this.running;
  }

  get up(): boolean {
    return this.connected;
  }

  /** Whether a full list has arrived yet (before it, the lease set is not to be acted on). */
  get synced(): boolean {
    return this.hasSynced;
  }

  /** Why the store is unreachable, or null while it is. */
  get lastDownReason(): string | null {
    return this.connected ? null : this.downReason;
  }

  get(key: string): Lease | undefined {
    return this.leases.get(key);
  }

  all(): Lease[] {
    return [...this.leases.values()];
  }

  private noteInvalid(key: string, error: string): void {
    if (this.invalid.get(key) !== error) this.log.warn({ key, err: error }, 'ignoring malformed lease');
    this.invalid.set(key, error);
  }

  private apply(e: LeaseStreamEvent): void {
    switch (e.type) {
      case 'synced': {
        this.leases.clear();
        for (const l of e.leases) this.leases.set(l.key, l);
        const seen = new Set<string>();
        for (const bad of e.invalid) { seen.add(bad.key); this.noteInvalid(bad.key, bad.error); }
        for (const key of [...this.invalid.keys()]) if (!seen.has(key)) this.invalid.delete(key);
        if (this.downReason !== null) this.log.info({ leases: e.leases.length }, `${this.source.storeName} reachable again; leases relisted`);
        this.connected = true;
        this.hasSynced = true;
        this.downReason = null;
        this.markSynced();
        break;
      }
      case 'put':
        this.leases.set(e.lease.key, e.lease);
        this.invalid.delete(e.lease.key);
        break;
      case 'invalid':
        this.leases.delete(e.key);
        this.noteInvalid(e.key, e.error);
        break;
      case 'delete':
        this.leases.delete(e.key);
        this.invalid.delete(e.key);
        break;
      case 'down':
        if (this.downReason !== e.reason) this.log.error({ err: e.reason }, 'lease store lost; keeping the data plane as it is');
        this.connected = false;
        this.downReason = e.reason;
        break;
    }
    for (const l of this.listeners) l(e);
  }
}
