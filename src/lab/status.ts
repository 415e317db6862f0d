// `lab status` tables, pure: nodes (subnet, VTEP, public IP: from the flannel leases in etcd
// mode, from the Nodes' podCIDR and flannel annotations in kube mode), pods, services with
// their VIPs, ports and endpoints.
import type { EndpointSlice, Node, Service } from '../model/k8s.ts';
import { annotationNames, leaseFromNode } from '../subnet/kube-annotations.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { table } from './check.ts';
import { podIP, podPorts, type LabPod } from './workload.ts';

export interface StatusInput {
  labId: string;
  dir: string;
  /** e.g. "vxlan overlay, iptables proxies, etcd http://..., lab API http://..." */
  summary?: string;
  nodes: Array<{ name: string; ns: string; ip: string; agent: boolean; proxy: boolean }>;
  /** kube: subnets from apiNodes; etcd: from leases. */
  subnetManager: 'kube' | 'etcd';
  apiNodes: Node[];
  leases: Array<{ key: string; value: string }>;
  pods: LabPod[];
  services: Service[];
  slices: EndpointSlice[];
}

function leaseFor(ip: string, leases: StatusInput['leases']): { subnet: string; vtep: string } {
  for (const l of leases) {
    try {
      const v = JSON.parse(l.value) as { PublicIP?: string; BackendData?: { VtepMAC?: string } };
      if (v.PublicIP === ip) return { subnet: l.key.replace('-', '/'), vtep: v.BackendData?.VtepMAC ?? '-' };
    } catch { /* not a lease */ }
  }
  return { subnet: '-', vtep: '-' };
}

/** kube mode: the podCIDR the lab API allocated, the VTEP MAC the agent annotated. */
function nodeNetwork(name: string, apiNodes: Node[]): { subnet: string; vtep: string } {
  const node = apiNodes.find((n) => n.metadata.name === name);
  const lease = node ? leaseFromNode(node, annotationNames()) : null;
  const data = lease?.kind === 'lease' ? lease.lease.attrs.BackendData as { VtepMAC?: string } | undefined : undefined;
  return { subnet: node?.spec?.podCIDR ?? '-', vtep: data?.VtepMAC ?? '-' };
}

export function formatStatus(i: StatusInput): string {
  const out: string[] = [`lab ${i.labId} (${i.dir})${i.summary ? `: ${i.summary}` : ''}`, ''];
  out.push(table([
    ['NODE', 'PUBLIC IP', 'SUBNET', 'VTEP MAC', 'AGENT', 'PROXY', 'NAMESPACE'],
    ...i.nodes.map((n) => {
      const l = i.subnetManager === 'kube' ? nodeNetwork(n.name, i.apiNodes) : leaseFor(n.ip, i.leases);
      return [n.name, n.ip, l.subnet, l.vtep, n.agent ? 'running' : 'DOWN', n.proxy ? 'running' : 'DOWN', n.ns];
    }),
  ]), '');
  const pods = [...i.pods].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`, 'en', { numeric: true }));
  out.push(table([
    ['POD', 'NODE', 'IP', 'PORTS', 'LABELS'],
    ...pods.map((p) => [
      p.metadata.namespace === 'default' ? p.metadata.name : `${p.metadata.namespace}/${p.metadata.name}`,
      p.spec.nodeName, podIP(p) ?? '-', podPorts(p).join(','),
      Object.entries(p.metadata.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '-',
    ]),
  ]), '');
  const services = [...i.services].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  out.push(table([
    ['SERVICE', 'TYPE', 'CLUSTER-IP', 'PORTS', 'AFFINITY', 'ENDPOINTS'],
    ...services.map((s) => {
      const ns = s.metadata.namespace ?? 'default';
      const eps = i.slices
        .filter((sl) => (sl.metadata.namespace ?? 'default') === ns && sl.metadata.labels?.[SERVICE_NAME_LABEL] === s.metadata.name)
        .flatMap((sl) => (sl.endpoints ?? []).filter((e) => e.conditions?.ready !== false).flatMap((e) => e.addresses.map((a) => `${a}:${[...new Set((sl.ports ?? []).map((p) => p.port))].join('/')}`)));
      return [
        ns === 'default' ? s.metadata.name! : `${ns}/${s.metadata.name}`,
        s.spec?.type ?? 'ClusterIP', s.spec?.clusterIP ?? '-',
        (s.spec?.ports ?? []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`).join(','),
        s.spec?.sessionAffinity === 'ClientIP' ? 'ClientIP' : '-',
        eps.length ? [...new Set(eps)].sort().join(',') : '<none>',
      ];
    }),
  ]));
  return out.join('\n') + '\n';
}
