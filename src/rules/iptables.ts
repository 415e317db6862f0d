// kube-proxy's iptables rule set, rendered as iptables-restore input. Pure: the same function
// serves `knet rules` (print), `knet rules --explain` (read) and `knet proxy` (apply), so what
// people read is exactly what the kernel gets. The structure follows what kube-proxy writes for
// one sync: the filter table in full, then the nat table with the always-written chains and the
// chains of every service (full sync) or of changed services only (partial sync).
import { duplicateWarnings, modelService, portsOfChanges, type EndpointInfo, type ServiceChange, type ServicePortInfo } from './model.ts';
import { indexCluster } from './cluster-index.ts';
import { externallyAccessible, selectEndpoints, usesClusterEndpoints, usesLocalEndpoints } from './endpoints.ts';
import type { ServiceObjects } from '../model/k8s.ts';
import { prop } from '../model/json.ts';
import { isServiceChainName } from './names.ts';
import { cidrContains, parseCIDR, parseIP } from '../util/ip.ts';
import { nodePortAddresses, nodePortIPs, type NodePortAddresses } from './node-ports.ts';
import { Buffer } from 'node:buffer';
import { exactStrings, flat, sameStrings } from '../util/arrays.ts';
import { linesOf, RuleArena, textOf } from './rule-bytes.ts';
import type { LocalDetector, ProxySettings, RenderRequest, RenderResult, RenderWarning, RenderedTables } from './types.ts';

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

/** One rule: "-A CHAIN " + the rest, flat (it is kept between renders). */
function ruleLine(chain: string, rest: string): string {
  return flat(`-A ${chain} ${rest}`);
}

/** Chain declarations and rules of one table, in the order kube-proxy writes them. */
class TableBuffer {
  readonly chains: string[] = [];
  readonly rules: string[] = [];
  chain(name: string): void {
    this.chains.push(name);
  }
  rule(chain: string, rest: string): void {
    this.rules.push(ruleLine(chain, rest));
  }
}

/** Endpoint chains first, then service, external and firewall chains: each after its targets. */
const chainRank = (c: string) => (c.startsWith('KUBE-SEP-') ? 0 : c.startsWith('KUBE-SVC-') || c.startsWith('KUBE-SVL-') ? 1 : c.startsWith('KUBE-EXT-') ? 2 : 3);

/**
 * A port's own chains with their rules, while it is rendered; insertion order is declaration
 * order. With an arena (a one-shot render), the rules end up there as bytes.
 */
class ChainBuffer {
  private readonly chains = new Map<string, string[]>();
  private ruleCount = 0;
  constructor(private readonly arena: RuleArena | undefined) {}
  chain(name: string): void {
    if (!this.chains.has(name)) this.chains.set(name, []);
  }
  rule(chain: string, rest: string): void {
    let l = this.chains.get(chain);
    if (!l) this.chains.set(chain, (l = []));
    l.push(this.arena ? `-A ${chain} ${rest}` : ruleLine(chain, rest));
    this.ruleCount++;
  }
  /** The chains in dependency order, with their rules in exact-size arrays (or in the arena). */
  finish(): Pick<PortOutput, 'chains' | 'rules' | 'ruleCount'> {
    const chains: string[] = new Array(this.chains.size);
    const rules: (readonly string[])[] = new Array(this.chains.size);
    let i = 0;
    for (let rank = 0; rank < 4; rank++) {
      for (const [c, l] of this.chains) if (chainRank(c) === rank) { chains[i] = c; rules[i++] = this.arena ? l : exactStrings(l); }
    }
    return { chains, rules: this.arena ? this.arena.append(rules) : rules, ruleCount: this.ruleCount };
  }
}

/** A port's own rules per chain (in `chains` order), from the arena's bytes where they are kept there. */
function chainRules(po: PortOutput): readonly (readonly string[])[] {
  if (!(po.rules instanceof Uint8Array)) return po.rules;
  const at = new Map(po.chains.map((c, i) => [c, i]));
  const out: string[][] = po.chains.map(() => []);
  for (const line of linesOf(po.rules)) out[at.get(line.slice(3, line.indexOf(' ', 3)))!]!.push(line);
  return out;
}

/** The match for traffic from local pods; "" for detector None. */
function ifLocal(d: LocalDetector): string {
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': return `-s ${d.cidrs[0]!}`;
    case 'BridgeInterface': return `-i ${d.interface}`;
    case 'InterfaceNamePrefix': return `-i ${d.prefix}+`;
    case 'None': return '';
  }
}

function ifNotLocal(d: LocalDetector): string {
  const l = ifLocal(d);
  return l ? `! ${l}` : '';
}

