// The userspace data path (`knet proxy --proxy-mode userspace`): the same service model as the
// iptables mode (src/rules/model.ts), but each service port gets a listener in this process and
// the kernel only steers traffic to it (src/rules/portals.ts). Order matters on every sync:
// listeners open before rules point at them, and close only after the rules stopped pointing.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Iptables } from '../../kernel/iptables.ts';
import { ensureJumps, isJumpLine } from '../../kernel/jumps.ts';
import { buildServiceModel, type ServicePortInfo } from '../../rules/model.ts';
import { externallyAccessible, selectEndpoints } from '../../rules/endpoints.ts';
import { PORTAL_CHAINS, PORTAL_JUMPS, portalCleanupText, renderPortals, type PortalPort } from '../../rules/portals.ts';
import type { ProxySettings, RenderWarning } from '../../rules/types.ts';
import { IptablesMetrics } from '../iptables-metrics.ts';
import type { DataPlane, SyncOutcome, SyncRequest } from '../dataplane.ts';
import { DIAL_TIMEOUTS_MS, ServicePortBalancer } from './balancer.ts';
import type { PortSpec } from './forwarder/protocol.ts';
import { ForwardedPort, ForwarderPool } from './forwarders.ts';
import { UserspaceMetrics } from './metrics.ts';
import { TcpPortProxy } from './tcp.ts';
import { UdpPortProxy } from './udp.ts';

export interface UserspaceOptions {
  /** How the portal rules are written: the real tools in a namespace (kernelIptables), or a fake. */
  iptables: Iptables;
  settings: ProxySettings;
  log: Logger;
  registry: Registry;
  /** Address the listeners bind (default 0.0.0.0: container traffic is REDIRECTed). */
  bindAddress?: string;
  /** UDP flow idle timeout (kube-proxy's udpIdleTimeout; default 250 ms). */
  udpIdleMs?: number;
  /** UDP flows per service port (default 4096; each is a socket). */
  maxUdpFlows?: number;
  /** TCP connections idle in both directions this long are closed (default 1 h). */
  tcpIdleMs?: number;
  dialTimeoutsMs?: readonly number[];
  /**
   * Forwarder processes that carry the traffic (forwarders.ts; several share the TCP ports
   * without ClientIP affinity). 0 (the default here): the listeners run in this process, on Node.
   */
  workers?: number;
  /** The forwarder executable (default: found beside the build, forwarders.ts). */
  forwarderPath?: string;
}

/** A service port's listener, wherever it runs: this process (on Node) or the forwarders. */
interface PortListener {
  readonly port: number;
  /** New endpoints ("ip:port") and affinity for new connections; established ones run on. */
  update(endpoints: readonly string[], stickySeconds: number): void;
  /** Stops accepting (TCP connections run on). */
  close(): void;
  /** Closes everything, connections too. */
  destroy(): void;
}

/** A listener in this process with its own balancer. */
class LocalPort implements PortListener {
  constructor(readonly balancer: ServicePortBalancer, readonly listener: TcpPortProxy | UdpPortProxy) {}
  get port(): number { return this.listener.port; }
  update(endpoints: readonly string[], stickySeconds: number): void {
    this.balancer.setStickySeconds(stickySeconds);
    this.balancer.update(endpoints);
    this.balancer.sweep(Date.now());
  }
  close(): void { this.listener.close(); }
  destroy(): void {
    if (this.listener instanceof TcpPortProxy) this.listener.destroy(); else this.listener.close();
  }
}

/**
 * Which traffic a listener serves. A connection carries no sign of how it reached the listener,
 * so when the traffic policies choose different endpoints for traffic from inside (cluster IP)
 * and from outside (node port, external IP, load balancer), outside traffic gets a listener of
 * its own and its portals point there.
 */
type Traffic = 'internal' | 'external';

interface PortState {
  info: ServicePortInfo;
  traffic: Traffic;
  listener: PortListener;
  /** Served by several forwarders at once (decided at open: TCP without affinity). */
  shared: boolean;
}

interface WantedListener {
  info: ServicePortInfo;
  traffic: Traffic;
  /** "ip:port" of the endpoints the endpoint policy gives this traffic. */
  endpoints: string[];
}

const keyOf = (p: ServicePortInfo, traffic: Traffic) => `${p.portName}/${p.protocol}${traffic === 'external' ? ' external' : ''}`;
/** The metrics label: the service port name, marked for an outside-traffic listener. */
const labelOf = (p: ServicePortInfo, traffic: Traffic) => (traffic === 'external' ? `${p.portName} (external)` : p.portName);

