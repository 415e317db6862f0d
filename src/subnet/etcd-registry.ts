// flannel's etcd layout over a KvStore (etcd, or the tests' in-memory store): the config at
// `<prefix>/config`, leases at `<prefix>/subnets/<key>` on 24 h etcd leases, created with a
// Version==0 transaction, renewed by re-putting the key on a fresh lease. Listings are read in
// pages at one revision, so a subnets/ prefix holding megabytes never fails as one response.
import { readFileSync } from 'node:fs';
import type { IOptions } from 'etcd3';
import { type Cidr, formatCidr } from './cidr.ts';
import { ConfigError, type NetworkConfig, parseNetworkConfig } from './config.ts';
import { EtcdKv } from './etcd-kv.ts';
import { KvError, type KvStore, type KvWatch, type StoredKv } from './kv.ts';
import { type Lease, type LeaseAttrs, formatLeaseAttrs, leaseFromKv, makeSubnetKey } from './lease.ts';

export const SUBNET_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_PREFIX = '/coreos.com/network';
/** Keys per page of a lease listing (a flannel lease value is about 150 bytes). */
export const LIST_PAGE = 500;
/**
 * A lease value longer than this is not one flannel or knet wrote: it is skipped unparsed
 * (flannel's longest, with a WireGuard key, is a few hundred bytes).
 */
export const MAX_LEASE_VALUE_BYTES = 16 * 1024;
/** gRPC receive limit for the etcd client (the library default is 4 MiB). */
export const MAX_RECEIVE_BYTES = 16 * 1024 * 1024;

export interface EtcdConnectOptions {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
  /** Per-call deadline, so a hung etcd turns into an error instead of a stalled agent. */
  callTimeoutMs?: number;
}

export class ConfigNotFoundError extends ConfigError {}

export function assertEtcdPrefix(prefix: string): void {
  if (typeof prefix !== 'string' || !/^\/[A-Za-z0-9._\-/]*$/.test(prefix) || prefix.includes('//')) {
    throw new Error(`invalid etcd prefix ${JSON.stringify(prefix)}: must be an absolute key path like /coreos.com/network`);
  }
}

export function parseEndpoints(text: string): string[] {
  const out = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (out.length === 0) throw new Error('no etcd endpoints given');
  for (const e of out) {
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      throw new Error(`invalid etcd endpoint ${JSON.stringify(e)}: expected a URL like http://127.0.0.1:2379`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`invalid etcd endpoint ${JSON.stringify(e)}: scheme must be http or https`);
    if (!u.port) throw new Error(`invalid etcd endpoint ${JSON.stringify(e)}: a port is required`);
  }
  return out;
}

export function etcdClientOptions(o: EtcdConnectOptions): IOptions {
  const opts: IOptions = { hosts: o.endpoints, dialTimeout: 5000 };
  // Listings are paged (LIST_PAGE keys); this bounds a page of near-limit values too.
  opts.grpcOptions = { 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES };
  const timeout = o.callTimeoutMs ?? 5000;
  // Streams (the lease watch) live for hours; only unary calls get a deadline.
  opts.defaultCallOptions = (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout });
  if (o.caFile || o.certFile || o.keyFile) {
    if (!o.caFile) throw new Error('--etcd-cafile is required for TLS');
    if (!!o.certFile !== !!o.keyFile) throw new Error('--etcd-certfile and --etcd-keyfile must be given together');
    opts.credentials = {
      rootCertificate: readFileSync(o.caFile),
      ...(o.certFile ? { certChain: readFileSync(o.certFile), privateKey: readFileSync(o.keyFile!) } : {}),
    };
  }
  if (o.username) opts.auth = { username: o.username, password: o.password ?? '' };
  return opts;
}

export interface InvalidLease {
  key: string;
  error: string;
}

export interface LeaseList {
  leases: Lease[];
  /** Keys under subnets/ that could not be used (reported, never programmed). */
  invalid: InvalidLease[];
  /** Store revision the list was read at; a watch resumes at revision + 1. */
  revision: string;
}

