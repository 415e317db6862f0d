// `knet lab` commands talk to the lab API over its Unix socket in the lab directory (trusted:
// no token). Writes use the API as kubectl does: create, or replace what exists.
import { request } from 'node:http';
import type { EndpointSlice, Node, Service } from '../model/k8s.ts';
import type { LabPod } from './workload.ts';

export class ApiError extends Error {
  constructor(readonly code: number, message: string, readonly reason = '') { super(message); }
}

type Named = { metadata: { name?: string; namespace?: string } };

const CORE = '/api/v1';
const DISCOVERY = '/apis/discovery.k8s.io/v1';

export class LabApiClient {
  constructor(readonly socketPath: string) {}

  call<T = unknown>(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = request({ socketPath: this.socketPath, method, path, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown = text;
          try { json = JSON.parse(text); } catch { /* plain text */ }
          const status = json as { message?: string; reason?: string };
          if ((res.statusCode ?? 500) >= 300) reject(new ApiError(res.statusCode ?? 500, status?.message ?? text, status?.reason ?? ''));
          else resolve(json as T);
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`lab API ${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(data);
    });
  }

  async healthy(): Promise<boolean> {
    try { return (await this.call<string>('GET', '/healthz', undefined, 2000)) === 'ok'; } catch { return false; }
  }

  async list<T>(path: string): Promise<T[]> {
    return (await this.call<{ items: T[] }>('GET', path)).items;
  }

  services() { return this.list<Service>(`${CORE}/services`); }
  slices() { return this.list<EndpointSlice>(`${DISCOVERY}/endpointslices`); }
  nodes() { return this.list<Node>(`${CORE}/nodes`); }
  pods() { return this.list<LabPod>(`${CORE}/pods`); }
  leases() { return this.call<Array<{ key: string; value: string }>>('GET', '/lab/leases'); }

  /** Creates the object, or replaces the stored one (keeping what the server allocated). */
  private async apply<T extends Named>(collection: string, obj: T): Promise<T> {
    try {
      return await this.call<T>('POST', collection, obj);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 409 && err.reason === 'AlreadyExists')) throw err;
      const { resourceVersion: _ignored, ...metadata } = obj.metadata as Record<string, unknown>;
      return this.call<T>('PUT', `${collection}/${obj.metadata.name}`, { ...obj, metadata });
    }
  }

  private static namespaced(group: string, resource: string, o: Named): string {
    return `${group}/namespaces/${o.metadata.namespace ?? 'default'}/${resource}`;
  }

  putService(s: Service) { return this.apply(LabApiClient.namespaced(CORE, 'services', s), s); }
  putSlice(s: EndpointSlice) { return this.apply(LabApiClient.namespaced(DISCOVERY, 'endpointslices', s), s); }
  putNode(n: Node) { return this.apply(`${CORE}/nodes`, n); }
  putPod(p: LabPod) { return this.apply(LabApiClient.namespaced(CORE, 'pods', p), p); }
  /** Creates the namespace unless it exists; true when it was created. */
  async ensureNamespace(name: string): Promise<boolean> {
    try {
      await this.call('POST', `${CORE}/namespaces`, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.code === 409) return false;
      throw err;
    }
  }

  /** A pod's status (IP, readiness): the status subresource, as a kubelet writes it. */
  putPodStatus(p: LabPod) { return this.call<LabPod>('PUT', `${LabApiClient.namespaced(CORE, 'pods', p)}/${p.metadata.name}/status`, p); }
  delete(resource: 'services' | 'endpointslices' | 'pods', namespace: string, name: string) {
    const group = resource === 'endpointslices' ? DISCOVERY : CORE;
    return this.call('DELETE', `${group}/namespaces/${namespace}/${resource}/${name}`);
  }
}