export function probability(n: number): string {
  return (1 / n).toFixed(10);
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
  const { cluster, local, allReachable, hasAny, hasInternal, hasExternal } = selectEndpoints(s);
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

export function masqueradeMark(bit: number): string {
  // kube-proxy formats 1<<bit as 0x-prefixed hex without padding (bit 14 gives 0x4000).
  return `0x${((1 << bit) >>> 0).toString(16)}`;
}

/**
 * Everything one service port contributes to a sync, per destination. The renderer keeps one per
 * port between syncs (10k services: 10k of these), so it holds exact-size arrays only.
 */
interface PortOutput {
  filter: readonly string[];
  /** Rules in KUBE-SERVICES and KUBE-NODEPORTS (written in every sync). */
  natTop: readonly string[];
  /** The port's own chains (SEP, then SVC/SVL, EXT, FW: each after its targets)... */
  chains: readonly string[];
  /** ...and their rules: per chain, or in a one-shot render all of them as UTF-8 lines in that order. */
  rules: readonly (readonly string[])[] | Uint8Array;
  ruleCount: number;
  noLocalInternal: boolean;
  noLocalExternal: boolean;
}

interface PortContext {
  settings: ProxySettings;
  detector: LocalDetector;
  localhostNodePorts: boolean;
  isIPv6: boolean;
  /** "-m comment --comment C " (trailing blank), or "" in large-cluster mode. */
  svcComment: (c: string) => string;
  /** Where a one-shot render keeps its service chains' rules. */
  arena: RuleArena | undefined;
}

function renderServicePort(s: ServicePortInfo, ctx: PortContext): PortOutput {
  const { settings, detector, localhostNodePorts, isIPv6, svcComment } = ctx;
  const filter = new TableBuffer();
  const natTop = new TableBuffer();
  const out = new ChainBuffer(ctx.arena);
  const proto = s.protocol;
  const name = s.portName;
  const port = s.port;
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
  const match = `-m ${proto} -p ${proto}`;

  // Cluster IP.
  const clusterIPMatch = `-m comment --comment "${name} cluster IP" ${match} -d ${s.clusterIP} --dport ${port}`;
  if (hasInternal) {
    natTop.rule(KUBE_SERVICES, `${clusterIPMatch} -j ${internalChain}`);
  } else {
    filter.rule(KUBE_SERVICES, `-m comment --comment ${internalComment} ${match} -d ${s.clusterIP} --dport ${port} -j ${internalTarget}`);
  }
  // External IPs.
  for (const ip of s.externalIPs) {
    if (hasEndpoints) natTop.rule(KUBE_SERVICES, `-m comment --comment "${name} external IP" ${match} -d ${ip} --dport ${port} -j ${extChain}`);
    if (!hasExternal) filter.rule(KUBE_EXTERNAL_SERVICES, `-m comment --comment ${externalComment} ${match} -d ${ip} --dport ${port} -j ${externalTarget}`);
  }
  // Load balancer ingress IPs.
  for (const ip of s.loadBalancerVIPs) {
    if (hasEndpoints) natTop.rule(KUBE_SERVICES, `-m comment --comment "${name} loadbalancer IP" ${match} -d ${ip} --dport ${port} -j ${lbChain}`);
    if (usesFW) filter.rule(KUBE_PROXY_FIREWALL, `-m comment --comment "${name} traffic not accepted by ${s.chains.firewall}" ${match} -d ${ip} --dport ${port} -j DROP`);
  }
  if (!hasExternal) {
    for (const ip of s.loadBalancerVIPs) {
      filter.rule(KUBE_EXTERNAL_SERVICES, `-m comment --comment ${externalComment} ${match} -d ${ip} --dport ${port} -j ${externalTarget}`);
    }
  }
  // Node ports.
  if (s.nodePort !== 0) {
    const np = s.nodePort;
    if (hasEndpoints) {
      if (localhostNodePorts && settings.nfacctCounters) {
        natTop.rule(KUBE_NODEPORTS, `-m comment --comment ${name} ${match} -d 127.0.0.0/8 --dport ${np} -m nfacct --nfacct-name ${NFACCT_LOCALHOST_NODEPORTS} -j ${extChain}`);
      }
      natTop.rule(KUBE_NODEPORTS, `-m comment --comment ${name} ${match} --dport ${np} -j ${extChain}`);
    }
    if (!hasExternal) {
      filter.rule(KUBE_EXTERNAL_SERVICES, `-m comment --comment ${externalComment} -m addrtype --dst-type LOCAL ${match} --dport ${np} -j ${externalTarget}`);
    }
  }
  // Health check node port: always accepted, whether or not there are local endpoints.
  if (s.healthCheckNodePort !== 0) {
    filter.rule(KUBE_NODEPORTS, `-m comment --comment "${name} health check node port" -m tcp -p tcp --dport ${s.healthCheckNodePort} -j ACCEPT`);
  }

  if (hasInternal) {
    if (settings.masqueradeAll) out.rule(internalChain, `${clusterIPMatch} -j ${KUBE_MARK_MASQ}`);
    else if (detector.mode !== 'None') out.rule(internalChain, `${clusterIPMatch} ${ifNotLocal(detector)} -j ${KUBE_MARK_MASQ}`);
  }
  // Chains are declared before their rules are written (written below, declared here).
  if (usesExtChain) {
    out.chain(extChain);
    if (!s.externalPolicyLocal) {
      out.rule(extChain, `-m comment --comment "masquerade traffic for ${name} external destinations" -j ${KUBE_MARK_MASQ}`);
    } else {
      if (detector.mode !== 'None') {
        // Pods reaching an external address are treated as if they came back from outside a
        // load balancer: no traffic policy applies.
        out.rule(extChain, `-m comment --comment "pod traffic for ${name} external destinations" ${ifLocal(detector)} -j ${clusterChain}`);
      }
      out.rule(extChain, `-m comment --comment "masquerade LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j ${KUBE_MARK_MASQ}`);
      out.rule(extChain, `-m comment --comment "route LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j ${clusterChain}`);
    }
    if (hasExternal) out.rule(extChain, `-j ${externalPolicyChain}`);
  }
  if (usesFW) {
    const fw = s.chains.firewall;
    out.chain(fw);
    const fwComment = `-m comment --comment "${name} loadbalancer IP"`;
    let allowFromNode = false;
    const nodeIP = parseIP(settings.nodeIPs.find((ip) => parseIP(ip)?.family === (isIPv6 ? 6 : 4)) ?? '');
    for (const cidr of s.loadBalancerSourceRanges) {
      out.rule(fw, `${fwComment} -s ${cidr} -j ${extChain}`);
      if (nodeIP && cidrContains(parseCIDR(cidr)!, nodeIP)) allowFromNode = true;
    }
    // A VIP that is local on the node loops back with the VIP as source: allow it when the
    // node itself is allowed.
    if (allowFromNode) for (const ip of s.loadBalancerVIPs) out.rule(fw, `${fwComment} -s ${ip} -j ${extChain}`);
    out.rule(fw, `-m comment --comment "other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL"`);
  }
  const toEndpoints = (chain: string, eps: EndpointInfo[]) => {
    out.chain(chain);
    if (s.clientIPAffinity) {
      for (const ep of eps) {
        out.rule(chain, `${svcComment(`"${name} -> ${ep.addr}"`)}-m recent --name ${ep.chain} --rcheck --seconds ${s.stickySeconds} --reap -j ${ep.chain}`);
      }
    }
    const n = eps.length;
    for (let i = 0; i < n; i++) {
      const ep = eps[i]!;
      const stat = i < n - 1 ? `-m statistic --mode random --probability ${probability(n - i)} ` : '';
      out.rule(chain, `${svcComment(`"${name} -> ${ep.addr}"`)}${stat}-j ${ep.chain}`);
    }
  };
  if (plan.usesClusterChain) toEndpoints(clusterChain, clusterEps);
  if (plan.usesLocalChain) toEndpoints(localChain, localEps);
  const base = svcComment(name);
  const aff = (ep: EndpointInfo) => (s.clientIPAffinity ? `-m recent --name ${ep.chain} --set ` : '');
  for (const ep of allReachable) {
    out.chain(ep.chain);
    out.rule(ep.chain, `${base}-s ${ep.ip} -j ${KUBE_MARK_MASQ}`);
    out.rule(ep.chain, `${base}${aff(ep)}${match} -j DNAT --to-destination ${ep.addr}`);
  }
  return {
    filter: exactStrings(filter.rules), natTop: exactStrings(natTop.rules), ...out.finish(),
    noLocalInternal: hasEndpoints && !hasInternal, noLocalExternal: hasEndpoints && !hasExternal,
  };
}

/**
 * What the renderer keeps per service between renders: its objects, each port's fingerprint and
 * rendered rules, but not the model itself (at 10k services the models would double the
 * renderer's memory); the model is rebuilt from the objects in the rare case it is needed again.
 */
interface RenderedService {
  /** The objects the ports were modelled from (compared by reference). */
  objs: ServiceObjects;
  /** Per port: its fingerprint (equal fingerprints render equal rules). */
  fps: readonly string[];
  /** Per port; rendered on demand, dropped when settings change. */
  outputs: (PortOutput | undefined)[];
  /** The model, until every port is rendered. */
  ports: ServicePortInfo[] | undefined;
  warnings: RenderWarning[];
  endpointCount: number;
}

function sameObjects(a: ServiceObjects, b: ServiceObjects): boolean {
  if (a === b) return true;
  if (a.service !== b.service || a.slices.length !== b.slices.length) return false;
  for (let i = 0; i < a.slices.length; i++) if (a.slices[i] !== b.slices[i]) return false;
  return true;
}

/** Splits rules ("-A CHAIN ...") by chain, keeping each chain's order. */
function byChain(rules: readonly string[], declared: readonly string[] = []): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const c of declared) out.set(c, []);
  for (const r of rules) {
    const c = r.slice(3, r.indexOf(' ', 3));
    let l = out.get(c);
    if (!l) out.set(c, (l = []));
    l.push(r);
  }
  return out;
}

