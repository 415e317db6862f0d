// The switch and kernel calls the ovs-gre backend makes, as a seam: the bridge and its ports,
// the flow table, and the pod-side links, addresses and route. `systemOvsGreKernel` does them
// with ovs-vsctl/ovs-ofctl and iproute2; tests give the backend an in-memory one instead.
import { ipBatch, ipJson } from '../../kernel/iproute.ts';
import { type BridgeSpec, type OvsTarget, dumpFlows, ensureBridge, readOfports, replaceFlows } from '../../kernel/ovs.ts';

/** The fields of `ip -j addr show` the backend reads. */
export interface OvsLink {
  ifname: string;
  mtu: number;
  txqlen?: number;
  master?: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** The fields of `ip -j route show exact NET` the backend reads. */
export interface OvsRoute { dst: string; dev?: string; prefsrc?: string; protocol?: string }

export interface OvsGreKernel {
  ensureBridge(spec: BridgeSpec): Promise<void>;
  /** OpenFlow port number per interface (-1 when OVS could not open it). */
  readOfports(names: readonly string[]): Promise<Map<string, number>>;
  dumpFlows(bridge: string): Promise<string[]>;
  /** Makes the flow table exactly `flows`, atomically. */
  replaceFlows(bridge: string, flows: readonly string[]): Promise<void>;
  listLinks(): Promise<OvsLink[]>;
  routesExact(dst: string): Promise<OvsRoute[]>;
  /** iproute2 batch lines, stopping at the first failure. */
  ipBatch(lines: readonly string[]): Promise<void>;
}

export function systemOvsGreKernel(ovs: OvsTarget): OvsGreKernel {
  return {
    ensureBridge: (spec) => ensureBridge(ovs, spec),
    readOfports: (names) => readOfports(ovs, names),
    dumpFlows: (bridge) => dumpFlows(ovs, bridge),
    replaceFlows: (bridge, flows) => replaceFlows(ovs, bridge, flows),
    listLinks: () => ipJson<OvsLink>(ovs.netns, ['addr', 'show']),
    routesExact: (dst) => ipJson<OvsRoute>(ovs.netns, ['route', 'show', 'exact', dst]),
    ipBatch: (lines) => ipBatch(ovs.netns, lines),
  };
}
