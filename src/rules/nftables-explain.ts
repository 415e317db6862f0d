// `knet rules --proxy-mode nftables --explain`: per service port, every address and where a
// packet sent to it goes in nftables terms: the map element that matches it, the chains it
// jumps to, the endpoint chain that DNATs it, masquerading, reject or drop. Built from the same
// decisions (planNftPort) the renderer writes as rules.
import { buildServiceModel, type EndpointInfo, type ServicePortInfo } from './model.ts';
import { detectorText, portHeading, table, type Row } from './explain.ts';
import { masqueradeMark } from './iptables.ts';
import { nodePortAddresses, nodePortIPs } from './node-ports.ts';
import {
  CLUSTER_IPS_CHECK, FIREWALL_IPS, MARK_MASQ, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, NODEPORT_IPS, SERVICE_IPS, SERVICE_NODEPORTS,
  planNftPort, tableElements, type NftPortPlan, type NftRenderResult,
} from './nftables.ts';
import type { ClusterState } from '../model/k8s.ts';
import type { ProxySettings } from './types.ts';

function endpointsText(eps: EndpointInfo[], s: ServicePortInfo, p: NftPortPlan): string {
  if (eps.length === 0) return 'nowhere';
  const list = eps.map((e) => `${p.endpointChain(e)} (dnat to ${e.addr}${e.isLocal ? ', local' : ''}${e.ready ? '' : ', terminating'})`).join(', ');
  const share = eps.length === 1 ? list : `numgen random mod ${eps.length}: ${list}`;
  return s.clientIPAffinity ? `${share}; a client returns to its endpoint for ${s.stickySeconds}s (ip saddr @affinity-*)` : share;
}

function rowsFor(s: ServicePortInfo, settings: ProxySettings): Row[] {
  const p = planNftPort(s);
  const det = detectorText(settings.localDetector);
  const hasDetector = settings.localDetector.mode !== 'None';
  const rows: Row[] = [];
  const vip = (ip: string) => `"${ip} . ${s.protocol} . ${s.port}"`;
  const noEndpoints = (verdict: string) => (verdict === 'drop' ? 'drop: no local endpoints' : 'goto reject-chain: reject, no endpoints');
  const internalEps = endpointsText(s.internalPolicyLocal ? p.local : p.cluster, s, p);
  const clusterEps = endpointsText(p.cluster, s, p);

  const cip = `${s.clusterIP}:${s.port} cluster IP`;
  if (!p.hasInternal) {
    rows.push({ address: cip, from: 'anywhere', goes: `@${NO_ENDPOINT_SERVICES} ${vip(s.clusterIP)} -> ${noEndpoints(p.internalVerdict)}` });
  } else {
    const to = `@${SERVICE_IPS} ${vip(s.clusterIP)} -> goto ${p.internalChain} -> ${internalEps}`;
    if (settings.masqueradeAll) rows.push({ address: cip, from: 'anywhere', goes: `${to}; jump ${MARK_MASQ} first` });
    else {
      rows.push({ address: cip, from: hasDetector ? det.local : 'anywhere', goes: to });
      if (hasDetector) rows.push({ address: '', from: det.remote, goes: `the same, after jump ${MARK_MASQ} (masqueraded on the way out)` });
    }
  }

  const external = (address: string, element: string, noEndpointMap: string, source?: string) => {
    if (!p.hasEndpoints) {
      rows.push({ address, from: 'anywhere', goes: `@${noEndpointMap} ${element} -> ${noEndpoints(p.externalVerdict)}` });
      return;
    }
    const into = `@${noEndpointMap === NO_ENDPOINT_NODEPORTS ? SERVICE_NODEPORTS : SERVICE_IPS} ${element} -> goto ${p.chains.external}`;
    if (!s.externalPolicyLocal) {
      rows.push({ address, from: source ?? 'anywhere', goes: `${into}: jump ${MARK_MASQ}, goto ${p.chains.cluster} -> ${clusterEps}` });
      return;
    }
    if (hasDetector) rows.push({ address, from: det.local, goes: `${into}: goto ${p.chains.cluster} (short-circuit) -> ${clusterEps}` });
    rows.push({ address: hasDetector ? '' : address, from: 'this node (fib saddr type local)', goes: `${into}: jump ${MARK_MASQ}, goto ${p.chains.cluster} -> ${clusterEps}` });
    rows.push({
      address: '', from: source ?? 'outside',
      goes: p.hasExternal
        ? `${into}: goto ${p.chains.local} -> ${endpointsText(p.local, s, p)} (client IP kept)`
        : `@${noEndpointMap} ${element} -> ${noEndpoints(p.externalVerdict)} (externalTrafficPolicy Local)`,
    });
  };
  if (s.nodePort) external(`node:${s.nodePort} node port`, `"${s.protocol} . ${s.nodePort}"`, NO_ENDPOINT_NODEPORTS);
  for (const ip of s.externalIPs) external(`${ip}:${s.port} external IP`, vip(ip), NO_ENDPOINT_SERVICES);
  for (const ip of s.loadBalancerVIPs) {
    if (!p.usesFirewall) { external(`${ip}:${s.port} load balancer`, vip(ip), NO_ENDPOINT_SERVICES); continue; }
    external(`${ip}:${s.port} load balancer`, vip(ip), NO_ENDPOINT_SERVICES, `from ${s.loadBalancerSourceRanges.join(', ')}`);
    rows.push({ address: '', from: 'other sources', goes: `@${FIREWALL_IPS} ${vip(ip)} -> goto ${p.chains.firewall}: drop (before DNAT)` });
  }
  if (s.healthCheckNodePort) rows.push({ address: `node:${s.healthCheckNodePort} health check`, from: 'anywhere', goes: "answered by the proxy's health server" });
  return rows;
}

