// flannel's etcd layout through one persistent etcd v3 client (facts A.1, A.5): the config at
// `<prefix>/config`, leases at `<prefix>/subnets/<key>` on 24 h etcd leases, created with a
// Version==0 transaction, renewed by re-putting the key on a fresh lease.
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions, type Watcher } from 'etcd3';
import { type Cidr, formatCidr } from './cidr.ts';
import { ConfigError, type NetworkConfig, parseNetworkConfig } from './config.ts';
import { type Lease, type LeaseAttrs, formatLeaseAttrs, leaseFromKv, makeSubnetKey } from './lease.ts';

export const SUBNET_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_PREFIX = '/coreos.com/network';

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

export interface LeaseList {
  leases: Lease[];
  /** Keys under subnets/ that could not be parsed (reported, never programmed). */
  invalid: { key: string; error: string }[];
  /** etcd revision the list was read at; a watch resumes at revision + 1. */
  revision: string;
}

export class SubnetRegistry {
  readonly client: Etcd3;
  readonly subnetsPrefix: string;

  constructor(client: Etcd3, readonly prefix: string = DEFAULT_PREFIX) {
    assertEtcdPrefix(prefix);
    this.client = client;
    this.subnetsPrefix = `${prefix.replace(/\/$/, '')}/subnets/`;
  }

  static connect(o: EtcdConnectOptions, prefix = DEFAULT_PREFIX): SubnetRegistry {
    return new SubnetRegistry(new Etcd3(etcdClientOptions(o)), prefix);
  }

  configKey(): string {
    return `${this.prefix.replace(/\/$/, '')}/config`;
  }

  leaseKey(subnet: Cidr, ipv6Subnet: Cidr | null = null): string {
    return this.subnetsPrefix + makeSubnetKey(subnet, ipv6Subnet);
  }

  async getConfig(): Promise<NetworkConfig> {
    const text = await this.client.get(this.configKey()).string();
    if (text === null) {
      throw new ConfigNotFoundError(`flannel config not found in etcd store at ${this.configKey()}. Did you create your config using etcdv3 API?`);
    }
    return parseNetworkConfig(text);
  }

  /** Parses one stored key/value; the caller decides what to do with a bad one. */
  leaseFromStored(fullKey: string, value: string, etcdLease: string): Lease {
    if (!fullKey.startsWith(this.subnetsPrefix)) throw new Error(`key ${fullKey} is not under ${this.subnetsPrefix}`);
    return leaseFromKv(fullKey.slice(this.subnetsPrefix.length), value, etcdLease, null);
  }

  /**
   * serializable: read from the member's local state without a consensus round. Acquisition
   * uses it: its create is guarded by a Version==0 transaction anyway, and a linearizable read
   * issued beside the lease grant waits for that write to commit first.
   */
  async listLeases(o: { serializable?: boolean } = {}): Promise<LeaseList> {
    const res = await this.client.getAll().prefix(this.subnetsPrefix).serializable(o.serializable === true).exec();
    const out: LeaseList = { leases: [], invalid: [], revision: String(res.header.revision) };
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      try {
        out.leases.push(this.leaseFromStored(key, kv.value.toString(), String(kv.lease)));
      } catch (err) {
        out.invalid.push({ key, error: (err as Error).message });
      }
    }
    return out;
  }

  /** Grants an etcd lease; callers may grant ahead (in parallel with a list) and pass the id in. */
  async grant(ttlSeconds: number): Promise<string> {
    const res = await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 });
    return String(res.ID);
  }

  async revoke(id: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  /**
   * Creates the lease key only if it does not exist (Version == 0). Returns null when another
   * node won the race for this subnet.
   */
  async createLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds = SUBNET_TTL_SECONDS, granted?: { id: string; at: number }): Promise<Lease | null> {
    const key = this.leaseKey(subnet);
    const started = granted?.at ?? Date.now();
    const id = granted?.id ?? (await this.grant(ttlSeconds));
    const res = await this.client
      .if(key, 'Version', '==', 0)
      .then(this.client.put(key).value(formatLeaseAttrs(attrs)).lease(id))
      .commit();
    if (!res.succeeded) {
      if (!granted) await this.revoke(id); // a caller's pre-granted lease stays theirs to retry with
      return null;
    }
    return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs, etcdLease: id, expiresAt: started + ttlSeconds * 1000 };
  }

  /**
   * Renews by putting the key again on a fresh etcd lease (the old one simply expires, as in
   * flannel). A reservation stays lease-less. Fails if another node now holds the subnet.
   */
  async renewLease(lease: Lease, attrs: LeaseAttrs, ttlSeconds = SUBNET_TTL_SECONDS, granted?: { id: string; at: number }): Promise<Lease> {
    const key = this.subnetsPrefix + lease.key;
    const current = await this.client.get(key).exec();
    const kv = current.kvs[0];
    if (kv) {
      const holder = this.leaseFromStored(key, kv.value.toString(), String(kv.lease));
      if (holder.attrs.PublicIP !== attrs.PublicIP) {
        throw new Error(`subnet ${formatCidr(lease.subnet)} is now held by ${holder.attrs.PublicIP}`);
      }
      if (String(kv.lease) === '0') {
        if (kv.value.toString() !== formatLeaseAttrs(attrs)) await this.client.put(key).value(formatLeaseAttrs(attrs)).exec();
        if (granted) await this.revoke(granted.id);
        return { ...lease, attrs, etcdLease: '0', expiresAt: null };
      }
    }
    const started = granted?.at ?? Date.now();
    const id = granted?.id ?? (await this.grant(ttlSeconds));
    // Guard against the key appearing for someone else between our read and this write.
    const guard = kv ? this.client.if(key, 'Mod', '==', Number(kv.mod_revision)) : this.client.if(key, 'Version', '==', 0);
    const res = await guard.then(this.client.put(key).value(formatLeaseAttrs(attrs)).lease(id)).commit();
    if (!res.succeeded) {
      await this.revoke(id);
      throw new Error(`subnet ${formatCidr(lease.subnet)} changed in etcd while renewing; will retry`);
    }
    // The key now rides on the new lease; drop the old one so leases do not pile up in etcd.
    if (kv && String(kv.lease) !== '0' && String(kv.lease) !== id) await this.revoke(String(kv.lease));
    return { ...lease, attrs, etcdLease: id, expiresAt: started + ttlSeconds * 1000 };
  }

  async deleteLease(lease: Lease): Promise<void> {
    await this.client.delete().key(this.subnetsPrefix + lease.key).exec();
  }

  /** Watches subnets/ from `fromRevision` (inclusive). The caller handles disconnects and errors. */
  async watchLeases(fromRevision: string): Promise<Watcher> {
    return this.client.watch().prefix(this.subnetsPrefix).startRevision(fromRevision).create();
  }

  close(): void {
    this.client.close();
  }
}
