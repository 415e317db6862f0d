// The lease store as a seam: the few etcd v3 operations flannel's layout needs (ranged reads
// with paging, leases, guarded puts, prefix watches), implemented over etcd by EtcdKv and in
// memory by the tests' fake, so the registry's logic (renew, takeover, paging, bad values) runs
// unchanged over both.

export interface StoredKv {
  key: string;
  value: string;
  /** Bytes of the value as stored (a value can be dropped unread when it is too large). */
  size: number;
  /** etcd lease id, "0" for none. */
  lease: string;
  /** Revision of the key's creation: older keys were established first. */
  createRevision: string;
  modRevision: string;
}

export interface RangePage {
  kvs: StoredKv[];
  /** More keys follow the last one returned. */
  more: boolean;
  /** Store revision the page was read at. */
  revision: string;
}

export interface RangeRequest {
  prefix: string;
  /** Start strictly after this key (paging). */
  after?: string;
  limit: number;
  /** Read at this revision (later pages of one listing); absent: the newest. */
  revision?: string;
  serializable?: boolean;
  /** Keys and metadata only; value is "" and size 0. */
  keysOnly?: boolean;
}

/** Guard of a conditional put: the key must not exist, or must be at this mod revision. */
export type PutGuard = { absent: true } | { modRevision: string };

export interface KvWatchHandler {
  put(kv: StoredKv): void;
  delete(key: string): void;
  /** The watch ended (disconnect, compaction, cancel by the server); the caller relists. */
  end(reason: string): void;
}

export interface KvWatch {
  cancel(): Promise<void>;
}

/**
 * Why a store call failed, so callers can tell "the response was too large" (page smaller)
 * from "the store is away" (retry later) without parsing messages.
 */
export type KvErrorKind = 'resource-exhausted' | 'unavailable' | 'compacted' | 'other';

export class KvError extends Error {
  constructor(readonly kind: KvErrorKind, message: string) {
    super(message);
  }
}

export interface KvStore {
  /** A short name for logs and errors ("etcd"). */
  readonly name: string;
  get(key: string): Promise<StoredKv | null>;
  range(r: RangeRequest): Promise<RangePage>;
  grant(ttlSeconds: number): Promise<string>;
  revoke(id: string): Promise<void>;
  /** Puts `value` on `lease` ("0": none) if the guard holds; false when it does not. */
  putIf(key: string, value: string, lease: string, guard: PutGuard): Promise<boolean>;
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Watches keys under `prefix` from `fromRevision` (inclusive). */
  watch(prefix: string, fromRevision: string, h: KvWatchHandler): Promise<KvWatch>;
  close(): void;
}
