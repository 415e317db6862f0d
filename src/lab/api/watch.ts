// Watch serving with bounds. Each watch is a chunked stream of JSON events (ADDED, MODIFIED,
// DELETED, BOOKMARK, ERROR), filtered by namespace, labels and fields the way kube-apiserver's
// watch cache does (an object that stops matching a selector is DELETED for that watch). The
// bounds kube-apiserver has in its own form: a client may hold only so many watches (more is
// 429), a watch buffers only so many bytes its client has not read (beyond that, or when it
// stalls, the watch is closed and the client re-watches from its last resourceVersion), and
// every watch ends after its timeout. The initial state is written only as fast as the client
// reads it.
import type { ServerResponse } from 'node:http';
import type { Logger } from '../../util/log.ts';
import { ApiError, statusBody } from './errors.ts';
import { apiVersionOf, type ResourceDef } from './resources.ts';
import { fieldsMatch, labelsMatch, type FieldRequirement, type LabelRequirement } from './selectors.ts';
import type { Obj, ObjectStore, StoreEvent } from './store.ts';
import { toTable, type IncludeObject } from './tables.ts';

export interface WatchLimits {
  /** Open watches one client (address, or the local socket) may hold. */
  perClient: number;
  /** Open watches in all. */
  total: number;
  /** Bytes written to a watch and not yet taken by its client, beyond which it is closed. */
  maxBufferedBytes: number;
  /** How long a watch with data pending may go without its client reading, before it is closed. */
  stallMs: number;
  /** A watch without `timeoutSeconds` ends after a random time in this range (seconds), as kube-apiserver's do. */
  defaultTimeoutSeconds: readonly [number, number];
  /** Seconds between BOOKMARK events for clients that allow them. */
  bookmarkSeconds: number;
}

export const DEFAULT_WATCH_LIMITS: WatchLimits = {
  perClient: 64, total: 1024, maxBufferedBytes: 1 << 20, stallMs: 30_000, defaultTimeoutSeconds: [1800, 3600], bookmarkSeconds: 60,
};

export interface WatchSpec {
  def: ResourceDef;
  namespace?: string;
  labels: LabelRequirement[];
  fields: FieldRequirement[];
  /** null: start with the current state as ADDED events; else the events after this resourceVersion. */
  from: number | null;
  bookmarks: boolean;
  /** Mark the end of the initial state with a BOOKMARK (`sendInitialEvents=true`). */
  initialEventsEnd: boolean;
  /** Events as one-row Tables (kubectl get -w). */
  table: IncludeObject | null;
  client: string;
  timeoutSeconds?: number;
}

type Line = string;

class Watch {
  private readonly queue: Line[] = [];
  private queuedBytes = 0;
  private replay: Iterator<Line> | null = null;
  private closed = false;
  private stallTimer: NodeJS.Timeout | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private tableHeaders = true;

  constructor(readonly spec: WatchSpec, private readonly res: ServerResponse, private readonly hub: WatchHub) {}

  matches(o: Obj | undefined): boolean {
    if (!o) return false;
    if (this.spec.namespace !== undefined && o.metadata.namespace !== this.spec.namespace) return false;
    return labelsMatch(this.spec.labels, o.metadata.labels) && fieldsMatch(this.spec.fields, o);
  }

  /** The event this watch sees for a store event (selectors turn some into ADDED or DELETED). */
  translate(e: StoreEvent): { type: string; object: Obj } | null {
    if (e.def.name !== this.spec.def.name) return null;
    const now = e.type !== 'DELETED' && this.matches(e.object);
    const before = e.type !== 'ADDED' && this.matches(e.previous ?? e.object);
    if (e.type === 'DELETED') return before ? { type: 'DELETED', object: e.object } : null;
    if (now && before) return { type: 'MODIFIED', object: e.object };
    if (now) return { type: 'ADDED', object: e.object };
    if (before) return { type: 'DELETED', object: e.object };
    return null;
  }

