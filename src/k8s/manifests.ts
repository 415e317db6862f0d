// Manifests to cluster objects: multi-document YAML or JSON, `kind: List` (what kubectl get -o
// yaml prints), v1 Services, discovery.k8s.io/v1 EndpointSlices and v1 Endpoints (mirrored into
// EndpointSlices the way Kubernetes' endpointslice mirroring controller does), and
// networking.k8s.io ServiceCIDRs.
import type jsyamlModule from 'js-yaml';
import { jsYaml, readBlockYaml } from './block-yaml.ts';
import type { ClusterState, EndpointSlice, Node, Service, ServiceCIDR } from '../model/k8s.ts';
import { InvalidField, isRecord, nameText, objectLabel, printable, prop } from '../model/json.ts';
import { endpointsToSlices } from './endpoints-mirror.ts';

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
  const label = `${apiVersion ? printable(apiVersion, 60) : '?'} ${kind ? printable(kind, 60) : '(no kind)'}`;
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
  const docs = parseManifestText(text, source);
  docs.forEach((d, i) => addObject(d, `${source} document ${i + 1}`, acc));
  return acc;
}

/** Aliases may repeat a node, not multiply the document: beyond this many extra nodes it is an alias bomb. */
const ALIAS_SLACK = 10_000;

/**
 * The documents of a manifest file: JSON (kubectl -o json), or YAML read with js-yaml's core
 * schema (JSON's types, as Kubernetes reads YAML: no timestamps, no merge keys). js-yaml reads a
 * 5.7 MB `kubectl get -o yaml` in a fraction of the time the `yaml` package needs. Errors carry
 * file, line and column; so do alias bombs and recursive aliases, which js-yaml does not refuse
 * by itself (it shares aliased nodes, so expanding them would happen later, anywhere).
 */
export function parseManifestText(text: string, source: string): unknown[] {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    // JSON, parsed strictly so errors carry a line and column.
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      const m = /position (\d+)/.exec(String((e as Error).message));
      const pos = m ? Number(m[1]) : 0;
      const before = text.slice(0, pos).split('\n');
      throw new ManifestSyntaxError(source, before.length, before[before.length - 1]!.length + 1, printable((e as Error).message, 200));
    }
    return Array.isArray(doc) ? doc : [doc];
  }
  // Plain block YAML (what kubectl prints) has a reader of its own, many times faster; it
  // declines anything else, which js-yaml reads below.
  const plain = readBlockYaml(text);
  if (plain) return plain;
  // Aliases need a "*": without one in the text there is nothing to watch (the common case).
  const aliasLines: number[] = [];
  const opened: number[] = [];
  const listener = text.includes('*') ? (event: jsyamlModule.EventType, state: jsyamlModule.State) => {
    if (event === 'open') { opened.push(state.line); return; }
    const line = opened.pop()!;
    // A node that closes with no kind of its own is an alias to an earlier one.
    if (state.kind === null && typeof state.result === 'object' && state.result !== null) aliasLines.push(line + 1);
  } : undefined;
  let docs: unknown[];
  const jsyaml = jsYaml();
  try {
    docs = jsyaml.loadAll(text, undefined, { schema: jsyaml.CORE_SCHEMA, filename: source, ...(listener ? { listener } : {}) });
  } catch (e) {
    if (!(e instanceof jsyaml.YAMLException)) throw e;
    throw new ManifestSyntaxError(source, (e.mark?.line ?? 0) + 1, (e.mark?.column ?? 0) + 1, printable(e.reason || e.message, 200));
  }
  if (aliasLines.length > 0) {
    const problem = aliasProblem(docs);
    if (problem) throw new ManifestSyntaxError(source, aliasLines[0]!, 1, problem);
  }
  return docs;
}

/** Why the aliases of these documents cannot be used (a cycle, or an expansion far past the text), or null. */
function aliasProblem(docs: unknown[]): string | null {
  const sizes = new Map<object, number>();
  const open = new Set<object>();
  let cycle = false;
  // The size of a value with every alias expanded; each distinct node is walked once.
  const size = (v: unknown): number => {
    if (typeof v !== 'object' || v === null) return 1;
    const known = sizes.get(v);
    if (known !== undefined) return known;
    if (open.has(v)) { cycle = true; return 1; }
    open.add(v);
    let n = 1;
    for (const child of Array.isArray(v) ? v : Object.values(v)) n += size(child);
    open.delete(v);
    sizes.set(v, n);
    return n;
  };
  let expanded = 0;
  for (const d of docs) expanded += size(d);
  if (cycle) return 'an alias refers to a node that contains it (a recursive alias)';
  let distinct = 0;
  for (const v of sizes.keys()) distinct += 1 + (Array.isArray(v) ? v.length : Object.keys(v).length);
  if (expanded > 2 * distinct + ALIAS_SLACK) return `aliases expand the document to ${expanded} nodes (from ${distinct}): refused as a resource exhaustion attack`;
  return null;
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
