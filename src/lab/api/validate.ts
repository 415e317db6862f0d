// Validation as kube-apiserver does it for the six served kinds (pure): every field knet reads
// (names, ports, protocols, addresses, CIDRs, traffic policies, affinity, node pod CIDRs) and
// the update rules (immutable ClusterIP, pod CIDRs set once, pod spec fixed). Each problem is a
// field error; the server answers 422 Invalid with all of them, named by field.
import { cidrContains, parseCIDR, parseIP } from '../../util/ip.ts';
import type { FieldError } from './errors.ts';
import type { ResourceName } from './resources.ts';

type Obj = Record<string, any>;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

const MSG = {
  label: 'a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \'-\', and must start and end with an alphanumeric character (e.g. \'my-name\',  or \'123-abc\', regex used for validation is \'[a-z0-9]([-a-z0-9]*[a-z0-9])?\')',
  subdomain: 'a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \'-\' or \'.\', and must start and end with an alphanumeric character (e.g. \'example.com\', regex used for validation is \'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\')',
  dns1035: 'a DNS-1035 label must consist of lower case alphanumeric characters or \'-\', start with an alphabetic character, and end with an alphanumeric character (e.g. \'my-name\',  or \'abc-123\', regex used for validation is \'[a-z]([-a-z0-9]*[a-z0-9])?\')',
  port: 'must be between 1 and 65535, inclusive',
  ip: 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
  cidr: 'must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)',
};

class Errors {
  readonly list: FieldError[] = [];
  invalid(field: string, value: unknown, detail: string): void { this.list.push({ type: 'Invalid', field, value, detail }); }
  required(field: string, detail?: string): void { this.list.push(detail ? { type: 'Required', field, detail } : { type: 'Required', field }); }
  notSupported(field: string, value: unknown, allowed: string[]): void {
    this.list.push({ type: 'NotSupported', field, value, detail: `supported values: ${allowed.map((a) => JSON.stringify(a)).join(', ')}` });
  }
  duplicate(field: string, value: unknown): void { this.list.push({ type: 'Duplicate', field, value }); }
  forbidden(field: string, detail: string): void { this.list.push({ type: 'Forbidden', field, detail }); }
  tooMany(field: string, max: number): void { this.list.push({ type: 'TooMany', field, detail: `must have at most ${max} items` }); }
  tooLong(field: string, max: number): void { this.list.push({ type: 'TooLong', field, detail: `must have at most ${max} bytes` }); }
}

function checkLabel(e: Errors, field: string, v: string): void {
  if (v.length > 63) e.invalid(field, v, 'must be no more than 63 characters');
  else if (!DNS1123_LABEL.test(v)) e.invalid(field, v, MSG.label);
}

function checkSubdomain(e: Errors, field: string, v: string): void {
  if (v.length > 253) e.invalid(field, v, 'must be no more than 253 characters');
  else if (!DNS1123_SUBDOMAIN.test(v)) e.invalid(field, v, MSG.subdomain);
}

function checkQualifiedName(e: Errors, field: string, key: string): void {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : null;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== null && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) e.invalid(field, key, `prefix part ${MSG.subdomain}`);
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME_PART.test(name)) {
    e.invalid(field, key, 'name part must consist of alphanumeric characters, \'-\', \'_\' or \'.\', and must start and end with an alphanumeric character (e.g. \'MyName\',  or \'my.name\',  or \'123-abc\', regex used for validation is \'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\')');
  }
}

function checkLabels(e: Errors, field: string, labels: Obj | undefined): void {
  for (const [k, v] of Object.entries(labels ?? {})) {
    checkQualifiedName(e, field, k);
    if (typeof v === 'string' && (v.length > 63 || !LABEL_VALUE.test(v))) {
      e.invalid(field, v, 'a valid label must be an empty string or consist of alphanumeric characters, \'-\', \'_\' or \'.\', and must start and end with an alphanumeric character (e.g. \'MyValue\',  or \'my_value\',  or \'12345\', regex used for validation is \'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\')');
    }
  }
}

