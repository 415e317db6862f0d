import { loadManifestText } from '../../src/k8s/manifests.ts';
import { settingsFromConfig, parseKubeProxyConfig } from '../../src/rules/config.ts';
import { renderIptables } from '../../src/rules/iptables.ts';
import type { ProxySettings, RenderResult } from '../../src/rules/types.ts';

export function settings(over: Partial<ProxySettings> = {}): ProxySettings {
  return {
    ...settingsFromConfig(parseKubeProxyConfig('clusterCIDR: 10.0.0.0/8'), {
      nodeName: 'node-a', nodeIPs: ['192.168.0.2'],
      interfaceAddresses: [{ iface: 'lo', cidr: '127.0.0.1/8' }, { iface: 'eth0', cidr: '192.168.0.2/24' }],
    }),
    ...over,
  };
}

export function render(yaml: string, over: Partial<ProxySettings> = {}): RenderResult {
  return renderIptables({ cluster: loadManifestText(yaml, 'test.yaml').cluster, settings: settings(over) });
}

export function rulesOf(text: string, chain: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
}

export function svc(name: string, spec: string, ns = 'ns1'): string {
  return `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec:\n${spec.replace(/^/gm, '  ')}\n---\n`;
}

export function slice(service: string, endpoints: string, ports = '- {name: p80, port: 80, protocol: TCP}', ns = 'ns1', addressType = 'IPv4'): string {
  return `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${service}-1, namespace: ${ns}, labels: {kubernetes.io/service-name: ${service}}}\naddressType: ${addressType}\nendpoints:\n${endpoints}\nports:\n${ports}\n---\n`;
}
