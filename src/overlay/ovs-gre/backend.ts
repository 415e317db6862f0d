// The Open vSwitch GRE backend (the seed's second overlay): bridge obr0 (fail-mode secure,
// OpenFlow 1.3) with a GRE port whose far end and key come from each flow, and an internal port
// wired into the Linux pod bridge; a route for the whole pod network via the pod bridge makes the
// pod network one L2 segment that OpenFlow stitches together per peer subnet. Every reconcile
// re-asserts the bridge, the pod-side wiring and the whole flow table, so a deleted port, route
// or flow comes back on the next lease event or tick.
import { type Cidr, containsIP, formatCidr, formatIP, isIPv4, parseIPv4 } from '../../subnet/cidr.ts';
import type { Lease } from '../../subnet/lease.ts';
import { KNET_RTPROTO } from '../../kernel/overlay-state.ts';
import { OVS_TAP_TXQUEUELEN, type OvsTarget, SYSTEM_OVS } from '../../kernel/ovs.ts';
import { type OvsGreKernel, systemOvsGreKernel } from './kernel.ts';
import type { BackendConfig } from '../../subnet/config.ts';
import type { OverlayBackend, PreparedBackend, ReconcileReport } from '../backend.ts';
import { GRE_OVERHEAD, OVS_GRE_TYPE, type OvsGreConfig, VXLAN_OVERHEAD, parseOvsGreConfig } from './config.ts';
import { desiredFlows, diffFlows } from './flows.ts';

export interface OvsGreBackendOptions {
  /** Where the OVS tools and iproute2 run (ovs.netns) and which daemons they talk to. */
  ovs: OvsTarget;
  config: OvsGreConfig;
  underlay: { publicIP: string; mtu: number };
  /** The whole pod network (the config's Network). */
  network: Cidr;
  /** "vxlan" only for the benchmark's like-for-like comparison; leases still say ovs-gre. */
  tunnelType?: 'gre' | 'vxlan';
  /** Switch and kernel calls; default the OVS daemons and iproute2 of `ovs`. */
  kernel?: OvsGreKernel;
}

export class OvsGreBackend implements OverlayBackend {
  readonly type = OVS_GRE_TYPE;
  private readonly kernel: OvsGreKernel;

  constructor(private readonly o: OvsGreBackendOptions) {
    this.kernel = o.kernel ?? systemOvsGreKernel(o.ovs);
  }

  get mtu(): number {
    const overhead = (this.o.tunnelType ?? 'gre') === 'gre' ? GRE_OVERHEAD : VXLAN_OVERHEAD;
    return (this.o.config.mtu ?? this.o.underlay.mtu) - overhead;
  }

  /** The bridge and both ports exist, at the OpenFlow port numbers the flows name. */
  private async ensureSwitch(): Promise<void> {
    const c = this.o.config;
    await this.kernel.ensureBridge({
      bridge: c.bridge,
      datapathType: c.datapathType,
      tunnel: { name: c.tunnelPort, type: this.o.tunnelType ?? 'gre', ofport: c.tunnelOfport },
      internal: { name: c.internalPort, ofport: c.internalOfport },
    });
    const ports = await this.kernel.readOfports([c.tunnelPort, c.internalPort]);
    for (const [name, want] of [[c.tunnelPort, c.tunnelOfport], [c.internalPort, c.internalOfport]] as const) {
      const got = ports.get(name);
      // -1: OVS could not open the port (e.g. datapath_type=system without the kernel module).
      if (got !== want) throw new Error(`OVS port ${name} has OpenFlow port ${got ?? 'none'}, not ${want} (datapath ${c.datapathType}: is the number taken or the datapath unavailable?)`);
    }
  }

  async prepare(_previousBackendData: unknown): Promise<PreparedBackend> {
    await this.ensureSwitch();
    // The tunnel's far end comes from each peer's PublicIP: nothing else to publish.
    return { backendType: OVS_GRE_TYPE, backendData: null, mtu: this.mtu };
  }