const NAME_RULE: Record<ResourceName, 'label' | 'subdomain' | 'dns1035'> = {
  namespaces: 'label', nodes: 'subdomain', pods: 'subdomain', services: 'dns1035', endpoints: 'subdomain', endpointslices: 'subdomain',
};

function checkMeta(e: Errors, resource: ResourceName, meta: Obj | undefined): void {
  const name = meta?.name;
  if (typeof name !== 'string' || name === '') { e.required('metadata.name', 'name or generateName is required'); return; }
  const rule = NAME_RULE[resource];
  if (rule === 'label') checkLabel(e, 'metadata.name', name);
  else if (rule === 'subdomain') checkSubdomain(e, 'metadata.name', name);
  else if (name.length > 63) e.invalid('metadata.name', name, 'must be no more than 63 characters');
  else if (!DNS1035_LABEL.test(name)) e.invalid('metadata.name', name, MSG.dns1035);
  if (meta?.namespace !== undefined) checkLabel(e, 'metadata.namespace', meta.namespace);
  checkLabels(e, 'metadata.labels', meta?.labels);
  let size = 0;
  for (const [k, v] of Object.entries<string>(meta?.annotations ?? {})) {
    checkQualifiedName(e, 'metadata.annotations', k.toLowerCase());
    size += k.length + String(v).length;
  }
  if (size > 262144) e.tooLong('metadata.annotations', 262144);
}

function checkPort(e: Errors, field: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) e.invalid(field, v ?? 0, MSG.port);
}

const PROTOCOLS = ['SCTP', 'TCP', 'UDP'];
function checkProtocol(e: Errors, field: string, v: unknown): void {
  if (!PROTOCOLS.includes(v as string)) e.notSupported(field, v, PROTOCOLS);
}

/** Addresses that make no sense as an endpoint or external IP (kube-apiserver refuses them). */
function checkNonSpecialIP(e: Errors, field: string, v: unknown): void {
  const ip = typeof v === 'string' ? parseIP(v) : null;
  if (!ip) { e.invalid(field, v, MSG.ip); return; }
  const inside = (cidr: string) => cidrContains(parseCIDR(cidr)!, ip);
  if (ip.value === 0n) e.invalid(field, v, `may not be unspecified (${v})`);
  if (inside('127.0.0.0/8') || inside('::1/128')) e.invalid(field, v, 'may not be in the loopback range (127.0.0.0/8, ::1/128)');
  if (inside('169.254.0.0/16') || inside('fe80::/10')) e.invalid(field, v, 'may not be in the link-local range (169.254.0.0/16, fe80::/10)');
  if (inside('224.0.0.0/24') || inside('ff02::/16')) e.invalid(field, v, 'may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)');
}

function checkIANASvcName(e: Errors, field: string, v: string): void {
  if (v.length > 15) e.invalid(field, v, 'must be no more than 15 characters');
  else if (!IANA_SVC_NAME.test(v)) e.invalid(field, v, 'must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)');
  else if (v.includes('--')) e.invalid(field, v, 'must not contain consecutive hyphens');
  else if (!/[a-z]/.test(v)) e.invalid(field, v, 'must contain at least one letter (a-z)');
}

/** A Service or Endpoints port name: a DNS label, unique, required when there are several ports. */
function checkPortName(e: Errors, at: string, name: unknown, count: number, seen: Set<string>): void {
  if (name === undefined || name === '') {
    if (count > 1) e.required(`${at}.name`);
    return;
  }
  checkLabel(e, `${at}.name`, name as string);
  if (seen.has(name as string)) e.duplicate(`${at}.name`, name);
  seen.add(name as string);
}

// ---- Service ----

const SERVICE_TYPES = ['ClusterIP', 'ExternalName', 'LoadBalancer', 'NodePort'];
const TRAFFIC_POLICIES = ['Cluster', 'Local'];

