// kube-proxy's nftables table (`ip kube-proxy` / `ip6 kube-proxy`), rendered as data and as the
// `nft -f` lines kube-proxy's knftables library writes. Pure: `knet rules --proxy-mode nftables`
// prints it, `--explain` reads the same decisions, and `knet proxy` applies it.
//
// The table has a fixed part that depends only on the settings (base chains hooked into
// netfilter, the dispatch chains, the verdict maps and sets) and one part per service: its
// service/local/external/firewall chains, one chain per endpoint, ClientIP affinity sets and its
// elements in the dispatch maps. A service whose objects did not change keeps its rendered part
// between renders (NftablesRenderer), which is what lets the proxy write only what changed.
import { duplicateWarnings, modelService, portsOfChanges, type EndpointInfo, type ServiceChange, type ServicePortInfo } from './model.ts';
import { indexCluster } from './cluster-index.ts';
import { externallyAccessible, selectEndpoints, usesClusterEndpoints, usesLocalEndpoints } from './endpoints.ts';
import { masqueradeMark } from './iptables.ts';
import { isLoopback, nodePortAddresses, nodePortIPs } from './node-ports.ts';
import { nftEndpointBase, nftPortChains, rawPortName, type NftPortChains } from './nftables-names.ts';
import { cidrContains, parseCIDR, parseIP } from '../util/ip.ts';
import { exactStrings, flat } from '../util/arrays.ts';
import { describe, InvalidField, objectLabel, optList, optObject, prop } from '../model/json.ts';
import type { ClusterState, ServiceCIDR, ServiceObjects } from '../model/k8s.ts';
import type { LocalDetector, ProxySettings, RenderWarning } from './types.ts';

export const NFT_TABLE = 'kube-proxy';

// Chains, sets and maps of the fixed part.
export const SERVICES_CHAIN = 'services';
export const SERVICE_IPS = 'service-ips';
export const SERVICE_NODEPORTS = 'service-nodeports';
export const NODEPORT_IPS = 'nodeport-ips';
export const CLUSTER_IPS = 'cluster-ips';
export const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
export const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
export const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
export const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
export const REJECT_CHAIN = 'reject-chain';
export const CLUSTER_IPS_CHECK = 'cluster-ips-check';
export const FIREWALL_IPS = 'firewall-ips';
export const FIREWALL_CHECK = 'firewall-check';
export const MARK_MASQ = 'mark-for-masquerade';
export const MASQUERADING = 'masquerading';

export type NftFamily = 'ip' | 'ip6';

/** A set or map element: key, and for a map its verdict; comment as kube-proxy writes it. */
export interface NftElement {
  key: string;
  value?: string;
  comment?: string;
}

/** A chain: its declaration options (" { type ... ; }", or "") and rule bodies in order. */
export interface NftChain {
  spec: string;
  rules: readonly string[];
}

/** The part of the table that depends on the settings only. */
export interface NftFixed {
  key: string;
  chains: ReadonlyMap<string, NftChain>;
  /** Sets and maps with their declaration body ("{ type ... ; }"). */
  sets: ReadonlyMap<string, string>;
  maps: ReadonlyMap<string, string>;
  elements: ReadonlyArray<readonly [container: string, element: NftElement]>;
}

/** Everything one service (all its ports) puts in the table. */
export interface NftServiceOutput {
  /** Own chains (service-, local-, external-, firewall-, endpoint-) with their rule bodies. */
  chains: ReadonlyMap<string, readonly string[]>;
  /** ClientIP affinity sets with their declaration body. */
  sets: ReadonlyMap<string, string>;
  /** Elements in the fixed sets and maps, in the order written. */
  elements: ReadonlyArray<readonly [container: string, element: NftElement]>;
  /** Ports with endpoints but none for internal / external traffic (kube-proxy's metric). */
  noLocalInternal: number;
  noLocalExternal: number;
}

export interface NftRenderRequest {
  cluster: ClusterState;
  settings: ProxySettings;
  /**
   * For a stateful renderer: the only services ("ns/name") whose objects may have changed since
   * its last render. Absent: all are looked at (unchanged objects, by reference, are reused).
   */
  recompute?: ReadonlySet<string>;
}

