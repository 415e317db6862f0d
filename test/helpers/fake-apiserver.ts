// A stand-in for kube-apiserver, which cannot be installed here: a local HTTP server that speaks
// the Kubernetes list/watch wire format for Services, EndpointSlices, Nodes and ServiceCIDRs
// (with networking.k8s.io/v1's resource list, unless told to serve none), close enough for
// @kubernetes/client-node's ListWatch. Lists carry metadata.resourceVersion; `?watch=true`
// streams one JSON event per line (ADDED, MODIFIED, DELETED, BOOKMARK when asked for, and
// ERROR with a Status of code 410 "Expired" when the requested resourceVersion was compacted);
// tests can drop every open watch connection, compact history, or expire open watches.
// Nodes can also be read one by one and patched (JSON merge or strategic merge patch, applied by
// the lab API's own src/lab/api/patch.ts), on the
// object or on its status subresource with the apiserver's split: a status patch keeps the old
// spec, an object patch keeps the old status, metadata changes either way; every patch is
// recorded. Pods can be read one by one (an agent finding its node through its pod). The
// server can stop and start again on the same port (the API going away).
// Reusable by other tests (the lab builds a similar API). Plain HTTP on 127.0.0.1.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergePatch, strategicMergePatch } from '../../src/lab/api/patch.ts';
import { loadSchemas } from '../../src/lab/api/schema.ts';

export type Resource = 'services' | 'endpointslices' | 'nodes' | 'servicecidrs';

interface Obj { metadata: { name?: string; namespace?: string; resourceVersion?: string; [k: string]: unknown }; [k: string]: unknown }

export interface RecordedPatch { path: string; contentType: string; body: unknown }
interface Event { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }
interface Watcher { res: ServerResponse; resource: Resource; bookmarks: boolean; fieldName?: string }

