// Clusters and a hand-driven source for the proxy's tests (unit tests on the in-memory kernel
// and kernel tests in namespaces alike).
import { makeService, makeSlice } from './fake-apiserver.ts';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';
import type { ProxySource, SourceHandler } from '../../src/proxy/source.ts';

/**
 * `n` services in namespace `ns`, each with `eps` endpoints; every third a LoadBalancer with
 * source ranges (SVC, EXT and FW chains), every third a NodePort (SVC and EXT), the rest ClusterIP.
 */
export function services(n: number, eps: number, ns = 'default', ports = 1): ClusterState {
  const out: ClusterState = { services: [], endpointSlices: [] };
  for (let i = 0; i < n; i++) {
    const kind = i % 3 === 0 ? 'LoadBalancer' : i % 3 === 1 ? 'NodePort' : 'ClusterIP';
    const ip = `172.30.${(i >> 8) & 255}.${i & 255}`;
    const svcPorts = Array.from({ length: ports }, (_, p) => ({ name: `p${p}`, port: 1000 + p, targetPort: 8000 + p, protocol: 'TCP' }));
    out.services.push(makeService(ns, `s${i}`, {
      clusterIP: ip, type: kind, ports: svcPorts,
      ...(kind === 'LoadBalancer' ? { loadBalancerSourceRanges: ['203.0.113.0/24'] } : {}),
    }, kind === 'LoadBalancer' ? { status: { loadBalancer: { ingress: [{ ip: `198.51.${(i >> 8) & 255}.${i & 255}` }] } } } : {}) as unknown as Service);
    const addrs = Array.from({ length: eps }, (_, e) => `10.244.${i & 255}.${e + 1 + ((i >> 8) << 4)}`);
    out.endpointSlices.push(makeSlice(ns, `s${i}`, addrs, svcPorts.map((p) => ({ name: p.name, port: p.targetPort }))) as unknown as EndpointSlice);
  }
  return out;
}

/** Fails instead of hanging when a sync never succeeds (a wedged proxy retries forever). */
export function within<T>(p: Promise<T>, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`no successful sync within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

export const merge = (...cs: ClusterState[]): ClusterState => ({ services: cs.flatMap((c) => c.services), endpointSlices: cs.flatMap((c) => c.endpointSlices) });

/** A source the test drives by hand. */
export class ManualSource implements ProxySource {
  h: SourceHandler | null = null;
  constructor(private readonly initial: ClusterState) {}
  async start(h: SourceHandler) { this.h = h; h.replaceAll(this.initial.services, this.initial.endpointSlices); h.synced(); }
  async stop() { this.h = null; }
  set(c: ClusterState) { this.h!.replaceAll(c.services, c.endpointSlices); }
}

