// /healthz (200 when ready, 503 with the reason otherwise) and Prometheus /metrics, each on
// loopback only.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly leaseExpiry = new Gauge({ name: 'knet_agent_lease_expiry_timestamp_seconds', help: 'When this node\'s subnet lease expires (0: reservation, no expiry)', registers: [this.registry] });
  readonly peersProgrammed = new Gauge({ name: 'knet_agent_peers_programmed', help: 'Peer leases programmed into the overlay at the last reconcile', registers: [this.registry] });
  readonly reconcileDuration = new Histogram({
    name: 'knet_agent_reconcile_duration_seconds', help: 'Time to reconcile the overlay against the kernel',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry],
  });
  readonly reconcileChanges = new Counter({ name: 'knet_agent_reconcile_changes_total', help: 'Kernel entries added, replaced or removed by reconciles', registers: [this.registry] });
  readonly etcdErrors = new Counter({ name: 'knet_agent_etcd_errors_total', help: 'Failed lease store operations (etcd, or the Kubernetes API with --kube-subnet-mgr) and watch disconnects', registers: [this.registry] });
  readonly etcdReachable = new Gauge({ name: 'knet_agent_etcd_reachable', help: '1 while the lease watch (etcd, or the Kubernetes API with --kube-subnet-mgr) is established', registers: [this.registry] });
}

export type Readiness = () => { ready: boolean; reason: string };

function listen(port: number, handler: Parameters<typeof createServer>[1]): Promise<Server> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid port ${port}`);
  const srv = createServer(handler);
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

export async function startHealthz(port: number, readiness: Readiness): Promise<Server> {
  return listen(port, (req, res) => {
    if (req.url === '/healthz' || req.url === '/readyz') {
      const r = readiness();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(r.ready ? 'ok\n' : `not ready: ${r.reason}\n`);
    } else if (req.url === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
}

export async function startMetrics(port: number, m: AgentMetrics): Promise<Server> {
  return listen(port, (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404);
      res.end();
      return;
    }
    m.registry.metrics().then(
      (text) => { res.writeHead(200, { 'content-type': m.registry.contentType }); res.end(text); },
      (err: Error) => { res.writeHead(500); res.end(err.message); },
    );
  });
}