/**
 * Renders kube-proxy's rule set and remembers, per service, the model and the rendered rules, so
 * the next render re-models only the services that changed (`recompute`) and re-renders only
 * ports whose fingerprint changed. Output is always exactly what a fresh render would give:
 * `renderIptables` is this class used once.
 */
export class IptablesRenderer {
  /** A one-shot renderer keeps its service chains' rules as bytes (see rule-bytes.ts) and renders once. */
  private readonly arena: RuleArena | undefined;
  private rendered = false;
  private modelKey: string | null = null;
  private outputKey = '';
  private readonly services = new Map<string, RenderedService>();
  /** Services with warnings. */
  private readonly warned = new Set<string>();
  private order: string[] | null = null;
  private endpoints = 0;
  /** Every port's output in service order, where each service's ports start, and their own rules. */
  private all: PortOutput[] | null = null;
  /** Per service: where its ports start in `all`, and how many there are. */
  private readonly span = new Map<string, { at: number; n: number }>();
  private ownRules = 0;
  private fixed: FixedChains | null = null;
  private settings: ProxySettings | null = null;
  private changes: ServiceChange[] = [];

  /** The ports, before and after the last render, of the services whose objects it saw change (conntrack clean-up). */
  changedPorts(): { before: ServicePortInfo[]; after: ServicePortInfo[] } {
    return portsOfChanges(this.changes, this.settings);
  }

