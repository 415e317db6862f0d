// Random clusters for property tests: up to a few services with random types, ports, policies
// and endpoints, each with one EndpointSlice.
import fc from 'fast-check';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';

export const arbService = fc.record({
  type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
  ports: fc.uniqueArray(fc.record({ name: fc.constantFrom('a', 'b', 'c'), protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }), { minLength: 1, maxLength: 3, selector: (p) => p.name }),
  etpLocal: fc.boolean(),
  itpLocal: fc.boolean(),
  affinity: fc.boolean(),
  externalIP: fc.boolean(),
  sourceRanges: fc.boolean(),
  endpoints: fc.array(fc.record({ host: fc.integer({ min: 1, max: 40 }), local: fc.boolean(), ready: fc.boolean(), terminating: fc.boolean() }), { maxLength: 6 }),
});

export type ServiceSpec = typeof arbService extends fc.Arbitrary<infer T> ? T : never;

export function cluster(specs: ServiceSpec[]): ClusterState {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  specs.forEach((s, i) => {
    const name = `s${i}`;
    services.push({
      metadata: { namespace: 'ns', name },
      spec: {
        type: s.type, clusterIP: `172.30.1.${i + 1}`,
        ports: s.ports.map((p, j) => ({ name: p.name, protocol: p.protocol, port: 80 + j, ...(s.type !== 'ClusterIP' ? { nodePort: 30000 + i * 10 + j } : {}) })),
        ...(s.etpLocal ? { externalTrafficPolicy: 'Local', healthCheckNodePort: 31000 + i } : {}),
        ...(s.itpLocal ? { internalTrafficPolicy: 'Local' } : {}),
        ...(s.affinity ? { sessionAffinity: 'ClientIP' } : {}),
        ...(s.externalIP ? { externalIPs: [`192.168.99.${i + 1}`] } : {}),
        ...(s.sourceRanges ? { loadBalancerSourceRanges: ['203.0.113.0/24'] } : {}),
      },
      ...(s.type === 'LoadBalancer' ? { status: { loadBalancer: { ingress: [{ ip: `198.51.100.${i + 1}` }] } } } : {}),
    });
    endpointSlices.push({
      metadata: { namespace: 'ns', name: `${name}-x`, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      endpoints: s.endpoints.map((e) => ({ addresses: [`10.1.${i}.${e.host}`], nodeName: e.local ? 'node-a' : 'node-b', conditions: { ready: e.ready, serving: e.ready || e.terminating, terminating: e.terminating } })),
      ports: s.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: 8080 })),
    });
  });
  return { services, endpointSlices };
}

