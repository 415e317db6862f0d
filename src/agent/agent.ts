// The node agent: holds this node's subnet lease in etcd and keeps the overlay in line with
// every peer's lease. Level-triggered: any watch event and a periodic tick run the same full
// reconcile, so a missed event or a hand edit heals. etcd trouble never tears the data plane
// down; the agent keeps what is programmed, retries, and reports not-ready meanwhile.
import type { Server } from 'node:http';
import type { Logger } from '../util/log.ts';
import type { Watcher } from 'etcd3';
import { formatCidr } from '../subnet/cidr.ts';
import { type NetworkConfig } from '../subnet/config.ts';
import { type EtcdConnectOptions, type LeaseList, SubnetRegistry, SUBNET_TTL_SECONDS } from '../subnet/etcd-registry.ts';
import { type Lease, type LeaseAttrs, describeLease } from '../subnet/lease.ts';
import { acquireLease, OutOfSubnetsError } from '../subnet/acquire.ts';
import { readPreviousSubnet, writeSubnetEnv, assertSubnetFilePath } from '../subnet/subnet-env.ts';
import { type VxlanConfig, parseVxlanConfig, defaultVxlanDevice, assertDeviceName } from '../overlay/vxlan/config.ts';
import { VxlanBackend } from '../overlay/vxlan/backend.ts';
import type { OverlayBackend } from '../overlay/backend.ts';
import { OVS_GRE_TYPE, parseOvsGreConfig } from '../overlay/ovs-gre/config.ts';
import { ovsGreBackendFromConfig } from '../overlay/ovs-gre/backend.ts';
import { findUnderlay, type Underlay } from '../kernel/vxlan.ts';
import type { IptablesBackend } from '../kernel/iptables.ts';
import { applyMasqRules } from './masq.ts';
import { AgentMetrics, startHealthz, startMetrics } from './http.ts';
import { sleep } from '../util/wait.ts';

export interface AgentOptions {
  etcd: EtcdConnectOptions;
  prefix: string;
  iface?: string;
  publicIP?: string;
  subnetFile: string;
  healthzPort: number;
  metricsPort: number;
  ipMasq: boolean;
  iptablesBackend: IptablesBackend;
  /** Renew this long before the lease expires. */
  renewMarginMinutes: number;
  resyncSeconds: number;
  /** VXLAN device name; default flannel.<VNI>. */
  device?: string;
  /** Open vSwitch run directory (db.sock, BRIDGE.mgmt) for the ovs-gre backend. */
  ovsRunDir?: string;
  leaseTtlSeconds?: number;
  log: Logger;
}


export class Agent {
  readonly metrics = new AgentMetrics();
  private registry: SubnetRegistry;
  private stopped = false;
  private stopWaiters: (() => void)[] = [];
  private servers: Server[] = [];
  private timers = new Set<NodeJS.Timeout>();
  private config: NetworkConfig | null = null;
  private vxlan: VxlanConfig | null = null;
  private underlay: Underlay | null = null;
  private backend: OverlayBackend | null = null;
  private attrs: LeaseAttrs | null = null;
  private own: Lease | null = null;
  private peers = new Map<string, Lease>();
  private etcdUp = false;
  private renewDue = false;
  private renewTimer: NodeJS.Timeout | null = null;
  private reconcileRunning: Promise<void> | null = null;
  private reconcileDirty = false;
  private lastReconcileError: string | null = null;
  private subnetEnvWritten = false;
  private notReadyReason = 'starting';
  private watcher: Watcher | null = null;
  private wakeWatch: (() => void) | null = null;

  constructor(private readonly o: AgentOptions) {
    assertSubnetFilePath(o.subnetFile);
    if (o.device !== undefined) assertDeviceName(o.device);
    if (!(o.renewMarginMinutes >= 1 && o.renewMarginMinutes <= 1439)) throw new Error('--subnet-lease-renew-margin must be 1..1439 minutes');
    if (!(o.resyncSeconds >= 1)) throw new Error('--resync-period must be at least 1 second');
    this.registry = SubnetRegistry.connect(o.etcd, o.prefix);
  }

  private get log(): Logger {
    return this.o.log;
  }

