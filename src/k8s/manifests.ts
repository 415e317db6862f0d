// Manifests to cluster objects: multi-document YAML or JSON, `kind: List` (what kubectl get -o
// yaml prints), v1 Services, discovery.k8s.io/v1 EndpointSlices and v1 Endpoints (mirrored into
// EndpointSlices the way Kubernetes' endpointslice mirroring controller does), and
// networking.k8s.io ServiceCIDRs.
import { parseAllDocuments, LineCounter } from 'yaml';
import type { ClusterState, EndpointSlice, EndpointSliceEndpoint, EndpointSlicePort, Node, Service, ServiceCIDR } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { describe, InvalidField, isRecord, nameText, objectLabel, objectList, optObject, optString, printable, prop } from '../model/json.ts';
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

/**
 * Mirrors a v1 Endpoints object of any shape into EndpointSlices: one per subset and address
 * family. Throws InvalidField (naming the Endpoints' field) when its shape is wrong; the values
 * (IPs, ports, names) are checked where every slice is, in the service model.
 */
export function endpointsToSlices(ep: unknown): EndpointSlice[] {
  const meta = optObject(prop(ep, 'metadata'), 'metadata');
  const name = optString(prop(meta, 'name'), 'metadata.name') ?? '';
  const namespace = optString(prop(meta, 'namespace'), 'metadata.namespace') ?? 'default';
  const labels = optObject(prop(meta, 'labels'), 'metadata.labels');
  const out: EndpointSlice[] = [];
  objectList(prop(ep, 'subsets'), 'subsets').forEach((subset, i) => {
    const field = `subsets[${i}]`;
    const ports: EndpointSlicePort[] = objectList(prop(subset, 'ports'), `${field}.ports`).map((p, j) => {
      const port = prop(p, 'port') ?? null;
      if (port !== null && typeof port !== 'number') throw new InvalidField(`${field}.ports[${j}].port`, `must be a number, got ${describe(port)}`);
      return {
        name: optString(prop(p, 'name'), `${field}.ports[${j}].name`) ?? '', port,
        protocol: optString(prop(p, 'protocol'), `${field}.ports[${j}].protocol`) ?? 'TCP',
      };
    });
    const byFamily = new Map<string, EndpointSliceEndpoint[]>();
    const add = (list: string, ready: boolean) => objectList(prop(subset, list), `${field}.${list}`).forEach((a, j) => {
      const ip = optString(prop(a, 'ip'), `${field}.${list}[${j}].ip`) ?? '';
      const nodeName = optString(prop(a, 'nodeName'), `${field}.${list}[${j}].nodeName`);
      const hostname = optString(prop(a, 'hostname'), `${field}.${list}[${j}].hostname`);
      const type = familyOf(ip) === 6 ? 'IPv6' : 'IPv4';
      let group = byFamily.get(type);
      if (!group) byFamily.set(type, (group = []));
      const e: EndpointSliceEndpoint = { addresses: [ip], conditions: { ready } };
      if (nodeName) e.nodeName = nodeName;
      if (hostname) e.hostname = hostname;
      group.push(e);
    });
    add('addresses', true);
    add('notReadyAddresses', false);
    for (const [addressType, endpoints] of byFamily) {
      out.push({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
        metadata: {
          name: `${name}-mirror-${i}${addressType === 'IPv6' ? '-v6' : ''}`, namespace,
          labels: { ...(labels as Record<string, string> | undefined), [SERVICE_NAME_LABEL]: name, 'endpointslice.kubernetes.io/managed-by': 'endpointslicemirroring-controller.k8s.io' },
        },
        addressType, endpoints, ports,
      });
    }
  });
  return out;
}

/** apiVersion and kind as strings ("" when absent or not a string: such an object is reported, not used). */
const text = (v: unknown) => (typeof v === 'string' ? v : '');

/** Adds one object (or the items of a List) to the state. */
function addObject(o: unknown, where: string, acc: LoadedManifests): void {
  if (o === null || o === undefined) return;
  if (!isRecord(o)) { acc.warnings.push(`${where}: not an object, ignored`); return; }
  const kind = text(prop(o, 'kind'));
  const apiVersion = text(prop(o, 'apiVersion'));
  const items = prop(o, 'items');
  if (kind === 'List' || (kind.endsWith('List') && Array.isArray(items))) {
    const itemKind = kind === 'List' ? undefined : kind.slice(0, -4);
    (Array.isArray(items) ? items : []).forEach((item, i) => {
      const it = isRecord(item) && itemKind && prop(item, 'kind') === undefined ? { ...item, kind: itemKind, apiVersion } : item;
      addObject(it, `${where} item ${i}`, acc);
    });
    return;
  }
  const label = `${apiVersion || '?'} ${kind ? printable(kind, 60) : '(no kind)'}`;
  if (!isRecord(prop(o, 'metadata'))) { acc.warnings.push(`${where}: ${label} without metadata, ignored`); return; }
  const core = apiVersion === 'v1' || apiVersion === '';
  if (kind === 'Service' && core) acc.cluster.services.push(o as unknown as Service);
  else if (kind === 'EndpointSlice' && (apiVersion.startsWith('discovery.k8s.io/') || apiVersion === '')) acc.cluster.endpointSlices.push(o as unknown as EndpointSlice);
  else if (kind === 'Endpoints' && core) {
    try {
      acc.cluster.endpointSlices.push(...endpointsToSlices(o));
    } catch (e) {
      if (!(e instanceof InvalidField)) throw e;
      acc.warnings.push(`${where}: ${objectLabel('Endpoints', prop(o, 'metadata'))} skipped: ${e.field} ${e.message}`);
    }
  } else if (kind === 'Node' && core) acc.nodes.push(o as unknown as Node);
  else if (kind === 'ServiceCIDR' && apiVersion.startsWith('networking.k8s.io/')) (acc.cluster.serviceCIDRs ??= []).push(o as unknown as ServiceCIDR);
  else acc.warnings.push(`${where}: ${label} ${nameText(prop(prop(o, 'metadata'), 'name'), '')} is not used by knet rules, ignored`);
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