function validateService(e: Errors, s: Obj, old: Obj | undefined): void {
  const spec: Obj = s.spec ?? {};
  const type = spec.type;
  if (!SERVICE_TYPES.includes(type)) e.notSupported('spec.type', type, SERVICE_TYPES);
  const external = type === 'ExternalName';
  const headless = spec.clusterIP === 'None';
  const ports: Obj[] = spec.ports ?? [];
  if (ports.length === 0 && !headless && !external) e.required('spec.ports');
  const names = new Set<string>();
  const portKeys = new Set<string>();
  const nodePorts = new Set<string>();
  ports.forEach((p, i) => {
    const at = `spec.ports[${i}]`;
    checkPortName(e, at, p.name, ports.length, names);
    checkProtocol(e, `${at}.protocol`, p.protocol);
    checkPort(e, `${at}.port`, p.port);
    if (typeof p.targetPort === 'number') checkPort(e, `${at}.targetPort`, p.targetPort);
    else if (typeof p.targetPort === 'string') checkIANASvcName(e, `${at}.targetPort`, p.targetPort);
    if (p.nodePort !== undefined && p.nodePort !== 0) {
      if (type === 'ClusterIP' || external) e.forbidden(`${at}.nodePort`, `may not be used when \`type\` is '${type}'`);
      else checkPort(e, `${at}.nodePort`, p.nodePort);
      const npKey = `${p.nodePort}/${p.protocol}`;
      if (nodePorts.has(npKey)) e.duplicate(`${at}.nodePort`, p.nodePort);
      nodePorts.add(npKey);
    }
    const key = `${p.port}/${p.protocol}`;
    if (portKeys.has(key)) e.duplicate(at, { port: p.port, protocol: p.protocol });
    portKeys.add(key);
  });
  if (spec.clusterIP !== undefined && spec.clusterIP !== '' && spec.clusterIP !== 'None') {
    if (external) e.forbidden('spec.clusterIP', 'may not be set for ExternalName services');
    else if (parseIP(spec.clusterIP)?.family !== 4) e.invalid('spec.clusterIP', spec.clusterIP, parseIP(spec.clusterIP) ? 'this cluster serves IPv4 only' : MSG.ip);
  }
  if (Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0) {
    if (spec.clusterIP && spec.clusterIPs[0] !== spec.clusterIP) e.invalid('spec.clusterIPs[0]', spec.clusterIPs[0], 'must match `clusterIP` if specified');
    if (spec.clusterIPs.length > 1) e.invalid('spec.clusterIPs', spec.clusterIPs, 'this cluster is not configured for dual-stack services');
  }
  (spec.ipFamilies ?? []).forEach((f: unknown, i: number) => { if (f !== 'IPv4') e.invalid(`spec.ipFamilies[${i}]`, f, 'not configured on this cluster'); });
  if (spec.ipFamilyPolicy !== undefined && !['SingleStack', 'PreferDualStack', 'RequireDualStack'].includes(spec.ipFamilyPolicy)) e.notSupported('spec.ipFamilyPolicy', spec.ipFamilyPolicy, ['PreferDualStack', 'RequireDualStack', 'SingleStack']);
  if (spec.ipFamilyPolicy === 'RequireDualStack') e.invalid('spec.ipFamilyPolicy', spec.ipFamilyPolicy, 'this cluster is not configured for dual-stack services');
  (spec.externalIPs ?? []).forEach((ip: unknown, i: number) => checkNonSpecialIP(e, `spec.externalIPs[${i}]`, ip));
  if (external) {
    if (!spec.externalName) e.required('spec.externalName');
    else checkSubdomain(e, 'spec.externalName', String(spec.externalName).replace(/\.$/, ''));
  }
  if (!['ClientIP', 'None'].includes(spec.sessionAffinity)) e.notSupported('spec.sessionAffinity', spec.sessionAffinity, ['ClientIP', 'None']);
  const timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (spec.sessionAffinity === 'ClientIP') {
    if (!(typeof timeout === 'number' && timeout > 0 && timeout <= 86400)) e.invalid('spec.sessionAffinityConfig.clientIP.timeoutSeconds', timeout ?? 0, 'must be greater than 0 and less than 86400');
  } else if (spec.sessionAffinityConfig !== undefined) {
    e.invalid('spec.sessionAffinityConfig', spec.sessionAffinityConfig, 'must not be set when `sessionAffinity` is None');
  }
  if (spec.externalTrafficPolicy !== undefined && spec.externalTrafficPolicy !== '') {
    if (type !== 'NodePort' && type !== 'LoadBalancer') e.invalid('spec.externalTrafficPolicy', spec.externalTrafficPolicy, 'may only be set when `type` is \'NodePort\' or \'LoadBalancer\'');
    else if (!TRAFFIC_POLICIES.includes(spec.externalTrafficPolicy)) e.notSupported('spec.externalTrafficPolicy', spec.externalTrafficPolicy, TRAFFIC_POLICIES);
  }
  if (spec.internalTrafficPolicy !== undefined && !TRAFFIC_POLICIES.includes(spec.internalTrafficPolicy)) e.notSupported('spec.internalTrafficPolicy', spec.internalTrafficPolicy, TRAFFIC_POLICIES);
  if (spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort !== 0) {
    if (type !== 'LoadBalancer' || spec.externalTrafficPolicy !== 'Local') e.invalid('spec.healthCheckNodePort', spec.healthCheckNodePort, 'may only be set when `type` is \'LoadBalancer\' and `externalTrafficPolicy` is \'Local\'');
    else checkPort(e, 'spec.healthCheckNodePort', spec.healthCheckNodePort);
  }
  const ranges: unknown[] = spec.loadBalancerSourceRanges ?? [];
  if (ranges.length && type !== 'LoadBalancer') e.forbidden('spec.loadBalancerSourceRanges', 'may only be used when `type` is \'LoadBalancer\'');
  ranges.forEach((r, i) => { if (typeof r !== 'string' || !parseCIDR(r.trim())) e.invalid(`spec.loadBalancerSourceRanges[${i}]`, r, MSG.cidr); });
  if (spec.loadBalancerIP !== undefined && spec.loadBalancerIP !== '' && !parseIP(spec.loadBalancerIP)) e.invalid('spec.loadBalancerIP', spec.loadBalancerIP, MSG.ip);
  checkLabels(e, 'spec.selector', spec.selector);
  (s.status?.loadBalancer?.ingress ?? []).forEach((ing: Obj, i: number) => {
    const at = `status.loadBalancer.ingress[${i}]`;
    if (ing.ip !== undefined) checkNonSpecialIP(e, `${at}.ip`, ing.ip);
    if (ing.hostname !== undefined) checkSubdomain(e, `${at}.hostname`, ing.hostname);
    if (ing.ipMode !== undefined) {
      if (!['VIP', 'Proxy'].includes(ing.ipMode)) e.notSupported(`${at}.ipMode`, ing.ipMode, ['Proxy', 'VIP']);
      if (ing.ip === undefined) e.forbidden(`${at}.ipMode`, 'may not be specified when `ip` is not set');
    }
  });
  if (old) {
    const changesType = (old.spec?.type === 'ExternalName') !== external;
    if (!changesType && (old.spec?.clusterIP ?? '') !== (spec.clusterIP ?? '')) e.invalid('spec.clusterIP', spec.clusterIP ?? '', 'field is immutable');
  }
}

