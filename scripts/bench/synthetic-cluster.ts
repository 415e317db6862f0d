// A synthetic cluster for tests and benchmarks: N ClusterIP services with E endpoints each,
// every fifth one a NodePort, every seventh with ClientIP affinity.
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';

export function syntheticCluster(services: number, endpointsPerService = 3): ClusterState {
  const svcs: Service[] = [];
  const slices: EndpointSlice[] = [];
  for (let i = 0; i < services; i++) {
    const ns = `ns${i % 50}`;
    const name = `svc${i}`;
    const ip = `172.30.${(i >> 8) & 255}.${i & 255}`;
    const spec: Service['spec'] = {
      type: i % 5 === 0 ? 'NodePort' : 'ClusterIP',
      clusterIP: ip,
      ports: [{ name: 'http', port: 80, protocol: 'TCP', ...(i % 5 === 0 ? { nodePort: 30000 + (i % 2700) } : {}) }],
    };
    if (i % 7 === 0) spec.sessionAffinity = 'ClientIP';
    svcs.push({ apiVersion: 'v1', kind: 'Service', metadata: { namespace: ns, name }, spec });
    slices.push({
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { namespace: ns, name: `${name}-abc`, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      endpoints: Array.from({ length: endpointsPerService }, (_, e) => ({
        addresses: [`10.${(e + 1) * 10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
        conditions: { ready: true },
        nodeName: `node-${e}`,
      })),
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
  }
  return { services: svcs, endpointSlices: slices };
}
