// The Kubernetes API as a proxy source: list/watch informers from @kubernetes/client-node 1.4
// for Services, EndpointSlices and this node's Node object. ListWatch relists on 410 Gone by
// itself; on any other watch error it stops, so each informer is restarted here with backoff
// (resuming from its last resourceVersion, or relisting if that is too old). A relist of
// unchanged objects marks nothing in the tracker, so it rewrites no rules.
import { type KubeConfig, ListWatch, Watch, type KubernetesObject, type KubernetesListObject } from '@kubernetes/client-node';
import { request as httpRequest, type Agent } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isRecord, prop } from '../model/json.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export { loadKubeConfig };
import type { Logger } from 'pino';
import type { EndpointSlice, Node, Service, ServiceCIDR } from '../model/k8s.ts';
import type { ProxySource, SourceHandler } from '../proxy/source.ts';

export interface InformerOptions {
  /** Path of a kubeconfig; absent: in-cluster config, then the default kubeconfig. */
  kubeconfig?: string;
  /** A ready KubeConfig (tests). */
  kubeConfig?: KubeConfig;
  nodeName?: string;
  log: Logger;
  maxBackoffMs?: number;
}

type Obj = KubernetesObject;

/**
 * A list of the objects exactly as the API server sent them. The generated client's typed lists
 * are not used: they throw on one object with a field of the wrong type ("data is not
 * iterable"), so one mistyped Service would stop the whole list for good, and they turn a string
 * where a list belongs into a list of its characters. Validation happens in the service model.
 * Items without object metadata are dropped with a warning (ListWatch itself would throw on them).
 */
export async function listRaw(kc: KubeConfig, path: string, warn: (object: string, reason: string) => void, fieldSelector?: string): Promise<KubernetesListObject<Obj>> {
  const list = await getJson(kc, path, fieldSelector ? { fieldSelector } : {});
  const items = prop(list, 'items');
  if (!Array.isArray(items)) throw new Error(`list ${path}: the answer has no items list`);
  const kept = items.filter((item: unknown, i) => {
    if (isRecord(prop(item, 'metadata'))) return true;
    warn(`${path} item ${i}`, 'no metadata; skipped');
    return false;
  });
  const metadata = prop(list, 'metadata');
  const resourceVersion = prop(metadata, 'resourceVersion');
  return { items: kept as Obj[], metadata: typeof resourceVersion === 'string' ? { resourceVersion } : {} } as KubernetesListObject<Obj>;
}

/**
 * One GET of a JSON document from the API server, with the kubeconfig's credentials, exactly as
 * sent (see listRaw for why not the typed client). A non-200 answer is an error with its
 * `statusCode`.
 */
export async function getJson(kc: KubeConfig, path: string, query: Record<string, string> = {}): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server + path);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const opts = await kc.applyToFetchOptions({});
  const headers: Record<string, string> = { Accept: 'application/json' };
  // The client hands a WHATWG Headers object (typed loosely as any HeadersInit).
  new Headers(opts.headers as ConstructorParameters<typeof Headers>[0]).forEach((value, key) => { headers[key] = value; });
  const body = await new Promise<string>((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'GET', headers, agent: opts.agent as Agent | undefined }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode === 200) { resolve(Buffer.concat(chunks).toString('utf8')); return; }
        reject(Object.assign(new Error(`GET ${path}: HTTP ${res.statusCode}`), { statusCode: res.statusCode }));
      });
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`GET ${path}: no answer in 60 s`)));
    req.on('error', reject);
    req.end();
  });
  return JSON.parse(body);
}

/** One ListWatch kept alive: restarted with exponential backoff after errors. */
class Kept<T extends Obj> {
  readonly lw: ListWatch<T>;
  private backoff = 500;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    readonly what: string,
    path: string,
    watch: Watch,
    list: () => Promise<KubernetesListObject<T>>,
    private readonly log: Logger,
    private readonly maxBackoffMs: number,
    fieldSelector?: string,
  ) {
    this.lw = new ListWatch<T>(path, watch, list, false, undefined, fieldSelector);
    this.lw.on('error', (err: unknown) => this.restart(err));
    this.lw.on('connect', () => { /* a successful (re)connect resets the backoff after a list */ });
  }

  get listed(): boolean {
    return this.lw.latestResourceVersion() !== '';
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.lw.start();
    if (this.listed) this.backoff = 500;
  }

  private restart(err: unknown): void {
    if (this.stopped || this.timer) return;
    const e = err as { statusCode?: number; message?: string };
    this.log.warn({ informer: this.what, err: e?.message ?? String(err), statusCode: e?.statusCode, retryMs: this.backoff }, 'watch ended with an error; restarting');
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start().catch((e2: unknown) => this.restart(e2));
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, this.maxBackoffMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.lw.stop();
  }
}