  readiness(): { ready: boolean; reason: string } {
    if (!this.own) return { ready: false, reason: this.notReadyReason };
    if (!this.etcdUp) return { ready: false, reason: 'etcd unreachable' };
    if (this.lastReconcileError) return { ready: false, reason: `reconcile failed: ${this.lastReconcileError}` };
    if (!this.subnetEnvWritten) return { ready: false, reason: 'subnet file not written' };
    return { ready: true, reason: '' };
  }

  /** Runs until stop(). Throws only for errors no retry can fix (bad flags, bad interface). */
  async run(): Promise<void> {
    if (this.o.healthzPort) this.servers.push(await startHealthz(this.o.healthzPort, () => this.readiness()));
    if (this.o.metricsPort) this.servers.push(await startMetrics(this.o.metricsPort, this.metrics));
    this.underlay = await findUnderlay(null, { ...(this.o.iface ? { iface: this.o.iface } : {}), ...(this.o.publicIP ? { publicIP: this.o.publicIP } : {}) });
    this.log.info({ underlay: this.underlay }, 'using underlay interface');

    await this.retry('read network config', async () => {
      const cfg = await this.registry.getConfig();
      if (!cfg.ipv4) throw new Error('IPv6-only networks are not supported by knet agent yet');
      if (cfg.enableIPv6) throw new Error('EnableIPv6 is not supported by knet agent yet; set it to false');
      if (cfg.backend.type === OVS_GRE_TYPE) parseOvsGreConfig(cfg.backend);
      else this.vxlan = parseVxlanConfig(cfg.backend);
      this.config = cfg;
    });
    if (this.stopped) return;
    const range = this.config!.ipv4!;
    const vx = this.vxlan;
    this.backend = vx
      ? new VxlanBackend({ netns: null, config: vx, device: this.o.device ?? defaultVxlanDevice(vx.vni), underlay: this.underlay, network: range.network })
      : ovsGreBackendFromConfig({ backend: this.config!.backend, network: range.network, underlay: this.underlay, ...(this.o.ovsRunDir ? { ovsRunDir: this.o.ovsRunDir } : {}) });

    const previous = await readPreviousSubnet(this.o.subnetFile);
    const prevLease = await this.retry('list leases', async () => (await this.registry.listLeases()).leases.find((l) => l.attrs.PublicIP === this.underlay!.publicIP) ?? null);
    if (this.stopped) return;
    const prepared = await this.backend.prepare(prevLease?.attrs.BackendData);
    this.attrs = { PublicIP: this.underlay.publicIP, PublicIPv6: null, BackendType: prepared.backendType, BackendData: prepared.backendData };

    await this.retry('acquire subnet lease', async () => {
      const got = await acquireLease(this.registry, { range, attrs: this.attrs!, previous, ttlSeconds: this.ttl });
      for (const d of got.deleted) this.log.warn({ lease: describeLease(d) }, 'deleted this node\'s lease that no longer fits the config');
      this.setOwn(got.lease);
      this.log.info({ subnet: formatCidr(got.lease.subnet), how: got.how, backend: prepared.backendType, backendData: prepared.backendData }, 'acquired subnet lease');
    }, (err) => (err instanceof OutOfSubnetsError ? 30_000 : undefined));
    if (this.stopped) return;

    // Never reconcile against an empty peer set: that would remove every peer's entries on a
    // restart until the watch caught up.
    await this.retry('list leases', async () => this.replacePeers(await this.registry.listLeases()));
    if (this.stopped) return;
    await this.reconcileNow();
    await this.ensureMasqAndEnv(prepared.mtu);
    const tick = setInterval(() => {
      this.requestReconcile();
      this.ensureMasqAndEnv(prepared.mtu).catch((err: Error) => this.log.error({ err: err.message }, 'masquerade rules'));
    }, this.o.resyncSeconds * 1000);
    this.timers.add(tick);
    await this.watchLoop();
  }

  private get ttl(): number {
    return this.o.leaseTtlSeconds ?? SUBNET_TTL_SECONDS;
  }