export interface NftRenderResult {
  family: NftFamily;
  fixed: NftFixed;
  /** Every service's part, by "ns/name". */
  services: ReadonlyMap<string, NftServiceOutput>;
  /** Services whose part changed in this render: before (absent: new) and after (absent: gone). */
  changed: ReadonlyMap<string, { before?: NftServiceOutput; after?: NftServiceOutput }>;
  /** Whether the fixed part differs from the previous render's (always true on the first). */
  fixedChanged: boolean;
  warnings: RenderWarning[];
  noLocalEndpoints: { internal: number; external: number };
}

const q = (s: string) => `"${s}"`;

function ifLocal(d: LocalDetector): string {
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': return `${d.cidrs[0]!.includes(':') ? 'ip6' : 'ip'} saddr ${d.cidrs[0]!}`;
    case 'BridgeInterface': return `iifname ${d.interface}`;
    case 'InterfaceNamePrefix': return `iifname ${d.prefix}*`;
    case 'None': return '';
  }
}

function ifNotLocal(d: LocalDetector): string {
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': return `${d.cidrs[0]!.includes(':') ? 'ip6' : 'ip'} saddr != ${d.cidrs[0]!}`;
    case 'BridgeInterface': return `iifname != ${d.interface}`;
    case 'InterfaceNamePrefix': return `iifname != ${d.prefix}*`;
    case 'None': return '';
  }
}

/** The ServiceCIDRs of the family, canonical, in first-seen order; bad ones become warnings. */
export function serviceCIDRsOf(objs: readonly ServiceCIDR[] | undefined, family: ProxySettings['family'], warnings: RenderWarning[]): string[] {
  const fam = family === 'IPv4' ? 4 : 6;
  const out: string[] = [];
  for (const o of objs ?? []) {
    const object = objectLabel('ServiceCIDR', prop(o, 'metadata'));
    let cidrs: readonly unknown[];
    try {
      cidrs = optList(prop(optObject(prop(o, 'spec'), 'spec'), 'cidrs'), 'spec.cidrs');
    } catch (e) {
      if (!(e instanceof InvalidField)) throw e;
      warnings.push({ object, field: e.field, message: `${e.field} ${e.message}` });
      continue;
    }
    cidrs.forEach((raw, i) => {
      const c = parseCIDR(typeof raw === 'string' ? raw : undefined);
      if (!c) {
        warnings.push({ object, field: `spec.cidrs[${i}]`, message: `spec.cidrs[${i}] invalid CIDR ${describe(raw)}` });
        return;
      }
      if (c.family === fam && !out.includes(c.text)) out.push(c.text);
    });
  }
  return out;
}

interface FixedInput {
  settings: ProxySettings;
  serviceCIDRs: string[];
}

/** Base chains: (name, type, hook, priority); filter chains see pre-DNAT addresses at -110. */
const BASE_CHAINS: ReadonlyArray<readonly [string, string, string, number]> = [
  ['filter-prerouting-pre-dnat', 'filter', 'prerouting', -110],
  ['filter-output-pre-dnat', 'filter', 'output', -110],
  ['filter-forward', 'filter', 'forward', 0],
  ['filter-input', 'filter', 'input', 0],
  ['filter-output', 'filter', 'output', 0],
  ['nat-prerouting', 'nat', 'prerouting', -100],
  ['nat-output', 'nat', 'output', -100],
  ['nat-postrouting', 'nat', 'postrouting', 100],
];

/**
 * Jumps from the base chains, in rule order per chain. The no-endpoint checks cannot hang off
 * prerouting: reject is only valid in input, forward and output (on kernels before 5.9).
 */
const JUMPS: ReadonlyArray<readonly [from: string, to: string, match: string]> = [
  ['filter-input', NODEPORT_ENDPOINTS_CHECK, 'ct state new'],
  ['filter-input', SERVICE_ENDPOINTS_CHECK, 'ct state new'],
  ['filter-forward', SERVICE_ENDPOINTS_CHECK, 'ct state new'],
  ['filter-output', SERVICE_ENDPOINTS_CHECK, 'ct state new'],
  ['filter-prerouting-pre-dnat', FIREWALL_CHECK, 'ct state new'],
  ['filter-output-pre-dnat', FIREWALL_CHECK, 'ct state new'],
  ['nat-output', SERVICES_CHAIN, ''],
  ['nat-prerouting', SERVICES_CHAIN, ''],
  ['nat-postrouting', MASQUERADING, ''],
  ['filter-forward', CLUSTER_IPS_CHECK, 'ct state new'],
  ['filter-output', CLUSTER_IPS_CHECK, 'ct state new'],
];

