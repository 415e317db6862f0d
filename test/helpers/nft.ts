// Helpers for nftables renderer tests: kube-proxy's unit-test node (test-node, 192.168.0.2, pod
// network 10.0.0.0/8, node ports on 192.168.0.2/32 and 2001:db8::1/128), rendering with an
// optional previous state, and the comparison kube-proxy's tests use (rule order counts only
// within a chain; every other line is compared as a sorted list).
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { parseKubeProxyConfig, settingsFromConfig } from '../../src/rules/config.ts';
import { nftablesText, renderNftables, staleChains } from '../../src/rules/nftables.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

export const INTERFACES = [
  { iface: 'lo', cidr: '127.0.0.1/8' }, { iface: 'lo', cidr: '::1/128' },
  { iface: 'eth0', cidr: '192.168.0.2/24' }, { iface: 'eth0', cidr: '192.168.1.2/24' }, { iface: 'eth0', cidr: '192.168.99.11/24' },
  { iface: 'eth0', cidr: '2001:db8::1/64' }, { iface: 'eth0', cidr: '2001:db8:1::2/64' },
];

export function nftSettings(over: Partial<ProxySettings> = {}, config = ''): ProxySettings {
  const v6 = over.family === 'IPv6';
  const cfg = parseKubeProxyConfig(`mode: nftables\nclusterCIDR: ${v6 ? 'fd00:10::/64' : '10.0.0.0/8'}\nnodePortAddresses: ["192.168.0.2/32", "2001:db8::1/128"]\n${config}`);
  return {
    ...settingsFromConfig(cfg, { nodeName: 'test-node', family: v6 ? 'IPv6' : 'IPv4', nodeIPs: [v6 ? '2001:db8::1' : '192.168.0.2'], interfaceAddresses: INTERFACES }),
    ...over,
  };
}

export const SERVICE_CIDR = (cidrs: string[] = ['172.30.0.0/16']) =>
  `apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: kubernetes}\nspec:\n  cidrs: [${cidrs.join(', ')}]\n---\n`;

const cluster = (yaml: string) => loadManifestText(yaml, 'test.yaml').cluster;

/** The table after a sync of `yaml`, after a sync of `since` when given (its stale chains flushed). */
export function nftRender(yaml: string, settings: ProxySettings = nftSettings(), since?: string): string {
  const result = renderNftables({ cluster: cluster(yaml), settings });
  const stale = since === undefined ? [] : staleChains(renderNftables({ cluster: cluster(since), settings }), result);
  return nftablesText(result, stale);
}

/** kube-proxy's test normalisation: lines by kind, rules grouped per chain in their order. */
export function normalizeNft(text: string): string {
  const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  const rules = new Map<string, string[]>();
  const others: string[] = [];
  for (const l of lines) {
    const w = l.split(' ');
    if (w[1] === 'rule') {
      const list = rules.get(w[4]!) ?? [];
      list.push(l);
      rules.set(w[4]!, list);
    } else others.push(l);
  }
  const order = (l: string) => ['table', 'chain', 'set', 'map', 'element'].indexOf(l.split(' ')[1]!);
  others.sort((a, b) => order(a) - order(b) || (a < b ? -1 : a > b ? 1 : 0));
  return [...others, ...[...rules.keys()].sort().flatMap((c) => rules.get(c)!)].join('\n');
}

/** The rule bodies of one chain ("add rule ip kube-proxy CHAIN " removed). */
export function nftRules(text: string, chain: string): string[] {
  const re = new RegExp(`^add rule ip6? kube-proxy ${chain.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} `);
  return text.split('\n').filter((l) => re.test(l)).map((l) => l.replace(re, ''));
}

/** The elements of one set or map, as written between the braces. */
export function nftElements(text: string, container: string): string[] {
  const re = new RegExp(`^add element ip6? kube-proxy ${container} \\{ (.*) \\}$`);
  return text.split('\n').map((l) => re.exec(l)?.[1]).filter((x): x is string => x !== undefined);
}

export function nftChains(text: string): string[] {
  return text.split('\n').filter((l) => / chain ip6? kube-proxy /.test(l)).map((l) => l.split(' ')[4]!);
}