  private async ensureMasqAndEnv(mtu: number): Promise<void> {
    const own = this.own;
    if (!own || !this.config?.ipv4) return;
    const network = this.config.ipv4.network;
    if (this.o.ipMasq) await applyMasqRules({ backend: this.o.iptablesBackend }, network, own.subnet);
    if (!this.subnetEnvWritten) {
      await writeSubnetEnv(this.o.subnetFile, { network, subnet: own.subnet, mtu, ipMasq: this.o.ipMasq });
      this.subnetEnvWritten = true;
      this.log.info({ file: this.o.subnetFile, mtu }, 'wrote subnet file');
    }
  }

  /** Retries `fn` with backoff (1 s doubling to 30 s) until it succeeds or the agent stops. */
  private async retry<T>(what: string, fn: () => Promise<T>, delayFor?: (err: unknown) => number | undefined): Promise<T> {
    let delay = 1000;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (this.stopped) throw new Error('agent stopped');
        const msg = err instanceof Error ? err.message : String(err);
        this.notReadyReason = `${what}: ${msg}`;
        if (isEtcdError(err)) this.metrics.etcdErrors.inc();
        const wait = delayFor?.(err) ?? delay;
        this.log.error({ err: msg, retryInMs: wait }, `${what} failed; retrying`);
        await this.sleepUnlessStopped(wait);
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  private sleepUnlessStopped(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.timers.delete(t);
        this.stopWaiters = this.stopWaiters.filter((w) => w !== done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.timers.add(t);
      this.stopWaiters.push(done);
    });
  }

  private setOwn(lease: Lease): void {
    this.own = lease;
    this.metrics.leaseExpiry.set(lease.expiresAt === null ? 0 : lease.expiresAt / 1000);
    if (this.renewTimer) { clearTimeout(this.renewTimer); this.timers.delete(this.renewTimer); this.renewTimer = null; }
    if (lease.expiresAt === null) return;
    const margin = Math.min(this.o.renewMarginMinutes * 60_000, (this.ttl * 1000) / 2);
    // setTimeout caps at 2^31-1 ms (~24.8 days); 24 h fits.
    const due = Math.max(1000, lease.expiresAt - margin - Date.now());
    this.renewTimer = setTimeout(() => {
      this.renewDue = true;
      this.renewNow().catch(() => undefined);
    }, due);
    this.timers.add(this.renewTimer);
  }

  private renewing: Promise<void> | null = null;

