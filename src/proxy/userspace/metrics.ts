// Data-path metrics of the userspace mode, on the daemon's registry (so /metrics serves them
// next to kube-proxy's sync metrics). Labels are service port names ("ns/name:port"), bounded
// by the number of services; label sets of removed ports are dropped. The hot path counts into
// plain numbers (a labelled inc per packet would cost more than forwarding the packet); they are
// folded into these metrics when the registry is scraped.
import { Counter, Gauge, type Registry } from 'prom-client';

export class UserspaceMetrics {
  readonly activeConnections: Gauge<'service'>;
  readonly connections: Counter<'service'>;
  readonly bytes: Counter<'service' | 'direction'>;
  readonly udpFlows: Gauge<'service'>;
  readonly udpPackets: Counter<'service' | 'direction'>;
  readonly udpFlowEvictions: Counter<'service'>;
  readonly dialFailures: Counter<'service'>;
  readonly noEndpoint: Counter<'service'>;

  private flushers = new Set<() => void>();
  /** Fetches counts from elsewhere (worker processes) before a scrape folds them in. */
  gather: (() => Promise<void>) | null = null;

  constructor(registry: Registry) {
    const r = [registry];
    const collect = () => this.gather ? this.gather().then(() => this.flush()) : this.flush();
    const p = 'knet_userspace_';
    this.activeConnections = new Gauge({ name: `${p}active_connections`, help: 'TCP connections being proxied', labelNames: ['service'], registers: r, collect });
    this.connections = new Counter({ name: `${p}connections_total`, help: 'TCP connections accepted', labelNames: ['service'], registers: r, collect });
    this.bytes = new Counter({ name: `${p}bytes_total`, help: 'Bytes proxied (to_endpoint, to_client), TCP and UDP', labelNames: ['service', 'direction'], registers: r, collect });
    this.udpFlows = new Gauge({ name: `${p}udp_flows`, help: 'UDP client flows in the flow table', labelNames: ['service'], registers: r, collect });
    this.udpPackets = new Counter({ name: `${p}udp_packets_total`, help: 'UDP datagrams proxied', labelNames: ['service', 'direction'], registers: r, collect });
    this.udpFlowEvictions = new Counter({ name: `${p}udp_flow_evictions_total`, help: 'UDP flows evicted because the flow table was full', labelNames: ['service'], registers: r, collect });
    this.dialFailures = new Counter({ name: `${p}dial_failures_total`, help: 'Failed connection attempts to endpoints', labelNames: ['service'], registers: r, collect });
    this.noEndpoint = new Counter({ name: `${p}no_endpoint_total`, help: 'Connections or datagrams dropped because no endpoint could take them', labelNames: ['service'], registers: r, collect });
  }

  /** Registers a function that moves pending counts into the metrics; returns its remover. */
  onCollect(f: () => void): () => void {
    this.flushers.add(f);
    return () => this.flushers.delete(f);
  }

  /** Moves every pending count into the metrics now. */
  flush(): void {
    for (const f of this.flushers) f();
  }

  /** Forgets a removed service port's label sets. */
  remove(service: string): void {
    for (const m of [this.activeConnections, this.connections, this.udpFlows, this.udpFlowEvictions, this.dialFailures, this.noEndpoint]) m.remove({ service });
    for (const direction of ['to_endpoint', 'to_client']) {
      this.bytes.remove({ service, direction });
      this.udpPackets.remove({ service, direction });
    }
  }
}
