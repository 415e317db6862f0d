// Inputs and outputs of the iptables renderer (src/rules/iptables.ts). Pure data: the renderer
// does no I/O, so `knet rules` and `knet proxy` produce the very same text.
import type { ClusterState } from '../model/k8s.ts';

export type IpFamily = 'IPv4' | 'IPv6';

export type LocalDetector =
  | { mode: 'ClusterCIDR'; cidrs: string[] }
  | { mode: 'NodeCIDR'; cidrs: string[] }
  | { mode: 'BridgeInterface'; interface: string }
  | { mode: 'InterfaceNamePrefix'; prefix: string }
  | { mode: 'None' };

/** Everything besides the objects that changes iptables output. */
export interface ProxySettings {
  nodeName: string;
  family: IpFamily;
  nodeIPs: string[];
  /** Node addresses (iface, CIDR) that nodePortAddresses are matched against. */
  interfaceAddresses: Array<{ iface: string; cidr: string }>;
  localDetector: LocalDetector;
  /** CIDRs or 'primary'; empty: all local addresses. */
  nodePortAddresses: string[];
  masqueradeAll: boolean;
  masqueradeBit: number;
  localhostNodePorts: boolean;
  randomFully: boolean;
  nfacctCounters: boolean;
  largeClusterEndpointsThreshold: number;
}

/** What the kernel holds after a sync: needed to render the next partial sync. */
export interface SyncState {
  /** Service chains (KUBE-SVC/SVL/EXT/FW/SEP-*) present in the nat table. */
  natChains: string[];
}

export interface RenderRequest {
  cluster: ClusterState;
  settings: ProxySettings;
  /** Present for a partial sync: the previous sync's state and the services that changed ("ns/name"). */
  partial?: { previous: SyncState; changedServices: ReadonlySet<string> };
  /**
   * For a full sync: what the kernel holds now, so stale service chains are flushed and deleted
   * (kube-proxy reads this with iptables-save). Absent: nothing is deleted.
   */
  existing?: SyncState;
}

export interface RenderWarning {
  object: string;
  field: string;
  message: string;
}

export interface RenderResult {
  /** iptables-restore input: *filter ... COMMIT *nat ... COMMIT */
  text: string;
  state: SyncState;
  /** Number of -A rules written per table in this text. */
  rulesWritten: { filter: number; nat: number };
  /** Rules owned in the kernel after applying (for the iptables_total metric). */
  rulesTotal: { filter: number; nat: number };
  warnings: RenderWarning[];
  /** Service ports that have no endpoints at all / no local endpoints (kube-proxy metrics). */
  noLocalEndpoints: { internal: number; external: number };
}
