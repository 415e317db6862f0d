// kube-proxy's iptables rule set, rendered as iptables-restore input. Pure: the same function
// serves `knet rules` (print), `knet rules --explain` (read) and `knet proxy` (apply), so what
// people read is exactly what the kernel gets. The structure follows what kube-proxy writes for
// one sync: the filter table in full, then the nat table with the always-written chains and the
// chains of every service (full sync) or of changed services only (partial sync).
import { buildServiceModel, type EndpointInfo, type ServicePortInfo } from './model.ts';
import { isServiceChainName } from './names.ts';
import { cidrContains, parseCIDR, parseIP } from '../util/ip.ts';
import type { LocalDetector, ProxySettings, RenderRequest, RenderResult } from './types.ts';

export const KUBE_SERVICES = 'KUBE-SERVICES';
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const KUBE_FORWARD = 'KUBE-FORWARD';
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
export const KUBE_FIREWALL = 'KUBE-FIREWALL';
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';

export const NFACCT_INVALID = 'ct_state_invalid_dropped_pkts';
export const NFACCT_LOCALHOST_NODEPORTS = 'localhost_nps_accepted_pkts';

const q = (s: string) => `"${s}"`;

/** Chain declarations and rules of one table, in the order kube-proxy writes them. */
class TableBuffer {
  readonly chains: string[] = [];
  readonly rules: string[] = [];
  chain(name: string): void {
    this.chains.push(name);
  }
  rule(chain: string, ...args: string[]): void {
    this.rules.push(`-A ${chain} ${args.join(' ')}`);
  }
  raw(line: string): void {
    this.rules.push(line);
  }
}

function ifLocal(d: LocalDetector): string[] {
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': return ['-s', d.cidrs[0]!];
    case 'BridgeInterface': return ['-i', d.interface];
    case 'InterfaceNamePrefix': return ['-i', `${d.prefix}+`];
    case 'None': return [];
  }
}

function ifNotLocal(d: LocalDetector): string[] {
  const l = ifLocal(d);
  return l.length ? ['!', ...l] : [];
}

export function probability(n: number): string {
  return (1 / n).toFixed(10);
}

export interface CategorizedEndpoints {
  cluster: EndpointInfo[];
  local: EndpointInfo[];
  allReachable: EndpointInfo[];
  hasAny: boolean;
}

/**
 * Cluster-policy endpoints are used by internal traffic with Cluster policy, and by any
 * externally reachable port: even with externalTrafficPolicy Local, pods and the node itself
 * reach external addresses through the Cluster-policy chain (the EXT chain's short-circuit).
 */
export function usesClusterEndpoints(s: ServicePortInfo): boolean {
  return !s.internalPolicyLocal || externallyAccessible(s);
}

export function usesLocalEndpoints(s: ServicePortInfo): boolean {
  return s.internalPolicyLocal || (s.externalPolicyLocal && externallyAccessible(s));
}

export function externallyAccessible(s: ServicePortInfo): boolean {
  return s.nodePort !== 0 || s.loadBalancerVIPs.length > 0 || s.externalIPs.length > 0;
}

/**
 * Which endpoints each traffic policy uses: ready ones, else serving-and-terminating ones
 * (graceful termination fallback), separately for Cluster and Local policy.
 */
export function categorizeEndpoints(s: ServicePortInfo): CategorizedEndpoints {
  const eps = s.endpoints;
  let cluster: EndpointInfo[] = [];
  let local: EndpointInfo[] = [];
  let hasAny = false;
  if (usesClusterEndpoints(s)) {
    cluster = eps.filter((e) => e.ready);
    if (cluster.length === 0) cluster = eps.filter((e) => e.serving && e.terminating);
    if (cluster.length > 0) hasAny = true;
  }
  if (!usesLocalEndpoints(s)) return { cluster, local, allReachable: cluster, hasAny };
  let localReady = false;
  let localServingTerminating = false;
  for (const e of eps) {
    if (e.ready) {
      hasAny = true;
      if (e.isLocal) localReady = true;
    } else if (e.serving && e.terminating) {
      hasAny = true;
      if (e.isLocal) localServingTerminating = true;
    }
  }
  if (localReady) local = eps.filter((e) => e.isLocal && e.ready);
  else if (localServingTerminating) local = eps.filter((e) => e.isLocal && e.serving && e.terminating);
  if (!usesClusterEndpoints(s)) return { cluster, local, allReachable: local, hasAny };
  if (local.length === 0) return { cluster, local, allReachable: cluster, hasAny };
  const union = new Map<string, EndpointInfo>();
  for (const e of cluster) union.set(e.addr, e);
  for (const e of local) union.set(e.addr, e);
  return { cluster, local, allReachable: [...union.values()], hasAny };
}