/** Traffic from outside needs its own listener when its policy differs from the internal one. */
export function needsExternalListener(p: ServicePortInfo): boolean {
  return externallyAccessible(p) && p.internalPolicyLocal !== p.externalPolicyLocal;
}

/** The listeners a service port needs, each with the endpoints its traffic may use. */
export function listenersFor(p: ServicePortInfo): WantedListener[] {
  const chosen = selectEndpoints(p);
  const addrs = (eps: readonly { addr: string }[]) => eps.map((e) => e.addr);
  const out: WantedListener[] = [{ info: p, traffic: 'internal', endpoints: addrs(chosen.internal) }];
  if (needsExternalListener(p)) out.push({ info: p, traffic: 'external', endpoints: addrs(chosen.external) });
  return out;
}

export class UserspaceDataPlane implements DataPlane {
  readonly metrics: UserspaceMetrics;
  /** The portal rules' counts and restore failures, under kube-proxy's iptables metric names. */
  readonly ruleMetrics: IptablesMetrics;
  private readonly ipt: Iptables;
  private readonly ports = new Map<string, PortState>();
  private settings: ProxySettings;
  private rulesWritten = false;
  readonly forwarders: ForwarderPool | null;

  constructor(readonly o: UserspaceOptions) {
    // The listeners and the portal renderer are IPv4-only for now.
    if (o.settings.family !== 'IPv4') throw new Error('userspace proxy mode supports IPv4 only');
    this.settings = o.settings;
    this.metrics = new UserspaceMetrics(o.registry);
    this.ruleMetrics = new IptablesMetrics(o.registry);
    this.ipt = o.iptables;
    const pool = o.workers ? new ForwarderPool({ count: o.workers, log: o.log, ...(o.forwarderPath ? { executable: o.forwarderPath } : {}) }) : null;
    this.forwarders = pool;
    if (pool) this.metrics.gather = () => pool.poll();
  }

  setSettings(s: ProxySettings): void {
    this.settings = s;
  }

  async intact(): Promise<boolean> {
    if (!this.rulesWritten) return false;
    if (await this.ipt.list('nat', 'KUBE-PORTALS-CONTAINER')) return true;
    this.o.log.warn('portal chains are gone (tables were flushed by someone else): full resync');
    this.rulesWritten = false;
    return false;
  }

  private async open(key: string, w: WantedListener): Promise<PortState> {
    const { info: p, traffic } = w;
    const stickySeconds = p.clientIPAffinity ? p.stickySeconds : 0;
    const name = labelOf(p, traffic);
    const bindHost = this.o.bindAddress ?? '0.0.0.0';
    const tcp = { idleMs: this.o.tcpIdleMs ?? 3_600_000, keepAliveMs: 60_000, dialTimeoutsMs: this.o.dialTimeoutsMs ?? DIAL_TIMEOUTS_MS };
    const udp = { udpIdleMs: this.o.udpIdleMs ?? 250, maxFlows: this.o.maxUdpFlows ?? 4096, bufferBytes: 4 << 20 };
    const shared = p.protocol === 'tcp' && stickySeconds === 0;
    let listener: PortListener;
    if (this.forwarders) {
      const spec: PortSpec = { protocol: p.protocol as 'tcp' | 'udp', name, bindHost, port: 0, shared, stickySeconds, endpoints: w.endpoints, ...tcp, ...udp };
      const port = new ForwardedPort(this.forwarders, key, spec, { name, metrics: this.metrics, log: this.o.log, bindHost });
      await port.listen();
      listener = port;
    } else {
      const balancer = new ServicePortBalancer({ stickySeconds });
      balancer.update(w.endpoints);
      const common = { name, balancer, metrics: this.metrics, log: this.o.log, bindHost };
      const local = p.protocol === 'tcp'
        ? new TcpPortProxy({ ...common, ...tcp })
        : new UdpPortProxy({ ...common, idleMs: udp.udpIdleMs, maxFlows: udp.maxFlows, bufferBytes: udp.bufferBytes });
      await local.listen();
      listener = new LocalPort(balancer, local);
    }
    this.o.log.info({ service: p.portName, protocol: p.protocol, traffic, port: listener.port }, 'opened proxy port');
    return { info: p, traffic, listener, shared };
  }

  private drop(k: string, st: PortState): void {
    st.listener.close();
    this.ports.delete(k);
    this.metrics.remove(labelOf(st.info, st.traffic));
    this.o.log.info({ service: st.info.portName, protocol: st.info.protocol, traffic: st.traffic }, 'closed proxy port');
  }

