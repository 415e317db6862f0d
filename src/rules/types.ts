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
  /**
   * Present for a partial sync: the services that changed ("ns/name") and the previous sync's
   * state. Without `previous`, a stateful renderer (IptablesRenderer) deletes the chains it
   * rendered last time for re-modelled services that no longer exist.
   */
  partial?: { previous?: SyncState; changedServices: ReadonlySet<string> };
  /**
   * For a stateful renderer: the only services ("ns/name") whose objects may have changed since
   * its last render; every other service is reused without being looked at. Absent: all are
   * looked at (unchanged objects, compared by reference, are still reused).
   */
  recompute?: ReadonlySet<string>;
  /**
   * For a full sync: what the kernel holds now, so stale service chains are flushed and deleted
   * (kube-proxy reads this with iptables-save). Absent: nothing is deleted.
   */
  existing?: SyncState;
}

/**
 * A rule in a built-in chain that jumps to one of knet's chains, identified by its chain, target
 * and comment: src/kernel/jumps.ts ensures it exists exactly once.
 */
export interface JumpRule {
  table: 'filter' | 'nat';
  from: string;
  to: string;
  comment: string;
  /** Matches before the comment, e.g. ['-s', '10.244.1.0/24'] or ['-m', 'conntrack', '--ctstate', 'NEW']. */
  extra: string[];
  /** Inserted first in the chain (kube-proxy's jumps; the default) or appended. */
  position?: 'prepend' | 'append';
}

export interface RenderWarning {
  object: string;
  field: string;
  message: string;
}

/**
 * Rules per chain of one table as written by a render, and the chains it deletes. A renderer's
 * tables list chains in dependency order: every chain after the chains it jumps to.
 */
export interface RenderedTable {
  chains: Map<string, string[]>;
  deletes: Set<string>;
}

export type RenderedTables = Map<string, RenderedTable>;

export interface RenderResult {
  /** iptables-restore input: *filter ... COMMIT *nat ... COMMIT (built when first read). */
  readonly text: string;
  /** Gives `write` the text as UTF-8, in chunks of about chunkChars characters, without building it whole. */
  writeText(write: (bytes: Uint8Array) => void, chunkChars?: number): void;
  /** The same content per table and chain, for appliers (built when first read). */
  readonly tables: RenderedTables;
  state: SyncState;
  /** Number of -A rules written per table in this text. */
  rulesWritten: { filter: number; nat: number };
  /** Rules owned in the kernel after applying (for the iptables_total metric). */
  rulesTotal: { filter: number; nat: number };
  warnings: RenderWarning[];
  /** Service ports that have no endpoints at all / no local endpoints (kube-proxy metrics). */
  noLocalEndpoints: { internal: number; external: number };
}