/** The decisions kube-proxy takes for one service port; shared by the renderer and --explain. */
export interface ServicePortPlan {
  clusterEps: EndpointInfo[];
  localEps: EndpointInfo[];
  allReachable: EndpointInfo[];
  hasEndpoints: boolean;
  /** Cluster IP traffic has somewhere to go. */
  hasInternal: boolean;
  /** Node port, external and LB traffic from outside has somewhere to go. */
  hasExternal: boolean;
  usesFW: boolean;
  usesClusterChain: boolean;
  usesLocalChain: boolean;
  internalChain: string;
  externalPolicyChain: string;
  lbChain: string;
  /** What the filter table does with cluster IP traffic that has no endpoint to go to. */
  internalFilter?: { target: 'REJECT' | 'DROP'; reason: string };
  externalFilter?: { target: 'REJECT' | 'DROP'; reason: string };
}

export function planServicePort(s: ServicePortInfo): ServicePortPlan {
  const { cluster, local, allReachable, hasAny } = categorizeEndpoints(s);
  const hasInternal = s.internalPolicyLocal ? hasAny && local.length > 0 : hasAny;
  const hasExternal = s.externalPolicyLocal ? hasAny && local.length > 0 : hasAny;
  const usesFW = hasAny && s.loadBalancerVIPs.length > 0 && s.loadBalancerSourceRanges.length > 0;
  const plan: ServicePortPlan = {
    clusterEps: cluster, localEps: local, allReachable, hasEndpoints: hasAny, hasInternal, hasExternal, usesFW,
    usesClusterChain: cluster.length > 0 && usesClusterEndpoints(s),
    usesLocalChain: local.length > 0 && usesLocalEndpoints(s),
    internalChain: s.internalPolicyLocal ? s.chains.local : s.chains.cluster,
    externalPolicyChain: s.externalPolicyLocal ? s.chains.local : s.chains.cluster,
    lbChain: usesFW ? s.chains.firewall : s.chains.external,
  };
  if (!hasAny) {
    plan.internalFilter = plan.externalFilter = { target: 'REJECT', reason: `${s.portName} has no endpoints` };
  } else {
    if (!hasInternal) plan.internalFilter = { target: 'DROP', reason: `${s.portName} has no local endpoints` };
    if (!hasExternal) plan.externalFilter = { target: 'DROP', reason: `${s.portName} has no local endpoints` };
  }
  return plan;
}

interface NodePortAddresses {
  matchAll: boolean;
  cidrs: string[];
  containsIPv4Loopback: boolean;
}

function nodePortAddresses(settings: ProxySettings): NodePortAddresses {
  const fam = settings.family === 'IPv4' ? 4 : 6;
  const cidrs: string[] = [];
  for (const s of settings.nodePortAddresses) {
    if (s === 'primary') {
      for (const ip of settings.nodeIPs) {
        const p = parseIP(ip);
        if (p?.family === fam) cidrs.push(`${p.text}/${fam === 4 ? 32 : 128}`);
      }
      continue;
    }
    const c = parseCIDR(s.trim());
    if (c && c.family === fam) cidrs.push(c.text);
  }
  if (cidrs.length === 0) cidrs.push(fam === 4 ? '0.0.0.0/0' : '::/0');
  const matchAll = cidrs.some((c) => c === '0.0.0.0/0' || c === '::/0');
  const loop = parseIP('127.0.0.1')!;
  const containsIPv4Loopback = cidrs.some((c) => {
    const p = parseCIDR(c)!;
    return p.family === 4 && cidrContains(p, loop);
  });
  return { matchAll, cidrs: matchAll ? [fam === 4 ? '0.0.0.0/0' : '::/0'] : cidrs, containsIPv4Loopback };
}