  constructor(options: { oneShot?: boolean } = {}) {
    this.arena = options.oneShot ? new RuleArena() : undefined;
  }

  render(req: RenderRequest): RenderResult {
    if (this.arena && this.rendered) throw new Error('a one-shot IptablesRenderer renders once');
    this.rendered = true;
    const { settings } = req;
    const changes: ServiceChange[] = (this.changes = []);
    const modelKey = JSON.stringify(settings);
    let index = req.cluster.index;
    const extraWarnings: RenderWarning[] = [];
    if (!index) {
      const indexed = indexCluster(req.cluster);
      index = indexed.index;
      extraWarnings.push(...duplicateWarnings(indexed));
    }
    let walkAll = !req.recompute;
    if (modelKey !== this.modelKey) {
      if (this.settings) for (const rs of this.services.values()) changes.push({ before: { objs: rs.objs, settings: this.settings } });
      this.services.clear();
      this.warned.clear();
      this.order = null;
      this.endpoints = 0;
      this.modelKey = modelKey;
      walkAll = true;
    }
    this.settings = settings;

    const isIPv6 = settings.family === 'IPv6';
    const npa = nodePortAddresses(settings);
    const localhostNodePorts = settings.localhostNodePorts && npa.containsIPv4Loopback && !isIPv6;
    // Above the threshold every port's rules change (no comments), so outputs are kept per mode.
    const threshold = settings.largeClusterEndpointsThreshold;
    let ctx!: PortContext;
    let outputKey = '';
    const setMode = (largeCluster: boolean) => {
      const svcComment = (c: string): string => (largeCluster ? '' : `-m comment --comment ${c} `);
      ctx = { settings, detector: settings.localDetector, localhostNodePorts, isIPv6, svcComment, arena: this.arena };
      outputKey = `${modelKey}|${largeCluster}`;
      if (outputKey !== this.outputKey) {
        for (const rs of this.services.values()) rs.outputs = [];
        this.outputKey = outputKey;
        this.all = null;
      }
    };
    const outputs = (rs: RenderedService): PortOutput[] => {
      const n = rs.fps.length;
      if (rs.outputs.length !== n || rs.outputs.includes(undefined)) {
        const ports = rs.ports ?? modelService(rs.objs, settings).ports;
        for (let i = 0; i < n; i++) rs.outputs[i] ??= renderServicePort(ports[i]!, ctx);
      }
      rs.ports = undefined;
      return rs.outputs as PortOutput[];
    };
    // Each re-modelled service is rendered at once, so its model dies young: a cold render of 10k
    // services never holds all models at the same time (less memory, far less GC). The mode is
    // known only once every service is modelled; until then it is guessed (from the last render,
    // or by counting the slices' endpoints), and a wrong guess is rendered again below.
    const looked: Array<[string, ServiceObjects | undefined]> = [];
    if (walkAll) for (const key of index.keys()) looked.push([key, index.get(key)]);
    // A one-shot render renders in output order, so its rules lie in the arena as they are written.
    if (this.arena) looked.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    let guess = this.endpoints > threshold;
    if (this.services.size === 0) {
      let n = 0;
      for (const [, objs] of looked) for (const sl of objs?.slices ?? []) { const eps = prop(sl, 'endpoints'); if (Array.isArray(eps)) n += eps.length; }
      guess = n > threshold;
    }
    setMode(guess);

    // Services modelled again in this render, with what they rendered before (stale chains).
    const replaced: Array<{ key: string; old: RenderedService }> = [];
    const remodelled: string[] = [];
    const update = (key: string, objs: ServiceObjects | undefined) => {
      const old = this.services.get(key);
      if (!objs) {
        if (!old) return;
        this.services.delete(key);
        this.warned.delete(key);
        this.endpoints -= old.endpointCount;
        this.order = null;
        replaced.push({ key, old });
        changes.push({ before: { objs: old.objs, settings } });
        return;
      }
      if (old && sameObjects(old.objs, objs)) return;
      const entry = modelService(objs, settings);
      // A port whose fingerprint is unchanged keeps its rendered rules.
      const prior = new Map<string, PortOutput>();
      old?.fps.forEach((fp, i) => { const po = old.outputs[i]; if (po) prior.set(fp, po); });
      const fps = entry.ports.map((p) => p.fp);
      const rs: RenderedService = { objs, fps, outputs: fps.map((fp) => prior.get(fp)), ports: entry.ports, warnings: entry.warnings, endpointCount: entry.endpointCount };
      this.services.set(key, rs);
      outputs(rs);
      if (entry.warnings.length) this.warned.add(key);
      else this.warned.delete(key);
      this.endpoints += entry.endpointCount - (old?.endpointCount ?? 0);
      changes.push({ before: old && { objs: old.objs, settings }, after: objs });
      if (old) replaced.push({ key, old });
      else this.order = null;
      remodelled.push(key);
    };
    if (walkAll) {
      const seen = new Set<string>();
      for (const [key, objs] of looked) { seen.add(key); update(key, objs); }
      for (const key of [...this.services.keys()]) if (!seen.has(key)) update(key, undefined);
    } else {
      for (const key of req.recompute!) update(key, index.get(key));
    }

    const largeCluster = this.endpoints > threshold;
    if (largeCluster !== guess) setMode(largeCluster);

    // Port outputs in service order: patched in place where only re-modelled services changed
    // (same services, same port counts), rebuilt otherwise.
    let patched: number[] | null = null;
    if (this.order && this.all) {
      patched = [];
      for (const key of remodelled) {
        const rs = this.services.get(key)!;
        const span = this.span.get(key)!;
        if (span.n !== rs.fps.length) { patched = null; break; }
        const at = span.at;
        const pos = outputs(rs);
        for (let i = 0; i < pos.length; i++) {
          this.ownRules += pos[i]!.ruleCount - this.all[at + i]!.ruleCount;
          this.all[at + i] = pos[i]!;
          patched.push(at + i);
        }
      }
    }
    if (!patched) {
      if (!this.order) this.order = [...this.services.keys()].sort();
      const all: PortOutput[] = [];
      this.span.clear();
      this.ownRules = 0;
      for (const key of this.order) {
        const pos = outputs(this.services.get(key)!);
        this.span.set(key, { at: all.length, n: pos.length });
        for (const po of pos) { all.push(po); this.ownRules += po.ruleCount; }
      }
      this.all = all;
    }
    const all = this.all!;
    // The fixed chains are rebuilt only when a port's contribution to them changed.
    if (!this.fixed || !this.fixed.fits(outputKey, all, patched)) this.fixed = new FixedChains(outputKey, [...all], { settings, npa, localhostNodePorts, isIPv6 });

    // Later renders patch `this.all` in place: this render's result keeps a copy.
    const ports = all.slice();
    // The ports whose own chains this render writes: all of them, or those of changed services.
    const changed = req.partial?.changedServices;
    let written: PortOutput[];
    if (!changed) written = ports;
    else {
      written = [];
      for (const key of [...changed].sort()) { const rs = this.services.get(key); if (rs) written.push(...(rs.outputs as PortOutput[])); }
    }

    // Stale service chains: those the kernel holds (as the caller says, or as this renderer last
    // rendered the re-modelled services) that no longer belong to any port.
    const services = this.services;
    let activeSet: Set<string> | null = null;
    const active = () => {
      if (!activeSet) {
        activeSet = new Set();
        for (const po of ports) for (const c of po.chains) activeSet.add(c);
      }
      return activeSet;
    };
    const previous = req.partial ? req.partial.previous : req.existing;
    const stale: string[] = [];
    if (previous) {
      for (const c of [...previous.natChains].sort()) if (isServiceChainName(c) && !active().has(c)) stale.push(c);
    } else if (req.partial) {
      // Chain names hash the service's name, so a chain never moves between services: what a
      // re-modelled service rendered before and renders no more is stale.
      const candidates = new Set<string>();
      for (const { old } of replaced) for (const po of old.outputs) for (const c of po?.chains ?? []) candidates.add(c);
      for (const { key } of replaced) for (const po of services.get(key)?.outputs ?? []) for (const c of po?.chains ?? []) candidates.delete(c);
      stale.push(...[...candidates].sort());
    }

    const warnings = extraWarnings;
    if (this.warned.size) for (const key of [...this.warned].sort()) warnings.push(...this.services.get(key)!.warnings);
    return assemble({ fixed: this.fixed, written, ownRules: this.ownRules, stale, warnings, active });
  }
}

