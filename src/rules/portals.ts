// The userspace mode's nat rules (kube-proxy's KUBE-PORTALS-* chains), pure: from each service port's addresses and
// the node-local port its listener got, the iptables-restore text that steers traffic there.
// - KUBE-PORTALS-CONTAINER (from PREROUTING): traffic arriving from pods or the network for a
//   cluster IP, external IP or load-balancer IP is REDIRECTed to the proxy port.
// - KUBE-PORTALS-HOST (from OUTPUT): the node's own traffic is DNATed to nodeIP:proxyPort,
//   because REDIRECT of locally generated packets goes to 127.0.0.1 and the replies would
//   come from the wrong address.
// - KUBE-NODEPORT-CONTAINER / KUBE-NODEPORT-HOST: the same for node ports, jumped to only for
//   local destinations.
// - filter KUBE-NODEPORT-NON-LOCAL (from INPUT): accepts new connections to proxy ports, so a
//   default-deny INPUT policy does not eat redirected traffic.
// Unlike kube-proxy, external-IP container rules carry no `-m physdev ! --physdev-is-in`:
// that match needs br_netfilter and only mattered for bridged pod traffic to external IPs,
// which these rules capture anyway.
import type { JumpRule } from './types.ts';
import { parseIP } from '../util/ip.ts';
import { describe } from '../model/json.ts';

export interface PortalPort {
  /** "ns/name:port" (rule comment). */
  portName: string;
  protocol: 'tcp' | 'udp';
  clusterIP: string;
  port: number;
  /** 0: none. */
  nodePort: number;
  externalIPs: readonly string[];
  loadBalancerIPs: readonly string[];
  /** The node-local port the proxy listens on for this service port. */
  proxyPort: number;
  /**
   * The port of a second listener for traffic from outside (node port, external IPs, load
   * balancer IPs), when the traffic policies give it other endpoints; default: proxyPort.
   */
  externalProxyPort?: number;
}

export interface PortalSettings {
  /** The node IP host traffic is DNATed to; null: no host rules (warned). */
  hostIP: string | null;
  /**
   * The address the proxy listens on. Unspecified (0.0.0.0 / ::): container traffic is
   * REDIRECTed; a specific address: DNATed to it.
   */
  listenIP?: string;
}

export const PORTAL_CHAINS = {
  nat: ['KUBE-PORTALS-CONTAINER', 'KUBE-PORTALS-HOST', 'KUBE-NODEPORT-CONTAINER', 'KUBE-NODEPORT-HOST'],
  filter: ['KUBE-NODEPORT-NON-LOCAL'],
} as const;

const LOCAL = ['-m', 'addrtype', '--dst-type', 'LOCAL'];

/**
 * Jumps from the built-in chains, in the order ensureJumps must insert them: each is inserted
 * at position 1, so later entries end up first and the portal chains run before the node-port
 * chains (a node port must not shadow a cluster IP on the same port).
 */
export const PORTAL_JUMPS: JumpRule[] = [
  { table: 'nat', from: 'PREROUTING', to: 'KUBE-NODEPORT-CONTAINER', comment: 'handle service NodePorts; NOTE: this must be the last rule in the chain', extra: LOCAL },
  { table: 'nat', from: 'OUTPUT', to: 'KUBE-NODEPORT-HOST', comment: 'handle service NodePorts; NOTE: this must be the last rule in the chain', extra: LOCAL },
  { table: 'nat', from: 'PREROUTING', to: 'KUBE-PORTALS-CONTAINER', comment: 'handle ClusterIPs; NOTE: this must be before the NodePort rules', extra: [] },
  { table: 'nat', from: 'OUTPUT', to: 'KUBE-PORTALS-HOST', comment: 'handle ClusterIPs; NOTE: this must be before the NodePort rules', extra: [] },
  { table: 'filter', from: 'INPUT', to: 'KUBE-NODEPORT-NON-LOCAL', comment: 'Ensure that non-local NodePort traffic can flow', extra: [] },
];

export interface PortalRender {
  text: string;
  rulesWritten: { filter: number; nat: number };
  warnings: Array<{ object: string; field: string; message: string }>;
}

const PORT_NAME = /^[a-z0-9][-a-z0-9./:]*$/;

function ipv4(s: string, what: string): string {
  const ip = parseIP(s);
  if (!ip || ip.family !== 4) throw new Error(`${what} ${describe(s)} is not an IPv4 address`);
  return ip.text;
}

function port(n: number, what: string, zero = false): number {
  if (!Number.isInteger(n) || n < (zero ? 0 : 1) || n > 65535) throw new Error(`${what} ${describe(n)} is not a port`);
  return n;
}

