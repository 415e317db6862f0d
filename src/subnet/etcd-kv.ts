// KvStore over etcd v3 (the etcd3 client): one persistent gRPC channel, unary calls with a
// deadline, prefix ranges read page by page at one revision, watches that report their end
// instead of reconnecting behind the caller's back (the caller relists, as flannel does).
import { Etcd3, GRPCDeadlineExceededError, GRPCOutOfRangeError, GRPCResourceExhastedError, GRPCUnavailableError, type IKeyValue, type IOptions } from 'etcd3';
import { KvError, type KvStore, type KvWatch, type KvWatchHandler, type PutGuard, type RangePage, type RangeRequest, type StoredKv } from './kv.ts';

/** The end of a prefix range as etcd defines it: the prefix with its last byte incremented. */
export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      b[i]! += 1;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function toKv(kv: IKeyValue, keysOnly = false): StoredKv {
  const value = keysOnly ? '' : kv.value.toString();
  return {
    key: kv.key.toString(),
    value,
    size: keysOnly ? 0 : kv.value.length,
    lease: String(kv.lease),
    createRevision: String(kv.create_revision),
    modRevision: String(kv.mod_revision),
  };
}

/** Maps the client's errors onto the kinds callers act on. */
export function classifyEtcdError(err: unknown): KvError {
  if (err instanceof KvError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof GRPCResourceExhastedError || /RESOURCE_EXHAUSTED|larger than max/i.test(msg)) return new KvError('resource-exhausted', msg);
  if (err instanceof GRPCOutOfRangeError || /compacted/i.test(msg)) return new KvError('compacted', msg);
  if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError || /unavailable|deadline|ECONNREFUSED|No connection/i.test(msg)) {
    return new KvError('unavailable', msg);
  }
  return new KvError('other', msg);
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classifyEtcdError(err);
  }
}

export class EtcdKv implements KvStore {
  readonly name = 'etcd';
  readonly client: Etcd3;

  constructor(options: IOptions) {
    this.client = new Etcd3(options);
  }

  get(key: string): Promise<StoredKv | null> {
    return call(async () => {
      const res = await this.client.kv.range({ key: Buffer.from(key) });
      return res.kvs[0] ? toKv(res.kvs[0]) : null;
    });
  }

  range(r: RangeRequest): Promise<RangePage> {
    return call(async () => {
      const start = r.after === undefined ? Buffer.from(r.prefix) : Buffer.concat([Buffer.from(r.after), Buffer.from([0])]);
      const res = await this.client.kv.range({
        key: start,
        range_end: prefixEnd(r.prefix),
        limit: r.limit,
        ...(r.revision ? { revision: r.revision } : {}),
        serializable: r.serializable === true,
        keys_only: r.keysOnly === true,
      });
      return { kvs: res.kvs.map((kv) => toKv(kv, r.keysOnly)), more: res.more, revision: String(res.header.revision) };
    });
  }

  grant(ttlSeconds: number): Promise<string> {
    return call(async () => String((await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 })).ID));
  }

  async revoke(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  putIf(key: string, value: string, lease: string, guard: PutGuard): Promise<boolean> {
    return call(async () => {
      const cond = 'absent' in guard ? this.client.if(key, 'Version', '==', 0) : this.client.if(key, 'Mod', '==', Number(guard.modRevision));
      const put = this.client.put(key).value(value);
      const res = await cond.then(lease === '0' ? put : put.lease(lease)).commit();
      return res.succeeded;
    });
  }

  put(key: string, value: string): Promise<void> {
    return call(async () => { await this.client.put(key).value(value).exec(); });
  }

  delete(key: string): Promise<void> {
    return call(async () => { await this.client.delete().key(key).exec(); });
  }

  async watch(prefix: string, fromRevision: string, h: KvWatchHandler): Promise<KvWatch> {
    const w = await call(() => this.client.watch().prefix(prefix).startRevision(fromRevision).create());
    let ended = false;
    const end = (reason: string) => {
      if (ended) return;
      ended = true;
      h.end(reason);
    };
    w.on('put', (kv) => { if (!ended) h.put(toKv(kv)); });
    w.on('delete', (kv) => { if (!ended) h.delete(kv.key.toString()); });
    // The client would resume by itself after a disconnect; the caller relists instead, so
    // every resume starts from a known, complete state.
    w.on('disconnected', (err) => end(`disconnected: ${err.message}`));
    w.on('error', (err) => end(`error: ${err.message}`));
    w.on('end', () => end('ended'));
    return {
      cancel: async () => {
        ended = true;
        w.removeAllListeners();
        w.on('error', () => undefined);
        await w.cancel().catch(() => undefined);
      },
    };
  }

  close(): void {
    this.client.close();
  }
}
