// An in-memory etcd for fast tests of the lease logic: revisions, leases that expire on the
// given clock, Version==0 and ModRevision guards, prefix ranges with paging and a response size
// limit (etcd clients refuse responses over 4 MiB), prefix watches with history, and faults a
// test can switch on (the store going away, a write sneaking in before a guarded put).
import type { Clock } from '../../src/util/clock.ts';
import { KvError, type KvStore, type KvWatch, type KvWatchHandler, type PutGuard, type RangePage, type RangeRequest, type StoredKv } from '../../src/subnet/kv.ts';

interface Entry { value: string; lease: string; createRevision: number; modRevision: number }
interface LeaseRec { ttlMs: number; timer: unknown; keys: Set<string> }
interface Change { revision: number; type: 'put' | 'delete'; key: string; kv?: StoredKv }
interface Watcher { prefix: string; h: KvWatchHandler }

export class MemoryKv implements KvStore {
  readonly name = 'etcd';
  revision = 1;
  private readonly data = new Map<string, Entry>();
  private readonly leases = new Map<string, LeaseRec>();
  private readonly history: Change[] = [];
  private readonly watchers = new Set<Watcher>();
  private nextLease = 0x1000;
  private compactedRevision = 0;
  private isDown = false;
  /** A response larger than this fails as RESOURCE_EXHAUSTED, like the client's limit. */
  maxResponseBytes = 4 * 1024 * 1024;
  /** Runs before every guarded put: a test can write the key here to lose a race. */
  beforeGuardedPut: ((key: string) => void) | null = null;
  /** Operations in order, e.g. "range /p/subnets/ limit=500", "grant 60". */
  readonly calls: string[] = [];

  constructor(private readonly clock: Clock) {}

  private check(): void {
    if (this.isDown) throw new KvError('unavailable', '14 UNAVAILABLE: No connection established (test: etcd is down)');
  }

  /** Switches the store off (every call fails, open watches end) or on again. */
  setDown(down: boolean): void {
    this.isDown = down;
    if (down) {
      for (const w of [...this.watchers]) { this.watchers.delete(w); w.h.end('disconnected: 14 UNAVAILABLE (test: etcd is down)'); }
    }
  }

  /** Forgets history up to now: watches from older revisions end as compacted. */
  compact(): void {
    this.compactedRevision = this.revision;
  }

  private stored(key: string, e: Entry): StoredKv {
    return { key, value: e.value, size: Buffer.byteLength(e.value), lease: e.lease, createRevision: String(e.createRevision), modRevision: String(e.modRevision) };
  }

  private notify(c: Change): void {
    this.history.push(c);
    for (const w of this.watchers) {
      if (!c.key.startsWith(w.prefix)) continue;
      if (c.type === 'put') w.h.put(c.kv!); else w.h.delete(c.key);
    }
  }

  private write(key: string, value: string, lease: string): void {
    const old = this.data.get(key);
    if (old && old.lease !== '0') this.leases.get(old.lease)?.keys.delete(key);
    if (lease !== '0') {
      const rec = this.leases.get(lease);
      if (!rec) throw new KvError('other', 'etcdserver: requested lease not found');
      rec.keys.add(key);
    }
    const revision = ++this.revision;
    const e: Entry = { value, lease, createRevision: old?.createRevision ?? revision, modRevision: revision };
    this.data.set(key, e);
    this.notify({ revision, type: 'put', key, kv: this.stored(key, e) });
  }

  private remove(key: string): void {
    const old = this.data.get(key);
    if (!old) return;
    if (old.lease !== '0') this.leases.get(old.lease)?.keys.delete(key);
    this.data.delete(key);
    this.notify({ revision: ++this.revision, type: 'delete', key });
  }

  /** Direct access for tests (no faults): the stored entry, or undefined. */
  peek(key: string): StoredKv | undefined {
    const e = this.data.get(key);
    return e ? this.stored(key, e) : undefined;
  }

  /** Writes (without a lease unless given one), bypassing faults: a test's etcdctl put. */
  set(key: string, value: string, lease = '0'): void {
    this.write(key, value, lease);
  }