/** A fresh render (no memory of earlier renders). */
export function renderIptables(req: RenderRequest): RenderResult {
  return new IptablesRenderer({ oneShot: true }).render(req);
}

interface Assembly {
  fixed: FixedChains;
  /** The ports whose own chains this render writes, in service order. */
  written: PortOutput[];
  /** Rules in the own chains of every port (written or not). */
  ownRules: number;
  stale: string[];
  warnings: RenderWarning[];
  /** Service chains of every port. */
  active: () => Set<string>;
}

const FILTER_CHAINS = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL];
const NAT_CHAINS = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ];

interface FixedContext {
  settings: ProxySettings;
  npa: NodePortAddresses;
  localhostNodePorts: boolean;
  isIPv6: boolean;
}

/** The settings-only rules around the per-port ones in the fixed chains. */
function settingsRules(c: FixedContext) {
  const { settings, npa, localhostNodePorts, isIPv6 } = c;
  const mark = masqueradeMark(settings.masqueradeBit);
  const filterPre = new TableBuffer();
  for (const c of FILTER_CHAINS) filterPre.chain(c);
  if (!isIPv6 && localhostNodePorts) {
    // route_localnet makes 127.0.0.0/8 routable; drop such traffic from outside (CVE-2020-8558).
    filterPre.chain(KUBE_FIREWALL);
    filterPre.rule(KUBE_FIREWALL, '-m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP');
  }
  const filterPost = new TableBuffer();
  filterPost.rule(KUBE_FORWARD, `-m conntrack --ctstate INVALID${settings.nfacctCounters ? ` -m nfacct --nfacct-name ${NFACCT_INVALID}` : ''} -j DROP`);
  filterPost.rule(KUBE_FORWARD, `-m comment --comment "kubernetes forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`);
  filterPost.rule(KUBE_FORWARD, '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT');

  const pre = new TableBuffer();
  for (const c of NAT_CHAINS) pre.chain(c);
  pre.rule(KUBE_POSTROUTING, `-m mark ! --mark ${mark}/${mark} -j RETURN`);
  // Clear the mark so a packet that traverses the stack again is not masqueraded twice.
  pre.rule(KUBE_POSTROUTING, `-j MARK --xor-mark ${mark}`);
  pre.rule(KUBE_POSTROUTING, `-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${settings.randomFully ? ' --random-fully' : ''}`);
  pre.rule(KUBE_MARK_MASQ, `-j MARK --or-mark ${mark}`);

  // Node ports last in KUBE-SERVICES.
  const post = new TableBuffer();
  const lastComment = q('kubernetes service nodeports; NOTE: this must be the last rule in this chain');
  if (npa.matchAll) {
    const notLoopback = isIPv6 ? ' ! -d ::1/128' : !localhostNodePorts ? ' ! -d 127.0.0.0/8' : '';
    post.rule(KUBE_SERVICES, `-m comment --comment ${lastComment} -m addrtype --dst-type LOCAL${notLoopback} -j ${KUBE_NODEPORTS}`);
  } else {
    for (const ip of nodePortIPs(npa, settings)) {
      const p = parseIP(ip)!;
      const loopback = p.family === 4 ? ip.startsWith('127.') : ip === '::1';
      if (loopback && (isIPv6 || !localhostNodePorts)) continue;
      post.rule(KUBE_SERVICES, `-m comment --comment ${lastComment} -d ${ip} -j ${KUBE_NODEPORTS}`);
    }
  }
  return { pre, post, filterPre, filterPost };
}

