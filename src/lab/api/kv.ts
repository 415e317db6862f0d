// The lab API's storage seam: a small key-value interface with compare-and-swap by revision
// (what kube-apiserver needs from etcd), one implementation over a real etcd and one in memory
// for fast tests of the API's failure paths.
import { Etcd3, type Watcher } from 'etcd3';

export interface KeyValue { key: string; value: string; modRevision: number }
export interface KvEvent { type: 'put' | 'delete'; key: string; value: string; modRevision: number }

export type WriteResult = { ok: true; revision: number } | { ok: false };

export interface KvBackend {
  /** Every key under the prefix and the store's revision at that moment. */
  list(prefix: string): Promise<{ revision: number; kvs: KeyValue[] }>;
  /** Writes only if the key does not exist. */
  create(key: string, value: string): Promise<WriteResult>;
  /** Writes only if the key was last modified at `modRevision`. */
  update(key: string, value: string, modRevision: number): Promise<WriteResult>;
  /** Deletes only if the key was last modified at `modRevision`. */
  remove(key: string, modRevision: number): Promise<WriteResult>;
  /**
   * Calls `onEvents` with every change under the prefix after `afterRevision`, in order, with
   * the revision the batch brings the store to. Resolves once the watch is established.
   */
  watch(prefix: string, afterRevision: number, onEvents: (events: KvEvent[], revision: number) => void): Promise<{ cancel(): Promise<void> }>;
  close(): Promise<void>;
}

/** Etcd write errors that mean "this request is too big", which the API reports as 413. */
export class TooLargeError extends Error {}

export class EtcdKv implements KvBackend {
  private readonly etcd: Etcd3;

  constructor(endpoint: string) {
    this.etcd = new Etcd3({ hosts: [endpoint], dialTimeout: 5000 });
  }

  async list(prefix: string): Promise<{ revision: number; kvs: KeyValue[] }> {
    const res = await this.etcd.getAll().prefix(prefix).exec();
    return { revision: Number(res.header.revision), kvs: res.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString(), modRevision: Number(kv.mod_revision) })) };
  }

  private async txn(key: string, target: 'Create' | 'Mod', revision: number, op: 'put' | 'delete', value = ''): Promise<WriteResult> {
    try {
      const res = await this.etcd.if(key, target, '==', revision)
        .then(op === 'put' ? this.etcd.put(key).value(value) : this.etcd.delete().key(key))
        .commit();
      return res.succeeded ? { ok: true, revision: Number(res.header.revision) } : { ok: false };
    } catch (err) {
      if (/request is too large|message larger than max|RESOURCE_EXHAUSTED/i.test(String((err as Error).message))) throw new TooLargeError((err as Error).message);
      throw err;
    }
  }

  create(key: string, value: string): Promise<WriteResult> {
    return this.txn(key, 'Create', 0, 'put', value);
  }

  update(key: string, value: string, modRevision: number): Promise<WriteResult> {
    return this.txn(key, 'Mod', modRevision, 'put', value);
  }

  remove(key: string, modRevision: number): Promise<WriteResult> {
    return this.txn(key, 'Mod', modRevision, 'delete');
  }

  async watch(prefix: string, afterRevision: number, onEvents: (events: KvEvent[], revision: number) => void): Promise<{ cancel(): Promise<void> }> {
    const w: Watcher = await this.etcd.watch().prefix(prefix).startRevision(String(afterRevision + 1)).create();
    w.on('data', (res) => {
      const events: KvEvent[] = (res.events ?? []).map((e) => ({
        type: e.type === 'Delete' ? 'delete' : 'put', key: e.kv.key.toString(), value: e.kv.value.toString(), modRevision: Number(e.kv.mod_revision),
      }));
      onEvents(events, Number(res.header?.revision ?? 0));
    });
    return { cancel: () => w.cancel() };
  }

  async close(): Promise<void> {
    this.etcd.close();
  }
}

/** An in-memory store with etcd's revision semantics (one revision per write). */
export class MemoryKv implements KvBackend {
  private revision = 1;
  private readonly data = new Map<string, KeyValue>();
  private readonly log: KvEvent[] = [];
  private readonly watchers = new Set<{ prefix: string; onEvents: (events: KvEvent[], revision: number) => void }>();

  async list(prefix: string): Promise<{ revision: number; kvs: KeyValue[] }> {
    const kvs = [...this.data.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
    return { revision: this.revision, kvs: kvs.map((kv) => ({ ...kv })) };
  }

  private commit(e: KvEvent): WriteResult {
    if (e.type === 'put') this.data.set(e.key, { key: e.key, value: e.value, modRevision: e.modRevision });
    else this.data.delete(e.key);
    this.log.push(e);
    // Delivered asynchronously, as etcd's watch stream is.
    for (const w of this.watchers) if (e.key.startsWith(w.prefix)) queueMicrotask(() => w.onEvents([e], e.modRevision));
    return { ok: true, revision: e.modRevision };
  }

  /** Writes a raw value, bypassing the API (tests of what someone else put in the store). */
  async put(key: string, value: string): Promise<number> {
    this.commit({ type: 'put', key, value, modRevision: ++this.revision });
    return this.revision;
  }

  async create(key: string, value: string): Promise<WriteResult> {
    if (this.data.has(key)) return { ok: false };
    return this.commit({ type: 'put', key, value, modRevision: ++this.revision });
  }

  async update(key: string, value: string, modRevision: number): Promise<WriteResult> {
    if (this.data.get(key)?.modRevision !== modRevision) return { ok: false };
    return this.commit({ type: 'put', key, value, modRevision: ++this.revision });
  }

  async remove(key: string, modRevision: number): Promise<WriteResult> {
    if (this.data.get(key)?.modRevision !== modRevision) return { ok: false };
    return this.commit({ type: 'delete', key, value: '', modRevision: ++this.revision });
  }

  async watch(prefix: string, afterRevision: number, onEvents: (events: KvEvent[], revision: number) => void): Promise<{ cancel(): Promise<void> }> {
    const w = { prefix, onEvents };
    for (const e of this.log) if (e.modRevision > afterRevision && e.key.startsWith(prefix)) queueMicrotask(() => onEvents([e], e.modRevision));
    this.watchers.add(w);
    return { cancel: async () => { this.watchers.delete(w); } };
  }

  async close(): Promise<void> {
    this.watchers.clear();
  }
}