/** One port's rules per chain; throws on a value that must not reach iptables-restore. */
function portalRules(p: PortalPort, listen: string | null, hostIP: string | null): Array<[string, string]> {
  if (!PORT_NAME.test(p.portName)) throw new Error(`invalid service port name ${describe(p.portName)}`);
  if (p.protocol !== 'tcp' && p.protocol !== 'udp') throw new Error(`unsupported protocol ${describe(p.protocol)}`);
  const proxyPort = port(p.proxyPort, 'proxy port');
  const externalPort = p.externalProxyPort === undefined ? proxyPort : port(p.externalProxyPort, 'external proxy port');
  const match = (dport: number) => ['-m', 'comment', '--comment', `"${p.portName}"`, '-p', p.protocol, '-m', p.protocol, '--dport', String(dport)];
  const toContainer = (to: number) => (listen ? ['-j', 'DNAT', '--to-destination', `${listen}:${to}`] : ['-j', 'REDIRECT', '--to-ports', String(to)]);
  const toHost = (to: number) => (hostIP ? ['-j', 'DNAT', '--to-destination', `${hostIP}:${to}`] : null);
  const clusterIP = ipv4(p.clusterIP, 'cluster IP');
  const vips: Array<[string, number]> = [[clusterIP, proxyPort],
    ...[...p.externalIPs.map((x) => ipv4(x, 'external IP')), ...p.loadBalancerIPs.map((x) => ipv4(x, 'load-balancer IP'))]
      .filter((ip) => ip !== clusterIP).map((ip): [string, number] => [ip, externalPort])];
  const svcPort = port(p.port, 'service port');
  const nodePort = port(p.nodePort, 'node port', true);
  const out: Array<[string, string]> = [];
  const portal = (container: string, host: string, m: string[], to: number) => {
    out.push([container, [...m, ...toContainer(to)].join(' ')]);
    const h = toHost(to);
    if (h) out.push([host, [...m, ...h].join(' ')]);
  };
  for (const [vip, to] of new Map(vips)) portal('KUBE-PORTALS-CONTAINER', 'KUBE-PORTALS-HOST', [...match(svcPort), '-d', `${vip}/32`], to);
  if (nodePort > 0) portal('KUBE-NODEPORT-CONTAINER', 'KUBE-NODEPORT-HOST', match(nodePort), externalPort);
  for (const to of new Set([proxyPort, externalPort])) {
    out.push(['KUBE-NODEPORT-NON-LOCAL', [...match(to), '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'ACCEPT'].join(' ')]);
  }
  return out;
}

/**
 * The full restore text: each sync re-declares (and so flushes) every portal chain. A port with
 * a value that must not reach iptables-restore is skipped with a warning; the others render.
 */
export function renderPortals(ports: readonly PortalPort[], s: PortalSettings): PortalRender {
  const hostIP = s.hostIP === null ? null : ipv4(s.hostIP, 'host IP');
  const listen = s.listenIP && s.listenIP !== '0.0.0.0' ? ipv4(s.listenIP, 'listen IP') : null;
  const warnings: PortalRender['warnings'] = [];
  const chains: Record<string, string[]> = Object.fromEntries([...PORTAL_CHAINS.nat, ...PORTAL_CHAINS.filter].map((c) => [c, []]));
  // Values are validated here, not trusted: this text goes straight to iptables-restore.
  const sorted = [...ports].sort((a, b) => (a.portName < b.portName ? -1 : a.portName > b.portName ? 1 : a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0));
  for (const p of sorted) {
    let rules: Array<[string, string]>;
    try {
      rules = portalRules(p, listen, hostIP);
    } catch (e) {
      warnings.push({ object: `service port ${describe(p.portName)}`, field: 'portal', message: `skipped: ${(e as Error).message}` });
      continue;
    }
    for (const [chain, rule] of rules) chains[chain]!.push(rule);
  }
  if (!hostIP && sorted.length) warnings.push({ object: 'Node', field: 'nodeIP', message: 'no node IP known: traffic from the node itself to services is not proxied' });
  const out: string[] = [];
  const written = { filter: 0, nat: 0 };
  for (const table of ['nat', 'filter'] as const) {
    out.push(`*${table}`);
    for (const c of PORTAL_CHAINS[table]) out.push(`:${c} - [0:0]`);
    for (const c of PORTAL_CHAINS[table]) {
      for (const r of chains[c]!) out.push(`-A ${c} ${r}`);
      written[table] += chains[c]!.length;
    }
    out.push('COMMIT');
  }
  return { text: out.join('\n') + '\n', rulesWritten: written, warnings };
}

/** Restore text that empties and deletes the portal chains (after their jumps are gone). */
export function portalCleanupText(present: { nat: readonly string[]; filter: readonly string[] }): string {
  const out: string[] = [];
  for (const table of ['nat', 'filter'] as const) {
    const chains = PORTAL_CHAINS[table].filter((c) => present[table].includes(c));
    if (!chains.length) continue;
    out.push(`*${table}`, ...chains.map((c) => `:${c} - [0:0]`), ...chains.map((c) => `-X ${c}`), 'COMMIT');
  }
  return out.length ? out.join('\n') + '\n' : '';
}
