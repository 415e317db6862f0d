// Prometheus metrics under kube-proxy's names (pkg/proxy/metrics/metrics.go, subsystem
// "kubeproxy"), so existing dashboards and alerts keep working. One registry per daemon; these
// are the mode-neutral ones, each data path registers its own (iptables-metrics.ts) beside them.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { listen } from './health.ts';

const exp = (start: number, factor: number, n: number) => Array.from({ length: n }, (_, i) => start * factor ** i);
const syncBuckets = exp(0.001, 2, 15);
const range = (a: number, b: number, step: number) => Array.from({ length: Math.floor((b - a) / step) + 1 }, (_, i) => a + i * step);
const latencyBuckets = [0.25, 0.5, ...range(1, 59, 1), ...range(60, 115, 5), ...range(120, 300, 30)];

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly syncDuration: Histogram;
  readonly fullSyncDuration: Histogram;
  readonly partialSyncDuration: Histogram;
  readonly lastQueued: Gauge;
  readonly lastSync: Gauge;
  readonly endpointChangesPending: Gauge;
  readonly endpointChangesTotal: Counter;
  readonly serviceChangesPending: Gauge;
  readonly serviceChangesTotal: Counter;
  readonly healthzTotal: Counter<'code'>;
  readonly livezTotal: Counter<'code'>;
  readonly programmingLatency: Histogram;
  readonly noLocalEndpoints: Gauge<'traffic_policy'>;

  constructor() {
    const r = [this.registry];
    const p = 'kubeproxy_';
    this.syncDuration = new Histogram({ name: `${p}sync_proxy_rules_duration_seconds`, help: 'SyncProxyRules latency in seconds', buckets: syncBuckets, registers: r });
    this.fullSyncDuration = new Histogram({ name: `${p}sync_full_proxy_rules_duration_seconds`, help: 'SyncProxyRules latency in seconds for full resyncs', buckets: syncBuckets, registers: r });
    this.partialSyncDuration = new Histogram({ name: `${p}sync_partial_proxy_rules_duration_seconds`, help: 'SyncProxyRules latency in seconds for partial resyncs', buckets: syncBuckets, registers: r });
    this.lastQueued = new Gauge({ name: `${p}sync_proxy_rules_last_queued_timestamp_seconds`, help: 'The last time a sync of proxy rules was queued', registers: r });
    this.lastSync = new Gauge({ name: `${p}sync_proxy_rules_last_timestamp_seconds`, help: 'The last time proxy rules were successfully synced', registers: r });
    this.endpointChangesPending = new Gauge({ name: `${p}sync_proxy_rules_endpoint_changes_pending`, help: 'Pending proxy rules Endpoint changes', registers: r });
    this.endpointChangesTotal = new Counter({ name: `${p}sync_proxy_rules_endpoint_changes_total`, help: 'Cumulative proxy rules Endpoint changes', registers: r });
    this.serviceChangesPending = new Gauge({ name: `${p}sync_proxy_rules_service_changes_pending`, help: 'Pending proxy rules Service changes', registers: r });
    this.serviceChangesTotal = new Counter({ name: `${p}sync_proxy_rules_service_changes_total`, help: 'Cumulative proxy rules Service changes', registers: r });
    this.healthzTotal = new Counter({ name: `${p}proxy_healthz_total`, help: 'Cumulative proxy healthz HTTP status', labelNames: ['code'], registers: r });
    this.livezTotal = new Counter({ name: `${p}proxy_livez_total`, help: 'Cumulative proxy livez HTTP status', labelNames: ['code'], registers: r });
    this.programmingLatency = new Histogram({ name: `${p}network_programming_duration_seconds`, help: 'In Cluster Network Programming Latency in seconds', buckets: latencyBuckets, registers: r });
    this.noLocalEndpoints = new Gauge({ name: `${p}sync_proxy_rules_no_local_endpoints_total`, help: 'Number of services with a Local traffic policy and no endpoints', labelNames: ['traffic_policy'], registers: r });
  }

  countHealth(path: string, code: number): void {
    (path === '/livez' ? this.livezTotal : this.healthzTotal).inc({ code: String(code) });
  }

  serve(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      if ((req.url ?? '').split('?')[0] !== '/metrics') { res.writeHead(404).end(); return; }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    return listen(server, host, port);
  }
}