  async sync(req: SyncRequest): Promise<SyncOutcome> {
    const model = buildServiceModel(req.cluster, this.settings);
    const warnings: RenderWarning[] = [...model.warnings];
    const wanted = new Map<string, WantedListener>();
    for (const p of model.ports) {
      if (p.protocol === 'sctp') { warnings.push({ object: `Service ${p.service}`, field: 'spec.ports', message: `${p.portName}: SCTP is not supported in userspace mode` }); continue; }
      for (const w of listenersFor(p)) wanted.set(keyOf(p, w.traffic), w);
    }
    const stale: Array<[string, PortState]> = [];
    for (const [k, w] of wanted) {
      let st = this.ports.get(k);
      const stickySeconds = w.info.clientIPAffinity ? w.info.stickySeconds : 0;
      // Forwarders share only ports without affinity (its table must be one): a port that
      // gains or loses affinity gets a new listener (and its rules follow below).
      if (st && this.forwarders && st.shared !== (w.info.protocol === 'tcp' && stickySeconds === 0)) {
        stale.push([k, st]);
        st = undefined;
      }
      if (!st) this.ports.set(k, (st = await this.open(k, w)));
      st.info = w.info;
      // Only new connections see endpoint changes; established ones run on.
      st.listener.update(w.endpoints, stickySeconds);
    }
    const portals: PortalPort[] = [];
    for (const [k, w] of wanted) {
      if (w.traffic !== 'internal') continue;
      const p = w.info;
      const external = wanted.has(keyOf(p, 'external')) ? this.ports.get(keyOf(p, 'external')) : undefined;
      portals.push({
        portName: p.portName, protocol: p.protocol as 'tcp' | 'udp', clusterIP: p.clusterIP, port: p.port, nodePort: p.nodePort,
        externalIPs: p.externalIPs, loadBalancerIPs: p.loadBalancerVIPs, proxyPort: this.ports.get(k)!.listener.port,
        ...(external ? { externalProxyPort: external.listener.port } : {}),
      });
    }
    const hostIP = this.settings.nodeIPs.find((ip) => !ip.includes(':')) ?? null;
    const r = renderPortals(portals, { hostIP, ...(this.o.bindAddress ? { listenIP: this.o.bindAddress } : {}) });
    warnings.push(...r.warnings);
    const full = req.full || !this.rulesWritten;
    this.rulesWritten = false;
    try {
      await this.ipt.restore(r.text, { noflush: true });
      if (full) {
        const inserted = await ensureJumps(this.ipt, PORTAL_JUMPS);
        if (inserted) this.o.log.info({ inserted }, 'inserted portal jump rules');
      }
    } catch (err) {
      this.ruleMetrics.failed(full);
      throw err;
    }
    this.rulesWritten = true;
    this.ruleMetrics.synced(r.rulesWritten, r.rulesWritten);
    for (const [, st] of stale) {
      st.listener.close();
      this.o.log.info({ service: st.info.portName, protocol: st.info.protocol, traffic: st.traffic }, 'replaced proxy port');
    }
    for (const [k, st] of this.ports) if (!wanted.has(k)) this.drop(k, st);
    return {
      full,
      written: r.rulesWritten,
      warnings,
      noLocalEndpoints: { internal: 0, external: 0 },
    };
  }

  /** Closes every listener and connection; rules stay (like the iptables mode on stop). */
  close(): void {
    for (const st of this.ports.values()) st.listener.destroy();
    this.forwarders?.close();
    this.ports.clear();
  }
}

/** Removes the portal jumps and chains (`knet proxy --cleanup` for this mode). Safe to run twice. */
export async function cleanupPortals(ipt: Iptables): Promise<number> {
  let removed = 0;
  for (const table of ['nat', 'filter'] as const) {
    const saved = await ipt.save(table);
    const lines = saved.split('\n');
    const dels = lines.filter((l) => PORTAL_JUMPS.some((j) => j.table === table && isJumpLine(l, j))).map((l) => `-D ${l.slice(3)}`);
    const present = PORTAL_CHAINS[table].filter((c) => lines.includes(`:${c} - [0:0]`) || lines.some((l) => l.startsWith(`:${c} `)));
    const text = (dels.length ? `*${table}\n${dels.join('\n')}\nCOMMIT\n` : '') + portalCleanupText({ nat: table === 'nat' ? present : [], filter: table === 'filter' ? present : [] });
    if (text) await ipt.restore(text, { noflush: true });
    removed += dels.length + present.length;
  }
  return removed;
}
