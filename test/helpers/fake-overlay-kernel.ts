// In-memory kernels for the overlay backends: what the VXLAN backend would hold in routes,
// neighbours, FDB and device addresses, and what the ovs-gre backend would hold in its switch,
// with faults a test can switch on (a change the kernel refuses, a device deleted by hand).
import type { VxlanKernel } from '../../src/overlay/vxlan/kernel.ts';
import type { OvsGreKernel, OvsLink, OvsRoute } from '../../src/overlay/ovs-gre/kernel.ts';
import { type OverlayDiff, type OverlayState, emptyState, fdbKey, neighKey, routeKey } from '../../src/overlay/types.ts';
import type { VxlanDevice, VxlanDeviceSpec } from '../../src/kernel/vxlan.ts';
import type { BridgeSpec } from '../../src/kernel/ovs.ts';
import type { ApplyResult } from '../../src/kernel/overlay-state.ts';

const sortState = (s: OverlayState): OverlayState => ({
  routes: [...s.routes].sort((a, b) => routeKey(a).localeCompare(routeKey(b))),
  neighbours: [...s.neighbours].sort((a, b) => neighKey(a).localeCompare(neighKey(b))),
  fdb: [...s.fdb].sort((a, b) => fdbKey(a).localeCompare(fdbKey(b))),
});

export class FakeVxlanKernel implements VxlanKernel {
  readonly devices = new Map<string, { spec: VxlanDeviceSpec; mac: string; addresses: string[] }>();
  state: OverlayState = emptyState();
  /** Route destinations the kernel refuses to add (an apply error for each). */
  readonly refuseRoutes = new Set<string>();
  readonly applied: OverlayDiff[] = [];
  private macs = 0;

  async ensureDevice(spec: VxlanDeviceSpec): Promise<VxlanDevice> {
    const have = this.devices.get(spec.name);
    if (have && have.spec.vni === spec.vni && have.spec.localIP === spec.localIP) return { name: spec.name, mac: have.mac, created: false };
    const mac = spec.mac ?? `0a:fa:ce:00:00:${(++this.macs).toString(16).padStart(2, '0')}`;
    this.devices.set(spec.name, { spec, mac, addresses: [] });
    // A new device starts without neighbours or FDB entries (the kernel drops them with the old one).
    this.state.neighbours = this.state.neighbours.filter((n) => n.dev !== spec.name);
    this.state.fdb = this.state.fdb.filter((f) => f.dev !== spec.name);
    return { name: spec.name, mac, created: true };
  }

  async setDeviceAddress(device: string, address: string, inNetwork: (ip: string) => boolean): Promise<void> {
    const dev = this.devices.get(device);
    if (!dev) throw new Error(`Cannot find device "${device}"`);
    dev.addresses = [...dev.addresses.filter((a) => !inNetwork(a.split('/')[0]!)), `${address}/32`];
  }

  async readState(device: string): Promise<OverlayState> {
    return sortState({
      routes: this.state.routes.map((r) => ({ ...r })),
      neighbours: this.state.neighbours.filter((n) => n.dev === device).map((n) => ({ ...n })),
      fdb: this.state.fdb.filter((f) => f.dev === device).map((f) => ({ ...f })),
    });
  }

  async apply(diff: OverlayDiff): Promise<ApplyResult> {
    this.applied.push(structuredClone(diff));
    const errors: string[] = [];
    const drop = <T>(list: T[], gone: T[], key: (x: T) => string) => list.filter((x) => !gone.some((g) => key(g) === key(x)));
    const upsert = <T>(list: T[], add: T[], key: (x: T) => string) => [...drop(list, add, key), ...add];
    this.state.routes = drop(this.state.routes, diff.remove.routes, routeKey);
    this.state.neighbours = upsert(drop(this.state.neighbours, diff.remove.neighbours, neighKey), diff.add.neighbours, neighKey);
    this.state.fdb = upsert(drop(this.state.fdb, diff.remove.fdb, fdbKey), diff.add.fdb, fdbKey);
    const refused = diff.add.routes.filter((r) => this.refuseRoutes.has(r.dst));
    for (const r of refused) errors.push(`RTNETLINK answers: Network is unreachable (route ${r.dst})`);
    this.state.routes = upsert(this.state.routes, diff.add.routes.filter((r) => !this.refuseRoutes.has(r.dst)), routeKey);
    return { errors };
  }
}