function renderFixed(input: FixedInput, key: string): NftFixed {
  const { settings, serviceCIDRs } = input;
  const v6 = settings.family === 'IPv6';
  const ipX = v6 ? 'ip6' : 'ip';
  const addr = v6 ? 'ipv6_addr' : 'ipv4_addr';
  const noLocalhost = v6 ? 'ip6 daddr != ::1' : 'ip daddr != 127.0.0.0/8';
  const mark = masqueradeMark(settings.masqueradeBit);
  const npa = nodePortAddresses(settings);

  const chains = new Map<string, { spec: string; rules: string[] }>();
  const chain = (name: string, spec = '') => {
    let c = chains.get(name);
    if (!c) chains.set(name, (c = { spec, rules: [] }));
    return c.rules;
  };
  for (const [name, type, hook, prio] of BASE_CHAINS) chain(name, ` { type ${type} hook ${hook} priority ${prio} ; }`);
  for (const [from, to, match] of JUMPS) {
    chain(to);
    chain(from).push(match ? `${match} jump ${to}` : `jump ${to}`);
  }
  chain(MARK_MASQ).push(`mark set mark or ${mark}`);
  chain(MASQUERADING).push(`mark and ${mark} == 0 return`, `mark set mark xor ${mark}`, 'masquerade fully-random');
  const clusterIPsCheck = chain(CLUSTER_IPS_CHECK);
  clusterIPsCheck.push(`${ipX} daddr @${CLUSTER_IPS} reject comment ${q('Reject traffic to invalid ports of ClusterIPs')}`);
  if (serviceCIDRs.length > 0) clusterIPsCheck.push(`${ipX} daddr { ${serviceCIDRs.join(',')} } drop comment ${q('Drop traffic to unallocated ClusterIPs')}`);
  chain(REJECT_CHAIN, ` { comment ${q(`helper for @${NO_ENDPOINT_SERVICES} / @${NO_ENDPOINT_NODEPORTS}`)} ; }`).push('reject');
  chain(SERVICE_ENDPOINTS_CHECK).push(`${ipX} daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES}`);
  const onNodePort = npa.matchAll ? noLocalhost : `${ipX} daddr @${NODEPORT_IPS}`;
  chain(NODEPORT_ENDPOINTS_CHECK).push(`${onNodePort} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`);
  chain(FIREWALL_CHECK).push(`${ipX} daddr . meta l4proto . th dport vmap @${FIREWALL_IPS}`);
  chain(SERVICES_CHAIN).push(
    `${ipX} daddr . meta l4proto . th dport vmap @${SERVICE_IPS}`,
    `${npa.matchAll ? `fib daddr type local ${noLocalhost}` : `${ipX} daddr @${NODEPORT_IPS}`} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`,
  );

  const sets = new Map<string, string>([[CLUSTER_IPS, `{ type ${addr} ; comment ${q('Active ClusterIPs')} ; }`]]);
  const elements: Array<[string, NftElement]> = [];
  if (!npa.matchAll) {
    sets.set(NODEPORT_IPS, `{ type ${addr} ; comment ${q('IPs that accept NodePort traffic')} ; }`);
    // Node ports on loopback would need route_localnet; kube-proxy's nftables mode never serves them.
    for (const ip of nodePortIPs(npa, settings)) if (!isLoopback(parseIP(ip)!)) elements.push([NODEPORT_IPS, { key: ip }]);
  }
  const triple = `${addr} . inet_proto . inet_service : verdict`;
  const maps = new Map<string, string>([
    [NO_ENDPOINT_SERVICES, `{ type ${triple} ; comment ${q('vmap to drop or reject packets to services with no endpoints')} ; }`],
    [NO_ENDPOINT_NODEPORTS, `{ type inet_proto . inet_service : verdict ; comment ${q('vmap to drop or reject packets to service nodeports with no endpoints')} ; }`],
    [FIREWALL_IPS, `{ type ${triple} ; comment ${q('destinations that are subject to LoadBalancerSourceRanges')} ; }`],
    [SERVICE_IPS, `{ type ${triple} ; comment ${q('ClusterIP, ExternalIP and LoadBalancer IP traffic')} ; }`],
    [SERVICE_NODEPORTS, `{ type inet_proto . inet_service : verdict ; comment ${q('NodePort traffic')} ; }`],
  ]);
  return { key, chains, sets, maps, elements };
}

