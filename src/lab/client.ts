// `knet lab` commands talk to the lab API over its Unix socket in the lab directory.
import { request } from 'node:http';
import type { EndpointSlice, Node, Service } from '../model/k8s.ts';
import type { LabPod } from './workload.ts';

export class ApiError extends Error {
  constructor(readonly code: number, message: string) { super(message); }
}

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
          if ((res.statusCode ?? 500) >= 300) reject(new ApiError(res.statusCode ?? 500, (json as { message?: string })?.message ?? text));
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

  services() { return this.list<Service>('/api/v1/services'); }
  slices() { return this.list<EndpointSlice>('/apis/discovery.k8s.io/v1/endpointslices'); }
  nodes() { return this.list<Node>('/api/v1/nodes'); }
  pods() { return this.list<LabPod>('/api/v1/pods'); }
  leases() { return this.call<Array<{ key: string; value: string }>>('GET', '/lab/leases'); }

  putService(s: Service) { return this.call<Service>('PUT', `/api/v1/namespaces/${s.metadata.namespace ?? 'default'}/services/${s.metadata.name}`, s); }
  putSlice(s: EndpointSlice) { return this.call<EndpointSlice>('PUT', `/apis/discovery.k8s.io/v1/namespaces/${s.metadata.namespace ?? 'default'}/endpointslices/${s.metadata.name}`, s); }
  putNode(n: Node) { return this.call<Node>('PUT', `/api/v1/nodes/${n.metadata.name}`, n); }
  putPod(p: LabPod) { return this.call<LabPod>('PUT', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, p); }
  delete(resource: 'services' | 'endpointslices' | 'pods', namespace: string, name: string) {
    const group = resource === 'endpointslices' ? '/apis/discovery.k8s.io/v1' : '/api/v1';
    return this.call('DELETE', `${group}/namespaces/${namespace}/${resource}/${name}`);
  }
}