/** The switch and pod side of one ovs-gre node, in memory. */
export class FakeOvsGreKernel implements OvsGreKernel {
  readonly flows = new Map<string, string[]>();
  readonly ofports = new Map<string, number>();
  readonly links = new Map<string, OvsLink>();
  readonly routes: OvsRoute[] = [];
  readonly batches: string[][] = [];
  replaceCount = 0;

  async ensureBridge(spec: BridgeSpec): Promise<void> {
    if (!this.flows.has(spec.bridge)) this.flows.set(spec.bridge, []);
    this.ofports.set(spec.tunnel.name, spec.tunnel.ofport);
    this.ofports.set(spec.internal.name, spec.internal.ofport);
    if (!this.links.has(spec.internal.name)) this.links.set(spec.internal.name, { ifname: spec.internal.name, mtu: 1500, flags: [] });
  }

  async readOfports(names: readonly string[]): Promise<Map<string, number>> {
    return new Map(names.filter((n) => this.ofports.has(n)).map((n) => [n, this.ofports.get(n)!]));
  }

  async dumpFlows(bridge: string): Promise<string[]> {
    return [...(this.flows.get(bridge) ?? [])];
  }

  async replaceFlows(bridge: string, flows: readonly string[]): Promise<void> {
    this.replaceCount++;
    this.flows.set(bridge, [...flows]);
  }

  async listLinks(): Promise<OvsLink[]> {
    return [...this.links.values()].map((l) => structuredClone(l));
  }

  async routesExact(dst: string): Promise<OvsRoute[]> {
    return this.routes.filter((r) => r.dst === dst).map((r) => ({ ...r }));
  }

  /** Applies the few iproute2 commands the backend writes. */
  async ipBatch(lines: readonly string[]): Promise<void> {
    this.batches.push([...lines]);
    for (const line of lines) {
      let m: RegExpExecArray | null;
      if ((m = /^link add (\S+) mtu (\d+) type bridge$/.exec(line))) {
        this.links.set(m[1]!, { ifname: m[1]!, mtu: Number(m[2]), flags: [] });
      } else if ((m = /^link set (\S+) up$/.exec(line))) {
        const l = this.links.get(m[1]!)!;
        l.flags = [...new Set([...(l.flags ?? []), 'UP'])];
      } else if ((m = /^addr (add|del) (\S+)\/(\d+) dev (\S+)$/.exec(line))) {
        const l = this.links.get(m[4]!)!;
        const rest = (l.addr_info ?? []).filter((a) => a.local !== m![2]);
        l.addr_info = m[1] === 'add' ? [...rest, { family: 'inet', local: m[2]!, prefixlen: Number(m[3]) }] : rest;
      } else if ((m = /^link set (\S+) mtu (\d+)(?: txqueuelen (\d+))? master (\S+) up$/.exec(line))) {
        const l = this.links.get(m[1]!)!;
        Object.assign(l, { mtu: Number(m[2]), master: m[4], flags: ['UP'], ...(m[3] ? { txqlen: Number(m[3]) } : {}) });
      } else if ((m = /^route replace (\S+) dev (\S+) src (\S+) proto (\d+)$/.exec(line))) {
        const i = this.routes.findIndex((r) => r.dst === m![1]);
        if (i >= 0) this.routes.splice(i, 1);
        this.routes.push({ dst: m[1]!, dev: m[2]!, prefsrc: m[3]!, protocol: m[4]! });
      } else {
        throw new Error(`fake ovs kernel: unexpected batch line ${JSON.stringify(line)}`);
      }
    }
  }
}
