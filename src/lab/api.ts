// The lab API: a small stand-in for kube-apiserver, NOT a Kubernetes. It stores Services,
// EndpointSlices, Nodes and Pods in the lab's etcd (keys under /registry/, like kube-apiserver;
// resourceVersion is the etcd revision) and serves them over the Kubernetes list/watch wire
// format, so every node's `knet proxy` runs its ordinary informers against it. It also does the
// two controller jobs the lab needs: ClusterIP/NodePort allocation and EndpointSlices derived
// from pod labels. No auth, no admission, no validation beyond what the lab uses.
//
// It listens on the underlay bridge's address inside the lab's underlay namespace (read-only,
// for the node proxies) and on a Unix socket in the lab directory (read-write, for `knet lab`
// commands running in the machine's own namespace: a path socket crosses network namespaces).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Etcd3, type Watcher } from 'etcd3';
import type { Logger } from '../util/log.ts';
import type { EndpointSlice, Service } from '../model/k8s.ts';
import { completeService, deriveEndpointSlices, isManagedSlice, type LabPod } from './workload.ts';

export type Resource = 'services' | 'endpointslices' | 'nodes' | 'pods';
const RESOURCES: Resource[] = ['services', 'endpointslices', 'nodes', 'pods'];
const KIND: Record<Resource, [string, string]> = {
  services: ['v1', 'Service'],
  endpointslices: ['discovery.k8s.io/v1', 'EndpointSlice'],
  nodes: ['v1', 'Node'],
  pods: ['v1', 'Pod'],
};
const NAMESPACED: Record<Resource, boolean> = { services: true, endpointslices: true, nodes: false, pods: true };
const REGISTRY = '/registry/';

interface Obj { apiVersion?: string; kind?: string; metadata: { name?: string; namespace?: string; resourceVersion?: string; uid?: string; creationTimestamp?: string; labels?: Record<string, string>; [k: string]: unknown }; [k: string]: unknown }
interface Event { rv: number; resource: Resource; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }
interface WatchConn { res: ServerResponse; resource: Resource; namespace?: string; name?: string }

export interface Route { resource: Resource; namespace?: string; name?: string }

/** Parses a Kubernetes REST path into resource, namespace and name (pure). */
export function parsePath(path: string): Route | null {
  const m = /^\/(?:api\/v1|apis\/discovery\.k8s\.io\/v1)(?:\/namespaces\/([a-z0-9-]+))?\/(services|endpointslices|nodes|pods)(?:\/([a-z0-9.-]+))?$/.exec(path);
  if (!m) return null;
  const resource = m[2] as Resource;
  const group = path.startsWith('/apis/') ? 'discovery' : 'core';
  if ((resource === 'endpointslices') !== (group === 'discovery')) return null;
  if (!NAMESPACED[resource] && m[1]) return null;
  const r: Route = { resource };
  if (m[1]) r.namespace = m[1];
  if (m[3]) r.name = m[3];
  return r;
}

export function registryKey(resource: Resource, namespace: string | undefined, name: string): string {
  return NAMESPACED[resource] ? `${REGISTRY}${resource}/${namespace ?? 'default'}/${name}` : `${REGISTRY}${resource}/${name}`;
}

function keyResource(key: string): Resource | null {
  const r = key.slice(REGISTRY.length).split('/')[0] as Resource;
  return RESOURCES.includes(r) ? r : null;
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string) { super(message); }
}

export interface LabApiOptions {
  etcdEndpoint: string;
  host: string;
  port: number;
  socketPath: string;
  serviceCIDR: string;
  nodePortRange: readonly [number, number];
  flannelPrefix: string;
  networkConfig: string;
  log: Logger;
}

