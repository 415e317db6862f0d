// /healthz and /livez with kube-proxy's semantics (pkg/proxy/healthcheck/proxy_health.go):
// unhealthy iff a change was queued and not synced within healthTimeout (2 x syncPeriod);
// /healthz also requires the node to be eligible (not being deleted, no
// ToBeDeletedByClusterAutoscaler taint); /livez ignores node eligibility.
import { createServer, type Server } from 'node:http';
import type { Node } from '../model/k8s.ts';
import { readNodeFacts } from '../k8s/node.ts';

export class ProxyHealth {
  private oldestQueued: number | null = null;
  private lastUpdated: number | null = null;
  nodeEligible = true;

  constructor(readonly timeoutMs: number, private readonly now: () => number = Date.now) {}

  /** A change is waiting for a sync (keeps the oldest). */
  queued(): void {
    if (this.oldestQueued === null) this.oldestQueued = this.now();
  }

  /** A sync succeeded: everything queued before it is programmed. */
  updated(): void {
    this.oldestQueued = null;
    this.lastUpdated = this.now();
  }

  setNode(node: Node | null): void {
    this.nodeEligible = !node || readNodeFacts(node).eligible;
  }

  status(): { healthy: boolean; lastUpdated: number; currentTime: number } {
    const now = this.now();
    const healthy = this.oldestQueued === null || now - this.oldestQueued <= this.timeoutMs;
    // When healthy kube-proxy reports lastUpdated as the current time (compatibility).
    return { healthy, lastUpdated: healthy ? now : (this.lastUpdated ?? 0), currentTime: now };
  }
}

export function healthResponse(h: ProxyHealth, path: string): { code: number; body: Record<string, unknown> } | null {
  const s = h.status();
  const base = { lastUpdated: new Date(s.lastUpdated).toISOString(), currentTime: new Date(s.currentTime).toISOString() };
  if (path === '/livez') return { code: s.healthy ? 200 : 503, body: base };
  if (path === '/healthz') {
    const ok = s.healthy && h.nodeEligible;
    return { code: ok ? 200 : 503, body: { ...base, nodeEligible: h.nodeEligible } };
  }
  return null;
}

/**
 * Bounds on a health or metrics server, which may listen on every address (0.0.0.0:10256): with
 * no cap, clients that connect and never finish a request held file descriptors until the
 * proxy could not open its manifests. Past `maxConnections` new connections are closed at once;
 * a connection idle for `idleMs`, or whose request takes longer, is closed.
 */
export interface ServerLimits {
  maxConnections: number;
  idleMs: number;
}

export const SERVER_LIMITS: ServerLimits = { maxConnections: 64, idleMs: 10_000 };

/** Serves /healthz and /livez; `count` feeds kubeproxy_proxy_{healthz,livez}_total. */
export function serveHealth(h: ProxyHealth, host: string, port: number, count?: (path: string, code: number) => void, limits: ServerLimits = SERVER_LIMITS): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const r = healthResponse(h, path);
    if (!r) { res.writeHead(404).end(); return; }
    count?.(path, r.code);
    res.writeHead(r.code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' }).end(JSON.stringify(r.body));
  });
  return listen(server, host, port, limits);
}

/** Listens with the limits applied. */
export function listen(server: Server, host: string, port: number, limits: ServerLimits = SERVER_LIMITS): Promise<Server> {
  server.maxConnections = limits.maxConnections;
  server.setTimeout(limits.idleMs);
  server.headersTimeout = limits.idleMs;
  server.requestTimeout = limits.idleMs;
  server.keepAliveTimeout = Math.min(5000, limits.idleMs);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(server); });
  });
}

/** "0.0.0.0:10256", "[::]:10256", "127.0.0.1:0" -> host and port. */
export function parseBindAddress(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s);
  if (!m) throw new Error(`invalid bind address ${JSON.stringify(s)} (want HOST:PORT)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in ${JSON.stringify(s)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}