/** The decisions for one service port; shared by the renderer and --explain. */
export interface NftPortPlan {
  chains: NftPortChains;
  /** endpoint chain and affinity set name per endpoint address ("ip:port"). */
  endpointChain: (ep: EndpointInfo) => string;
  affinitySet: (ep: EndpointInfo) => string;
  cluster: EndpointInfo[];
  local: EndpointInfo[];
  allReachable: EndpointInfo[];
  hasEndpoints: boolean;
  hasInternal: boolean;
  hasExternal: boolean;
  usesClusterChain: boolean;
  usesLocalChain: boolean;
  usesExternalChain: boolean;
  usesFirewall: boolean;
  /** The chain cluster IP traffic goes to, and the one the external chain ends in. */
  internalChain: string;
  externalPolicyChain: string;
  /** Verdict in the no-endpoint maps for traffic that has nowhere to go ("" when it has). */
  internalVerdict: string;
  externalVerdict: string;
}

export function planNftPort(s: ServicePortInfo): NftPortPlan {
  const { cluster, local, allReachable, hasAny, hasInternal, hasExternal } = selectEndpoints(s);
  const chains = nftPortChains(s);
  const port = rawPortName(s);
  const names = new Map<string, string>();
  const base = (ep: EndpointInfo) => {
    let b = names.get(ep.addr);
    if (b === undefined) names.set(ep.addr, (b = nftEndpointBase(s.service, port, s.protocol, ep.ip, ep.port)));
    return b;
  };
  const reject = `goto ${REJECT_CHAIN}`;
  return {
    chains,
    endpointChain: (ep) => `endpoint-${base(ep)}`,
    affinitySet: (ep) => `affinity-${base(ep)}`,
    cluster, local, allReachable,
    hasEndpoints: hasAny, hasInternal, hasExternal,
    usesClusterChain: cluster.length > 0 && usesClusterEndpoints(s),
    usesLocalChain: local.length > 0 && usesLocalEndpoints(s),
    usesExternalChain: hasAny && externallyAccessible(s),
    usesFirewall: s.loadBalancerVIPs.length > 0 && s.loadBalancerSourceRanges.length > 0,
    internalChain: s.internalPolicyLocal ? chains.local : chains.cluster,
    externalPolicyChain: s.externalPolicyLocal ? chains.local : chains.cluster,
    internalVerdict: !hasAny ? reject : hasInternal ? '' : 'drop',
    externalVerdict: !hasAny ? reject : hasExternal ? '' : 'drop',
  };
}

interface PortContext {
  ipX: 'ip' | 'ip6';
  addr: string;
  detector: LocalDetector;
  masqueradeAll: boolean;
  /** The node IP of this family, for LoadBalancer source ranges that include the node. */
  nodeIP: ReturnType<typeof parseIP>;
}

const flatElement = (e: NftElement): NftElement => ({
  key: flat(e.key),
  ...(e.value === undefined ? {} : { value: flat(e.value) }),
  ...(e.comment === undefined ? {} : { comment: flat(e.comment) }),
});

/** Collects one service's chains, sets and elements while its ports are rendered. */
class ServiceBuilder {
  readonly chains = new Map<string, string[]>();
  readonly sets = new Map<string, string>();
  readonly elements: Array<[string, NftElement]> = [];
  noLocalInternal = 0;
  noLocalExternal = 0;
  rules(chain: string): string[] {
    let l = this.chains.get(chain);
    if (!l) this.chains.set(chain, (l = []));
    return l;
  }
  element(container: string, e: NftElement): void {
    this.elements.push([container, e]);
  }
  /**
   * The service's part as the renderer keeps it until the service changes: flat strings in
   * exact-size arrays. As built (template-literal ropes, arrays with push slack), 10k services'
   * parts held 13 MB of rope nodes, a sixth of the proxy's heap.
   */
  finish(): NftServiceOutput {
    const chains = new Map<string, readonly string[]>();
    for (const [name, rules] of this.chains) chains.set(name, exactStrings(rules.map(flat)));
    const sets = new Map<string, string>();
    for (const [name, spec] of this.sets) sets.set(name, flat(spec));
    const elements = this.elements.map(([container, e]): [string, NftElement] => [container, flatElement(e)]);
    return { chains, sets, elements, noLocalInternal: this.noLocalInternal, noLocalExternal: this.noLocalExternal };
  }
}

