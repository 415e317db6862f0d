// The one seam between the agent and where leases live, the way flannel separates its subnet
// manager from its backends: etcd (flannel's keys, src/agent/etcd-source.ts) or the Kubernetes
// API (Node podCIDRs and flannel's annotations, src/agent/kube-source.ts). The lease keeper,
// the lease watcher, the backends, subnet.env and the reconcile loop are shared.
import type { Cidr } from '../subnet/cidr.ts';
import type { NetworkConfig, SubnetRange } from '../subnet/config.ts';
import type { Lease, LeaseAttrs } from '../subnet/lease.ts';

export interface InvalidLease {
  key: string;
  error: string;
}

/** What a source reports about the leases it holds, in order. */
export type LeaseStreamEvent =
  /** Every lease, after the first list and after every reconnect (replaces what came before). */
  | { type: 'synced'; leases: Lease[]; invalid: InvalidLease[] }
  | { type: 'put'; lease: Lease }
  /** A key that is not a usable lease (any more); it is dropped until it becomes one. */
  | { type: 'invalid'; key: string; error: string }
  | { type: 'delete'; key: string }
  /** The connection to the store is lost; a 'synced' follows once it is back. */
  | { type: 'down'; reason: string };

export interface AcquireRequest {
  range: SubnetRange;
  attrs: LeaseAttrs;
  /** The subnet recorded in subnet.env by the previous run. */
  previous: Cidr | null;
}

export interface Acquired {
  lease: Lease;
  /** How the subnet was found ("reused", "subnet-file", "random", "podCIDR"). */
  how: string;
  /** Things done on the way, for the log (stale leases of this node deleted, ...). */
  notes: string[];
}

/** The lease cannot be had yet for a reason only time or an operator fixes (no podCIDR yet). */
export class LeaseNotYetError extends Error {}

export interface LeaseSource {
  /** Names the store in logs and readiness reasons ("etcd", "the Kubernetes API"). */
  readonly storeName: string;
  networkConfig(): Promise<NetworkConfig>;
  /** BackendData this node published before (to keep its VTEP MAC), undefined when none. */
  previousBackendData(publicIP: string): Promise<unknown>;
  acquire(req: AcquireRequest): Promise<Acquired>;
  /**
   * Puts this node's lease (back) in place: before it expires, after it was deleted or
   * changed. Returns the lease as now held; throws when it cannot (store away, taken).
   */
  renew(own: Lease, attrs: LeaseAttrs): Promise<Lease>;
  /**
   * Reports every lease until `signal` aborts: 'synced' first and after every reconnect,
   * changes in between, 'down' when the store is lost. Reconnects by itself; resolves on abort.
   */
  stream(emit: (e: LeaseStreamEvent) => void, signal: AbortSignal): Promise<void>;
  close(): void;
}
