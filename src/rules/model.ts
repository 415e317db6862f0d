// From Services and EndpointSlices to the per-service-port view kube-proxy programs: one entry
// per (service, port) with its addresses, policies and the endpoints that match it. Pure; every
// object that fails validation is skipped with a warning naming the object and the field, so a
// bad manifest (or a bad API object) never stops the rest from rendering.
import type { ClusterState, ServiceObjects } from '../model/k8s.ts';
import { indexCluster, type IndexedCluster } from './cluster-index.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { describe, InvalidField, objectLabel, objectList, optBool, optObject, optString, prop, stringList } from '../model/json.ts';
import { joinHostPort, parseCIDR, parseIP, refusedEndpointRange } from '../util/ip.ts';
import { endpointChain, servicePortChains, type ServicePortChains } from './names.ts';
import type { ProxySettings, RenderWarning } from './types.ts';

export type Protocol = 'tcp' | 'udp' | 'sctp';

export interface EndpointInfo {
  ip: string;
  port: number;
  /** "ip:port" ("[ip]:port" for IPv6), as kube-proxy prints it. */
  addr: string;
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  chain: string;
}

export interface ServicePortInfo {
  /** "ns/name" */
  service: string;
  /** "ns/name:port" or "ns/name" for an unnamed port */
  portName: string;
  protocol: Protocol;
  clusterIP: string;
  port: number;
  nodePort: number;
  externalIPs: string[];
  loadBalancerVIPs: string[];
  loadBalancerSourceRanges: string[];
  clientIPAffinity: boolean;
  stickySeconds: number;
  internalPolicyLocal: boolean;
  externalPolicyLocal: boolean;
  healthCheckNodePort: number;
  chains: ServicePortChains;
  /** Every endpoint of this port, sorted by "ip:port" (kube-proxy's order). */
  endpoints: EndpointInfo[];
  /** Everything above as one string: equal fingerprints render equal rules. */
  fp: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SERVICE_TYPES = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);

function validPort(v: unknown, field: string, allowZero = false): number {
  if (v === undefined || v === null) {
    if (allowZero) return 0;
    throw new InvalidField(field, 'is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    throw new InvalidField(field, `must be a port number 1-65535, got ${describe(v)}`);
  }
  return v;
}

/** A protocol name; a switch, not a lookup table, so "constructor" or "__proto__" is no protocol. */
function validProtocol(v: unknown, field: string): Protocol {
  switch (v ?? 'TCP') {
    case 'TCP': return 'tcp';
    case 'UDP': return 'udp';
    case 'SCTP': return 'sctp';
    default: throw new InvalidField(field, `unknown protocol ${describe(v)} (TCP, UDP, SCTP)`);
  }
}

function validName(v: unknown, re: RegExp, field: string): string {
  if (v === undefined || v === null) throw new InvalidField(field, 'is required');
  if (typeof v !== 'string' || !re.test(v)) throw new InvalidField(field, `invalid name ${describe(v)}`);
  return v;
}

const familyNumber = (s: ProxySettings) => (s.family === 'IPv4' ? 4 : 6);

/** The IPs of one family from a list of address strings (blanks around them trimmed, as kube-proxy does). */
function addressesOfFamily(list: readonly string[], field: string, fam: number, parse: typeof parseIP | typeof parseCIDR, what: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i++) {
    const a = parse(list[i]!.trim());
    if (!a) throw new InvalidField(`${field}[${i}]`, `invalid ${what} ${describe(list[i])}`);
    if (a.family === fam) out.push(a.text);
  }
  return out;
}

interface ServiceBase {
  service: string;
  ports: Omit<ServicePortInfo, 'endpoints' | 'fp'>[];
}

/**
 * Validates one Service of any shape; null when the proxy has nothing to do for it (headless,
 * ExternalName, other family). Every field is type-checked where it is read.
 */
