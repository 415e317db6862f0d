// Manifests to cluster objects: multi-document YAML or JSON, `kind: List` (what kubectl get -o
// yaml prints), v1 Services, discovery.k8s.io/v1 EndpointSlices and v1 Endpoints (mirrored into
// EndpointSlices the way Kubernetes' endpointslice mirroring controller does), and
// networking.k8s.io ServiceCIDRs.
import { parseAllDocuments, LineCounter } from 'yaml';
import type { ClusterState, EndpointSlice, EndpointSliceEndpoint, EndpointSlicePort, Node, Service, ServiceCIDR } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { familyOf } from '../util/ip.ts';

export class ManifestSyntaxError extends Error {
  constructor(readonly source: string, readonly line: number, readonly col: number, message: string) {
    super(`${source}:${line}:${col}: ${message}`);
  }
}

export interface LoadedManifests {
  cluster: ClusterState;
  nodes: Node[];
  warnings: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

interface V1EndpointAddress { ip?: string; nodeName?: string; hostname?: string }
interface V1Endpoints {
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  subsets?: Array<{ addresses?: V1EndpointAddress[]; notReadyAddresses?: V1EndpointAddress[]; ports?: Array<{ name?: string; port?: number; protocol?: string }> }>;
}

/** Mirrors a v1 Endpoints object into EndpointSlices: one per subset and address family. */
export function endpointsToSlices(ep: V1Endpoints): EndpointSlice[] {
  const name = ep.metadata?.name ?? '';
  const namespace = ep.metadata?.namespace ?? 'default';
  const out: EndpointSlice[] = [];
  (ep.subsets ?? []).forEach((subset, i) => {
    const ports: EndpointSlicePort[] = (subset.ports ?? []).map((p) => ({ name: p.name ?? '', port: p.port ?? null, protocol: p.protocol ?? 'TCP' }));
    const byFamily = new Map<string, EndpointSliceEndpoint[]>();
    const add = (a: V1EndpointAddress, ready: boolean) => {
      const fam = a.ip ? familyOf(a.ip) : null;
      const type = fam === 6 ? 'IPv6' : 'IPv4';
      const list = byFamily.get(type) ?? [];
      const e: EndpointSliceEndpoint = { addresses: [a.ip ?? ''], conditions: { ready } };
      if (a.nodeName) e.nodeName = a.nodeName;
      if (a.hostname) e.hostname = a.hostname;
      list.push(e);
      byFamily.set(type, list);
    };
    for (const a of subset.addresses ?? []) add(a, true);
    for (const a of subset.notReadyAddresses ?? []) add(a, false);
    for (const [addressType, endpoints] of byFamily) {
      out.push({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
        metadata: {
          name: `${name}-mirror-${i}${addressType === 'IPv6' ? '-v6' : ''}`, namespace,
          labels: { ...(ep.metadata?.labels ?? {}), [SERVICE_NAME_LABEL]: name, 'endpointslice.kubernetes.io/managed-by': 'endpointslicemirroring-controller.k8s.io' },
        },
        addressType, endpoints, ports,
      });
    }
  });
  return out;
}

/** Adds one object (or the items of a List) to the state. */
function addObject(o: unknown, where: string, acc: LoadedManifests): void {
  if (o === null || o === undefined) return;
  if (!isObj(o)) { acc.warnings.push(`${where}: not an object, ignored`); return; }
  const kind = o.kind;
  const apiVersion = String(o.apiVersion ?? '');
  if (kind === 'List' || (typeof kind === 'string' && kind.endsWith('List') && Array.isArray(o.items))) {
    const itemKind = kind === 'List' ? undefined : kind.slice(0, -4);
    (Array.isArray(o.items) ? o.items : []).forEach((item, i) => {
      const it = isObj(item) && itemKind && item.kind === undefined ? { ...item, kind: itemKind, apiVersion } : item;
      addObject(it, `${where} item ${i}`, acc);
    });
    return;
  }
  if (!isObj(o.metadata)) { acc.warnings.push(`${where}: ${String(kind)} without metadata, ignored`); return; }
  if (kind === 'Service' && (apiVersion === 'v1' || apiVersion === '')) acc.cluster.services.push(o as unknown as Service);
  else if (kind === 'EndpointSlice' && (apiVersion.startsWith('discovery.k8s.io/') || apiVersion === '')) acc.cluster.endpointSlices.push(o as unknown as EndpointSlice);
  else if (kind === 'Endpoints' && (apiVersion === 'v1' || apiVersion === '')) acc.cluster.endpointSlices.push(...endpointsToSlices(o as V1Endpoints));
  else if (kind === 'Node' && (apiVersion === 'v1' || apiVersion === '')) acc.nodes.push(o as unknown as Node);
  else if (kind === 'ServiceCIDR' && apiVersion.startsWith('networking.k8s.io/')) (acc.cluster.serviceCIDRs ??= []).push(o as unknown as ServiceCIDR);
  else acc.warnings.push(`${where}: ${apiVersion || '?'} ${String(kind ?? '(no kind)')} ${String((o.metadata as Obj).name ?? '')} is not used by knet rules, ignored`);
}

export function loadManifestText(text: string, source: string): LoadedManifests {
  const acc: LoadedManifests = { cluster: { services: [], endpointSlices: [] }, nodes: [], warnings: [] };
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    // JSON (kubectl -o json): parsed strictly so errors carry a line and column.
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      const m = /position (\d+)/.exec(String((e as Error).message));
      const pos = m ? Number(m[1]) : 0;
      const before = text.slice(0, pos).split('\n');
      throw new ManifestSyntaxError(source, before.length, before[before.length - 1]!.length + 1, (e as Error).message);
    }
    (Array.isArray(doc) ? doc : [doc]).forEach((d, i) => addObject(d, `${source} document ${i + 1}`, acc));
    return acc;
  }
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((d, i) => {
    const err = d.errors[0];
    if (err) {
      const at = lc.linePos(err.pos[0]);
      throw new ManifestSyntaxError(source, at.line, at.col, err.message.split('\n')[0]!);
    }
    addObject(d.toJS({ maxAliasCount: 100 }), `${source} document ${i + 1}`, acc);
  });
  return acc;
}

export function mergeManifests(parts: LoadedManifests[]): LoadedManifests {
  return {
    cluster: {
      services: parts.flatMap((p) => p.cluster.services),
      endpointSlices: parts.flatMap((p) => p.cluster.endpointSlices),
      ...(parts.some((p) => p.cluster.serviceCIDRs) ? { serviceCIDRs: parts.flatMap((p) => p.cluster.serviceCIDRs ?? []) } : {}),
    },
    nodes: parts.flatMap((p) => p.nodes),
    warnings: parts.flatMap((p) => p.warnings),
  };
}