  /** Deletes, bypassing faults (a test's etcdctl del). */
  del(key: string): void {
    this.remove(key);
  }

  get leaseCount(): number {
    return this.leases.size;
  }

  async get(key: string): Promise<StoredKv | null> {
    this.check();
    this.calls.push(`get ${key}`);
    const e = this.data.get(key);
    return e ? this.stored(key, e) : null;
  }

  async range(r: RangeRequest): Promise<RangePage> {
    this.check();
    this.calls.push(`range ${r.prefix} limit=${r.limit}${r.keysOnly ? ' keys-only' : ''}`);
    if (r.revision && Number(r.revision) <= this.compactedRevision) throw new KvError('compacted', 'mvcc: required revision has been compacted');
    const keys = [...this.data.keys()].filter((k) => k.startsWith(r.prefix) && (r.after === undefined || k > r.after)).sort();
    const page = r.limit > 0 ? keys.slice(0, r.limit) : keys;
    const kvs = page.map((k) => {
      const kv = this.stored(k, this.data.get(k)!);
      return r.keysOnly ? { ...kv, value: '', size: 0 } : kv;
    });
    const bytes = kvs.reduce((n, kv) => n + kv.key.length + kv.size + 32, 0);
    if (bytes > this.maxResponseBytes) throw new KvError('resource-exhausted', `8 RESOURCE_EXHAUSTED: Received message larger than max (${bytes} vs. ${this.maxResponseBytes})`);
    return { kvs, more: keys.length > page.length, revision: String(this.revision) };
  }

  async grant(ttlSeconds: number): Promise<string> {
    this.check();
    this.calls.push(`grant ${ttlSeconds}`);
    const id = String(this.nextLease++);
    const rec: LeaseRec = { ttlMs: ttlSeconds * 1000, keys: new Set(), timer: null };
    rec.timer = this.clock.setTimer(() => this.expire(id), rec.ttlMs);
    this.leases.set(id, rec);
    return id;
  }

  private expire(id: string): void {
    const rec = this.leases.get(id);
    if (!rec) return;
    this.leases.delete(id);
    for (const key of [...rec.keys]) this.remove(key);
  }

  async revoke(id: string): Promise<void> {
    if (this.isDown) return;
    this.calls.push(`revoke ${id}`);
    const rec = this.leases.get(id);
    if (!rec) return;
    this.clock.clearTimer(rec.timer);
    this.expire(id);
  }

  async putIf(key: string, value: string, lease: string, guard: PutGuard): Promise<boolean> {
    this.check();
    this.calls.push(`put-if ${key}`);
    const hook = this.beforeGuardedPut;
    if (hook) hook(key);
    const cur = this.data.get(key);
    const ok = 'absent' in guard ? !cur : cur !== undefined && String(cur.modRevision) === guard.modRevision;
    if (ok) this.write(key, value, lease);
    return ok;
  }

  async put(key: string, value: string): Promise<void> {
    this.check();
    this.calls.push(`put ${key}`);
    this.write(key, value, '0');
  }

  async delete(key: string): Promise<void> {
    this.check();
    this.calls.push(`delete ${key}`);
    this.remove(key);
  }

  async watch(prefix: string, fromRevision: string, h: KvWatchHandler): Promise<KvWatch> {
    this.check();
    this.calls.push(`watch ${prefix} from=${fromRevision}`);
    const w: Watcher = { prefix, h };
    const from = Number(fromRevision);
    if (from <= this.compactedRevision) {
      queueMicrotask(() => h.end('error: mvcc: required revision has been compacted'));
      return { cancel: async () => undefined };
    }
    for (const c of this.history) {
      if (c.revision < from || !c.key.startsWith(prefix)) continue;
      if (c.type === 'put') h.put(c.kv!); else h.delete(c.key);
    }
    this.watchers.add(w);
    return { cancel: async () => { this.watchers.delete(w); } };
  }

  /** Several agents share one store in a test: closing one client ends only its own watches. */
  close(): void {}
}