/**
 * The chains written in every sync: the whole filter table and KUBE-SERVICES, KUBE-NODEPORTS,
 * KUBE-POSTROUTING and KUBE-MARK-MASQ in nat. Their content depends only on the settings and on
 * each port's filter and KUBE-SERVICES/KUBE-NODEPORTS rules, so a render in which those are
 * unchanged (an endpoint change, the common case) reuses the previous arrays and text.
 */
class FixedChains {
  private built: { filter: Map<string, string[]>; nat: Map<string, string[]>; filterText: string; natDecl: string; natRules: string } | null = null;
  /** The settings-only rules around the per-port ones. */
  private readonly edges: { pre: TableBuffer; post: TableBuffer; filterPre: TableBuffer; filterPost: TableBuffer };
  readonly filterRules: number;
  readonly natRules: number;
  /** Service ports with no endpoints at all / no local endpoints (kube-proxy metrics). */
  readonly noLocalEndpoints = { internal: 0, external: 0 };

  constructor(readonly key: string, readonly all: readonly PortOutput[], c: FixedContext) {
    let f = 0;
    let n = 0;
    for (const po of all) {
      f += po.filter.length;
      n += po.natTop.length;
      if (po.noLocalInternal) this.noLocalEndpoints.internal++;
      if (po.noLocalExternal) this.noLocalEndpoints.external++;
    }
    this.edges = settingsRules(c);
    const { pre, post, filterPre, filterPost } = this.edges;
    this.filterRules = f + filterPre.rules.length + filterPost.rules.length;
    this.natRules = n + pre.rules.length + post.rules.length;
  }

