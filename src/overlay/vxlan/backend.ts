// The VXLAN backend: a flannel-compatible `flannel.<VNI>` device plus, per peer, an onlink
// route, a permanent neighbour and an FDB entry, reconciled as a whole on every call.
import { type Cidr, containsIP, formatIP, parseIPv4 } from '../../subnet/cidr.ts';
import { type Lease, parseVxlanBackendData } from '../../subnet/lease.ts';
import type { Underlay } from '../../kernel/vxlan.ts';
import { type VxlanKernel, iprouteVxlanKernel } from './kernel.ts';
import type { OverlayBackend, PreparedBackend, ReconcileReport } from '../backend.ts';
import { diffOverlay, diffSize } from '../types.ts';
import { type VxlanConfig, VXLAN_OVERHEAD, assertDeviceName } from './config.ts';
import { desiredVxlanState } from './desired.ts';

export interface VxlanBackendOptions {
  /** Named namespace to work in; null: the agent's own namespace. */
  netns: string | null;
  config: VxlanConfig;
  device: string;
  underlay: Underlay;
  network: Cidr;
  /** Kernel calls; default iproute2 in `netns`. */
  kernel?: VxlanKernel;
}

export class VxlanBackend implements OverlayBackend {
  readonly type = 'vxlan';
  private mac: string | null = null;
  private readonly kernel: VxlanKernel;

  constructor(private readonly o: VxlanBackendOptions) {
    assertDeviceName(o.device);
    this.kernel = o.kernel ?? iprouteVxlanKernel(o.netns);
  }

  get mtu(): number {
    return (this.o.config.mtu ?? this.o.underlay.mtu) - VXLAN_OVERHEAD;
  }

  private underlaySubnet(): Cidr {
    const ip = parseIPv4(this.o.underlay.publicIP);
    const len = this.o.underlay.prefixLen;
    const mask = len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(32 - len);
    return { family: 4, base: ip & mask, len };
  }

  private async ensureDevice(): Promise<string> {
    const dev = await this.kernel.ensureDevice({
      name: this.o.device,
      vni: this.o.config.vni,
      port: this.o.config.port,
      localIP: this.o.underlay.publicIP,
      underlayIface: this.o.underlay.iface,
      mtu: this.mtu,
      learning: this.o.config.learning,
      gbp: this.o.config.gbp,
      mac: this.mac,
    });
    this.mac = dev.mac;
    return dev.mac;
  }

  async prepare(previousBackendData: unknown): Promise<PreparedBackend> {
    // An existing compatible device keeps its MAC; if it is gone (reboot), reuse the MAC this
    // node published before, so peers' FDB and neighbour entries stay right.
    if (previousBackendData !== undefined && previousBackendData !== null) {
      try { this.mac = parseVxlanBackendData(previousBackendData).VtepMAC; } catch { /* publish a fresh one */ }
    }
    const mac = await this.ensureDevice();
    return { backendType: 'vxlan', backendData: { VNI: this.o.config.vni, VtepMAC: mac }, mtu: this.mtu };
  }

  async reconcile(own: Lease, peers: readonly Lease[]): Promise<ReconcileReport> {
    await this.ensureDevice();
    const network = this.o.network;
    await this.kernel.setDeviceAddress(this.o.device, formatIP(4, own.subnet.base), (ip) => containsIP(network, parseIPv4(ip)));
    const desired = desiredVxlanState({
      device: this.o.device,
      vni: this.o.config.vni,
      network,
      own,
      peers,
      directRouting: this.o.config.directRouting,
      underlay: { iface: this.o.underlay.iface, subnet: this.underlaySubnet() },
    });
    const observed = await this.kernel.readState(this.o.device);
    const diff = diffOverlay(desired.state, observed);
    const { errors } = diffSize(diff) > 0 ? await this.kernel.apply(diff) : { errors: [] };
    return { peers: desired.programmed, changes: diffSize(diff), skipped: desired.skipped, errors };
  }
}
