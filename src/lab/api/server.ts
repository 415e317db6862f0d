// The lab API: a small stand-in for kube-apiserver, NOT a Kubernetes. It keeps Namespaces,
// Nodes, Pods, Services, Endpoints and EndpointSlices in etcd (under /registry/, resourceVersion
// = etcd revision) and serves them over the Kubernetes REST API: discovery and OpenAPI for
// kubectl, list/watch for informers, create/replace/patch/delete with kube-apiserver's
// validation, conflicts and Status errors. It also does the lab's controller jobs (ClusterIP and
// NodePort allocation, EndpointSlices from pod labels, node pod CIDRs). No admission plugins, no
// server-side apply, no other kinds; protobuf only for what kubectl's generators send.
//
// Listeners: a Unix socket in the lab directory for `knet lab` commands (trusted: only root
// reaches it, and a path socket crosses network namespaces), and TCP on the underlay for the
// nodes' proxies and agents (bearer tokens, auth.ts) and for kubectl run in the API's own
// namespace (trusted, see trustLocalConnections).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { readFileSync, rmSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import type { Logger } from '../../util/log.ts';
import { authenticate, authorize, forbiddenMessage, LOCAL_ADMIN, parseTokenFile, type User, type Verb } from './auth.ts';
import { Controllers } from './controllers.ts';
import { aggregatedDiscovery, AGGREGATED_CONTENT_TYPE, apiGroup, apiGroupList, apiVersions, openApiDocument, openApiIndex, resourceList, VERSION } from './discovery.ts';
import { ApiError, badRequest } from './errors.ts';
import { checkAcceptsJson, MAX_BODY_BYTES, parseJsonBody, readBody, sendError, sendJson, tableRequest, wantsAggregatedDiscovery, warningHeaders } from './http.ts';
import { EtcdKv, type KvBackend } from './kv.ts';
import { PATCH_CONTENT_TYPES, type PatchType } from './patch.ts';
import { decodeProtobuf } from './protobuf.ts';
import { Registry, type WriteOptions } from './registry.ts';
import { apiVersionOf, parseResourcePath, type Route } from './resources.ts';
import { loadSchemas, type FieldValidation } from './schema.ts';
import { parseFieldSelector, parseLabelSelector } from './selectors.ts';
import { ObjectStore } from './store.ts';
import { toTable } from './tables.ts';
import { DEFAULT_WATCH_LIMITS, WatchHub, type WatchLimits } from './watch.ts';

export interface FlannelOptions {
  /** The etcd the node agents lease their subnets in (`knet lab status` reads the leases). */
  etcdEndpoint: string;
  prefix: string;
  /** Written as PREFIX/config when absent. */
  networkConfig: string;
}

export interface LabApiOptions {
  /** The etcd holding /registry/ (or `kv`, an in-memory store in tests). */
  etcdEndpoint?: string;
  kv?: KvBackend;
  /** TCP listener; absent: none. */
  host?: string;
  port?: number;
  /** Local trusted socket; absent: none. */
  socketPath?: string;
  /** Bearer tokens for the TCP listener (kube-apiserver's static token file format). */
  tokenFile?: string;
  /**
   * TCP connections from the listener's own address (so from inside its network namespace,
   * where only root gets) are administrators without a token, as kube-apiserver's localhost port
   * once was. This is how kubectl works in the lab: kubectl sends no token over plain HTTP.
   */
  trustLocalConnections?: boolean;
  /** Tests only: TCP clients without a token are administrators. */
  anonymousAdmin?: boolean;
  serviceCIDR: string;
  nodePortRange: readonly [number, number];
  /** Allocate Node pod CIDRs from this (kube-controller-manager's --cluster-cidr). */
  clusterCIDR?: string;
  nodeCidrMaskSize?: number;
  flannel?: FlannelOptions;
  watchLimits?: Partial<WatchLimits>;
  maxBodyBytes?: number;
  /** Events kept for watches that resume from a resourceVersion. */
  historySize?: number;
  log: Logger;
}

interface Caller { user: User; client: string }

const HEALTH = new Set(['/healthz', '/livez', '/readyz']);

export class LabApi {
  private kv!: KvBackend;
  private flannelEtcd: Etcd3 | null = null;
  private store!: ObjectStore;
  private registry!: Registry;
  private controllers!: Controllers;
  private watches!: WatchHub;
  private tokens = new Map<string, User>();
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private started = false;

