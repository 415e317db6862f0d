// kube-proxy's iptables-mode metrics (pkg/proxy/metrics names), kept by the data paths that
// write iptables rules (the iptables applier and the userspace portals) on the daemon's
// registry: the daemon itself knows no data path's units.
import { Counter, Gauge, Registry } from 'prom-client';

export class IptablesMetrics {
  readonly restoreFailures: Counter;
  readonly partialRestoreFailures: Counter;
  readonly rulesTotal: Gauge<'table'>;
  readonly rulesLast: Gauge<'table'>;

  constructor(registry: Registry = new Registry()) {
    const r = [registry];
    const p = 'kubeproxy_sync_proxy_rules_iptables_';
    this.restoreFailures = new Counter({ name: `${p}restore_failures_total`, help: 'Cumulative proxy iptables restore failures', registers: r });
    this.partialRestoreFailures = new Counter({ name: `${p}partial_restore_failures_total`, help: 'Cumulative proxy iptables partial restore failures', registers: r });
    this.rulesTotal = new Gauge({ name: `${p}total`, help: 'Total number of iptables rules owned by kube-proxy', labelNames: ['table'], registers: r });
    this.rulesLast = new Gauge({ name: `${p}last`, help: 'Number of iptables rules written by kube-proxy in last sync', labelNames: ['table'], registers: r });
  }

  /** After a successful sync: rules written in it and owned in all, per table. */
  synced(written: Readonly<Record<string, number>>, total: Readonly<Record<string, number>>): void {
    for (const table of ['filter', 'nat']) {
      this.rulesLast.set({ table }, written[table] ?? 0);
      this.rulesTotal.set({ table }, total[table] ?? 0);
    }
  }

  /** A restore failed; `full`: in a full sync. */
  failed(full: boolean): void {
    this.restoreFailures.inc();
    if (!full) this.partialRestoreFailures.inc();
  }
}
