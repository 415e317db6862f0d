// From Services and EndpointSlices to the per-service-port view kube-proxy programs: one entry
// per (service, port) with its addresses, policies and the endpoints that match it. Pure; every
// object that fails validation is skipped with a warning naming the object and the field, so a
// bad manifest (or a bad API object) never stops the rest from rendering.
import type { ClusterState, EndpointSlice, Service, ServiceObjects } from '../model/k8s.ts';
import { indexCluster } from './cluster-index.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { joinHostPort, parseCIDR, parseIP } from '../util/ip.ts';
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
  /** This endpoint's part of its port's fingerprint. */
  fp: string;
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
const PROTOCOLS: Record<string, Protocol> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

class Invalid extends Error {
  constructor(readonly field: string, message: string) { super(message); }
}

function validPort(v: unknown, field: string, allowZero = false): number {
  if (v === undefined || v === null) {
    if (allowZero) return 0;
    throw new Invalid(field, 'is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    throw new Invalid(field, `must be a port number 1-65535, got ${JSON.stringify(v)}`);
  }
  return v;
}

function validProtocol(v: unknown, field: string): Protocol {
  const p = PROTOCOLS[String(v ?? 'TCP')];
  if (!p) throw new Invalid(field, `unknown protocol ${JSON.stringify(v)} (TCP, UDP, SCTP)`);
  return p;
}

function validName(v: unknown, re: RegExp, field: string): string {
  if (typeof v !== 'string' || !re.test(v)) throw new Invalid(field, `invalid name ${JSON.stringify(v)}`);
  return v;
}

function objectName(kind: string, meta: { namespace?: string; name?: string } | undefined): string {
  return `${kind} ${meta?.namespace ?? 'default'}/${meta?.name ?? '?'}`;
}

const familyNumber = (s: ProxySettings) => (s.family === 'IPv4' ? 4 : 6);

interface ServiceBase {
  service: string;
  ports: Omit<ServicePortInfo, 'endpoints' | 'fp'>[];
}

function isExternallyAccessible(svc: Service): boolean {
  const t = svc.spec?.type ?? 'ClusterIP';
  return t === 'LoadBalancer' || t === 'NodePort' || (t === 'ClusterIP' && (svc.spec?.externalIPs?.length ?? 0) > 0);
}

/** Validates one Service; null when the proxy has nothing to do for it (headless, ExternalName, other family). */
function serviceBase(svc: Service, settings: ProxySettings): ServiceBase | null {
  const meta = svc.metadata ?? {};
  const ns = validName(meta.namespace ?? 'default', DNS_LABEL, 'metadata.namespace');
  const name = validName(meta.name, DNS_LABEL, 'metadata.name');
  const spec = svc.spec ?? {};
  const type = spec.type ?? 'ClusterIP';
  if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type)) throw new Invalid('spec.type', `unknown type ${JSON.stringify(type)}`);
  if (type === 'ExternalName') return null;
  const fam = familyNumber(settings);
  // kube-proxy: the cluster IP of this proxier's family (clusterIPs[] first, else clusterIP).
  const ips = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP !== undefined ? [spec.clusterIP] : [];
  if (ips.length === 0 || ips[0] === 'None' || ips[0] === '') return null;
  let clusterIP: string | null = null;
  for (const [i, s] of ips.entries()) {
    const ip = parseIP(s);
    if (!ip) throw new Invalid(spec.clusterIPs?.length ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', `invalid IP ${JSON.stringify(s)}`);
    if (ip.family === fam && clusterIP === null) clusterIP = ip.text;
  }
  if (clusterIP === null) return null;

  const externalIPs: string[] = [];
  for (const [i, s] of (spec.externalIPs ?? []).entries()) {
    const ip = parseIP(typeof s === 'string' ? s.trim() : s);
    if (!ip) throw new Invalid(`spec.externalIPs[${i}]`, `invalid IP ${JSON.stringify(s)}`);
    if (ip.family === fam) externalIPs.push(ip.text);
  }
  const sourceRanges: string[] = [];
  for (const [i, s] of (spec.loadBalancerSourceRanges ?? []).entries()) {
    // kube-proxy trims blanks around source ranges (" 203.0.113.0/25" works).
    const c = parseCIDR(typeof s === 'string' ? s.trim() : s);
    if (!c) throw new Invalid(`spec.loadBalancerSourceRanges[${i}]`, `invalid CIDR ${JSON.stringify(s)}`);
    if (c.family === fam) sourceRanges.push(c.text);
  }
  const vips: string[] = [];
  for (const [i, ing] of (svc.status?.loadBalancer?.ingress ?? []).entries()) {
    if (!ing?.ip) continue;
    // Proxy-mode load balancers send traffic to node ports themselves; only VIP mode is captured.
    if (ing.ipMode !== undefined && ing.ipMode !== 'VIP') continue;
    const ip = parseIP(ing.ip);
    if (!ip) throw new Invalid(`status.loadBalancer.ingress[${i}].ip`, `invalid IP ${JSON.stringify(ing.ip)}`);
    if (ip.family === fam) vips.push(ip.text);
  }
  const affinity = spec.sessionAffinity ?? 'None';
  if (affinity !== 'None' && affinity !== 'ClientIP') throw new Invalid('spec.sessionAffinity', `must be None or ClientIP, got ${JSON.stringify(affinity)}`);
  let stickySeconds = 0;
  if (affinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 86400) {
      throw new Invalid('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `must be 1-86400, got ${JSON.stringify(t)}`);
    }
    stickySeconds = t;
  }
  for (const [field, v] of [['spec.externalTrafficPolicy', spec.externalTrafficPolicy], ['spec.internalTrafficPolicy', spec.internalTrafficPolicy]] as const) {
    if (v !== undefined && v !== 'Cluster' && v !== 'Local') throw new Invalid(field, `must be Cluster or Local, got ${JSON.stringify(v)}`);
  }
  const externallyAccessible = isExternallyAccessible(svc);
  const externalPolicyLocal = externallyAccessible && spec.externalTrafficPolicy === 'Local';
  const internalPolicyLocal = spec.internalTrafficPolicy === 'Local';
  let healthCheckNodePort = 0;
  if (type === 'LoadBalancer' && externalPolicyLocal) healthCheckNodePort = validPort(spec.healthCheckNodePort, 'spec.healthCheckNodePort', true);

  const service = `${ns}/${name}`;
  const ports: ServiceBase['ports'] = [];
  const seen = new Set<string>();
  for (const [i, p] of (spec.ports ?? []).entries()) {
    const portNameRaw = p.name ?? '';
    if (portNameRaw !== '') validName(portNameRaw, PORT_NAME, `spec.ports[${i}].name`);
    const protocol = validProtocol(p.protocol, `spec.ports[${i}].protocol`);
    const port = validPort(p.port, `spec.ports[${i}].port`);
    const nodePort = validPort(p.nodePort, `spec.ports[${i}].nodePort`, true);
    const portName = portNameRaw ? `${service}:${portNameRaw}` : service;
    const key = `${portName}/${protocol}`;
    if (seen.has(key)) throw new Invalid(`spec.ports[${i}]`, `duplicate port ${portNameRaw || '(unnamed)'}/${protocol}`);
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

function sliceView(slice: EndpointSlice, settings: ProxySettings): SliceView | null {
  const meta = slice.metadata ?? {};
  const ns = validName(meta.namespace ?? 'default', DNS_LABEL, 'metadata.namespace');
  validName(meta.name, DNS_SUBDOMAIN, 'metadata.name');
  const owner = meta.labels?.[SERVICE_NAME_LABEL];
  if (owner === undefined) return null; // not managed for a Service: kube-proxy ignores it
  validName(owner, DNS_LABEL, `metadata.labels["${SERVICE_NAME_LABEL}"]`);
  const at = slice.addressType ?? 'IPv4';
  if (at === 'FQDN') return null;
  if (at !== 'IPv4' && at !== 'IPv6') throw new Invalid('addressType', `must be IPv4, IPv6 or FQDN, got ${JSON.stringify(at)}`);
  const fam = familyNumber(settings);
  const ports: SliceView['ports'] = [];
  for (const [i, p] of (slice.ports ?? []).entries()) {
    const name = p.name ?? '';
    if (name !== '') validName(name, PORT_NAME, `ports[${i}].name`);
    const protocol = validProtocol(p.protocol, `ports[${i}].protocol`);
    if (p.port === undefined || p.port === null || p.port === 0) continue; // kube-proxy ignores ports without a number
    ports.push({ name, protocol, port: validPort(p.port, `ports[${i}].port`) });
  }
  const endpoints: SliceEndpoint[] = [];
  for (const [i, ep] of (slice.endpoints ?? []).entries()) {
    const first = ep?.addresses?.[0];
    if (first === undefined) continue;
    const ip = parseIP(first);
    if (!ip) throw new Invalid(`endpoints[${i}].addresses[0]`, `invalid IP ${JSON.stringify(first)}`);
    if (ip.family !== fam) continue;
    const c = ep.conditions ?? {};
    const ready = c.ready === undefined || c.ready === null ? true : c.ready === true;
    const serving = c.serving === undefined || c.serving === null ? ready : c.serving === true;
    const terminating = c.terminating === true;
    endpoints.push({ ip: ip.text, isLocal: !!ep.nodeName && ep.nodeName === settings.nodeName, ready, serving, terminating });
  }
  return { service: `${ns}/${owner}`, ports, endpoints };
}

/** Everything about a port that changes its rules, as one string (cheaper than JSON at 10k services). */
function endpointInfos(view: SliceView, p: SliceView['ports'][number]): EndpointInfo[] {
  const portName = p.name ? `${view.service}:${p.name}` : view.service;
  return view.endpoints.map((ep) => {
    const addr = joinHostPort(ep.ip, p.port);
    const fp = `${addr}${ep.isLocal ? 'L' : ''}${ep.ready ? 'R' : ''}${ep.serving ? 'S' : ''}${ep.terminating ? 'T' : ''}`;
    return { ip: ep.ip, port: p.port, addr, isLocal: ep.isLocal, ready: ep.ready, serving: ep.serving, terminating: ep.terminating, chain: endpointChain(portName, p.protocol, addr), fp };
  });
}

function portFingerprint(p: Omit<ServicePortInfo, 'fp'>): string {
  const eps = p.endpoints.map((e) => e.fp).join(',');
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

function warningFor(object: string, e: unknown): RenderWarning {
  if (e instanceof Invalid) return { object, field: e.field, message: `${e.field} ${e.message}` };
  throw e;
}

const sliceName = (x: EndpointSlice) => x.metadata?.name ?? '';

/** Models one service from its Service (if any) and its EndpointSlices. */
export function modelService(objs: ServiceObjects, settings: ProxySettings): ServiceEntry {
  const warnings: RenderWarning[] = [];
  let base: ServiceBase | null = null;
  if (objs.service) {
    try {
      base = serviceBase(objs.service, settings);
    } catch (e) { warnings.push(warningFor(objectName('Service', objs.service.metadata), e)); }
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
      view = sliceView(slice, settings);
    } catch (e) { warnings.push(warningFor(objectName('EndpointSlice', slice.metadata), e)); continue; }
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

export function duplicateWarnings(duplicates: readonly Service[]): RenderWarning[] {
  return duplicates.map((s) => ({ object: objectName('Service', s.metadata), field: 'metadata.name', message: 'duplicate Service; the later one wins' }));
}

export function buildServiceModel(cluster: ClusterState, settings: ProxySettings): ServiceModel {
  let index = cluster.index;
  const warnings: RenderWarning[] = [];
  if (!index) {
    const indexed = indexCluster(cluster);
    index = indexed.index;
    warnings.push(...duplicateWarnings(indexed.duplicates));
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
