// A stand-in for kube-apiserver, which cannot be installed here: a local HTTP server that speaks
// the Kubernetes list/watch wire format for Services, EndpointSlices and Nodes, close enough for
// @kubernetes/client-node's ListWatch. Lists carry metadata.resourceVersion; `?watch=true`
// streams one JSON event per line (ADDED, MODIFIED, DELETED, BOOKMARK when asked for, and
// ERROR with a Status of code 410 "Expired" when the requested resourceVersion was compacted);
// tests can drop every open watch connection, compact history, or expire open watches.
// Reusable by other tests (the lab builds a similar API). Plain HTTP on 127.0.0.1.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Resource = 'services' | 'endpointslices' | 'nodes';

interface Obj { metadata: { name?: string; namespace?: string; resourceVersion?: string; [k: string]: unknown }; [k: string]: unknown }
interface Event { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }
interface Watcher { res: ServerResponse; resource: Resource; bookmarks: boolean; fieldName?: string }

const PATHS: Record<string, Resource> = {
  '/api/v1/services': 'services',
  '/apis/discovery.k8s.io/v1/endpointslices': 'endpointslices',
  '/api/v1/nodes': 'nodes',
};
const KIND: Record<Resource, [string, string]> = {
  services: ['v1', 'Service'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSlice'],
  nodes: ['v1', 'Node'],
};

export class FakeApiServer {
  private server: Server | null = null;
  private rv = 100;
  private readonly store = new Map<Resource, Map<string, Obj>>([['services', new Map()], ['endpointslices', new Map()], ['nodes', new Map()]]);
  private readonly history: Event[] = [];
  private readonly historyRes: Resource[] = [];
  /** Events older than this resourceVersion are gone: watching from before it gets 410. */
  private compactedRv = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private dir: string | null = null;
  /** Requests seen, e.g. "list services", "watch services rv=105". */
  readonly requests: string[] = [];
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** A kubeconfig file pointing at this server (removed by close()). */
  kubeconfig(): string {
    this.dir ??= mkdtempSync(join(tmpdir(), 'knt-p-kubeconfig-'));
    const path = join(this.dir, 'kubeconfig');
    writeFileSync(path, [
      'apiVersion: v1', 'kind: Config', 'current-context: fake',
      'clusters:', `- name: fake`, `  cluster:`, `    server: ${this.url}`, '    insecure-skip-tls-verify: true',
      'users:', '- name: fake', '  user:', '    token: fake-token',
      'contexts:', '- name: fake', '  context:', '    cluster: fake', '    user: fake', '',
    ].join('\n'));
    return path;
  }

  async close(): Promise<void> {
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
    const server = this.server;
    this.server = null;
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const w of this.watchers) w.res.destroy();
    for (const s of this.sockets) s.destroy();
    server.closeAllConnections();
    await closed;
  }

  private key(o: Obj): string {
    return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  }

  /** Creates or replaces an object and notifies watchers. */
  upsert(resource: Resource, obj: Obj): void {
    const [apiVersion, kind] = KIND[resource];
    const o: Obj = JSON.parse(JSON.stringify({ apiVersion, kind, ...obj }));
    o.metadata.resourceVersion = String(++this.rv);
    const m = this.store.get(resource)!;
    const type = m.has(this.key(o)) ? 'MODIFIED' : 'ADDED';
    m.set(this.key(o), o);
    this.emit(resource, { rv: this.rv, type, object: o });
  }

  remove(resource: Resource, namespace: string | undefined, name: string): void {
    const m = this.store.get(resource)!;
    const k = `${namespace ?? ''}/${name}`;
    const o = m.get(k);
    if (!o) return;
    m.delete(k);
    const gone: Obj = JSON.parse(JSON.stringify(o));
    gone.metadata.resourceVersion = String(++this.rv);
    this.emit(resource, { rv: this.rv, type: 'DELETED', object: gone });
  }

  private emit(resource: Resource, e: Event): void {
    this.history.push(e);
    this.historyRes.push(resource);
    for (const w of this.watchers) if (w.resource === resource && this.matches(w, e.object)) this.send(w, e.type, e.object);
  }

  private matches(w: Watcher, o: Obj): boolean {
    return !w.fieldName || o.metadata.name === w.fieldName;
  }

  private send(w: Watcher, type: string, object: unknown): void {
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  /** Cuts every open watch connection without a goodbye (a network drop). */
  dropWatches(): void {
    for (const w of this.watchers) w.res.socket?.destroy();
    this.watchers.clear();
  }

  /** Forgets history, so watches resumed from an older resourceVersion get 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
  }

  /** Sends every open watch an ERROR event with a 410 Status and closes it, as an apiserver does. */
  expireWatches(): void {
    this.compact();
    for (const w of this.watchers) {
      this.send(w, 'ERROR', gone(this.compactedRv));
      w.res.end();
    }
    this.watchers.clear();
  }

  /** Sends a BOOKMARK carrying the current resourceVersion to watches that asked for them. */
  bookmark(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const [apiVersion, kind] = KIND[w.resource];
      this.send(w, 'BOOKMARK', { apiVersion, kind, metadata: { resourceVersion: String(this.rv) } });
    }
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const resource = PATHS[url.pathname];
    if (!resource || req.method !== 'GET') {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify(status(404, 'NotFound', `${url.pathname} not found`)));
      return;
    }
    const field = url.searchParams.get('fieldSelector');
    const fieldName = field?.startsWith('metadata.name=') ? field.slice('metadata.name='.length) : undefined;
    const w: Watcher = { res, resource, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', ...(fieldName ? { fieldName } : {}) };
    if (url.searchParams.get('watch') !== 'true') {
      this.requests.push(`list ${resource}`);
      const items = [...this.store.get(resource)!.values()].filter((o) => this.matches(w, o));
      const [apiVersion, kind] = KIND[resource];
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({
        apiVersion, kind: `${kind}List`, metadata: { resourceVersion: String(this.rv) }, items,
      }));
      return;
    }
    const from = Number(url.searchParams.get('resourceVersion') || '0');
    this.requests.push(`watch ${resource} rv=${from}`);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    if (from < this.compactedRv) {
      // What kube-apiserver does for a too-old resourceVersion: 200, one ERROR event, close.
      this.send(w, 'ERROR', gone(from));
      res.end();
      return;
    }
    this.history.forEach((e, i) => {
      if (e.rv > from && this.historyRes[i] === resource && this.matches(w, e.object)) this.send(w, e.type, e.object);
    });
    this.watchers.add(w);
    req.on('close', () => this.watchers.delete(w));
  }
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function gone(rv: number) {
  return status(410, 'Expired', `too old resource version: ${rv}`);
}

/** A Service object (API shape) for tests. */
export function makeService(ns: string, name: string, spec: Record<string, unknown>, extra: Record<string, unknown> = {}): Obj & { spec: Record<string, unknown> } {
  return { apiVersion: 'v1', kind: 'Service', metadata: { namespace: ns, name }, spec: { type: 'ClusterIP', ...spec }, ...extra };
}

/** An EndpointSlice (API shape) owned by service `svc`, all endpoints ready unless told. */
export function makeSlice(ns: string, svc: string, ips: string[], ports: Array<{ name?: string; port: number; protocol?: string }>,
  o: { name?: string; nodeName?: string; notReady?: string[] } = {}): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { namespace: ns, name: o.name ?? `${svc}-abc`, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: !(o.notReady ?? []).includes(ip) }, ...(o.nodeName ? { nodeName: o.nodeName } : {}) })),
    ports: ports.map((p) => ({ name: p.name ?? '', port: p.port, protocol: p.protocol ?? 'TCP' })),
  };
}