// ---- EndpointSlice and Endpoints ----

const ADDRESS_TYPES = ['FQDN', 'IPv4', 'IPv6'];

function validateEndpointSlice(e: Errors, s: Obj, old: Obj | undefined): void {
  const type = s.addressType;
  if (type === undefined || type === '') e.required('addressType');
  else if (!ADDRESS_TYPES.includes(type)) e.notSupported('addressType', type, ADDRESS_TYPES);
  if (old && old.addressType !== type) e.invalid('addressType', type, 'field is immutable');
  const endpoints: Obj[] = s.endpoints ?? [];
  if (endpoints.length > 1000) e.tooMany('endpoints', 1000);
  endpoints.forEach((ep, i) => {
    const at = `endpoints[${i}]`;
    const addresses: unknown[] = ep.addresses ?? [];
    if (addresses.length === 0) e.required(`${at}.addresses`, 'must contain at least 1 address');
    if (addresses.length > 100) e.tooMany(`${at}.addresses`, 100);
    addresses.forEach((a, j) => {
      const field = `${at}.addresses[${j}]`;
      if (type === 'FQDN') { if (typeof a === 'string') checkSubdomain(e, field, a); return; }
      const ip = typeof a === 'string' ? parseIP(a) : null;
      if (type === 'IPv4' && ip?.family !== 4) e.invalid(field, a, 'must be a valid IPv4 address');
      else if (type === 'IPv6' && ip?.family !== 6) e.invalid(field, a, 'must be a valid IPv6 address');
      else checkNonSpecialIP(e, field, a);
    });
    if (ep.hostname !== undefined) checkLabel(e, `${at}.hostname`, ep.hostname);
    if (ep.nodeName !== undefined) checkSubdomain(e, `${at}.nodeName`, ep.nodeName);
  });
  const ports: Obj[] = s.ports ?? [];
  if (ports.length > 20000) e.tooMany('ports', 20000);
  const names = new Set<string>();
  ports.forEach((p, i) => {
    const at = `ports[${i}]`;
    const name = p.name ?? '';
    if (name !== '') checkLabel(e, `${at}.name`, name);
    if (names.has(name)) e.duplicate(`${at}.name`, name);
    names.add(name);
    checkProtocol(e, `${at}.protocol`, p.protocol);
    if (p.port !== undefined) checkPort(e, `${at}.port`, p.port);
    if (p.appProtocol !== undefined) checkQualifiedName(e, `${at}.appProtocol`, p.appProtocol);
  });
}