function serviceBase(svc: unknown, settings: ProxySettings): ServiceBase | null {
  const meta = optObject(prop(svc, 'metadata'), 'metadata');
  const ns = validName(prop(meta, 'namespace') ?? 'default', DNS_LABEL, 'metadata.namespace');
  const name = validName(prop(meta, 'name'), DNS_LABEL, 'metadata.name');
  const spec = optObject(prop(svc, 'spec'), 'spec');
  const type = optString(prop(spec, 'type'), 'spec.type') ?? 'ClusterIP';
  if (!SERVICE_TYPES.has(type)) throw new InvalidField('spec.type', `unknown type ${describe(type)}`);
  if (type === 'ExternalName') return null;
  const fam = familyNumber(settings);
  // kube-proxy: the cluster IP of this proxier's family (clusterIPs[] first, else clusterIP).
  const clusterIPs = stringList(prop(spec, 'clusterIPs'), 'spec.clusterIPs');
  const single = optString(prop(spec, 'clusterIP'), 'spec.clusterIP');
  const ips = clusterIPs.length ? clusterIPs : single !== undefined ? [single] : [];
  if (ips.length === 0 || ips[0] === 'None' || ips[0] === '') return null;
  let clusterIP: string | null = null;
  for (let i = 0; i < ips.length; i++) {
    const ip = parseIP(ips[i]);
    if (!ip) throw new InvalidField(clusterIPs.length ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', `invalid IP ${describe(ips[i])}`);
    if (ip.family === fam && clusterIP === null) clusterIP = ip.text;
  }
  if (clusterIP === null) return null;

  const externalIPList = stringList(prop(spec, 'externalIPs'), 'spec.externalIPs');
  const externalIPs = addressesOfFamily(externalIPList, 'spec.externalIPs', fam, parseIP, 'IP');
  const sourceRanges = addressesOfFamily(stringList(prop(spec, 'loadBalancerSourceRanges'), 'spec.loadBalancerSourceRanges'), 'spec.loadBalancerSourceRanges', fam, parseCIDR, 'CIDR');
  const vips: string[] = [];
  const status = optObject(prop(svc, 'status'), 'status');
  const lb = optObject(prop(status, 'loadBalancer'), 'status.loadBalancer');
  const ingress = objectList(prop(lb, 'ingress'), 'status.loadBalancer.ingress');
  for (let i = 0; i < ingress.length; i++) {
    const field = `status.loadBalancer.ingress[${i}]`;
    const ipText = optString(prop(ingress[i], 'ip'), `${field}.ip`);
    const ipMode = optString(prop(ingress[i], 'ipMode'), `${field}.ipMode`);
    if (!ipText) continue;
    // Proxy-mode load balancers send traffic to node ports themselves; only VIP mode is captured.
    if (ipMode !== undefined && ipMode !== 'VIP') continue;
    const ip = parseIP(ipText);
    if (!ip) throw new InvalidField(`${field}.ip`, `invalid IP ${describe(ipText)}`);
    if (ip.family === fam) vips.push(ip.text);
  }
  const affinity = optString(prop(spec, 'sessionAffinity'), 'spec.sessionAffinity') ?? 'None';
  if (affinity !== 'None' && affinity !== 'ClientIP') throw new InvalidField('spec.sessionAffinity', `must be None or ClientIP, got ${describe(affinity)}`);
  let stickySeconds = 0;
  if (affinity === 'ClientIP') {
    const config = optObject(prop(spec, 'sessionAffinityConfig'), 'spec.sessionAffinityConfig');
    const clientIP = optObject(prop(config, 'clientIP'), 'spec.sessionAffinityConfig.clientIP');
    const t = prop(clientIP, 'timeoutSeconds') ?? 10800;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 86400) {
      throw new InvalidField('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `must be 1-86400, got ${describe(t)}`);
    }
    stickySeconds = t;
  }
  const policy = (field: string) => {
    const v = optString(prop(spec, field), `spec.${field}`);
    if (v !== undefined && v !== 'Cluster' && v !== 'Local') throw new InvalidField(`spec.${field}`, `must be Cluster or Local, got ${describe(v)}`);
    return v;
  };
  const externalPolicy = policy('externalTrafficPolicy');
  const internalPolicy = policy('internalTrafficPolicy');
  const externallyAccessible = type === 'LoadBalancer' || type === 'NodePort' || externalIPList.length > 0;
  const externalPolicyLocal = externallyAccessible && externalPolicy === 'Local';
  const internalPolicyLocal = internalPolicy === 'Local';
  let healthCheckNodePort = 0;
  if (type === 'LoadBalancer' && externalPolicyLocal) healthCheckNodePort = validPort(prop(spec, 'healthCheckNodePort'), 'spec.healthCheckNodePort', true);

  const service = `${ns}/${name}`;
  const ports: ServiceBase['ports'] = [];
  const seen = new Set<string>();
  const specPorts = objectList(prop(spec, 'ports'), 'spec.ports');
  for (let i = 0; i < specPorts.length; i++) {
    const p = specPorts[i]!;
    const portNameRaw = optString(prop(p, 'name'), `spec.ports[${i}].name`) ?? '';
    if (portNameRaw !== '') validName(portNameRaw, PORT_NAME, `spec.ports[${i}].name`);
    const protocol = validProtocol(prop(p, 'protocol'), `spec.ports[${i}].protocol`);
    const port = validPort(prop(p, 'port'), `spec.ports[${i}].port`);
    const nodePort = validPort(prop(p, 'nodePort'), `spec.ports[${i}].nodePort`, true);
    const portName = portNameRaw ? `${service}:${portNameRaw}` : service;
    const key = `${portName}/${protocol}`;
    if (seen.has(key)) throw new InvalidField(`spec.ports[${i}]`, `duplicate port ${portNameRaw || '(unnamed)'}/${protocol}`);
    seen.add(key);
    ports.push({
      service, portName, protocol, clusterIP, port, nodePort,
      externalIPs, loadBalancerVIPs: vips, loadBalancerSourceRanges: sourceRanges,
      clientIPAffinity: affinity === 'ClientIP', stickySeconds,
      internalPolicyLocal, externalPolicyLocal, healthCheckNodePort,
      chains: servicePortChains(portName, protocol),
    });
  }
  return { service, ports };
}

interface SliceEndpoint {
  ip: string;
  isLocal: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

interface SliceView {
  service: string;
  ports: Array<{ name: string; protocol: Protocol; port: number }>;
  endpoints: SliceEndpoint[];
}

/** Validates one EndpointSlice of any shape; null when it is not a Service's or not of this family. */
function sliceView(slice: unknown, settings: ProxySettings, warnings: RenderWarning[]): SliceView | null {
  const meta = optObject(prop(slice, 'metadata'), 'metadata');
  const ns = validName(prop(meta, 'namespace') ?? 'default', DNS_LABEL, 'metadata.namespace');
  validName(prop(meta, 'name'), DNS_SUBDOMAIN, 'metadata.name');
  const labelsField = 'metadata.labels';
  const owner = prop(optObject(prop(meta, 'labels'), labelsField), SERVICE_NAME_LABEL);
  if (owner === undefined) return null; // not managed for a Service: kube-proxy ignores it
  validName(owner, DNS_LABEL, `${labelsField}["${SERVICE_NAME_LABEL}"]`);
  const at = optString(prop(slice, 'addressType'), 'addressType') ?? 'IPv4';
  if (at === 'FQDN') return null;
  if (at !== 'IPv4' && at !== 'IPv6') throw new InvalidField('addressType', `must be IPv4, IPv6 or FQDN, got ${describe(at)}`);
  const fam = familyNumber(settings);
  const ports: SliceView['ports'] = [];
  const slicePorts = objectList(prop(slice, 'ports'), 'ports');
  for (let i = 0; i < slicePorts.length; i++) {
    const p = slicePorts[i]!;
    const name = optString(prop(p, 'name'), `ports[${i}].name`) ?? '';
    if (name !== '') validName(name, PORT_NAME, `ports[${i}].name`);
    const protocol = validProtocol(prop(p, 'protocol'), `ports[${i}].protocol`);
    const port = prop(p, 'port');
    if (port === undefined || port === null || port === 0) continue; // kube-proxy ignores ports without a number
    ports.push({ name, protocol, port: validPort(port, `ports[${i}].port`) });
  }
  // Shapes first, for every endpoint: a mistyped field skips the whole slice.
  const list = objectList(prop(slice, 'endpoints'), 'endpoints');
  const shapes = list.map((ep, i) => {
    const field = `endpoints[${i}]`;
    const conditions = optObject(prop(ep, 'conditions'), `${field}.conditions`);
    return {
      addresses: stringList(prop(ep, 'addresses'), `${field}.addresses`),
      ready: optBool(prop(conditions, 'ready'), `${field}.conditions.ready`),
      serving: optBool(prop(conditions, 'serving'), `${field}.conditions.serving`),
      terminating: optBool(prop(conditions, 'terminating'), `${field}.conditions.terminating`) ?? false,
      nodeName: optString(prop(ep, 'nodeName'), `${field}.nodeName`),
    };
  });
  const service = `${ns}/${owner as string}`;
  const endpoints: SliceEndpoint[] = [];
  for (let i = 0; i < shapes.length; i++) {
    const ep = shapes[i]!;
    const first = ep.addresses[0];
    if (first === undefined) continue;
    // An address the API would refuse skips this endpoint only; the slice's others still serve.
    const ip = parseIP(first);
    const problem = ip ? refusedEndpointRange(ip) : `invalid IP ${describe(first)}`;
    if (problem) {
      const field = `endpoints[${i}].addresses[0]`;
      warnings.push({ object: objectLabel('EndpointSlice', meta), field, message: `${field} ${problem}; endpoint skipped` });
      continue;
    }
    if (ip!.family !== fam) continue;
    const ready = ep.ready ?? true;
    endpoints.push({ ip: ip!.text, isLocal: !!ep.nodeName && ep.nodeName === settings.nodeName, ready, serving: ep.serving ?? ready, terminating: ep.terminating });
  }
  return { service, ports, endpoints };
}

/** The port's endpoints as the model keeps them, each with its kube-proxy chain name. */
function endpointInfos(view: SliceView, p: SliceView['ports'][number]): EndpointInfo[] {
  const portName = p.name ? `${view.service}:${p.name}` : view.service;
  return view.endpoints.map((ep) => {
    const addr = joinHostPort(ep.ip, p.port);
    return { ip: ep.ip, port: p.port, addr, isLocal: ep.isLocal, ready: ep.ready, serving: ep.serving, terminating: ep.terminating, chain: endpointChain(portName, p.protocol, addr) };
  });
}

/**
 * An endpoint's part of its port's fingerprint. Built when the fingerprint is, not kept: as a
 * field, 30k endpoints' rope strings were 5 MB the GC copied on every cold render.
 */
const endpointFingerprint = (e: EndpointInfo) => `${e.addr}${e.isLocal ? 'L' : ''}${e.ready ? 'R' : ''}${e.serving ? 'S' : ''}${e.terminating ? 'T' : ''}`;

/** Everything about a port that changes its rules, as one string (cheaper than JSON at 10k services). */
function portFingerprint(p: Omit<ServicePortInfo, 'fp'>): string {
  const eps = p.endpoints.map(endpointFingerprint).join(',');
  return [p.portName, p.protocol, p.clusterIP, p.port, p.nodePort, p.externalIPs.join(','), p.loadBalancerVIPs.join(','),
    p.loadBalancerSourceRanges.join(','), p.clientIPAffinity ? p.stickySeconds : '-', p.internalPolicyLocal ? 'IL' : '', p.externalPolicyLocal ? 'EL' : '',
    p.healthCheckNodePort, eps].join(';');
}

export interface ServiceModel {
  /** Service ports in a stable order: by service name, then the Service's port order. */
  ports: ServicePortInfo[];
  /** Per "ns/name": a fingerprint of everything rendered for it (change detection for partial syncs). */
  fingerprints: Map<string, string>;
  warnings: RenderWarning[];
}

/** One service's part of the model: what the renderer keeps per service between renders. */
export interface ServiceEntry {
  ports: ServicePortInfo[];
  /**
   * 'service': a valid Service (even without ports); 'endpoints-only': endpoints for a Service
   * that is missing or invalid (still a change when they come or go); null: nothing.
   */
  kind: 'service' | 'endpoints-only' | null;
  warnings: RenderWarning[];
  /** Endpoints over all ports (kube-proxy's large-cluster threshold counts these). */
  endpointCount: number;
}

/**
 * The warning for an object that could not be modelled. An error that is not an InvalidField
 * is a gap in validation: it still skips only this object (one bad object must never stop every
 * sync), and says so; the fuzz tests check that it never happens.
 */
function warningFor(object: string, e: unknown): RenderWarning {
  if (e instanceof InvalidField) return { object, field: e.field, message: `${e.field} ${e.message}` };
  return { object, field: '(unchecked)', message: `could not be read: ${describe(e instanceof Error ? e.message : e)}` };
}

function sliceName(slice: unknown): string {
  const name = prop(prop(slice, 'metadata'), 'name');
  return typeof name === 'string' ? name : '';
}

/** Models one service from its Service (if any) and its EndpointSlices. */
export function modelService(objs: ServiceObjects, settings: ProxySettings): ServiceEntry {
  const warnings: RenderWarning[] = [];
  let base: ServiceBase | null = null;
  if (objs.service) {
    try {
      base = serviceBase(objs.service, settings);
    } catch (e) { warnings.push(warningFor(objectLabel('Service', prop(objs.service, 'metadata')), e)); }
  }

  // Endpoints per (port name, protocol), deduplicated by ip:port as kube-proxy does: a copy that
  // is not terminating replaces an earlier one, a terminating copy never does, so a pod IP the
  // network reused while the old pod still terminates serves the new pod.
  const byPort = new Map<string, Map<string, EndpointInfo>>();
  const slices = objs.slices.length > 1
    ? [...objs.slices].sort((a, b) => (sliceName(a) < sliceName(b) ? -1 : sliceName(a) > sliceName(b) ? 1 : 0))
    : objs.slices;
  for (const slice of slices) {
    let view: SliceView | null;
    try {
      view = sliceView(slice, settings, warnings);
    } catch (e) { warnings.push(warningFor(objectLabel('EndpointSlice', prop(slice, 'metadata')), e)); continue; }
    if (!view) continue;
    const infos = view.ports.map((p) => endpointInfos(view!, p));
    view.ports.forEach((p, i) => {
      const portName = p.name ? `${view!.service}:${p.name}` : view!.service;
      const key = `${portName}/${p.protocol}`;
      let set = byPort.get(key);
      if (!set) byPort.set(key, (set = new Map()));
      for (const info of infos[i]!) {
        if (info.terminating && set.has(info.addr)) continue;
        set.set(info.addr, info);
      }
    });
  }

  // Endpoints without a Service still count as a change when they come or go.
  if (!base) return { ports: [], kind: byPort.size > 0 ? 'endpoints-only' : null, warnings, endpointCount: 0 };
  const ports: ServicePortInfo[] = [];
  let endpointCount = 0;
  for (const p of base.ports) {
    const set = byPort.get(`${p.portName}/${p.protocol}`);
    const endpoints = set ? [...set.values()].sort((x, y) => (x.addr < y.addr ? -1 : x.addr > y.addr ? 1 : 0)) : [];
    const info: ServicePortInfo = {
      service: p.service, portName: p.portName, protocol: p.protocol, clusterIP: p.clusterIP, port: p.port, nodePort: p.nodePort,
      externalIPs: p.externalIPs, loadBalancerVIPs: p.loadBalancerVIPs, loadBalancerSourceRanges: p.loadBalancerSourceRanges,
      clientIPAffinity: p.clientIPAffinity, stickySeconds: p.stickySeconds, internalPolicyLocal: p.internalPolicyLocal,
      externalPolicyLocal: p.externalPolicyLocal, healthCheckNodePort: p.healthCheckNodePort, chains: p.chains, endpoints, fp: '',
    };
    info.fp = portFingerprint(info);
    endpointCount += endpoints.length;
    ports.push(info);
  }
  return { ports, kind: 'service', warnings, endpointCount };
}

/** Objects of the same kind and name: the later one wins (as in the proxy, which keeps one per name). */
export function duplicateWarnings(indexed: IndexedCluster): RenderWarning[] {
  const warn = (kind: string) => (o: unknown): RenderWarning =>
    ({ object: objectLabel(kind, prop(o, 'metadata')), field: 'metadata.name', message: `duplicate ${kind}; the later one wins` });
  return [...indexed.duplicates.map(warn('Service')), ...indexed.duplicateSlices.map(warn('EndpointSlice'))];
}

export function buildServiceModel(cluster: ClusterState, settings: ProxySettings): ServiceModel {
  let index = cluster.index;
  const warnings: RenderWarning[] = [];
  if (!index) {
    const indexed = indexCluster(cluster);
    index = indexed.index;
    warnings.push(...duplicateWarnings(indexed));
  }
  const ports: ServicePortInfo[] = [];
  const fingerprints = new Map<string, string>();
  for (const key of [...index.keys()].sort()) {
    const e = modelService(index.get(key)!, settings);
    warnings.push(...e.warnings);
    ports.push(...e.ports);
    if (e.kind === 'service') fingerprints.set(key, e.ports.map((x) => x.fp).join('|'));
    else if (e.kind === 'endpoints-only') fingerprints.set(key, 'endpoints-only');
  }
  return { ports, fingerprints, warnings };
}

/** A service whose objects a stateful renderer saw change: before (with the settings then) and after. */
export interface ServiceChange {
  before?: { objs: ServiceObjects; settings: ProxySettings };
  after?: ServiceObjects;
}

/**
 * The ports, before and after, of changed services (conntrack clean-up), modelled when asked
 * for: the renderers keep objects, not models. Both renderers report their changes this way.
 */
export function portsOfChanges(changes: readonly ServiceChange[], settings: ProxySettings | null): { before: ServicePortInfo[]; after: ServicePortInfo[] } {
  const before: ServicePortInfo[] = [];
  const after: ServicePortInfo[] = [];
  for (const c of changes) {
    if (c.before) before.push(...modelService(c.before.objs, c.before.settings).ports);
    if (c.after && settings) after.push(...modelService(c.after, settings).ports);
  }
  return { before, after };
}