/** Node addresses (from the interfaces) that fall in the nodePortAddresses CIDRs, first seen first. */
function nodePortIPs(npa: NodePortAddresses, settings: ProxySettings): string[] {
  const out: string[] = [];
  for (const c of npa.cidrs) {
    const cidr = parseCIDR(c)!;
    for (const a of settings.interfaceAddresses) {
      const ip = parseIP(a.cidr.split('/')[0]);
      if (ip && cidrContains(cidr, ip) && !out.includes(ip.text)) out.push(ip.text);
    }
  }
  return out;
}

export function masqueradeMark(bit: number): string {
  // kube-proxy formats 1<<bit as 0x-prefixed hex without padding (bit 14 gives 0x4000).
  return `0x${((1 << bit) >>> 0).toString(16)}`;
}

/** Everything one service port contributes to a sync, per destination. */
interface PortOutput {
  filter: TableBuffer;
  /** Rules in KUBE-SERVICES and KUBE-NODEPORTS (written in every sync). */
  natTop: TableBuffer;
  /** The port's own chains (SVC, SVL, EXT, FW, SEP) and their rules. */
  own: TableBuffer;
  noLocalInternal: boolean;
  noLocalExternal: boolean;
}

interface PortContext {
  settings: ProxySettings;
  detector: LocalDetector;
  localhostNodePorts: boolean;
  isIPv6: boolean;
  svcComment: (c: string) => string[];
}