  /**
   * Whether a render with these port outputs would produce the same fixed chains (and counts);
   * `positions`: the only places where `all` may differ from last time (null: anywhere).
   */
  fits(key: string, all: readonly PortOutput[], positions: readonly number[] | null): boolean {
    if (key !== this.key || all.length !== this.all.length) return false;
    const same = (i: number) => {
      const a = all[i]!;
      const b = this.all[i]!;
      return a === b || (sameStrings(a.natTop, b.natTop) && sameStrings(a.filter, b.filter)
        && a.noLocalInternal === b.noLocalInternal && a.noLocalExternal === b.noLocalExternal);
    };
    if (positions) return positions.every(same);
    for (let i = 0; i < all.length; i++) if (!same(i)) return false;
    return true;
  }

  get filter(): Map<string, string[]> { return this.build().filter; }
  get nat(): Map<string, string[]> { return this.build().nat; }
  get filterText(): string { return this.build().filterText; }
  /** Declarations of the fixed nat chains (no final newline). */
  get natDecl(): string { return this.build().natDecl; }
  /** Rules of the fixed nat chains, KUBE-SERVICES' node port rule last (no final newline). */
  get natRulesText(): string { return this.build().natRules; }

  private build() {
    if (this.built) return this.built;
    const { pre, post, filterPre, filterPost } = this.edges;
    const filter = byChain(filterPre.rules, filterPre.chains);
    const nat = byChain(pre.rules, pre.chains);
    const append = (into: Map<string, string[]>, rules: readonly string[]) => {
      for (const r of rules) {
        const c = r.slice(3, r.indexOf(' ', 3));
        let l = into.get(c);
        if (!l) into.set(c, (l = []));
        l.push(r);
      }
    };
    const filterLines: string[] = ['*filter', ...filterPre.chains.map((c) => `:${c} - [0:0]`), ...filterPre.rules];
    const natLines: string[] = [...pre.rules];
    for (const po of this.all) {
      if (po.filter.length) {
        append(filter, po.filter);
        for (const r of po.filter) filterLines.push(r);
      }
      if (po.natTop.length) {
        append(nat, po.natTop);
        for (const r of po.natTop) natLines.push(r);
      }
    }
    append(filter, filterPost.rules);
    append(nat, post.rules);
    filterLines.push(...filterPost.rules, 'COMMIT');
    natLines.push(...post.rules);
    this.built = {
      filter, nat,
      filterText: filterLines.join('\n') + '\n',
      natDecl: pre.chains.map((c) => `:${c} - [0:0]`).join('\n'),
      natRules: natLines.join('\n'),
    };
    return this.built;
  }
}

/**
 * writeText()'s chunk size. A 10k-service render (11.5 MB) written as chunks appended line by line
 * takes 10-40 ms; joining every line into one string and then copying that as UTF-8 took 190
 * ms, a sixth of `knet rules`' time there (scripts/bench/rules-yaml.ts).
 */