function validateEndpoints(e: Errors, ep: Obj): void {
  (ep.subsets ?? []).forEach((ss: Obj, i: number) => {
    const at = `subsets[${i}]`;
    for (const list of ['addresses', 'notReadyAddresses']) {
      (ss[list] ?? []).forEach((a: Obj, j: number) => {
        checkNonSpecialIP(e, `${at}.${list}[${j}].ip`, a.ip);
        if (a.hostname !== undefined && a.hostname !== '') checkLabel(e, `${at}.${list}[${j}].hostname`, a.hostname);
        if (a.nodeName !== undefined && a.nodeName !== '') checkSubdomain(e, `${at}.${list}[${j}].nodeName`, a.nodeName);
      });
    }
    const ports: Obj[] = ss.ports ?? [];
    const names = new Set<string>();
    ports.forEach((p, j) => {
      const pat = `${at}.ports[${j}]`;
      checkPortName(e, pat, p.name, ports.length, names);
      checkPort(e, `${pat}.port`, p.port);
      checkProtocol(e, `${pat}.protocol`, p.protocol);
    });
  });
}

// ---- Node, Pod, Namespace ----

function validateNode(e: Errors, n: Obj, old: Obj | undefined): void {
  const cidrs: unknown[] = n.spec?.podCIDRs ?? [];
  if (cidrs.length > 2) e.tooMany('spec.podCIDRs', 2);
  const families = new Set<number>();
  cidrs.forEach((c, i) => {
    const parsed = typeof c === 'string' ? parseCIDR(c) : null;
    if (!parsed) { e.invalid(`spec.podCIDRs[${i}]`, c, MSG.cidr); return; }
    if (families.has(parsed.family)) e.invalid('spec.podCIDRs', cidrs, 'may specify no more than one CIDR for each IP family');
    families.add(parsed.family);
  });
  const taintKeys = new Set<string>();
  (n.spec?.taints ?? []).forEach((t: Obj, i: number) => {
    if (!t.key) e.required(`spec.taints[${i}].key`);
    else checkQualifiedName(e, `spec.taints[${i}].key`, t.key);
    const effects = ['NoExecute', 'NoSchedule', 'PreferNoSchedule'];
    if (!effects.includes(t.effect)) e.notSupported(`spec.taints[${i}].effect`, t.effect, effects);
    const k = `${t.key}:${t.effect}`;
    if (taintKeys.has(k)) e.duplicate(`spec.taints[${i}]`, { key: t.key, effect: t.effect });
    taintKeys.add(k);
  });
  const before: unknown[] = old?.spec?.podCIDRs ?? [];
  if (before.length > 0 && JSON.stringify(before) !== JSON.stringify(cidrs)) e.forbidden('spec.podCIDRs', 'node updates may not change podCIDR except from "" to valid');
}