export function explainNftables(cluster: ClusterState, settings: ProxySettings, result: NftRenderResult, stale: readonly string[] = []): string {
  const model = buildServiceModel(cluster, settings);
  let chains = result.fixed.chains.size + stale.length;
  let rules = 0;
  for (const c of result.fixed.chains.values()) rules += c.rules.length;
  for (const svc of result.services.values()) { chains += svc.chains.size; for (const r of svc.chains.values()) rules += r.length; }
  let elements = 0;
  for (const m of tableElements(result).values()) elements += m.size;
  const npa = nodePortAddresses(settings);
  const ipX = result.family;
  const cidrCheck = result.fixed.chains.get(CLUSTER_IPS_CHECK)!.rules.find((r) => r.endsWith('"Drop traffic to unallocated ClusterIPs"'));
  const out: string[] = [
    `knet rules --explain: ${model.ports.length} service ports on node ${settings.nodeName || '(unnamed)'} (${settings.family}); ` +
      `table ${ipX} kube-proxy: ${chains} chains, ${rules} rules, ${elements} map and set elements`,
    `  service traffic: nat-prerouting and nat-output jump to services, which matches @${SERVICE_IPS} (daddr . proto . port) and, ` +
      (npa.matchAll ? `for any local address but loopback, @${SERVICE_NODEPORTS}` : `for daddr in @${NODEPORT_IPS} (${nodePortIPs(npa, settings).join(', ') || 'none'}), @${SERVICE_NODEPORTS}`),
    `  no endpoints: filter-input/forward/output jump to service-endpoints-check (@${NO_ENDPOINT_SERVICES}) and nodeport-endpoints-check (@${NO_ENDPOINT_NODEPORTS})`,
    `  other ports of a cluster IP: rejected by ${CLUSTER_IPS_CHECK}` + (cidrCheck ? `; unallocated addresses of the service CIDRs dropped (${cidrCheck.slice(cidrCheck.indexOf('{') + 2, cidrCheck.indexOf('}') - 1)})` : ''),
    `  masquerade: rules jump to ${MARK_MASQ} (mark ${masqueradeMark(settings.masqueradeBit)}); nat-postrouting masquerades marked packets (fully-random)`,
  ];
  if (stale.length) out.push(`  stale chains (flushed now, deleted at a later sync): ${stale.join(', ')}`);
  for (const s of model.ports) {
    const p = planNftPort(s);
    out.push('', portHeading(s, p.hasInternal ? p.internalChain : '(none)'), table(rowsFor(s, settings)));
  }
  return out.join('\n') + '\n';
}