  /** Renews now; on failure leaves renewDue set so the next successful relist renews. */
  private renewNow(): Promise<void> {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      try {
        if (!this.own || !this.attrs) return;
        const fresh = await this.registry.renewLease(this.own, this.attrs, this.ttl);
        this.renewDue = false;
        this.setOwn(fresh);
        this.log.info({ subnet: formatCidr(fresh.subnet), etcdLease: fresh.etcdLease }, 'renewed subnet lease');
      } catch (err) {
        this.metrics.etcdErrors.inc();
        this.renewDue = true;
        this.log.error({ err: (err as Error).message }, 'lease renewal failed; will retry');
        const t = setTimeout(() => { this.timers.delete(t); if (this.renewDue && this.etcdUp) this.renewNow().catch(() => undefined); }, 10_000);
        this.timers.add(t);
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }

  /** List, then watch from the list's revision; on any watch trouble relist and resume. */
  private async watchLoop(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      try {
        const list = await this.registry.listLeases();
        this.replacePeers(list);
        this.etcdUp = true;
        this.metrics.etcdReachable.set(1);
        backoff = 100;
        const ownKey = this.own!.key;
        if (!this.peers.has(ownKey) || this.peers.get(ownKey)!.attrs.PublicIP !== this.attrs!.PublicIP) this.renewDue = true;
        if (this.renewDue) await this.renewNow();
        this.requestReconcile();
        const reason = await this.watchOnce((BigInt(list.revision) + 1n).toString());
        if (this.stopped) break;
        this.metrics.etcdErrors.inc();
        this.log.warn({ reason }, 'lease watch ended; relisting');
      } catch (err) {
        if (this.stopped) break;
        this.metrics.etcdErrors.inc();
        this.log.error({ err: (err as Error).message, retryInMs: backoff }, 'etcd unreachable; keeping the data plane as it is');
      }
      this.etcdUp = false;
      this.metrics.etcdReachable.set(0);
      // After an outage the lease's fate is uncertain (expired? etcd restored from a backup?):
      // renew as soon as etcd answers again.
      this.renewDue = true;
      await this.sleepUnlessStopped(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  private replacePeers(list: LeaseList): void {
    for (const bad of list.invalid) this.log.warn(bad, 'ignoring malformed lease');
    this.peers = new Map(list.leases.map((l) => [l.key, l]));
  }

  private async watchOnce(fromRevision: string): Promise<string> {
    const w = await this.registry.watchLeases(fromRevision);
    this.watcher = w;
    try {
      return await new Promise<string>((resolve) => {
        this.wakeWatch = () => resolve('stopped');
        w.on('put', (kv) => this.onPut(kv.key.toString(), kv.value.toString(), String(kv.lease)));
        w.on('delete', (kv) => this.onDelete(kv.key.toString()));
        w.on('disconnected', (err) => resolve(`disconnected: ${err.message}`));
        w.on('error', (err) => resolve(`error: ${err.message}`));
        w.on('end', () => resolve('ended'));
      });
    } finally {
      this.watcher = null;
      this.wakeWatch = null;
      w.removeAllListeners();
      w.on('error', () => undefined);
      await w.cancel().catch(() => undefined);
    }
  }

  private onPut(fullKey: string, value: string, etcdLease: string): void {
    try {
      const l = this.registry.leaseFromStored(fullKey, value, etcdLease);
      this.peers.set(l.key, l);
      if (this.own && l.key === this.own.key && l.attrs.PublicIP !== this.attrs!.PublicIP) {
        this.log.error({ lease: describeLease(l) }, 'this node\'s subnet was taken over by another node');
      }
    } catch (err) {
      this.log.warn({ key: fullKey, err: (err as Error).message }, 'ignoring malformed lease');
      this.peers.delete(fullKey.slice(this.registry.subnetsPrefix.length));
    }
    this.requestReconcile();
  }

  private onDelete(fullKey: string): void {
    const key = fullKey.slice(this.registry.subnetsPrefix.length);
    this.peers.delete(key);
    if (this.own && key === this.own.key) {
      // Never silently move running pods to another subnet: put the same subnet back.
      this.log.warn({ subnet: formatCidr(this.own.subnet) }, 'this node\'s lease was deleted; re-creating it');
      this.renewDue = true;
      this.renewNow().catch(() => undefined);
    }
    this.requestReconcile();
  }

  requestReconcile(): void {
    this.reconcileDirty = true;
    if (!this.reconcileRunning) {
      this.reconcileRunning = this.reconcileLoop().finally(() => { this.reconcileRunning = null; });
    }
  }

  private async reconcileNow(): Promise<void> {
    this.requestReconcile();
    await this.reconcileRunning;
  }

  private async reconcileLoop(): Promise<void> {
    while (this.reconcileDirty && !this.stopped) {
      this.reconcileDirty = false;
      if (!this.own || !this.backend) return;
      const end = this.metrics.reconcileDuration.startTimer();
      try {
        const peers = [...this.peers.values()].filter((l) => l.key !== this.own!.key);
        const r = await this.backend.reconcile(this.own, peers);
        const seconds = end();
        this.metrics.peersProgrammed.set(r.peers);
        this.metrics.reconcileChanges.inc(r.changes);
        this.lastReconcileError = r.errors.length ? r.errors[0]! : null;
        for (const s of r.skipped) this.log.warn(s, 'peer lease not programmed');
        if (r.errors.length) this.log.error({ errors: r.errors }, 'reconcile could not apply every change; will retry');
        if (r.changes > 0 || r.errors.length) this.log.info({ peers: r.peers, changes: r.changes, ms: Math.round(seconds * 1000) }, 'reconciled overlay');
      } catch (err) {
        end();
        this.lastReconcileError = (err as Error).message;
        this.log.error({ err: (err as Error).message }, 'reconcile failed; will retry');
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const w of this.stopWaiters.splice(0)) w();
    this.wakeWatch?.();
    await this.reconcileRunning;
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.registry.close();
  }
}

function isEtcdError(err: unknown): boolean {
  return err instanceof Error && /etcd|grpc|unavailable|deadline|ECONNREFUSED|GRPC/i.test(`${err.name} ${err.message}`);
}