  /**
   * Pod side, level-triggered: the pod bridge exists and is up with this node's gateway (.1)
   * address, the internal port is its member at the pod MTU, and the whole pod network is
   * routed onto the bridge so the kernel ARPs for remote pods, which the ARP flows carry over.
   */
  private async ensurePodSide(own: Lease): Promise<number> {
    const c = this.o.config;
    const gw = formatIP(4, own.subnet.base + 1n);
    const net = formatCidr(this.o.network);
    const links = await this.kernel.listLinks();
    const br = links.find((l) => l.ifname === c.podBridge);
    const port = links.find((l) => l.ifname === c.internalPort);
    if (!port) throw new Error(`internal port ${c.internalPort} has no kernel interface`);
    const lines: string[] = [];
    if (!br) lines.push(`link add ${c.podBridge} mtu ${this.mtu} type bridge`);
    if (!br || !(br.flags ?? []).includes('UP')) lines.push(`link set ${c.podBridge} up`);
    let hasGw = false;
    for (const a of br?.addr_info ?? []) {
      if (a.family !== 'inet') continue;
      if (a.local === gw && a.prefixlen === own.subnet.len) { hasGw = true; continue; }
      // An address from an earlier lease of this node would black-hole its old subnet.
      if (isIPv4(a.local) && containsIP(this.o.network, parseIPv4(a.local))) lines.push(`addr del ${a.local}/${a.prefixlen} dev ${c.podBridge}`);
    }
    if (!hasGw) lines.push(`addr add ${gw}/${own.subnet.len} dev ${c.podBridge}`);
    // Userspace datapath: the internal port is a tap whose queue towards OVS must take GSO bursts.
    const txq = c.datapathType === 'netdev' ? OVS_TAP_TXQUEUELEN : null;
    if (port.master !== c.podBridge || port.mtu !== this.mtu || !(port.flags ?? []).includes('UP') || (txq !== null && port.txqlen !== txq)) {
      lines.push(`link set ${c.internalPort} mtu ${this.mtu}${txq === null ? '' : ` txqueuelen ${txq}`} master ${c.podBridge} up`);
    }
    const routes = await this.kernel.routesExact(net);
    if (!routes.some((r) => r.dev === c.podBridge && r.prefsrc === gw)) {
      lines.push(`route replace ${net} dev ${c.podBridge} src ${gw} proto ${KNET_RTPROTO}`);
    }
    if (lines.length) await this.kernel.ipBatch(lines);
    return lines.length;
  }

  async reconcile(own: Lease, peers: readonly Lease[]): Promise<ReconcileReport> {
    const c = this.o.config;
    await this.ensureSwitch();
    const errors: string[] = [];
    let changes = 0;
    try {
      changes += await this.ensurePodSide(own);
    } catch (err) {
      errors.push(`pod side: ${(err as Error).message}`);
    }
    const want = desiredFlows({ network: this.o.network, own, peers, tunnelOfport: c.tunnelOfport, internalOfport: c.internalOfport });
    try {
      const have = await this.kernel.dumpFlows(c.bridge);
      const diff = diffFlows(want.flows, have);
      const n = diff.add.length + diff.remove.length;
      if (n > 0) await this.kernel.replaceFlows(c.bridge, want.flows);
      changes += n;
    } catch (err) {
      errors.push(`flows: ${(err as Error).message}`);
    }
    return { peers: want.programmed, changes, skipped: want.skipped, errors };
  }
}


/**
 * What the agent calls when the network config says `"Backend": {"Type": "ovs-gre"}`: parses
 * the Backend options and builds the backend for the agent's own namespace and OVS run directory.
 */
export function ovsGreBackendFromConfig(o: {
  backend: BackendConfig;
  network: Cidr;
  underlay: { publicIP: string; mtu: number };
  ovsRunDir?: string;
  ovsDbSocket?: string;
  kernel?: OvsGreKernel;
}): OvsGreBackend {
  const ovs: OvsTarget = { ...SYSTEM_OVS, ...(o.ovsRunDir ? { runDir: o.ovsRunDir } : {}), ...(o.ovsDbSocket ? { dbSocket: o.ovsDbSocket } : {}) };
  return new OvsGreBackend({ ovs, config: parseOvsGreConfig(o.backend), underlay: o.underlay, network: o.network, ...(o.kernel ? { kernel: o.kernel } : {}) });
}
