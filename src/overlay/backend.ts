// The contract every overlay backend meets, so the agent does not care which one runs. VXLAN is
// the first; an Open vSwitch GRE backend fits beside it: it would publish its own BackendData,
// build its tunnel port in `prepare`, and turn peer leases into OpenFlow rules in `reconcile`.
import type { Lease } from '../subnet/lease.ts';

export interface PreparedBackend {
  /** Lease BackendType, e.g. "vxlan". */
  backendType: string;
  /** Lease BackendData to publish for this node. */
  backendData: unknown;
  /** Pod network MTU (written to subnet.env). */
  mtu: number;
}

export interface ReconcileReport {
  peers: number;
  changes: number;
  /** Leases that were ignored, with why (bad BackendData, wrong VNI, outside Network...). */
  skipped: { key: string; reason: string }[];
  errors: string[];
}

export interface OverlayBackend {
  readonly type: string;
  /**
   * Creates or adopts the tunnel device before a lease exists. `previousBackendData` is what
   * this node published last time (to keep e.g. the VTEP MAC stable across restarts).
   */
  prepare(previousBackendData: unknown): Promise<PreparedBackend>;
  /** Brings the kernel in line with this node's lease and its peers' leases. Level-triggered. */
  reconcile(own: Lease, peers: readonly Lease[]): Promise<ReconcileReport>;
}