function renderPort(s: ServicePortInfo, ctx: PortContext, out: ServiceBuilder): void {
  const { ipX, detector } = ctx;
  const p = planNftPort(s);
  const { chains } = p;
  const proto = s.protocol;
  const vip = (ip: string) => `${ip} . ${proto} . ${s.port}`;
  const comment = s.portName;

  // Chains the port uses are created (and so written in full) even if they end up empty.
  for (const ep of p.allReachable) out.rules(p.endpointChain(ep));
  if (p.usesClusterChain) out.rules(chains.cluster);
  if (p.usesLocalChain) out.rules(chains.local);
  if (p.usesExternalChain) out.rules(chains.external);
  if (p.hasEndpoints && !p.hasInternal) out.noLocalInternal++;
  if (p.hasEndpoints && !p.hasExternal) out.noLocalExternal++;

  out.element(CLUSTER_IPS, { key: s.clusterIP });
  if (p.hasInternal) out.element(SERVICE_IPS, { key: vip(s.clusterIP), value: `goto ${p.internalChain}` });
  else out.element(NO_ENDPOINT_SERVICES, { key: vip(s.clusterIP), value: p.internalVerdict, comment });
  for (const ip of s.externalIPs) {
    if (p.hasEndpoints) out.element(SERVICE_IPS, { key: vip(ip), value: `goto ${chains.external}` });
    if (!p.hasExternal) out.element(NO_ENDPOINT_SERVICES, { key: vip(ip), value: p.externalVerdict, comment });
  }
  if (p.usesFirewall) out.rules(chains.firewall);
  for (const ip of s.loadBalancerVIPs) {
    if (p.hasEndpoints) out.element(SERVICE_IPS, { key: vip(ip), value: `goto ${chains.external}` });
    if (p.usesFirewall) out.element(FIREWALL_IPS, { key: vip(ip), value: `goto ${chains.firewall}` });
  }
  if (!p.hasExternal) for (const ip of s.loadBalancerVIPs) out.element(NO_ENDPOINT_SERVICES, { key: vip(ip), value: p.externalVerdict, comment });
  if (s.nodePort !== 0) {
    // Node ports are not subject to loadBalancerSourceRanges (kube-proxy never filtered them).
    if (p.hasEndpoints) out.element(SERVICE_NODEPORTS, { key: `${proto} . ${s.nodePort}`, value: `goto ${chains.external}` });
    if (!p.hasExternal) out.element(NO_ENDPOINT_NODEPORTS, { key: `${proto} . ${s.nodePort}`, value: p.externalVerdict, comment });
  }

  // Cluster IP traffic from outside the pod network is masqueraded: it may be routed to a node
  // that bridges it into the service and back out.
  if (p.hasInternal) {
    if (ctx.masqueradeAll) out.rules(p.internalChain).push(`${ipX} daddr ${s.clusterIP} jump ${MARK_MASQ}`);
    else if (detector.mode !== 'None') out.rules(p.internalChain).push(`${ipX} daddr ${s.clusterIP} ${ifNotLocal(detector)} jump ${MARK_MASQ}`);
  }
  if (p.usesExternalChain) {
    const ext = out.rules(chains.external);
    if (!s.externalPolicyLocal) {
      // Cluster policy may cross nodes: the reply must come back through this node.
      ext.push(`jump ${MARK_MASQ}`);
    } else {
      // Pods and the node itself reach external addresses as if they came back in from a load
      // balancer: no traffic policy applies to them.
      if (detector.mode !== 'None') ext.push(`${ifLocal(detector)} goto ${chains.cluster} comment ${q('short-circuit pod traffic')}`);
      ext.push(`fib saddr type local jump ${MARK_MASQ} comment ${q('masquerade local traffic')}`);
      ext.push(`fib saddr type local goto ${chains.cluster} comment ${q('short-circuit local traffic')}`);
    }
    if (p.hasExternal) ext.push(`goto ${p.externalPolicyChain}`);
  }
  if (p.usesFirewall) {
    const sources = [...s.loadBalancerSourceRanges];
    // A VIP that is local on the node loops back with the VIP as source: allowed when the node is.
    const nodeIP = ctx.nodeIP;
    if (nodeIP && s.loadBalancerSourceRanges.some((c) => cidrContains(parseCIDR(c)!, nodeIP))) sources.push(...s.loadBalancerVIPs);
    out.rules(chains.firewall).push(`${ipX} saddr != { ${sources.join(' , ')} } drop`);
  }
  if (s.clientIPAffinity) {
    for (const ep of p.allReachable) out.sets.set(p.affinitySet(ep), `{ type ${ctx.addr} ; flags dynamic,timeout ; timeout ${s.stickySeconds}s ; }`);
  }
  const toEndpoints = (chain: string, eps: EndpointInfo[]) => {
    const rules = out.rules(chain);
    if (s.clientIPAffinity) for (const ep of eps) rules.push(`${ipX} saddr @${p.affinitySet(ep)} goto ${p.endpointChain(ep)}`);
    rules.push(`numgen random mod ${eps.length} vmap { ${eps.map((ep, i) => `${i} : goto ${p.endpointChain(ep)}`).join(' , ')} }`);
  };
  if (p.usesClusterChain) toEndpoints(chains.cluster, p.cluster);
  if (p.usesLocalChain) toEndpoints(chains.local, p.local);
  for (const ep of p.allReachable) {
    const rules = out.rules(p.endpointChain(ep));
    // Hairpin: a pod reaching itself through the service must see the reply come from the node.
    rules.push(`${ipX} saddr ${ep.ip} jump ${MARK_MASQ}`);
    if (s.clientIPAffinity) rules.push(`update @${p.affinitySet(ep)} { ${ipX} saddr }`);
    rules.push(`meta l4proto ${proto} dnat to ${ep.addr}`);
  }
}