function renderServicePort(s: ServicePortInfo, ctx: PortContext): PortOutput {
  const { settings, detector, localhostNodePorts, isIPv6, svcComment } = ctx;
  const po: PortOutput = { filter: new TableBuffer(), natTop: new TableBuffer(), own: new TableBuffer(), noLocalInternal: false, noLocalExternal: false };
  const proto = s.protocol;
  const name = s.portName;
  const port = String(s.port);
  const plan = planServicePort(s);
  const { clusterEps, localEps, allReachable, hasEndpoints, hasInternal, hasExternal, usesFW } = plan;
  const { internalChain, externalPolicyChain, lbChain } = plan;
  const clusterChain = s.chains.cluster;
  const localChain = s.chains.local;
  const extChain = s.chains.external;
  const usesExtChain = hasEndpoints && externallyAccessible(s);
  const internalTarget = plan.internalFilter?.target ?? '';
  const internalComment = plan.internalFilter ? q(plan.internalFilter.reason) : '';
  const externalTarget = plan.externalFilter?.target ?? '';
  const externalComment = plan.externalFilter ? q(plan.externalFilter.reason) : '';
  po.noLocalInternal = hasEndpoints && !hasInternal;
  po.noLocalExternal = hasEndpoints && !hasExternal;

  // Cluster IP.
  if (hasInternal) {
    po.natTop.rule(KUBE_SERVICES, '-m', 'comment', '--comment', q(`${name} cluster IP`), '-m', proto, '-p', proto, '-d', s.clusterIP, '--dport', port, '-j', internalChain);
  } else {
    po.filter.rule(KUBE_SERVICES, '-m', 'comment', '--comment', internalComment, '-m', proto, '-p', proto, '-d', s.clusterIP, '--dport', port, '-j', internalTarget);
  }
  // External IPs.
  for (const ip of s.externalIPs) {
    if (hasEndpoints) {
      po.natTop.rule(KUBE_SERVICES, '-m', 'comment', '--comment', q(`${name} external IP`), '-m', proto, '-p', proto, '-d', ip, '--dport', port, '-j', extChain);
    }
    if (!hasExternal) {
      po.filter.rule(KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalComment, '-m', proto, '-p', proto, '-d', ip, '--dport', port, '-j', externalTarget);
    }
  }
  // Load balancer ingress IPs.
  for (const ip of s.loadBalancerVIPs) {
    if (hasEndpoints) {
      po.natTop.rule(KUBE_SERVICES, '-m', 'comment', '--comment', q(`${name} loadbalancer IP`), '-m', proto, '-p', proto, '-d', ip, '--dport', port, '-j', lbChain);
    }
    if (usesFW) {
      po.filter.rule(KUBE_PROXY_FIREWALL, '-m', 'comment', '--comment', q(`${name} traffic not accepted by ${s.chains.firewall}`), '-m', proto, '-p', proto, '-d', ip, '--dport', port, '-j', 'DROP');
    }
  }
  if (!hasExternal) {
    for (const ip of s.loadBalancerVIPs) {
      po.filter.rule(KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalComment, '-m', proto, '-p', proto, '-d', ip, '--dport', port, '-j', externalTarget);
    }
  }
  // Node ports.
  if (s.nodePort !== 0) {
    const np = String(s.nodePort);
    if (hasEndpoints) {
      if (localhostNodePorts && settings.nfacctCounters) {
        po.natTop.rule(KUBE_NODEPORTS, '-m', 'comment', '--comment', name, '-m', proto, '-p', proto, '-d', '127.0.0.0/8', '--dport', np,
          '-m', 'nfacct', '--nfacct-name', NFACCT_LOCALHOST_NODEPORTS, '-j', extChain);
      }
      po.natTop.rule(KUBE_NODEPORTS, '-m', 'comment', '--comment', name, '-m', proto, '-p', proto, '--dport', np, '-j', extChain);
    }
    if (!hasExternal) {
      po.filter.rule(KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalComment, '-m', 'addrtype', '--dst-type', 'LOCAL', '-m', proto, '-p', proto, '--dport', np, '-j', externalTarget);
    }
  }
  // Health check node port: always accepted, whether or not there are local endpoints.
  if (s.healthCheckNodePort !== 0) {
    po.filter.rule(KUBE_NODEPORTS, '-m', 'comment', '--comment', q(`${name} health check node port`), '-m', 'tcp', '-p', 'tcp', '--dport', String(s.healthCheckNodePort), '-j', 'ACCEPT');
  }

  const out = po.own;

  if (hasInternal) {
    const args = ['-m', 'comment', '--comment', q(`${name} cluster IP`), '-m', proto, '-p', proto, '-d', s.clusterIP, '--dport', port];
    if (settings.masqueradeAll) out.rule(internalChain, ...args, '-j', KUBE_MARK_MASQ);
    else if (detector.mode !== 'None') out.rule(internalChain, ...args, ...ifNotLocal(detector), '-j', KUBE_MARK_MASQ);
  }
  // Chains are declared before their rules are written (written below, declared here).
  const declare = (c: string) => { out.chain(c); };
  if (usesExtChain) {
    declare(extChain);
    if (!s.externalPolicyLocal) {
      out.rule(extChain, '-m', 'comment', '--comment', q(`masquerade traffic for ${name} external destinations`), '-j', KUBE_MARK_MASQ);
    } else {
      if (detector.mode !== 'None') {
        // Pods reaching an external address are treated as if they came back from outside a
        // load balancer: no traffic policy applies.
        out.rule(extChain, '-m', 'comment', '--comment', q(`pod traffic for ${name} external destinations`), ...ifLocal(detector), '-j', clusterChain);
      }
      out.rule(extChain, '-m', 'comment', '--comment', q(`masquerade LOCAL traffic for ${name} external destinations`), '-m', 'addrtype', '--src-type', 'LOCAL', '-j', KUBE_MARK_MASQ);
      out.rule(extChain, '-m', 'comment', '--comment', q(`route LOCAL traffic for ${name} external destinations`), '-m', 'addrtype', '--src-type', 'LOCAL', '-j', clusterChain);
    }
    if (hasExternal) out.rule(extChain, '-j', externalPolicyChain);
  }
  if (usesFW) {
    const fw = s.chains.firewall;
    declare(fw);
    const fwArgs = ['-m', 'comment', '--comment', q(`${name} loadbalancer IP`)];
    let allowFromNode = false;
    const nodeIP = parseIP(settings.nodeIPs.find((ip) => parseIP(ip)?.family === (isIPv6 ? 6 : 4)) ?? '');
    for (const cidr of s.loadBalancerSourceRanges) {
      out.rule(fw, ...fwArgs, '-s', cidr, '-j', extChain);
      if (nodeIP && cidrContains(parseCIDR(cidr)!, nodeIP)) allowFromNode = true;
    }
    // A VIP that is local on the node loops back with the VIP as source: allow it when the
    // node itself is allowed.
    if (allowFromNode) for (const ip of s.loadBalancerVIPs) out.rule(fw, ...fwArgs, '-s', ip, '-j', extChain);
    out.rule(fw, '-m', 'comment', '--comment', q(`other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`));
  }
  const toEndpoints = (chain: string, eps: EndpointInfo[]) => {
    declare(chain);
    if (s.clientIPAffinity) {
      for (const ep of eps) {
        out.rule(chain, ...svcComment(q(`${name} -> ${ep.addr}`)), '-m', 'recent', '--name', ep.chain, '--rcheck', '--seconds', String(s.stickySeconds), '--reap', '-j', ep.chain);
      }
    }
    eps.forEach((ep, i) => {
      const stat = i < eps.length - 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', probability(eps.length - i)] : [];
      out.rule(chain, ...svcComment(q(`${name} -> ${ep.addr}`)), ...stat, '-j', ep.chain);
    });
  };
  if (plan.usesClusterChain) toEndpoints(clusterChain, clusterEps);
  if (plan.usesLocalChain) toEndpoints(localChain, localEps);
  for (const ep of allReachable) {
    declare(ep.chain);
    const base = svcComment(name);
    out.rule(ep.chain, ...base, '-s', ep.ip, '-j', KUBE_MARK_MASQ);
    const aff = s.clientIPAffinity ? ['-m', 'recent', '--name', ep.chain, '--set'] : [];
    out.rule(ep.chain, ...base, ...aff, '-m', proto, '-p', proto, '-j', 'DNAT', '--to-destination', ep.addr);
  }
  return po;
}

