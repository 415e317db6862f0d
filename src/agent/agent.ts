// The node agent: holds this node's subnet lease (LeaseKeeper) in a lease source (etcd, or the
// Kubernetes API), sees every peer's lease (LeaseWatcher) and keeps the overlay backend in line
// with them (Reconciler). Level-triggered: any lease event and a periodic tick run the same
// full reconcile, so a missed event or a hand edit heals. Losing the lease store never tears
// the data plane down; the agent keeps what is programmed, retries, and reports not-ready
// meanwhile. One AbortSignal stops everything.
import type { Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import type { Logger } from '../util/log.ts';
import { type Clock, realClock, whenAborted } from '../util/clock.ts';
import { type Cidr, formatCidr } from '../subnet/cidr.ts';
import { ConfigError, type NetworkConfig } from '../subnet/config.ts';
import { networkProblem, underlayAddressProblem } from '../subnet/usable.ts';
import type { LeaseAttrs } from '../subnet/lease.ts';
import { OutOfSubnetsError } from '../subnet/acquire.ts';
import { readPreviousSubnet, writeSubnetEnv, assertSubnetFilePath } from '../subnet/subnet-env.ts';
import { assertDeviceName } from '../overlay/vxlan/config.ts';
import type { OverlayBackend, PreparedBackend } from '../overlay/backend.ts';
import { findUnderlay, type Underlay } from '../kernel/vxlan.ts';
import type { IptablesBackend } from '../kernel/iptables.ts';
import { applyMasqRules } from './masq.ts';
import { AgentMetrics, startHealthz, startMetrics } from './http.ts';
import { type LeaseSource, LeaseNotYetError } from './lease-source.ts';
import { LeaseWatcher } from './lease-watcher.ts';
import { LeaseKeeper } from './lease-keeper.ts';
import { Reconciler } from './reconciler.ts';
import { type BackendRegistry, defaultBackends } from './backends.ts';
import { retry, StoppedError } from './retry.ts';

export interface AgentOptions {
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
  log: Logger;
}

/** What the agent works with; tests swap any of them for fakes. */
export interface AgentDeps {
  source: LeaseSource;
  backends?: BackendRegistry;
  clock?: Clock;
  findUnderlay?: (o: { iface?: string; publicIP?: string }) => Promise<Underlay>;
  /** Installs masquerade and forward rules for the pod network and this node's subnet. */
  applyMasq?: (config: NetworkConfig, subnet: Cidr) => Promise<void>;
  /** Whether the node forwards IPv4 (net.ipv4.ip_forward); default: read /proc. */
  readIpForward?: () => Promise<boolean>;
}

export const IP_FORWARD_OFF = 'net.ipv4.ip_forward is 0: this node drops traffic between its pods and other nodes (set it to 1, e.g. sysctl -w net.ipv4.ip_forward=1)';

async function readProcIpForward(): Promise<boolean> {
  return (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim() === '1';
}

export class Agent {
  readonly metrics = new AgentMetrics();
  private readonly controller = new AbortController();
  private readonly clock: Clock;
  private readonly backends: BackendRegistry;
  private servers: Server[] = [];
  private config: NetworkConfig | null = null;
  private keeper: LeaseKeeper | null = null;
  private watcher: LeaseWatcher | null = null;
  private reconciler: Reconciler | null = null;
  private subnetEnvWritten = false;
  private notReadyReason = 'starting';
  private finished: Promise<void> | null = null;
  private ipForward = true;

  constructor(private readonly o: AgentOptions, private readonly deps: AgentDeps) {
    assertSubnetFilePath(o.subnetFile);
    if (o.device !== undefined) assertDeviceName(o.device);
    if (!(o.renewMarginMinutes >= 1 && o.renewMarginMinutes <= 1439)) throw new Error('--subnet-lease-renew-margin must be 1..1439 minutes');
    if (!(o.resyncSeconds >= 1)) throw new Error('--resync-period must be at least 1 second');
    this.clock = deps.clock ?? realClock;
    this.backends = deps.backends ?? defaultBackends();
  }

  private get log(): Logger {
    return this.o.log;
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  readiness(): { ready: boolean; reason: string } {
    const own = this.keeper?.lease;
    if (!this.ipForward) return { ready: false, reason: IP_FORWARD_OFF };
    if (!own) return { ready: false, reason: this.notReadyReason };
    if (this.watcher && !this.watcher.up) return { ready: false, reason: `${this.deps.source.storeName} unreachable: ${this.watcher.lastDownReason ?? 'not yet listed'}` };
    if (this.keeper?.problem) return { ready: false, reason: this.keeper.problem };
    if (this.reconciler?.lastError) return { ready: false, reason: `reconcile failed: ${this.reconciler.lastError}` };
    if (!this.subnetEnvWritten) return { ready: false, reason: 'subnet file not written' };
    return { ready: true, reason: '' };
  }

  private retry<T>(what: string, fn: () => Promise<T>, waits: (err: unknown) => { ms: number; level: 'info' | 'warn' } | undefined = () => undefined): Promise<T> {
    return retry(what, fn, {
      clock: this.clock, signal: this.signal, log: this.log, waitFor: waits,
      onError: (step, err) => {
        this.notReadyReason = `${step}: ${err instanceof Error ? err.message : String(err)}`;
        this.metrics.etcdErrors.inc();
      },
    });
  }

  /** Runs until stop(). Throws only for errors no retry can fix (bad flags, bad interface). */
  run(): Promise<void> {
    this.finished ??= this.runAndShutDown();
    return this.finished;
  }

  private async runAndShutDown(): Promise<void> {
    try {
      await this.runUntilStopped();
    } catch (err) {
      if (!(err instanceof StoppedError)) throw err;
    } finally {
      await this.shutdown();
    }
  }

  private async runUntilStopped(): Promise<void> {
    if (this.o.healthzPort) this.servers.push(await startHealthz(this.o.healthzPort, () => this.readiness()));
    if (this.o.metricsPort) this.servers.push(await startMetrics(this.o.metricsPort, this.metrics));
    const underlay = await (this.deps.findUnderlay ?? ((o) => findUnderlay(null, o)))({
      ...(this.o.iface ? { iface: this.o.iface } : {}), ...(this.o.publicIP ? { publicIP: this.o.publicIP } : {}),
    });
    this.log.info({ underlay }, 'using underlay interface');
    const badAddress = underlayAddressProblem(underlay.publicIP);
    if (badAddress) throw new Error(`public IP: ${badAddress}`);
    await this.checkIpForward();
    const source = this.deps.source;

    let backend: OverlayBackend | null = null;
    const config = await this.retry('read network config', async () => {
      const cfg = await source.networkConfig();
      if (!cfg.ipv4) throw new Error('IPv6-only networks are not supported by knet agent yet');
      if (cfg.enableIPv6) throw new Error('EnableIPv6 is not supported by knet agent yet; set it to false');
      const badNetwork = networkProblem(cfg.ipv4.network, underlay);
      if (badNetwork) throw new ConfigError(badNetwork);
      backend = this.backends.create({
        backend: cfg.backend, network: cfg.ipv4.network, underlay,
        ...(this.o.device ? { device: this.o.device } : {}), ...(this.o.ovsRunDir ? { ovsRunDir: this.o.ovsRunDir } : {}),
      });
      return cfg;
    });
    this.config = config;
    const range = config.ipv4!;

    const previous = await readPreviousSubnet(this.o.subnetFile);
    const previousData = await this.retry('read this node\'s previous lease', () => source.previousBackendData(underlay.publicIP));
    const prepared = await backend!.prepare(previousData);
    const attrs: LeaseAttrs = { PublicIP: underlay.publicIP, PublicIPv6: null, BackendType: prepared.backendType, BackendData: prepared.backendData };

    const keeper = new LeaseKeeper({ source, attrs, renewMarginMs: this.o.renewMarginMinutes * 60_000, clock: this.clock, log: this.log, metrics: this.metrics, signal: this.signal });
    this.keeper = keeper;
    const got = await this.retry('acquire subnet lease', () => keeper.acquire({ range, previous }), (err) => {
      if (err instanceof OutOfSubnetsError) return { ms: 30_000, level: 'warn' };
      if (err instanceof LeaseNotYetError) return { ms: 2000, level: 'warn' };
      return undefined;
    });
    this.log.info({ subnet: formatCidr(got.lease.subnet), how: got.how, backend: prepared.backendType, backendData: prepared.backendData }, 'acquired subnet lease');

    // Never reconcile against an empty peer set: that would remove every peer's entries on a
    // restart until the watch caught up. The watcher's start waits for the first full list.
    const watcher = new LeaseWatcher(source, this.log);
    this.watcher = watcher;
    keeper.follow(watcher);
    const reconciler = new Reconciler({ backend: backend!, own: () => keeper.lease, leases: () => watcher.all(), metrics: this.metrics, log: this.log, signal: this.signal });
    this.reconciler = reconciler;
    watcher.on((e) => {
      this.metrics.etcdReachable.set(watcher.up ? 1 : 0);
      if (e.type === 'down') this.metrics.etcdErrors.inc();
      else if (watcher.synced) reconciler.request();
    });
    this.notReadyReason = `listing leases in ${source.storeName}`;
    await watcher.start(this.signal);
    if (this.signal.aborted) return;
    await reconciler.runNow();
    await this.ensureMasqAndEnv(prepared);
    this.scheduleTick(prepared);
    await whenAborted(this.signal);
  }

  /** The periodic full pass: reconcile, masquerade rules, subnet.env, ip_forward. */
  private scheduleTick(prepared: PreparedBackend): void {
    let timer: unknown = null;
    const tick = () => {
      this.reconciler?.request();
      void this.checkIpForward();
      this.ensureMasqAndEnv(prepared).catch((err: Error) => this.log.error({ err: err.message }, 'masquerade rules'));
      timer = this.signal.aborted ? null : this.clock.setTimer(tick, this.o.resyncSeconds * 1000);
    };
    timer = this.clock.setTimer(tick, this.o.resyncSeconds * 1000);
    this.signal.addEventListener('abort', () => { if (timer !== null) this.clock.clearTimer(timer); }, { once: true });
  }

  /** Reads net.ipv4.ip_forward; logs when it is (or becomes) off and when it is back on. */
  private async checkIpForward(): Promise<void> {
    let on: boolean;
    try {
      on = await (this.deps.readIpForward ?? readProcIpForward)();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read net.ipv4.ip_forward');
      return;
    }
    if (!on && this.ipForward) this.log.warn(IP_FORWARD_OFF);
    if (on && !this.ipForward) this.log.info('net.ipv4.ip_forward is 1 again');
    this.ipForward = on;
  }

  private async ensureMasqAndEnv(prepared: PreparedBackend): Promise<void> {
    const own = this.keeper?.lease;
    const config = this.config;
    if (!own || !config?.ipv4) return;
    const network = config.ipv4.network;
    if (this.o.ipMasq) {
      const apply = this.deps.applyMasq ?? ((_cfg, subnet) => applyMasqRules({ backend: this.o.iptablesBackend }, network, subnet));
      await apply(config, own.subnet);
    }
    if (!this.subnetEnvWritten) {
      await writeSubnetEnv(this.o.subnetFile, { network, subnet: own.subnet, mtu: prepared.mtu, ipMasq: this.o.ipMasq });
      this.subnetEnvWritten = true;
      this.log.info({ file: this.o.subnetFile, mtu: prepared.mtu }, 'wrote subnet file');
    }
  }

  /** Stops every loop and timer; resolves once run() has returned. The data plane stays. */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.finished?.catch(() => undefined);
  }

  private async shutdown(): Promise<void> {
    this.controller.abort();
    await this.watcher?.stopped();
    await this.reconciler?.idle();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers = [];
    this.deps.source.close();
  }
}
