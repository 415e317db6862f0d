// The seam between the proxy daemon (sources, change tracking, sync runner, health, metrics)
// and a data path. The iptables applier implements it today; a userspace proxy can implement
// the same interface and reuse everything else.
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
  full: boolean;
  rulesWritten: { filter: number; nat: number };
  rulesTotal: { filter: number; nat: number };
  warnings: RenderWarning[];
  noLocalEndpoints: { internal: number; external: number };
}

export interface DataPlane {
  sync(req: SyncRequest): Promise<SyncOutcome>;
  /** Cheap check, on idle periodic syncs, that nobody flushed our state (e.g. a firewall reload). */
  intact(): Promise<boolean>;
  /** Releases what keeps the process alive (listeners, sockets); rules stay in place. */
  close?(): void;
}