const portCache: { key: string; map: Map<string, PortOutput> } = { key: '', map: new Map() };

export function renderIptables(req: RenderRequest): RenderResult {
  const { settings } = req;
  const model = buildServiceModel(req.cluster, settings);
  const isIPv6 = settings.family === 'IPv6';
  const mark = masqueradeMark(settings.masqueradeBit);
  const npa = nodePortAddresses(settings);
  const localhostNodePorts = settings.localhostNodePorts && npa.containsIPv4Loopback && !isIPv6;
  const detector = settings.localDetector;
  const partial = req.partial;
  const changed = partial?.changedServices;

  const filter = new TableBuffer();
  const nat = new TableBuffer();
  let skippedRules = 0;

  for (const c of [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]) filter.chain(c);
  for (const c of [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]) nat.chains.push(c);

  nat.rule(KUBE_POSTROUTING, '-m', 'mark', '!', '--mark', `${mark}/${mark}`, '-j', 'RETURN');
  // Clear the mark so a packet that traverses the stack again is not masqueraded twice.
  nat.rule(KUBE_POSTROUTING, '-j', 'MARK', '--xor-mark', mark);
  nat.rule(KUBE_POSTROUTING, '-m', 'comment', '--comment', q('kubernetes service traffic requiring SNAT'), '-j', 'MASQUERADE',
    ...(settings.randomFully ? ['--random-fully'] : []));
  nat.rule(KUBE_MARK_MASQ, '-j', 'MARK', '--or-mark', mark);

  if (!isIPv6 && localhostNodePorts) {
    // route_localnet makes 127.0.0.0/8 routable; drop such traffic from outside (CVE-2020-8558).
    filter.chain(KUBE_FIREWALL);
    filter.rule(KUBE_FIREWALL, '-m', 'comment', '--comment', q('block incoming localnet connections'),
      '-d', '127.0.0.0/8', '!', '-s', '127.0.0.0/8', '-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT', '-j', 'DROP');
  }

  const active = new Set<string>();
  let totalEndpoints = 0;
  for (const s of model.ports) totalEndpoints += s.endpoints.length;
  const largeCluster = totalEndpoints > settings.largeClusterEndpointsThreshold;
  const svcComment = (c: string): string[] => (largeCluster ? [] : ['-m', 'comment', '--comment', c]);
  let noLocalInternal = 0;
  let noLocalExternal = 0;

  // Rendering a port is a pure function of its fingerprint and the settings, so a proxy that
  // re-renders an unchanged cluster reuses the previous output instead of rebuilding ~10 rules
  // per endpoint.
  const ctx: PortContext = { settings, detector, localhostNodePorts, isIPv6, svcComment };
  const ctxKey = `${JSON.stringify(settings)}|${largeCluster}`;
  if (portCache.key !== ctxKey || portCache.map.size > 4 * model.ports.length + 1000) {
    portCache.key = ctxKey;
    portCache.map = new Map();
  }
  const nextCache = new Map<string, PortOutput>();
  for (const s of model.ports) {
    const fp = s.fp;
    let po = portCache.map.get(fp);
    if (!po) po = renderServicePort(s, ctx);
    nextCache.set(fp, po);
    if (po.noLocalInternal) noLocalInternal++;
    if (po.noLocalExternal) noLocalExternal++;
    filter.rules.push(...po.filter.rules);
    nat.rules.push(...po.natTop.rules);
    for (const c of po.own.chains) active.add(c);
    if (partial && !changed!.has(s.service)) {
      // Left out of a partial sync, but still counted (kube-proxy's metrics do the same).
      skippedRules += po.own.rules.length;
    } else {
      nat.chains.push(...po.own.chains);
      nat.rules.push(...po.own.rules);
    }
  }
  portCache.map = nextCache;

  // Stale service chains: declared (which flushes them) and deleted.
  const existing = partial?.previous ?? req.existing;
  let deleted = 0;
  if (existing) {
    for (const c of [...existing.natChains].sort()) {
      if (!active.has(c) && isServiceChainName(c)) {
        nat.chains.push(c);
        nat.raw(`-X ${c}`);
        deleted++;
      }
    }
  }

  // Node ports last in KUBE-SERVICES.
  const lastComment = q('kubernetes service nodeports; NOTE: this must be the last rule in this chain');
  if (npa.matchAll) {
    const dst = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
    if (isIPv6) dst.push('!', '-d', '::1/128');
    else if (!localhostNodePorts) dst.push('!', '-d', '127.0.0.0/8');
    nat.rule(KUBE_SERVICES, '-m', 'comment', '--comment', lastComment, ...dst, '-j', KUBE_NODEPORTS);
  } else {
    for (const ip of nodePortIPs(npa, settings)) {
      const p = parseIP(ip)!;
      const loopback = p.family === 4 ? ip.startsWith('127.') : ip === '::1';
      if (loopback && (isIPv6 || !localhostNodePorts)) continue;
      nat.rule(KUBE_SERVICES, '-m', 'comment', '--comment', lastComment, '-d', ip, '-j', KUBE_NODEPORTS);
    }
  }

  filter.rule(KUBE_FORWARD, '-m', 'conntrack', '--ctstate', 'INVALID',
    ...(settings.nfacctCounters ? ['-m', 'nfacct', '--nfacct-name', NFACCT_INVALID] : []), '-j', 'DROP');
  filter.rule(KUBE_FORWARD, '-m', 'comment', '--comment', q('kubernetes forwarding rules'), '-m', 'mark', '--mark', `${mark}/${mark}`, '-j', 'ACCEPT');
  filter.rule(KUBE_FORWARD, '-m', 'comment', '--comment', q('kubernetes forwarding conntrack rule'), '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT');

  const parts: string[] = ['*filter'];
  for (const c of filter.chains) parts.push(`:${c} - [0:0]`);
  parts.push(...filter.rules, 'COMMIT', '*nat');
  for (const c of nat.chains) parts.push(`:${c} - [0:0]`);
  parts.push(...nat.rules, 'COMMIT');
  const natWritten = nat.rules.length - deleted;
  return {
    text: parts.join('\n') + '\n',
    state: { natChains: [...active] },
    rulesWritten: { filter: filter.rules.length, nat: natWritten },
    rulesTotal: { filter: filter.rules.length, nat: natWritten + skippedRules },
    warnings: model.warnings,
    noLocalEndpoints: { internal: noLocalInternal, external: noLocalExternal },
  };
}