export interface LeaseWatchHandler {
  put(lease: Lease): void;
  /** A key under subnets/ whose value cannot be used (it is no longer a lease). */
  invalid(bad: InvalidLease): void;
  delete(key: string): void;
  end(reason: string): void;
}

export class SubnetRegistry {
  readonly subnetsPrefix: string;

  constructor(readonly kv: KvStore, readonly prefix: string = DEFAULT_PREFIX) {
    assertEtcdPrefix(prefix);
    this.subnetsPrefix = `${prefix.replace(/\/$/, '')}/subnets/`;
  }

  static connect(o: EtcdConnectOptions, prefix = DEFAULT_PREFIX): SubnetRegistry {
    return new SubnetRegistry(new EtcdKv(etcdClientOptions(o)), prefix);
  }

  configKey(): string {
    return `${this.prefix.replace(/\/$/, '')}/config`;
  }

  leaseKey(subnet: Cidr, ipv6Subnet: Cidr | null = null): string {
    return this.subnetsPrefix + makeSubnetKey(subnet, ipv6Subnet);
  }

  async getConfig(): Promise<NetworkConfig> {
    const kv = await this.kv.get(this.configKey());
    if (kv === null) {
      throw new ConfigNotFoundError(`flannel config not found in ${this.kv.name} store at ${this.configKey()}. Did you create your config using etcdv3 API?`);
    }
    return parseNetworkConfig(kv.value);
  }

  /** Parses one stored key/value; the caller decides what to do with a bad one. */
  leaseFromStored(kv: StoredKv): Lease {
    if (!kv.key.startsWith(this.subnetsPrefix)) throw new Error(`key ${kv.key} is not under ${this.subnetsPrefix}`);
    if (kv.size > MAX_LEASE_VALUE_BYTES) throw new Error(`lease value of ${kv.size} bytes is over the ${MAX_LEASE_VALUE_BYTES}-byte limit; skipped unread`);
    const lease = leaseFromKv(kv.key.slice(this.subnetsPrefix.length), kv.value, kv.lease, null);
    lease.since = Number(kv.createRevision);
    return lease;
  }

