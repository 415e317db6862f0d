// `knet rules --explain`: per service port, every virtual address and where a packet sent to it
// goes, in words. Built from the same decisions (planServicePort) the renderer writes as rules.
import type { ClusterState } from '../model/k8s.ts';
import { buildServiceModel, type EndpointInfo, type ServicePortInfo } from './model.ts';
import { planServicePort, type ServicePortPlan } from './iptables.ts';
import type { LocalDetector, ProxySettings, RenderResult } from './types.ts';

export function spread(eps: EndpointInfo[], affinity: ServicePortInfo): string {
  if (eps.length === 0) return 'nowhere';
  const pct = (100 / eps.length).toFixed(eps.length === 3 || eps.length > 4 ? 1 : 0);
  const list = eps.map((e) => `${e.addr}${e.isLocal ? ' (local)' : ''}${e.ready ? '' : ' (terminating)'}`).join(', ');
  const sticky = affinity.clientIPAffinity ? `; a client sticks to its endpoint for ${affinity.stickySeconds}s` : '';
  return eps.length === 1 ? `${list}${sticky}` : `${list}, ${pct}% each${sticky}`;
}

export function detectorText(d: LocalDetector): { local: string; remote: string } {
  switch (d.mode) {
    case 'ClusterCIDR':
    case 'NodeCIDR': return { local: `from pods (${d.cidrs[0]})`, remote: `from outside ${d.cidrs[0]}` };
    case 'BridgeInterface': return { local: `from pods (in on ${d.interface})`, remote: `not in on ${d.interface}` };
    case 'InterfaceNamePrefix': return { local: `from pods (in on ${d.prefix}*)`, remote: `not in on ${d.prefix}*` };
    case 'None': return { local: 'from pods', remote: 'from elsewhere' };
  }
}

export interface Row { address: string; from: string; goes: string }

function rowsFor(s: ServicePortInfo, p: ServicePortPlan, settings: ProxySettings): Row[] {
  const rows: Row[] = [];
  const det = detectorText(settings.localDetector);
  const internalEps = s.internalPolicyLocal ? p.localEps : p.clusterEps;
  const externalEps = s.externalPolicyLocal ? p.localEps : p.clusterEps;
  const vip = `${s.clusterIP}:${s.port}`;
  if (!p.hasInternal) {
    rows.push({ address: `${vip} cluster IP`, from: 'anywhere', goes: `${p.internalFilter!.target}: ${p.internalFilter!.reason.replace(s.portName + ' has ', '')}` });
  } else if (settings.masqueradeAll) {
    rows.push({ address: `${vip} cluster IP`, from: 'anywhere', goes: `masquerade, then ${spread(internalEps, s)}` });
  } else {
    rows.push({ address: `${vip} cluster IP`, from: det.local, goes: spread(internalEps, s) });
    if (settings.localDetector.mode !== 'None') rows.push({ address: '', from: det.remote, goes: `masquerade (source becomes this node), then the same endpoints` });
  }
  const external = (address: string, sourceNote?: string) => {
    if (!p.hasEndpoints) {
      rows.push({ address, from: 'anywhere', goes: 'REJECT: no endpoints' });
      return;
    }
    if (!s.externalPolicyLocal) {
      rows.push({ address, from: sourceNote ?? 'anywhere', goes: `masquerade, then ${spread(externalEps, s)}` });
    } else {
      if (settings.localDetector.mode !== 'None') rows.push({ address, from: det.local, goes: `as cluster traffic: ${spread(p.clusterEps, s)}` });
      rows.push({ address: settings.localDetector.mode !== 'None' ? '' : address, from: 'this node', goes: `masquerade, then ${spread(p.clusterEps, s)}` });
      rows.push({ address: '', from: sourceNote ?? 'outside', goes: p.hasExternal ? `${spread(externalEps, s)} (client IP kept: externalTrafficPolicy Local)` : 'DROP: no local endpoints (externalTrafficPolicy Local)' });
    }
  };
  if (s.nodePort) external(`node:${s.nodePort} node port`);
  for (const ip of s.externalIPs) external(`${ip}:${s.port} external IP`);
  for (const ip of s.loadBalancerVIPs) {
    if (p.usesFW) {
      external(`${ip}:${s.port} load balancer`, `from ${s.loadBalancerSourceRanges.join(', ')}`);
      rows.push({ address: '', from: 'other sources', goes: 'DROP (loadBalancerSourceRanges, KUBE-PROXY-FIREWALL)' });
    } else external(`${ip}:${s.port} load balancer`);
  }
  if (s.healthCheckNodePort) rows.push({ address: `node:${s.healthCheckNodePort} health check`, from: 'anywhere', goes: 'ACCEPT (answered by the proxy\'s health server)' });
  return rows;
}

export function table(rows: Row[]): string {
  const w = (k: keyof Row) => Math.max(k.length, ...rows.map((r) => r[k].length));
  const wa = w('address');
  const wf = w('from');
  const line = (a: string, f: string, g: string) => `  ${a.padEnd(wa)}  ${f.padEnd(wf)}  ${g}`.trimEnd();
  return [line('ADDRESS', 'FROM', 'GOES TO'), ...rows.map((r) => line(r.address, r.from, r.goes))].join('\n');
}

export function explainRules(cluster: ClusterState, settings: ProxySettings, result: RenderResult): string {
  const model = buildServiceModel(cluster, settings);
  const out: string[] = [];
  out.push(`knet rules --explain: ${model.ports.length} service ports on node ${settings.nodeName || '(unnamed)'} (${settings.family}); ` +
    `${result.rulesTotal.filter} filter and ${result.rulesTotal.nat} nat rules`);
  for (const s of model.ports) {
    const p = planServicePort(s);
    out.push('', portHeading(s, p.hasInternal ? p.internalChain : '(none)'), table(rowsFor(s, p, settings)));
  }
  return out.join('\n') + '\n';
}

/** One service port's heading: endpoints, policies and the chain cluster IP traffic goes to. */
export function portHeading(s: ServicePortInfo, chain: string): string {
  const ready = s.endpoints.filter((e) => e.ready).length;
  const local = s.endpoints.filter((e) => e.isLocal).length;
  const policies = [
    s.internalPolicyLocal ? 'internalTrafficPolicy Local' : '',
    s.externalPolicyLocal ? 'externalTrafficPolicy Local' : '',
    s.clientIPAffinity ? `sessionAffinity ClientIP ${s.stickySeconds}s` : '',
  ].filter(Boolean);
  return `${s.portName} ${s.protocol.toUpperCase()} port ${s.port}: ${s.endpoints.length} endpoint${s.endpoints.length === 1 ? '' : 's'} (${ready} ready, ${local} on this node)` +
    (policies.length ? `; ${policies.join(', ')}` : '') + `; chain ${chain}`;
}