  line(type: string, object: unknown): Line {
    let out = object;
    if (this.spec.table && (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED')) {
      const o = object as Obj;
      out = toTable(this.spec.def.name, [o], { resourceVersion: o.metadata.resourceVersion ?? '', include: this.spec.table, headers: this.tableHeaders });
      this.tableHeaders = false;
    }
    return JSON.stringify({ type, object: out }) + '\n';
  }

  bookmark(rv: number, initialEnd = false): Line {
    const metadata: Record<string, unknown> = { resourceVersion: String(rv) };
    if (initialEnd) metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
    return JSON.stringify({ type: 'BOOKMARK', object: { kind: this.spec.def.kind, apiVersion: apiVersionOf(this.spec.def), metadata } }) + '\n';
  }

  start(initial: Iterable<Line>, timeoutMs: number, bookmarkMs: number): void {
    this.replay = initial[Symbol.iterator]();
    this.res.on('drain', () => this.pump());
    this.res.on('close', () => this.close('client closed'));
    this.timers.push(setTimeout(() => this.close('timeout', true), timeoutMs));
    if (this.spec.bookmarks) {
      const t = setInterval(() => { if (!this.replay && this.queue.length === 0) this.push(this.bookmark(this.hub.revision)); }, bookmarkMs);
      this.timers.push(t);
    }
    this.pump();
  }

  push(line: Line): void {
    if (this.closed) return;
    this.queue.push(line);
    this.queuedBytes += line.length;
    // One event always fits; beyond that the client must keep up.
    if (this.queue.length > 1 && this.queuedBytes + this.res.writableLength > this.hub.limits.maxBufferedBytes) {
      this.hub.closedSlow++;
      this.close(`the client did not read ${this.queuedBytes + this.res.writableLength} buffered bytes`, false, true);
      return;
    }
    this.pump();
  }

  private next(): Line | null {
    if (this.replay) {
      const r = this.replay.next();
      if (!r.done) return r.value;
      this.replay = null;
    }
    const line = this.queue.shift();
    if (line === undefined) return null;
    this.queuedBytes -= line.length;
    return line;
  }

  private pump(): void {
    while (!this.closed && !this.res.writableNeedDrain) {
      const line = this.next();
      if (line === null) break;
      this.res.write(line);
    }
    if (this.closed) return;
    if (this.res.writableNeedDrain) {
      this.stallTimer ??= setTimeout(() => { this.hub.closedSlow++; this.close('the client stopped reading', false, true); }, this.hub.limits.stallMs);
    } else if (this.stallTimer) {
      clearTimeout(this.stallTimer);
      this.stallTimer = null;
    }
  }

  close(why: string, graceful = false, slow = false): void {
    if (this.closed) return;
    this.closed = true;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    for (const t of this.timers) clearTimeout(t);
    this.hub.forget(this);
    if (slow) this.hub.log.warn({ resource: this.spec.def.name, client: this.spec.client, why }, 'closing a watch whose client does not keep up; it will re-watch');
    this.queue.length = 0;
    this.replay = null;
    if (graceful) this.res.end();
    else this.res.destroy();
  }
}

export class WatchHub {
  private readonly watches = new Set<Watch>();
  private readonly perClient = new Map<string, number>();
  private readonly unsubscribe: () => void;
  /** Watches closed because their client did not keep up (for tests and logs). */
  closedSlow = 0;

  constructor(private readonly store: ObjectStore, readonly limits: WatchLimits, readonly log: Logger) {
    this.unsubscribe = store.subscribe((e) => {
      for (const w of this.watches) {
        const ev = w.translate(e);
        if (ev) w.push(w.line(ev.type, ev.object));
      }
    });
  }

  get revision(): number { return this.store.revision; }
  get open(): number { return this.watches.size; }
  openFor(client: string): number { return this.perClient.get(client) ?? 0; }

  /** Refuses a watch over the limits (429, before any response is written). */
  admit(client: string): void {
    const mine = this.perClient.get(client) ?? 0;
    if (mine >= this.limits.perClient) {
      throw new ApiError(429, 'TooManyRequests', `too many watches from this client: ${mine} are open and the lab API allows ${this.limits.perClient} per client`, { retryAfterSeconds: 1 });
    }
    if (this.watches.size >= this.limits.total) {
      throw new ApiError(429, 'TooManyRequests', `too many watches: ${this.watches.size} are open and the lab API allows ${this.limits.total}`, { retryAfterSeconds: 1 });
    }
  }

  serve(res: ServerResponse, spec: WatchSpec): void {
    this.admit(spec.client);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w = new Watch(spec, res, this);
    // The initial events and the subscription are taken in one synchronous step, so no event
    // is missed or sent twice.
    let initial: Iterable<Line>;
    if (spec.from === null) {
      const snapshot = this.store.list(spec.def, spec.namespace).filter((o) => w.matches(o));
      const rv = this.store.revision;
      initial = (function* () {
        for (const o of snapshot) yield w.line('ADDED', o);
        if (spec.initialEventsEnd) yield w.bookmark(rv, true);
      })();
    } else {
      const events = this.store.eventsAfter(spec.from);
      if (events === null) {
        const floor = this.store.oldestResumable;
        res.end(JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${spec.from} (${floor})`) }) + '\n');
        return;
      }
      initial = (function* () {
        for (const e of events) {
          const ev = w.translate(e);
          if (ev) yield w.line(ev.type, ev.object);
        }
      })();
    }
    this.watches.add(w);
    this.perClient.set(spec.client, (this.perClient.get(spec.client) ?? 0) + 1);
    const [lo, hi] = this.limits.defaultTimeoutSeconds;
    const seconds = spec.timeoutSeconds ?? lo + Math.random() * (hi - lo);
    w.start(initial, seconds * 1000, this.limits.bookmarkSeconds * 1000);
  }

  forget(w: Watch): void {
    if (!this.watches.delete(w)) return;
    const n = (this.perClient.get(w.spec.client) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(w.spec.client);
    else this.perClient.set(w.spec.client, n);
  }

  stop(): void {
    this.unsubscribe();
    for (const w of [...this.watches]) w.close('server stopping');
  }
}
