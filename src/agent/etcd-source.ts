// Leases in etcd with flannel's keys (the agent's `--etcd-*` mode): the network config at
// `<prefix>/config`, this node's lease chosen and created by src/subnet/acquire.ts and renewed
// on a fresh etcd lease, every lease streamed by listing and then watching from the list's
// revision; any watch trouble relists after a backoff (100 ms doubling to 5 s).
import { type Clock, delay, realClock, whenAborted } from '../util/clock.ts';
import { acquireLease } from '../subnet/acquire.ts';
import { describeLease, type Lease, type LeaseAttrs } from '../subnet/lease.ts';
import { SUBNET_TTL_SECONDS, type SubnetRegistry } from '../subnet/etcd-registry.ts';
import type { NetworkConfig } from '../subnet/config.ts';
import type { AcquireRequest, Acquired, LeaseSource, LeaseStreamEvent } from './lease-source.ts';

export interface EtcdSourceOptions {
  registry: SubnetRegistry;
  ttlSeconds?: number;
  clock?: Clock;
  random?: () => number;
}

export class EtcdLeaseSource implements LeaseSource {
  readonly storeName: string;
  private readonly clock: Clock;
  private readonly ttl: number;

  constructor(private readonly o: EtcdSourceOptions) {
    this.storeName = o.registry.kv.name;
    this.clock = o.clock ?? realClock;
    this.ttl = o.ttlSeconds ?? SUBNET_TTL_SECONDS;
  }

  networkConfig(): Promise<NetworkConfig> {
    return this.o.registry.getConfig();
  }

  async previousBackendData(publicIP: string): Promise<unknown> {
    const list = await this.o.registry.listLeases();
    return list.leases.find((l) => l.attrs.PublicIP === publicIP)?.attrs.BackendData;
  }

  async acquire(req: AcquireRequest): Promise<Acquired> {
    const got = await acquireLease(this.o.registry, {
      range: req.range, attrs: req.attrs, previous: req.previous, ttlSeconds: this.ttl, now: () => this.clock.now(),
      ...(this.o.random ? { random: this.o.random } : {}),
    });
    return { lease: got.lease, how: got.how, notes: got.deleted.map((d) => `deleted this node's lease ${describeLease(d)}, which no longer fits the config`) };
  }

  renew(own: Lease, attrs: LeaseAttrs): Promise<Lease> {
    return this.o.registry.renewLease(own, attrs, this.ttl, undefined, this.clock.now());
  }

  async stream(emit: (e: LeaseStreamEvent) => void, signal: AbortSignal): Promise<void> {
    let backoff = 100;
    while (!signal.aborted) {
      try {
        const list = await this.o.registry.listLeases();
        if (signal.aborted) break;
        emit({ type: 'synced', leases: list.leases, invalid: list.invalid.map((i) => ({ key: this.shortKey(i.key), error: i.error })) });
        backoff = 100;
        const reason = await this.watchOnce((BigInt(list.revision) + 1n).toString(), emit, signal);
        if (signal.aborted) break;
        emit({ type: 'down', reason: `lease watch ended (${reason})` });
      } catch (err) {
        if (signal.aborted) break;
        emit({ type: 'down', reason: `${this.storeName} unreachable: ${(err as Error).message}` });
      }
      await delay(this.clock, backoff, signal);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  private async watchOnce(fromRevision: string, emit: (e: LeaseStreamEvent) => void, signal: AbortSignal): Promise<string> {
    let finish: (reason: string) => void = () => undefined;
    const ended = new Promise<string>((resolve) => { finish = resolve; });
    const watch = await this.o.registry.watchLeases(fromRevision, {
      put: (lease) => emit({ type: 'put', lease }),
      invalid: (bad) => emit({ type: 'invalid', key: this.shortKey(bad.key), error: bad.error }),
      delete: (key) => emit({ type: 'delete', key }),
      end: (reason) => finish(reason),
    });
    try {
      return await Promise.race([ended, whenAborted(signal).then(() => 'stopped')]);
    } finally {
      await watch.cancel();
    }
  }

  private shortKey(fullKey: string): string {
    const prefix = this.o.registry.subnetsPrefix;
    return fullKey.startsWith(prefix) ? fullKey.slice(prefix.length) : fullKey;
  }

  close(): void {
    this.o.registry.close();
  }
}