async function servesServiceCIDRs(kc: KubeConfig): Promise<boolean> {
  try {
    const resources = prop(await getJson(kc, '/apis/networking.k8s.io/v1'), 'resources');
    return Array.isArray(resources) && resources.some((r) => prop(r, 'name') === 'servicecidrs');
  } catch {
    return false;
  }
}

export class InformerSource implements ProxySource {
  private kept: Array<Kept<Obj>> = [];
  private stopped = false;

  constructor(private readonly o: InformerOptions) {}

  async start(h: SourceHandler): Promise<void> {
    const kc = this.o.kubeConfig ?? loadKubeConfig(this.o.kubeconfig);
    const watch = new Watch(kc);
    const max = this.o.maxBackoffMs ?? 30_000;
    const log = this.o.log;

    const warn = (object: string, reason: string) => h.warn(object, reason);
    const svc = new Kept<Obj>('services', '/api/v1/services', watch, () => listRaw(kc, '/api/v1/services', warn), log, max);
    svc.lw.on('add', (o) => h.upsertService(o as unknown as Service));
    svc.lw.on('update', (o) => h.upsertService(o as unknown as Service));
    svc.lw.on('delete', (o) => h.deleteService(o as unknown as Service));

    const eps = new Kept<Obj>('endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', watch,
      () => listRaw(kc, '/apis/discovery.k8s.io/v1/endpointslices', warn), log, max);
    eps.lw.on('add', (o) => h.upsertSlice(o as unknown as EndpointSlice));
    eps.lw.on('update', (o) => h.upsertSlice(o as unknown as EndpointSlice));
    eps.lw.on('delete', (o) => h.deleteSlice(o as unknown as EndpointSlice));
    this.kept = [svc, eps];

    if (this.o.nodeName && h.node) {
      const fieldSelector = `metadata.name=${this.o.nodeName}`;
      const node = new Kept<Obj>('node', '/api/v1/nodes', watch, () => listRaw(kc, '/api/v1/nodes', warn, fieldSelector), log, max, fieldSelector);
      node.lw.on('add', (o) => h.node!(o as unknown as Node));
      node.lw.on('update', (o) => h.node!(o as unknown as Node));
      node.lw.on('delete', () => h.node!(null));
      this.kept.push(node);
    }

    // ServiceCIDRs (networking.k8s.io/v1), where the API serves them: nftables mode drops traffic
    // to their unallocated addresses. An API without them (older, or the lab's) is not an error.
    if (h.serviceCIDRs && (await servesServiceCIDRs(kc))) {
      const all = new Map<string, ServiceCIDR>();
      const emit = () => h.serviceCIDRs!([...all.values()]);
      const cidrs = new Kept<Obj>('servicecidrs', '/apis/networking.k8s.io/v1/servicecidrs', watch,
        () => listRaw(kc, '/apis/networking.k8s.io/v1/servicecidrs', warn), log, max);
      const put = (o: Obj) => { const s = o as unknown as ServiceCIDR; all.set(s.metadata?.name ?? '', s); emit(); };
      cidrs.lw.on('add', put);
      cidrs.lw.on('update', put);
      cidrs.lw.on('delete', (o) => { all.delete((o as unknown as ServiceCIDR).metadata?.name ?? ''); emit(); });
      this.kept.push(cidrs);
    }

    // The first sync waits until services and slices were listed once (kube-proxy waits for
    // its informers' HasSynced), so a start never programs a half-known cluster.
    await Promise.all(this.kept.map((k) => k.start()));
    const waitListed = async () => {
      while (!this.stopped && (!svc.listed || !eps.listed)) await new Promise((r) => setTimeout(r, 200));
    };
    await waitListed();
    if (!this.stopped) h.synced();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.kept.map((k) => k.stop()));
  }
}