const RESTART_POLICIES = ['Always', 'Never', 'OnFailure'];

/** The parts of a pod spec that may change after creation, blanked for comparison. */
function fixedPodSpec(spec: Obj | undefined): string {
  const s = JSON.parse(JSON.stringify(spec ?? {}));
  for (const list of ['containers', 'initContainers']) for (const c of s[list] ?? []) delete c.image;
  delete s.activeDeadlineSeconds;
  delete s.tolerations;
  delete s.terminationGracePeriodSeconds;
  return JSON.stringify(s);
}

function validatePod(e: Errors, p: Obj, old: Obj | undefined): void {
  const spec: Obj = p.spec ?? {};
  const containers: Obj[] = spec.containers ?? [];
  if (containers.length === 0) e.required('spec.containers');
  const names = new Set<string>();
  const portNames = new Set<string>();
  containers.forEach((c, i) => {
    const at = `spec.containers[${i}]`;
    if (!c.name) e.required(`${at}.name`);
    else {
      checkLabel(e, `${at}.name`, c.name);
      if (names.has(c.name)) e.duplicate(`${at}.name`, c.name);
      names.add(c.name);
    }
    if (!c.image) e.required(`${at}.image`);
    (c.ports ?? []).forEach((port: Obj, j: number) => {
      const pat = `${at}.ports[${j}]`;
      checkPort(e, `${pat}.containerPort`, port.containerPort);
      checkProtocol(e, `${pat}.protocol`, port.protocol);
      if (port.hostPort !== undefined && port.hostPort !== 0) checkPort(e, `${pat}.hostPort`, port.hostPort);
      if (port.name !== undefined && port.name !== '') {
        checkIANASvcName(e, `${pat}.name`, port.name);
        if (portNames.has(port.name)) e.duplicate(`${pat}.name`, port.name);
        portNames.add(port.name);
      }
    });
  });
  if (spec.nodeName !== undefined && spec.nodeName !== '') checkSubdomain(e, 'spec.nodeName', spec.nodeName);
  if (spec.restartPolicy !== undefined && !RESTART_POLICIES.includes(spec.restartPolicy)) e.notSupported('spec.restartPolicy', spec.restartPolicy, RESTART_POLICIES);
  const ips: Obj[] = p.status?.podIPs ?? [];
  ips.forEach((x, i) => { if (!parseIP(x?.ip)) e.invalid(`status.podIPs[${i}].ip`, x?.ip, MSG.ip); });
  if (p.status?.podIP !== undefined && p.status.podIP !== '' && !parseIP(p.status.podIP)) e.invalid('status.podIP', p.status.podIP, MSG.ip);
  if (old && fixedPodSpec(old.spec) !== fixedPodSpec(spec)) {
    e.forbidden('spec', 'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)');
  }
}

/**
 * Every field error of an object about to be stored (`old`: the stored version, on update).
 * Defaults are applied before this runs, as kube-apiserver defaults before it validates.
 */
export function validateObject(resource: ResourceName, obj: Obj, old?: Obj): FieldError[] {
  const e = new Errors();
  checkMeta(e, resource, obj.metadata);
  switch (resource) {
    case 'services': validateService(e, obj, old); break;
    case 'endpointslices': validateEndpointSlice(e, obj, old); break;
    case 'endpoints': validateEndpoints(e, obj); break;
    case 'nodes': validateNode(e, obj, old); break;
    case 'pods': validatePod(e, obj, old); break;
    case 'namespaces': break;
  }
  return e.list;
}