  /**
   * Every lease, read page by page at the first page's revision (one consistent snapshot). A
   * page the client cannot receive is read again smaller; a single value it cannot receive
   * is reported by key and skipped.
   * serializable: read from the member's local state without a consensus round. Acquisition
   * uses it: its create is guarded by a Version==0 transaction anyway, and a linearizable read
   * issued beside the lease grant waits for that write to commit first.
   */
  async listLeases(o: { serializable?: boolean; pageSize?: number } = {}): Promise<LeaseList> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.listOnce(o.serializable === true, o.pageSize ?? LIST_PAGE);
      } catch (err) {
        // The snapshot's revision was compacted while paging: start over at the newest.
        if (!(err instanceof KvError && err.kind === 'compacted') || attempt >= 3) throw err;
      }
    }
  }

  private async listOnce(serializable: boolean, pageSize: number): Promise<LeaseList> {
    const out: LeaseList = { leases: [], invalid: [], revision: '' };
    const prefix = this.subnetsPrefix;
    let after: string | undefined;
    let limit = pageSize;
    for (;;) {
      const at = { prefix, limit, serializable, ...(after === undefined ? {} : { after }), ...(out.revision ? { revision: out.revision } : {}) };
      let page;
      let unread = false;
      try {
        page = await this.kv.range(at);
      } catch (err) {
        if (!(err instanceof KvError && err.kind === 'resource-exhausted')) throw err;
        if (limit > 1) { limit = Math.max(1, limit >> 1); continue; }
        // One value alone is more than the client accepts: learn its key without it.
        page = await this.kv.range({ ...at, keysOnly: true });
        unread = true;
      }
      out.revision ||= page.revision;
      for (const kv of page.kvs) {
        if (unread) {
          out.invalid.push({ key: kv.key, error: `lease value is larger than the ${this.kv.name} client accepts in one response; skipped unread` });
          continue;
        }
        try {
          out.leases.push(this.leaseFromStored(kv));
        } catch (err) {
          out.invalid.push({ key: kv.key, error: (err as Error).message });
        }
      }
      if (!page.more || page.kvs.length === 0) return out;
      after = page.kvs[page.kvs.length - 1]!.key;
      limit = Math.min(pageSize, limit * 2);
    }
  }

  /** Grants a store lease; callers may grant ahead (in parallel with a list) and pass the id in. */
  grant(ttlSeconds: number): Promise<string> {
    return this.kv.grant(ttlSeconds);
  }

  revoke(id: string): Promise<void> {
    return this.kv.revoke(id);
  }

  /**
   * Creates the lease key only if it does not exist (Version == 0). Returns null when another
   * node won the race for this subnet.
   */
  async createLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds = SUBNET_TTL_SECONDS, granted?: { id: string; at: number }): Promise<Lease | null> {
    const key = this.leaseKey(subnet);
    const started = granted?.at ?? Date.now();
    const id = granted?.id ?? (await this.grant(ttlSeconds));
    if (!(await this.kv.putIf(key, formatLeaseAttrs(attrs), id, { absent: true }))) {
      if (!granted) await this.revoke(id); // a caller's pre-granted lease stays theirs to retry with
      return null;
    }
    return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs, etcdLease: id, expiresAt: started + ttlSeconds * 1000 };
  }

  /**
   * Renews by putting the key again on a fresh store lease (the old one is revoked, where
   * flannel leaves it to expire). A reservation stays lease-less. Fails if another node now
   * holds the subnet, or if the key changed between our read and our write.
   */
  async renewLease(lease: Lease, attrs: LeaseAttrs, ttlSeconds = SUBNET_TTL_SECONDS, granted?: { id: string; at: number }, now = Date.now()): Promise<Lease> {
    const key = this.subnetsPrefix + lease.key;
    const kv = await this.kv.get(key);
    if (kv) {
      let holder: Lease | null = null;
      try {
        holder = this.leaseFromStored(kv);
      } catch {
        // A malformed value at our key holds nothing: overwrite it (guarded below).
      }
      if (holder && holder.attrs.PublicIP !== attrs.PublicIP) {
        if (granted) await this.revoke(granted.id);
        throw new LeaseTakenError(`subnet ${formatCidr(lease.subnet)} is now held by ${holder.attrs.PublicIP}`);
      }
      if (holder && kv.lease === '0') {
        if (kv.value !== formatLeaseAttrs(attrs)) await this.kv.put(key, formatLeaseAttrs(attrs));
        if (granted) await this.revoke(granted.id);
        return { ...lease, attrs, etcdLease: '0', expiresAt: null };
      }
    }
    const started = granted?.at ?? now;
    const id = granted?.id ?? (await this.grant(ttlSeconds));
    // Guard against the key appearing for someone else between our read and this write.
    if (!(await this.kv.putIf(key, formatLeaseAttrs(attrs), id, kv ? { modRevision: kv.modRevision } : { absent: true }))) {
      await this.revoke(id);
      throw new Error(`subnet ${formatCidr(lease.subnet)} changed in ${this.kv.name} while renewing; will retry`);
    }
    // The key now rides on the new lease; drop the old one so leases do not pile up.
    if (kv && kv.lease !== '0' && kv.lease !== id) await this.revoke(kv.lease);
    return { ...lease, attrs, etcdLease: id, expiresAt: started + ttlSeconds * 1000 };
  }

  async deleteLease(lease: Lease): Promise<void> {
    await this.kv.delete(this.subnetsPrefix + lease.key);
  }

  /** Watches subnets/ from `fromRevision` (inclusive); values are parsed as they arrive. */
  watchLeases(fromRevision: string, h: LeaseWatchHandler): Promise<KvWatch> {
    return this.kv.watch(this.subnetsPrefix, fromRevision, {
      put: (kv) => {
        let lease: Lease;
        try {
          lease = this.leaseFromStored(kv);
        } catch (err) {
          h.invalid({ key: kv.key, error: (err as Error).message });
          return;
        }
        h.put(lease);
      },
      delete: (key) => h.delete(key.slice(this.subnetsPrefix.length)),
      end: (reason) => h.end(reason),
    });
  }

  close(): void {
    this.kv.close();
  }
}

/** Another node holds this node's subnet now. */
export class LeaseTakenError extends Error {}