export class LabApi {
  private etcd!: Etcd3;
  private watcher: Watcher | null = null;
  private rv = 0;
  private startRv = 0;
  private readonly cache = new Map<Resource, Map<string, Obj>>(RESOURCES.map((r) => [r, new Map()]));
  private readonly history: Event[] = [];
  private readonly watches = new Set<WatchConn>();
  private readonly waiters: Array<{ rv: number; resolve: () => void }> = [];
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private reconcileTimer: NodeJS.Timeout | null = null;
  private writeChain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: LabApiOptions) {}

  async start(): Promise<void> {
    this.etcd = new Etcd3({ hosts: [this.o.etcdEndpoint], dialTimeout: 5000 });
    const cfgKey = `${this.o.flannelPrefix}/config`;
    if ((await this.etcd.get(cfgKey).string()) === null) await this.etcd.put(cfgKey).value(this.o.networkConfig);
    const all = await this.etcd.getAll().prefix(REGISTRY).exec();
    for (const kv of all.kvs) {
      const key = kv.key.toString();
      const r = keyResource(key);
      if (!r) continue;
      const obj = JSON.parse(kv.value.toString()) as Obj;
      obj.metadata.resourceVersion = String(kv.mod_revision);
      this.cache.get(r)!.set(key, obj);
    }
    this.rv = Number(all.header.revision);
    this.startRv = this.rv;
    const w = await this.etcd.watch().prefix(REGISTRY).startRevision(String(this.rv + 1)).create();
    this.watcher = w;
    w.on('put', (kv) => this.onEtcd('put', kv.key.toString(), kv.value.toString(), Number(kv.mod_revision)));
    w.on('delete', (kv) => this.onEtcd('delete', kv.key.toString(), '', Number(kv.mod_revision)));
    w.on('data', (res: { header?: { revision?: string } }) => {
      const r = Number(res.header?.revision ?? 0);
      if (r > this.rv) { this.rv = r; this.wake(); }
    });
    const rw = createServer((req, res) => this.handle(req, res, true));
    const ro = createServer((req, res) => this.handle(req, res, false));
    for (const s of [rw, ro]) {
      s.on('connection', (c) => { this.sockets.add(c); c.on('close', () => this.sockets.delete(c)); });
      this.servers.push(s);
    }
    rmSync(this.o.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => { rw.once('error', reject); rw.listen(this.o.socketPath, resolve); });
    await new Promise<void>((resolve, reject) => { ro.once('error', reject); ro.listen(this.o.port, this.o.host, resolve); });
    this.scheduleReconcile();
    this.o.log.info({ revision: this.rv, socket: this.o.socketPath, listen: `${this.o.host}:${this.o.port}` }, 'lab API serving');
  }

  async stop(): Promise<void> {
    for (const w of this.watches) w.res.destroy();
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (this.watcher) await this.watcher.cancel().catch(() => undefined);
    this.etcd?.close();
    rmSync(this.o.socketPath, { force: true });
  }

  private onEtcd(kind: 'put' | 'delete', key: string, value: string, rv: number): void {
    const r = keyResource(key);
    if (rv > this.rv) this.rv = rv;
    if (r) {
      const m = this.cache.get(r)!;
      if (kind === 'put') {
        const obj = JSON.parse(value) as Obj;
        obj.metadata.resourceVersion = String(rv);
        const type = m.has(key) ? 'MODIFIED' : 'ADDED';
        m.set(key, obj);
        this.emit({ rv, resource: r, type, object: obj });
      } else {
        const old = m.get(key);
        m.delete(key);
        if (old) this.emit({ rv, resource: r, type: 'DELETED', object: { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } } });
      }
      if (r === 'services' || r === 'pods') this.scheduleReconcile();
    }
    this.wake();
  }

  private wake(): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i]!.rv <= this.rv) { this.waiters[i]!.resolve(); this.waiters.splice(i, 1); }
    }
  }

  private waitRv(rv: number): Promise<void> {
    if (rv <= this.rv) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ rv, resolve }));
  }

  private emit(e: Event): void {
    this.history.push(e);
    if (this.history.length > 50_000) this.history.splice(0, 10_000);
    for (const w of this.watches) if (w.resource === e.resource && this.matches(w, e.object)) this.send(w.res, e.type, e.object);
  }

  private matches(w: { namespace?: string; name?: string }, o: Obj): boolean {
    return (!w.namespace || o.metadata.namespace === w.namespace) && (!w.name || o.metadata.name === w.name);
  }

  private send(res: ServerResponse, type: string, object: unknown): void {
    res.write(JSON.stringify({ type, object }) + '\n');
  }

  list(resource: Resource): Obj[] {
    return [...this.cache.get(resource)!.values()];
  }

  // ---- writes (serialized: allocation reads the cache) ----

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.writeChain.then(fn, fn);
    this.writeChain = p.catch(() => undefined);
    return p;
  }

  async put(resource: Resource, namespace: string | undefined, name: string, body: Obj): Promise<Obj> {
    return this.serialize(async () => {
      const key = registryKey(resource, namespace, name);
      const prev = this.cache.get(resource)!.get(key);
      let obj: Obj = JSON.parse(JSON.stringify(body));
      obj.metadata ??= {};
      if (obj.metadata.name !== undefined && obj.metadata.name !== name) throw new HttpError(400, 'BadRequest', `metadata.name ${obj.metadata.name} does not match the path's ${name}`);
      obj.metadata.name = name;
      if (NAMESPACED[resource]) obj.metadata.namespace = namespace ?? 'default';
      else delete obj.metadata.namespace;
      const [apiVersion, kind] = KIND[resource];
      obj.apiVersion = apiVersion;
      obj.kind = kind;
      if (resource === 'services') {
        try {
          obj = completeService(obj as unknown as Service, prev as unknown as Service | undefined, this.list('services') as unknown as Service[], this.o.serviceCIDR, this.o.nodePortRange) as unknown as Obj;
        } catch (err) {
          throw new HttpError(422, 'Invalid', (err as Error).message);
        }
      }
      obj.metadata.uid = prev?.metadata.uid ?? randomUUID();
      obj.metadata.creationTimestamp = prev?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      delete obj.metadata.resourceVersion;
      const res = await this.etcd.put(key).value(JSON.stringify(obj)).exec();
      const rv = Number(res.header.revision);
      await this.waitRv(rv);
      return this.cache.get(resource)!.get(key) ?? { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    });
  }

  async remove(resource: Resource, namespace: string | undefined, name: string): Promise<Obj> {
    return this.serialize(async () => {
      const key = registryKey(resource, namespace, name);
      const prev = this.cache.get(resource)!.get(key);
      if (!prev) throw new HttpError(404, 'NotFound', `${resource} "${name}" not found`);
      const res = await this.etcd.delete().key(key).exec();
      await this.waitRv(Number(res.header.revision));
      return prev;
    });
  }

  /** Keeps the derived EndpointSlices equal to what the pods' labels say (debounced). */
  private scheduleReconcile(): void {
    if (this.reconcileTimer) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = null;
      this.reconcileSlices().catch((err: unknown) => {
        this.o.log.error({ err: String(err) }, 'endpoint slice reconcile failed; retrying');
        setTimeout(() => this.scheduleReconcile(), 1000);
      });
    }, 10);
  }

  private async reconcileSlices(): Promise<void> {
    const desired = deriveEndpointSlices(this.list('services') as unknown as Service[], this.list('pods') as unknown as LabPod[]);
    const have = new Map((this.list('endpointslices') as unknown as EndpointSlice[]).filter(isManagedSlice).map((s) => [`${s.metadata.namespace}/${s.metadata.name}`, s]));
    const strip = (s: EndpointSlice) => JSON.stringify({ l: s.metadata.labels, e: s.endpoints, p: s.ports });
    for (const d of desired) {
      const k = `${d.metadata.namespace}/${d.metadata.name}`;
      const h = have.get(k);
      have.delete(k);
      if (h && strip(h) === strip(d)) continue;
      await this.put('endpointslices', d.metadata.namespace, d.metadata.name!, d as unknown as Obj);
    }
    for (const h of have.values()) await this.remove('endpointslices', h.metadata.namespace, h.metadata.name!).catch(() => undefined);
  }

  async leases(): Promise<Array<{ key: string; value: string }>> {
    const res = await this.etcd.getAll().prefix(`${this.o.flannelPrefix}/subnets/`).exec();
    return res.kvs.map((kv) => ({ key: kv.key.toString().slice(`${this.o.flannelPrefix}/subnets/`.length), value: kv.value.toString() }));
  }

  // ---- HTTP ----

  private handle(req: IncomingMessage, res: ServerResponse, writable: boolean): void {
    this.route(req, res, writable).catch((err: unknown) => {
      const e = err instanceof HttpError ? err : new HttpError(500, 'InternalError', String((err as Error)?.message ?? err));
      if (!res.headersSent) res.writeHead(e.code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(status(e.code, e.reason, e.message)));
    });
  }

  private async readBody(req: IncomingMessage): Promise<Obj> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      return v;
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `body is not a JSON object: ${(err as Error).message}`);
    }
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  }

  private async route(req: IncomingMessage, res: ServerResponse, writable: boolean): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://lab');
    if (url.pathname === '/healthz' || url.pathname === '/readyz') { res.writeHead(200).end('ok'); return; }
    if (url.pathname === '/lab/leases' && req.method === 'GET') { this.json(res, 200, await this.leases()); return; }
    const r = parsePath(url.pathname);
    if (!r) throw new HttpError(404, 'NotFound', `${url.pathname} is not served by the lab API`);
    const method = req.method ?? 'GET';
    if (method !== 'GET' && !writable) throw new HttpError(405, 'MethodNotAllowed', 'this listener is read-only; use the lab socket');
    if (r.name) {
      if (method === 'GET') {
        const o = this.cache.get(r.resource)!.get(registryKey(r.resource, r.namespace, r.name));
        if (!o) throw new HttpError(404, 'NotFound', `${r.resource} "${r.name}" not found`);
        this.json(res, 200, o);
      } else if (method === 'PUT' || method === 'POST') {
        this.json(res, 200, await this.put(r.resource, r.namespace, r.name, await this.readBody(req)));
      } else if (method === 'DELETE') {
        this.json(res, 200, await this.remove(r.resource, r.namespace, r.name));
      } else throw new HttpError(405, 'MethodNotAllowed', `${method} not allowed`);
      return;
    }
    if (method !== 'GET') throw new HttpError(405, 'MethodNotAllowed', `${method} on a collection is not supported; PUT to a named object`);
    const field = url.searchParams.get('fieldSelector') ?? '';
    const sel: { namespace?: string; name?: string } = {};
    if (r.namespace) sel.namespace = r.namespace;
    if (field.startsWith('metadata.name=')) sel.name = field.slice('metadata.name='.length);
    const [apiVersion, kind] = KIND[r.resource];
    if (url.searchParams.get('watch') !== 'true' && url.searchParams.get('watch') !== '1') {
      const items = this.list(r.resource).filter((o) => this.matches(sel, o))
        .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
      this.json(res, 200, { apiVersion, kind: `${kind}List`, metadata: { resourceVersion: String(this.rv) }, items });
      return;
    }
    const from = Number(url.searchParams.get('resourceVersion') || '0');
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    if (from < this.startRv && from !== 0) {
      // History before this API process started is not kept: the client relists (410 Gone).
      this.send(res, 'ERROR', status(410, 'Expired', `too old resource version: ${from} (${this.startRv})`));
      res.end();
      return;
    }
    const w: WatchConn = { res, resource: r.resource, ...sel };
    if (from === 0) {
      for (const o of this.list(r.resource)) if (this.matches(sel, o)) this.send(res, 'ADDED', o);
    } else {
      for (const e of this.history) if (e.rv > from && e.resource === r.resource && this.matches(sel, e.object)) this.send(res, e.type, e.object);
    }
    this.watches.add(w);
    req.on('close', () => this.watches.delete(w));
  }
}