function portContext(settings: ProxySettings): PortContext {
  const v6 = settings.family === 'IPv6';
  const fam = v6 ? 6 : 4;
  const nodeIP = settings.nodeIPs.map((ip) => parseIP(ip)).find((p) => p?.family === fam) ?? null;
  return { ipX: v6 ? 'ip6' : 'ip', addr: v6 ? 'ipv6_addr' : 'ipv4_addr', detector: settings.localDetector, masqueradeAll: settings.masqueradeAll, nodeIP };
}

function renderService(ports: readonly ServicePortInfo[], ctx: PortContext): NftServiceOutput {
  const out = new ServiceBuilder();
  for (const s of ports) renderPort(s, ctx, out);
  return out.finish();
}

interface KeptService {
  objs: ServiceObjects;
  out: NftServiceOutput;
  warnings: RenderWarning[];
}

const EMPTY: NftServiceOutput = { chains: new Map(), sets: new Map(), elements: [], noLocalInternal: 0, noLocalExternal: 0 };

function sameObjects(a: ServiceObjects, b: ServiceObjects): boolean {
  if (a === b) return true;
  if (a.service !== b.service || a.slices.length !== b.slices.length) return false;
  for (let i = 0; i < a.slices.length; i++) if (a.slices[i] !== b.slices[i]) return false;
  return true;
}

/**
 * Renders kube-proxy's nftables table and keeps each service's part between renders, so a
 * render with `recompute` looks only at the services that changed. Output is always what a
 * fresh render gives: `renderNftables` is this class used once.
 */
export class NftablesRenderer {
  private settingsKey: string | null = null;
  private fixed: NftFixed | null = null;
  private readonly services = new Map<string, KeptService>();
  /**
   * The last render's services in key order, and the keys with warnings: a render that adds or
   * removes no service copies the map and sets the changed ones, instead of sorting 10k keys
   * and walking every service's warnings (7-14 ms of each partial sync at 10k services).
   */
  private sorted: Map<string, NftServiceOutput> | null = null;
  private readonly warned = new Set<string>();
  private settings: ProxySettings | null = null;
  /** Services whose objects the last render saw change: before (with the settings then) and after. */
  private objectChanges: ServiceChange[] = [];