const TEXT_CHUNK_CHARS = 1 << 16;
const NON_ASCII = /[^\x00-\x7f]/;
/** A piece of text as UTF-8; ASCII (every rule knet writes) is copied as such, several times faster. */
const asBytes = (piece: string) => Buffer.from(piece, NON_ASCII.test(piece) ? 'utf8' : 'latin1');

/** The render's text and per-chain tables, both built only when asked for. */
function assemble(a: Assembly): RenderResult {
  const { fixed, written, stale } = a;
  let natWritten = fixed.natRules;
  for (const po of written) natWritten += po.ruleCount;
  const skipped = a.ownRules - (natWritten - fixed.natRules);

  let text: string | null = null;
  let tables: RenderedTables | null = null;
  let natChains: string[] | null = null;
  // Fixed chains' rules come first (KUBE-SERVICES' last rule included), then the service chains
  // written in this render; iptables-restore takes a table's lines in any order once every chain
  // is declared.
  // `bytes`: lines already encoded, each ended by "\n" (a one-shot render's service chains).
  const eachLine = (line: (text: string) => void, bytes: (lines: Uint8Array) => void) => {
    line(fixed.filterText + '*nat\n' + fixed.natDecl);
    for (const po of written) for (const c of po.chains) line(`:${c} - [0:0]`);
    for (const c of stale) line(`:${c} - [0:0]`);
    line(fixed.natRulesText);
    for (const po of written) {
      const rules = po.rules;
      if (rules instanceof Uint8Array) bytes(rules);
      else for (const chain of rules) for (const r of chain) line(r);
    }
    for (const c of stale) line(`-X ${c}`);
    line('COMMIT');
  };
  return {
    get text() {
      if (text === null) {
        // One join over every line: no intermediate copy of the (10k services: 12 MB) text.
        const lines: string[] = [];
        eachLine((l) => lines.push(l), (b) => { if (b.length) lines.push(textOf(b)); });
        lines.push('');
        text = lines.join('\n');
      }
      return text;
    },
    writeText(write, chunkChars = TEXT_CHUNK_CHARS) {
      // Lines gathered into text pieces, pieces and encoded lines into chunks of about chunkChars
      // bytes. Encoded lines that follow each other in the arena are written from it as they lie.
      let piece = '';
      let parts: Uint8Array[] = [];
      let size = 0;
      const flush = () => {
        if (parts.length === 1) write(parts[0]!);
        else if (parts.length > 1) write(Buffer.concat(parts, size));
        parts = [];
        size = 0;
      };
      const add = (b: Uint8Array) => {
        parts.push(b);
        size += b.length;
        if (size >= chunkChars) flush();
      };
      // The run of encoded lines that lie one after another in one arena block.
      let runBlock: ArrayBufferLike | null = null;
      let runStart = 0;
      let runEnd = 0;
      const endRun = () => {
        if (!runBlock) return;
        for (let at = runStart; at < runEnd; at += chunkChars) add(Buffer.from(runBlock, at, Math.min(runEnd - at, chunkChars)));
        runBlock = null;
      };
      eachLine((l) => {
        endRun();
        piece += l + '\n';
        if (piece.length >= chunkChars) {
          add(asBytes(piece));
          piece = '';
        }
      }, (b) => {
        if (piece) add(asBytes(piece));
        piece = '';
        if (b.buffer !== runBlock || b.byteOffset !== runEnd) {
          endRun();
          runBlock = b.buffer;
          runStart = b.byteOffset;
        }
        runEnd = b.byteOffset + b.length;
      });
      endRun();
      if (piece) add(asBytes(piece));
      flush();
    },
    get tables() {
      if (tables === null) {
        // In dependency order (see RenderedTable): masquerade marking, the service chains, then
        // the chains that jump to them.
        const nat = new Map<string, string[]>();
        for (const c of [KUBE_MARK_MASQ, KUBE_POSTROUTING]) nat.set(c, fixed.nat.get(c) ?? []);
        for (const po of written) {
          const rules = chainRules(po);
          po.chains.forEach((c, i) => nat.set(c, rules[i] as string[]));
        }
        for (const c of [KUBE_NODEPORTS, KUBE_SERVICES]) nat.set(c, fixed.nat.get(c) ?? []);
        tables = new Map([['filter', { chains: fixed.filter, deletes: new Set<string>() }], ['nat', { chains: nat, deletes: new Set(stale) }]]);
      }
      return tables;
    },
    get state() {
      return { get natChains() { return (natChains ??= [...a.active()]); } };
    },
    rulesWritten: { filter: fixed.filterRules, nat: natWritten },
    rulesTotal: { filter: fixed.filterRules, nat: natWritten + skipped },
    warnings: a.warnings,
    noLocalEndpoints: { ...fixed.noLocalEndpoints },
  };
}
