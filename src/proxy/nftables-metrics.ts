// kube-proxy's nftables-mode metrics (pkg/proxy/metrics names), kept by the nftables data path on
// the daemon's registry beside the mode-neutral ones.
import { Counter, Registry } from 'prom-client';

export class NftablesMetrics {
  readonly syncFailures: Counter;
  readonly cleanupFailures: Counter;

  constructor(registry: Registry = new Registry()) {
    const r = [registry];
    const p = 'kubeproxy_sync_proxy_rules_nftables_';
    this.syncFailures = new Counter({ name: `${p}sync_failures_total`, help: 'Cumulative proxy nftables sync failures', registers: r });
    this.cleanupFailures = new Counter({ name: `${p}cleanup_failures_total`, help: 'Cumulative proxy nftables cleanup failures', registers: r });
  }
}