  /** The ports, before and after the last render, of the services whose objects it saw change (conntrack clean-up). */
  changedPorts(): { before: ServicePortInfo[]; after: ServicePortInfo[] } {
    return portsOfChanges(this.objectChanges, this.settings);
  }

  render(req: NftRenderRequest): NftRenderResult {
    const { settings } = req;
    const warnings: RenderWarning[] = [];
    const serviceCIDRs = serviceCIDRsOf(req.cluster.serviceCIDRs, settings.family, warnings);
    const settingsKey = JSON.stringify(settings);
    const fixedKey = `${settingsKey}|${serviceCIDRs.join(',')}`;
    const fixedChanged = this.fixed?.key !== fixedKey;
    if (fixedChanged) this.fixed = renderFixed({ settings, serviceCIDRs }, fixedKey);
    const changed = new Map<string, { before?: NftServiceOutput; after?: NftServiceOutput }>();
    const objectChanges: typeof this.objectChanges = (this.objectChanges = []);
    const previousSettings = this.settings;
    this.settings = settings;
    let walkAll = !req.recompute;
    if (settingsKey !== this.settingsKey) {
      // Every service's part depends on the settings: all of them are rendered again.
      for (const [key, kept] of this.services) {
        changed.set(key, { before: kept.out });
        objectChanges.push({ before: { objs: kept.objs, settings: previousSettings! } });
      }
      this.services.clear();
      this.warned.clear();
      this.sorted = null;
      this.settingsKey = settingsKey;
      walkAll = true;
    }
    let index = req.cluster.index;
    if (!index) {
      const indexed = indexCluster(req.cluster);
      index = indexed.index;
      warnings.push(...duplicateWarnings(indexed));
    }
    const ctx = portContext(settings);
    const updated: string[] = [];
    const update = (key: string, objs: ServiceObjects | undefined) => {
      const old = this.services.get(key);
      if (!objs) {
        if (!old) return;
        this.services.delete(key);
        this.warned.delete(key);
        this.sorted = null;
        const c = changed.get(key);
        changed.set(key, { before: c ? c.before : old.out });
        objectChanges.push({ before: { objs: old.objs, settings } });
        return;
      }
      if (old && sameObjects(old.objs, objs)) return;
      objectChanges.push({ ...(old ? { before: { objs: old.objs, settings } } : {}), after: objs });
      const entry = modelService(objs, settings);
      const out = entry.ports.length ? renderService(entry.ports, ctx) : EMPTY;
      this.services.set(key, { objs, out, warnings: entry.warnings });
      if (entry.warnings.length) this.warned.add(key);
      else this.warned.delete(key);
      if (old) updated.push(key);
      else this.sorted = null;
      const before = changed.has(key) ? changed.get(key)!.before : old?.out;
      changed.set(key, { ...(before ? { before } : {}), after: out });
    };
    if (walkAll) {
      const seen = new Set<string>();
      for (const key of index.keys()) { seen.add(key); update(key, index.get(key)); }
      for (const key of [...this.services.keys()]) if (!seen.has(key)) update(key, undefined);
    } else {
      for (const key of req.recompute!) update(key, index.get(key));
    }
    // A service part that rendered to the same rules is no change for the table.
    for (const [key, c] of changed) if (c.before && c.after && sameOutput(c.before, c.after)) changed.delete(key);

    // Each result keeps its own map: a later render never changes an earlier result.
    let services: Map<string, NftServiceOutput>;
    if (this.sorted) {
      services = new Map(this.sorted);
      for (const key of updated) services.set(key, this.services.get(key)!.out);
    } else {
      services = new Map();
      for (const key of [...this.services.keys()].sort()) services.set(key, this.services.get(key)!.out);
    }
    this.sorted = services;
    for (const key of [...this.warned].sort()) warnings.push(...this.services.get(key)!.warnings);
    const noLocalEndpoints = { internal: 0, external: 0 };
    for (const out of services.values()) {
      noLocalEndpoints.internal += out.noLocalInternal;
      noLocalEndpoints.external += out.noLocalExternal;
    }
    return { family: settings.family === 'IPv6' ? 'ip6' : 'ip', fixed: this.fixed!, services, changed, fixedChanged, warnings, noLocalEndpoints };
  }
}