const PATHS: Record<string, Resource> = {
  '/api/v1/services': 'services',
  '/apis/discovery.k8s.io/v1/endpointslices': 'endpointslices',
  '/api/v1/nodes': 'nodes',
  '/apis/networking.k8s.io/v1/servicecidrs': 'servicecidrs',
};
const KIND: Record<Resource, [string, string]> = {
  services: ['v1', 'Service'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSlice'],
  nodes: ['v1', 'Node'],
  servicecidrs: ['networking.k8s.io/v1', 'ServiceCIDR'],
};

export class FakeApiServer {
  private server: Server | null = null;
  private rv = 100;
  private readonly store = new Map<Resource, Map<string, Obj>>([['services', new Map()], ['endpointslices', new Map()], ['nodes', new Map()], ['servicecidrs', new Map()]]);
  /** false: an API without ServiceCIDRs (before Kubernetes 1.33): networking.k8s.io/v1 lists none. */
  serviceCIDRs = true;
  private readonly history: Event[] = [];
  private readonly historyRes: Resource[] = [];
  /** Events older than this resourceVersion are gone: watching from before it gets 410. */
  private compactedRv = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private dir: string | null = null;
  /** Requests seen, e.g. "list services", "watch services rv=105", "get nodes/n1". */
  readonly requests: string[] = [];
  /** Every PATCH, in order. */
  readonly patches: RecordedPatch[] = [];
  private readonly pods = new Map<string, Obj>();
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A Unix socket path to serve on instead of 127.0.0.1 (namespaces reach it through socat). */
  socketPath: string | null = null;

  /** Starts serving (again on the same port or socket after `stop`). */
  async start(o: { socket?: string } = {}): Promise<void> {
    await loadSchemas(); // the strategic merge patch of Nodes follows their schema's merge keys
    if (o.socket) this.socketPath = o.socket;
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      if (this.socketPath) {
        rmSync(this.socketPath, { force: true });
        this.server!.listen(this.socketPath, () => resolve());
      } else {
        this.server!.listen(this.port, '127.0.0.1', () => resolve());
      }
    });
    if (!this.socketPath) this.port = (this.server.address() as { port: number }).port;
  }

  /** Stops serving, cutting every connection, keeping objects and the port: the API is away. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    for (const sock of this.sockets) sock.destroy();
    server.closeAllConnections();
    await closed;
  }

  /** A Pod an agent can look its node up from. */
  addPod(namespace: string, name: string, nodeName: string): void {
    this.pods.set(`${namespace}/${name}`, { apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, resourceVersion: String(++this.rv) }, spec: { nodeName } });
  }

  /** The stored object (a copy), or undefined. */
  get(resource: Resource, namespace: string | undefined, name: string): any {
    const o = this.store.get(resource)!.get(`${namespace ?? ''}/${name}`);
    return o ? JSON.parse(JSON.stringify(o)) : undefined;
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
    const old = m.get(this.key(o));
    o.metadata.creationTimestamp ??= (old?.metadata.creationTimestamp as string | undefined) ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    o.metadata.uid ??= (old?.metadata.uid as string | undefined) ?? `uid-${this.rv}`;
    const type = old ? 'MODIFIED' : 'ADDED';
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

  private async patchNode(req: IncomingMessage, name: string, toStatus: boolean, path: string): Promise<[number, unknown]> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const contentType = String(req.headers['content-type'] ?? '').split(';')[0]!.trim();
    this.requests.push(`patch nodes/${name}${toStatus ? '/status' : ''} ${contentType}`);
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      return [400, status(400, 'BadRequest', `the body of the request was in an unknown format: ${(err as Error).message}`)];
    }
    this.patches.push({ path, contentType, body });
    const old = this.store.get('nodes')!.get(`/${name}`);
    if (!old) return [404, notFound('nodes', name)];
    let next: Obj;
    if (contentType === 'application/merge-patch+json') next = mergePatch(old, body) as Obj;
    else if (contentType === 'application/strategic-merge-patch+json') next = strategicMergePatch(old, body, 'V1Node') as Obj;
    else return [415, status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json`)];
    // The status subresource keeps the old spec; the object keeps the old status.
    if (toStatus) next.spec = old.spec; else next.status = old.status;
    next.metadata = { ...next.metadata, name, resourceVersion: old.metadata.resourceVersion, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp };
    this.upsert('nodes', next);
    return [200, this.store.get('nodes')!.get(`/${name}`)];
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const json = (code: number, body: unknown) => res.writeHead(code, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    const node = /^\/api\/v1\/nodes\/([^/]+)(\/status)?$/.exec(url.pathname);
    if (node) {
      const name = decodeURIComponent(node[1]!);
      const status = node[2] !== undefined;
      if (req.method === 'GET') {
        this.requests.push(`get nodes/${name}${status ? '/status' : ''}`);
        const o = this.store.get('nodes')!.get(`/${name}`);
        if (!o) { json(404, notFound('nodes', name)); return; }
        json(200, o);
        return;
      }
      if (req.method === 'PATCH') { this.patchNode(req, name, status, url.pathname).then(([code, body]) => json(code, body), (err: Error) => json(500, status500(err.message))); return; }
      json(405, status405(req.method ?? ''));
      return;
    }
    const pod = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
    if (pod && req.method === 'GET') {
      const key = `${decodeURIComponent(pod[1]!)}/${decodeURIComponent(pod[2]!)}`;
      this.requests.push(`get pods/${key}`);
      const o = this.pods.get(key);
      if (!o) { json(404, notFound('pods', key)); return; }
      json(200, o);
      return;
    }
    if (url.pathname === '/apis/networking.k8s.io/v1' && req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({
        kind: 'APIResourceList', apiVersion: 'v1', groupVersion: 'networking.k8s.io/v1',
        resources: this.serviceCIDRs ? [{ name: 'servicecidrs', singularName: 'servicecidr', namespaced: false, kind: 'ServiceCIDR', verbs: ['get', 'list', 'watch'] }] : [],
      }));
      return;
    }
    const resource = PATHS[url.pathname];
    if (!resource || req.method !== 'GET' || (resource === 'servicecidrs' && !this.serviceCIDRs)) {
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

const notFound = (resource: string, name: string) => status(404, 'NotFound', `${resource} "${name}" not found`);
const status405 = (method: string) => status(405, 'MethodNotAllowed', `method ${method} is not supported here`);
const status500 = (message: string) => status(500, 'InternalError', message);

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
