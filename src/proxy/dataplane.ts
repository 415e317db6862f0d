// The seam between the proxy daemon (sources, change tracking, sync runner, health, mode-neutral
// metrics) and a data path: the iptables applier, the userspace balancer, or any other mode.
// Nothing here names a kernel interface: each data path counts and reports in its own units
// and registers its own metrics.
import type { ClusterState } from '../model/k8s.ts';
import type { RenderWarning } from '../rules/types.ts';

export interface SyncRequest {
  cluster: ClusterState;
  /** "ns/name" of services whose objects changed since the last successful sync. */
  changed: ReadonlySet<string>;
  /** Re-render and reconcile everything (start, after a failure, periodically). */
  full: boolean;
}

export interface SyncOutcome {
  /** Whether this sync reconciled everything (a data path may upgrade a partial request). */
  full: boolean;
  warnings: RenderWarning[];
  /** Service ports with a Local policy and no local endpoint (kube-proxy's metric). */
  noLocalEndpoints: { internal: number; external: number };
  /** What this sync wrote, in the data path's own units (e.g. iptables rules per table), for the log. */
  written: Readonly<Record<string, number>>;
}

export interface DataPlane {
  /**
   * Applies the request. A rejection means the kernel may hold anything between the old and the
   * new state: the daemon puts the changes back and asks for a full sync, which must converge
   * from whatever the kernel really holds.
   */
  sync(req: SyncRequest): Promise<SyncOutcome>;
  /**
   * Cheap check, on idle periodic syncs, whether the kernel still holds what the last sync left
   * (nobody flushed it, e.g. a firewall reload, and nothing waits for a retry); false: full sync.
   */
  intact(): Promise<boolean>;
  /** Releases what keeps the process alive (listeners, sockets); rules stay in place. */
  close?(): void;
}