export function renderNftables(req: NftRenderRequest): NftRenderResult {
  return new NftablesRenderer().render(req);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameElement(a: NftElement, b: NftElement): boolean {
  return a.key === b.key && a.value === b.value && a.comment === b.comment;
}

export function sameOutput(a: NftServiceOutput, b: NftServiceOutput): boolean {
  if (a === b) return true;
  if (a.chains.size !== b.chains.size || a.sets.size !== b.sets.size || a.elements.length !== b.elements.length) return false;
  for (const [c, rules] of a.chains) { const o = b.chains.get(c); if (!o || !sameList(rules, o)) return false; }
  for (const [n, spec] of a.sets) if (b.sets.get(n) !== spec) return false;
  for (let i = 0; i < a.elements.length; i++) {
    const [ca, ea] = a.elements[i]!;
    const [cb, eb] = b.elements[i]!;
    if (ca !== cb || !sameElement(ea, eb)) return false;
  }
  return a.noLocalInternal === b.noLocalInternal && a.noLocalExternal === b.noLocalExternal;
}

/** Every service chain of a render (the chains a sync keeps; any other one in the kernel is stale). */
export function activeChains(r: Pick<NftRenderResult, 'services'>): Set<string> {
  const out = new Set<string>();
  for (const svc of r.services.values()) for (const c of svc.chains.keys()) out.add(c);
  return out;
}

/** "add element" text of one element: key, optional comment, optional verdict. */
export function elementText(e: NftElement): string {
  return `${e.key}${e.comment !== undefined ? ` comment ${q(e.comment)}` : ''}${e.value !== undefined ? ` : ${e.value}` : ''}`;
}

/**
 * The table's elements by container and key. A key two services both claim (two Services with
 * one external IP) goes to the first service in name order.
 */
export function tableElements(r: Pick<NftRenderResult, 'fixed' | 'services'>): Map<string, Map<string, NftElement>> {
  const out = new Map<string, Map<string, NftElement>>();
  const add = (container: string, e: NftElement) => {
    let m = out.get(container);
    if (!m) out.set(container, (m = new Map()));
    if (!m.has(e.key)) m.set(e.key, e);
  };
  for (const [c, e] of r.fixed.elements) add(c, e);
  for (const svc of r.services.values()) for (const [c, e] of svc.elements) add(c, e);
  return out;
}

/**
 * The whole table as kube-proxy's knftables writes it, one object per line: the table, its sets
 * and maps, the chains and their rules, then the elements. `stale`: service chains the previous
 * sync used and this one does not; kube-proxy flushes them and deletes them only a sync later,
 * so they are still there, empty.
 */
export function nftablesText(r: Pick<NftRenderResult, 'family' | 'fixed' | 'services'>, stale: readonly string[] = []): string {
  const t = `${r.family} ${NFT_TABLE}`;
  const lines: string[] = [`add table ${t} { comment ${q('rules for kube-proxy')} ; }`];
  for (const [name, spec] of r.fixed.sets) lines.push(`add set ${t} ${name} ${spec}`);
  for (const [name, spec] of r.fixed.maps) lines.push(`add map ${t} ${name} ${spec}`);
  for (const [name, c] of r.fixed.chains) lines.push(`add chain ${t} ${name}${c.spec}`);
  for (const [name, c] of r.fixed.chains) for (const rule of c.rules) lines.push(`add rule ${t} ${name} ${rule}`);
  for (const svc of r.services.values()) {
    for (const [name, spec] of svc.sets) lines.push(`add set ${t} ${name} ${spec}`);
    for (const name of svc.chains.keys()) lines.push(`add chain ${t} ${name}`);
    for (const [name, rules] of svc.chains) for (const rule of rules) lines.push(`add rule ${t} ${name} ${rule}`);
  }
  for (const name of stale) lines.push(`add chain ${t} ${name}`);
  for (const [container, elems] of tableElements(r)) for (const e of elems.values()) lines.push(`add element ${t} ${container} { ${elementText(e)} }`);
  return lines.join('\n') + '\n';
}

/** Chains the previous render used and this one does not (flushed now, deleted a sync later). */
export function staleChains(previous: Pick<NftRenderResult, 'services'>, current: Pick<NftRenderResult, 'services'>): string[] {
  const now = activeChains(current);
  return [...activeChains(previous)].filter((c) => !now.has(c)).sort();
}