  constructor(private readonly o: LabApiOptions) {}

  /** The TCP port actually listened on (useful with port 0). */
  port = 0;

  async start(): Promise<void> {
    const log = this.o.log;
    if (this.o.tokenFile) this.tokens = parseTokenFile(readFileSync(this.o.tokenFile, 'utf8'), this.o.tokenFile);
    await loadSchemas();
    this.kv = this.o.kv ?? new EtcdKv(this.o.etcdEndpoint ?? 'http://127.0.0.1:2379');
    if (this.o.flannel) {
      this.flannelEtcd = new Etcd3({ hosts: [this.o.flannel.etcdEndpoint], dialTimeout: 5000 });
      const key = `${this.o.flannel.prefix}/config`;
      if ((await this.flannelEtcd.get(key).string()) === null) await this.flannelEtcd.put(key).value(this.o.flannel.networkConfig);
    }
    this.store = new ObjectStore(this.kv, { log, ...(this.o.historySize ? { historySize: this.o.historySize } : {}) });
    await this.store.start();
    this.registry = new Registry(this.store, { serviceCIDR: this.o.serviceCIDR, nodePortRange: this.o.nodePortRange }, log);
    this.watches = new WatchHub(this.store, { ...DEFAULT_WATCH_LIMITS, ...this.o.watchLimits }, log);
    this.controllers = new Controllers(this.registry, {
      log, ...(this.o.clusterCIDR ? { clusterCIDR: this.o.clusterCIDR } : {}), ...(this.o.nodeCidrMaskSize ? { nodeCidrMaskSize: this.o.nodeCidrMaskSize } : {}),
    });
    await this.controllers.start();
    const listen = async (server: Server, bind: (s: Server, cb: () => void) => void) => {
      server.on('connection', (c) => { this.sockets.add(c); c.on('close', () => this.sockets.delete(c)); });
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => { server.once('error', reject); bind(server, resolve); });
    };
    if (this.o.socketPath) {
      rmSync(this.o.socketPath, { force: true });
      await listen(createServer((req, res) => this.handle(req, res, true)), (s, cb) => s.listen(this.o.socketPath, cb));
    }
    if (this.o.port !== undefined) {
      const tcp = createServer((req, res) => this.handle(req, res, false));
      await listen(tcp, (s, cb) => s.listen(this.o.port, this.o.host ?? '127.0.0.1', cb));
      this.port = (tcp.address() as { port: number }).port;
    }
    this.started = true;
    log.info({ revision: this.store.revision, socket: this.o.socketPath, listen: this.o.port !== undefined ? `${this.o.host}:${this.port}` : undefined }, 'lab API (a kube-apiserver stand-in) serving');
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.controllers.stop();
    this.watches.stop();
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers.length = 0;
    await this.store.stop();
    await this.kv.close();
    this.flannelEtcd?.close();
    if (this.o.socketPath) rmSync(this.o.socketPath, { force: true });
  }

  /** Open watches and how many were closed for not keeping up. */
  watchStats(): { open: number; closedSlow: number } {
    return { open: this.watches.open, closedSlow: this.watches.closedSlow };
  }

  private handle(req: IncomingMessage, res: ServerResponse, local: boolean): void {
    this.route(req, res, local).catch((err: unknown) => {
      const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', `Internal error occurred: ${String((err as Error)?.message ?? err)}`);
      if (e.code >= 500) this.o.log.error({ method: req.method, url: req.url, err: e.message }, 'request failed');
      sendError(req, res, e);
    });
  }

  private caller(req: IncomingMessage, local: boolean): Caller | null {
    if (local) return { user: LOCAL_ADMIN, client: 'local' };
    const client = req.socket.remoteAddress ?? 'unknown';
    const sameHost = this.o.trustLocalConnections && client === req.socket.localAddress;
    const user = authenticate(this.tokens, req.headers.authorization) ?? (sameHost || this.o.anonymousAdmin ? LOCAL_ADMIN : null);
    return user ? { user, client } : null;
  }

  private async route(req: IncomingMessage, res: ServerResponse, local: boolean): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://lab');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (HEALTH.has(path)) { res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok'); return; }
    if (path === '/version') { sendJson(res, 200, VERSION); return; }
    const caller = this.caller(req, local);
    if (!caller) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    if (path === '/lab/leases' && req.method === 'GET') { sendJson(res, 200, await this.leases()); return; }
    const route = parseResourcePath(path);
    if (!route) {
      if (req.method !== 'GET') throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
      this.discovery(req, res, path);
      return;
    }
    checkAcceptsJson(req);
    await this.resource(req, res, url, route, caller);
  }

  private discovery(req: IncomingMessage, res: ServerResponse, path: string): void {
    const aggregated = (path === '/api' || path === '/apis') && wantsAggregatedDiscovery(req);
    if (aggregated) {
      sendJson(res, 200, aggregatedDiscovery(path === '/api'), { 'Content-Type': AGGREGATED_CONTENT_TYPE });
      return;
    }
    const answer = path === '/api' ? apiVersions(`${this.o.host ?? '127.0.0.1'}:${this.port}`)
      : path === '/apis' ? apiGroupList()
      : path.startsWith('/apis/') && path.split('/').length === 3 ? apiGroup(path.split('/')[2]!)
      : path === '/openapi/v3' ? openApiIndex()
      : resourceList(path);
    if (answer) { sendJson(res, 200, answer); return; }
    const doc = openApiDocument(path);
    if (doc) { res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(doc) }).end(doc); return; }
    throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  }

  private writeOptions(url: URL): WriteOptions {
    const dryRun = url.searchParams.getAll('dryRun');
    if (dryRun.some((d) => d !== 'All')) throw badRequest(`dryRun: Unsupported value: ${JSON.stringify(dryRun)}: supported values: "All"`);
    const fv = url.searchParams.get('fieldValidation');
    if (fv !== null && !['Strict', 'Warn', 'Ignore'].includes(fv)) throw badRequest(`fieldValidation: Unsupported value: ${JSON.stringify(fv)}: supported values: "Ignore", "Strict", "Warn"`);
    return { dryRun: dryRun.length > 0, ...(fv ? { fieldValidation: fv as FieldValidation } : {}) };
  }

  /** The body of a create or update: JSON, or protobuf for the kinds kubectl sends it for. */
  private async body(req: IncomingMessage): Promise<unknown> {
    const protobuf = this.checkContentType(req, false) === 'protobuf';
    const raw = await readBody(req, this.o.maxBodyBytes ?? MAX_BODY_BYTES);
    return protobuf ? decodeProtobuf(raw) : parseJsonBody(raw);
  }

  private async resource(req: IncomingMessage, res: ServerResponse, url: URL, route: Route, caller: Caller): Promise<void> {
    const { def, namespace, name, subresource } = route;
    if (subresource !== undefined && (subresource !== 'status' || !def.status)) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const method = req.method ?? 'GET';
    const watching = method === 'GET' && !name && ['true', '1'].includes(url.searchParams.get('watch') ?? '');
    const verb: Verb | null = method === 'GET' ? (name ? 'get' : watching ? 'watch' : 'list')
      : method === 'POST' && !name ? 'create' : method === 'PUT' && name ? 'update' : method === 'PATCH' && name ? 'patch'
      : method === 'DELETE' ? (name ? 'delete' : 'deletecollection') : null;
    if (!verb || (subresource && !['get', 'update', 'patch'].includes(verb))) {
      throw new ApiError(405, 'MethodNotAllowed', `${method} is not supported on ${url.pathname}`);
    }
    // A create is authorized for the name in its body (a node may create only its own Node).
    const body = verb === 'create' ? await this.body(req) : undefined;
    const target = name ?? ((body as { metadata?: { name?: unknown } } | undefined)?.metadata?.name as string | undefined);
    const denied = authorize(caller.user, { verb, def, ...(namespace ? { namespace } : {}), ...(typeof target === 'string' ? { name: target } : {}), ...(subresource ? { subresource } : {}) });
    if (denied) throw new ApiError(403, 'Forbidden', forbiddenMessage({ verb, def, ...(name ? { name } : {}) }, denied), { ...(name ? { name } : {}), kind: def.name, ...(def.group ? { group: def.group } : {}) });
    const status = subresource === 'status' ? 'status' : undefined;
    const labels = parseLabelSelector(url.searchParams.get('labelSelector'));
    const fields = parseFieldSelector(def.name, url.searchParams.get('fieldSelector'));
    const table = tableRequest(req, url.searchParams);
    const send = (code: number, obj: Record<string, unknown>, warnings: string[] = []) => {
      const out = table && code < 300 && obj.kind === def.kind ? toTable(def.name, [obj as never], { resourceVersion: String(obj.metadata && (obj.metadata as { resourceVersion?: string }).resourceVersion), include: table }) : obj;
      sendJson(res, code, out, warningHeaders(warnings));
    };
    switch (verb) {
      case 'get': send(200, this.registry.get(def, namespace, name!)); return;
      case 'list': {
        const items = this.registry.list(def, namespace, labels, fields);
        const rv = String(this.store.revision);
        if (table) sendJson(res, 200, toTable(def.name, items, { resourceVersion: rv, include: table }));
        else sendJson(res, 200, { kind: `${def.kind}List`, apiVersion: apiVersionOf(def), metadata: { resourceVersion: rv }, items });
        return;
      }
      case 'watch': {
        const rv = url.searchParams.get('resourceVersion') ?? '';
        if (rv !== '' && !/^\d+$/.test(rv)) throw badRequest(`invalid resourceVersion ${JSON.stringify(rv)}`);
        const timeout = url.searchParams.get('timeoutSeconds');
        const initial = url.searchParams.get('sendInitialEvents') === 'true';
        this.watches.serve(res, {
          def, ...(namespace ? { namespace } : {}), labels, fields, from: rv === '' || rv === '0' || initial ? null : Number(rv),
          bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', initialEventsEnd: initial, table, client: caller.client,
          ...(timeout && /^\d+$/.test(timeout) && Number(timeout) > 0 ? { timeoutSeconds: Number(timeout) } : {}),
        });
        return;
      }
      case 'create': {
        const r = await this.registry.create(def, namespace, body, this.writeOptions(url));
        send(201, r.object, r.warnings);
        return;
      }
      case 'update': {
        const r = await this.registry.update(def, namespace, name!, await this.body(req), status, this.writeOptions(url));
        send(r.created ? 201 : 200, r.object, r.warnings);
        return;
      }
      case 'patch': {
        const type = this.checkContentType(req, true) as PatchType;
        const patch = parseJsonBody(await readBody(req, this.o.maxBodyBytes ?? MAX_BODY_BYTES));
        const r = await this.registry.patch(def, namespace, name!, type, patch, status, this.writeOptions(url));
        send(200, r.object, r.warnings);
        return;
      }
      case 'delete': {
        const raw = await readBody(req, this.o.maxBodyBytes ?? MAX_BODY_BYTES);
        const options = raw.length ? parseJsonBody(raw) as { preconditions?: { uid?: string; resourceVersion?: string }; dryRun?: string[] } : {};
        const dry = url.searchParams.get('dryRun') === 'All' || (Array.isArray(options.dryRun) && options.dryRun.includes('All'));
        send(200, await this.registry.delete(def, namespace, name!, options.preconditions ?? {}, { dryRun: dry }));
        return;
      }
      case 'deletecollection': {
        const items = await this.registry.deleteCollection(def, namespace, labels, fields, this.writeOptions(url));
        sendJson(res, 200, { kind: `${def.kind}List`, apiVersion: apiVersionOf(def), metadata: { resourceVersion: String(this.store.revision) }, items });
        return;
      }
    }
  }

  /** The body's media type: JSON (or protobuf) for POST and PUT, one of the three patch types for PATCH (415 otherwise). */
  private checkContentType(req: IncomingMessage, patch: boolean): PatchType | 'json' | 'protobuf' {
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (patch) {
      const t = Object.hasOwn(PATCH_CONTENT_TYPES, type) ? PATCH_CONTENT_TYPES[type] : undefined;
      if (t) return t;
      if (type === 'application/apply-patch+yaml') throw new ApiError(415, 'UnsupportedMediaType', 'server-side apply is not served by the lab API (a kube-apiserver stand-in); use client-side kubectl apply');
      throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${Object.keys(PATCH_CONTENT_TYPES).join(', ')}`);
    }
    // kubectl's typed generators (create namespace, create service) send protobuf.
    if (type === 'application/vnd.kubernetes.protobuf') return 'protobuf';
    if (type !== '' && type !== 'application/json') throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json`);
    return 'json';
  }

  private async leases(): Promise<Array<{ key: string; value: string }>> {
    if (!this.flannelEtcd || !this.o.flannel) return [];
    const prefix = `${this.o.flannel.prefix}/subnets/`;
    const res = await this.flannelEtcd.getAll().prefix(prefix).exec();
    return res.kvs.map((kv) => ({ key: kv.key.toString().slice(prefix.length), value: kv.value.toString() }));
  }
}
