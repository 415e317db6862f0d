// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): the fields that change the rules,
// with kube-proxy's defaults, plus the sync periods the proxy daemon uses. Like kube-proxy, the
// masquerade settings and sync periods come from the section of the mode in use (`iptables:` or
// `nftables:`).
import { parse as parseYaml } from 'yaml';
import { parseCIDR, parseIP } from '../util/ip.ts';
import type { IpFamily, LocalDetector, ProxySettings } from './types.ts';

export interface KubeProxyConfig {
  hostnameOverride?: string;
  bindAddress?: string;
  clusterCIDR?: string;
  detectLocalMode?: string;
  detectLocal?: { bridgeInterface?: string; interfaceNamePrefix?: string; clusterCIDRs?: string[] };
  nodePortAddresses?: string[];
  masqueradeAll?: boolean;
  masqueradeBit?: number;
  localhostNodePorts?: boolean;
  syncPeriodMs: number;
  minSyncPeriodMs: number;
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  /** The proxy mode in use: the caller's override, else the config's `mode`, else iptables. */
  mode: ProxyMode;
}

export type ProxyMode = 'iptables' | 'ipvs' | 'nftables' | 'kernelspace' | 'userspace';
const MODES: readonly ProxyMode[] = ['iptables', 'ipvs', 'nftables', 'kernelspace', 'userspace'];

export function proxyModeOf(v: unknown, field: string): ProxyMode {
  if (v === undefined || v === null || v === '') return 'iptables';
  if (typeof v !== 'string' || !(MODES as readonly string[]).includes(v)) {
    throw new ConfigError(`${field}: unknown proxy mode ${JSON.stringify(v)} (${MODES.join(', ')})`);
  }
  return v as ProxyMode;
}

export class ConfigError extends Error {}

/** Go duration strings as kube-proxy writes them: "30s", "1m0s", "500ms", "1h". */
export function parseDuration(v: unknown, field: string): number {
  if (typeof v === 'number') return v * 1000;
  if (typeof v !== 'string') throw new ConfigError(`${field}: expected a duration like "30s", got ${JSON.stringify(v)}`);
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let consumed = 0;
  for (const m of v.matchAll(re)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0].length;
  }
  if (v === '0') return 0;
  if (consumed !== v.length || consumed === 0) throw new ConfigError(`${field}: invalid duration ${JSON.stringify(v)}`);
  return total;
}

function bool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ConfigError(`${field}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${field}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/**
 * Parses a KubeProxyConfiguration for one proxy mode: `mode` (e.g. --proxy-mode) overrides the
 * config's own field and picks the section the masquerade settings and sync periods come from.
 */
export function parseKubeProxyConfig(text: string | undefined, mode?: string): KubeProxyConfig {
  const doc = text ? obj(parseYaml(text)) : {};
  if (text && doc.kind !== undefined && doc.kind !== 'KubeProxyConfiguration') {
    throw new ConfigError(`expected kind KubeProxyConfiguration, got ${JSON.stringify(doc.kind)}`);
  }
  const effectiveMode = mode !== undefined ? proxyModeOf(mode, '--proxy-mode') : proxyModeOf(doc.mode, 'mode');
  const section = effectiveMode === 'nftables' ? 'nftables' : 'iptables';
  if (doc[section] !== undefined && doc[section] !== null && (typeof doc[section] !== 'object' || Array.isArray(doc[section]))) {
    throw new ConfigError(`${section}: expected a mapping, got ${JSON.stringify(doc[section])}`);
  }
  const ipt = obj(doc[section]);
  const linux = obj(doc.linux);
  const detectLocal = obj(doc.detectLocal);
  const npa = doc.nodePortAddresses;
  if (npa !== undefined && npa !== null && !(Array.isArray(npa) && npa.every((x) => typeof x === 'string'))) {
    throw new ConfigError('nodePortAddresses: expected a list of CIDRs (or "primary")');
  }
  const bit = ipt.masqueradeBit ?? 14;
  if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < 0 || bit > 31) {
    throw new ConfigError(`${section}.masqueradeBit: expected an integer 0..31, got ${JSON.stringify(bit)}`);
  }
  const cfg: KubeProxyConfig = {
    mode: effectiveMode,
    masqueradeBit: bit,
    syncPeriodMs: ipt.syncPeriod !== undefined ? parseDuration(ipt.syncPeriod, `${section}.syncPeriod`) : 30_000,
    minSyncPeriodMs: ipt.minSyncPeriod !== undefined ? parseDuration(ipt.minSyncPeriod, `${section}.minSyncPeriod`) : 1_000,
  };
  const set = <K extends keyof KubeProxyConfig>(k: K, v: KubeProxyConfig[K] | undefined) => { if (v !== undefined) cfg[k] = v; };
  set('hostnameOverride', str(doc.hostnameOverride, 'hostnameOverride'));
  set('bindAddress', str(doc.bindAddress, 'bindAddress'));
  set('clusterCIDR', str(doc.clusterCIDR, 'clusterCIDR'));
  set('detectLocalMode', str(doc.detectLocalMode, 'detectLocalMode'));
  set('healthzBindAddress', str(doc.healthzBindAddress, 'healthzBindAddress'));
  set('metricsBindAddress', str(doc.metricsBindAddress, 'metricsBindAddress'));
  const npaList = (npa as string[] | null | undefined) ?? [];
  if (npaList.includes('primary') && npaList.length > 1) throw new ConfigError('nodePortAddresses: "primary" must be the only entry');
  // nftables mode accepts node ports on the node's primary IPs unless told otherwise.
  set('nodePortAddresses', npaList.length ? npaList : effectiveMode === 'nftables' ? ['primary'] : undefined);
  set('masqueradeAll', bool(linux.masqueradeAll, 'linux.masqueradeAll') ?? bool(doc.masqueradeAll, 'masqueradeAll') ?? bool(ipt.masqueradeAll, `${section}.masqueradeAll`));
  if (section === 'iptables') set('localhostNodePorts', bool(ipt.localhostNodePorts, 'iptables.localhostNodePorts'));
  const dl: NonNullable<KubeProxyConfig['detectLocal']> = {};
  const bi = str(detectLocal.bridgeInterface, 'detectLocal.bridgeInterface');
  const ip = str(detectLocal.interfaceNamePrefix, 'detectLocal.interfaceNamePrefix');
  if (bi) dl.bridgeInterface = bi;
  if (ip) dl.interfaceNamePrefix = ip;
  if (Array.isArray(detectLocal.clusterCIDRs)) dl.clusterCIDRs = detectLocal.clusterCIDRs.map(String);
  cfg.detectLocal = dl;
  return cfg;
}

const IFACE = /^[A-Za-z0-9_.:@+-]{1,15}$/;

/**
 * The local-traffic detector kube-proxy would build. podCIDRs are the node's (for NodeCIDR).
 * A mode whose input is missing yields 'None', as kube-proxy's no-op detector does.
 */
export function localDetectorFor(cfg: KubeProxyConfig, family: IpFamily, podCIDRs: string[] = []): LocalDetector {
  const mode = cfg.detectLocalMode || 'ClusterCIDR';
  const fam = family === 'IPv4' ? 4 : 6;
  const ofFamily = (list: string[]) => list.map((c) => parseCIDR(c.trim())).filter((c) => c && c.family === fam).map((c) => c!.text);
  switch (mode) {
    case 'ClusterCIDR': {
      const list = cfg.detectLocal?.clusterCIDRs?.length ? cfg.detectLocal.clusterCIDRs : (cfg.clusterCIDR ?? '').split(',').filter(Boolean);
      const cidrs = ofFamily(list).slice(0, 1);
      return cidrs.length ? { mode: 'ClusterCIDR', cidrs } : { mode: 'None' };
    }
    case 'NodeCIDR': {
      const cidrs = ofFamily(podCIDRs).slice(0, 1);
      return cidrs.length ? { mode: 'NodeCIDR', cidrs } : { mode: 'None' };
    }
    case 'BridgeInterface': {
      const b = cfg.detectLocal?.bridgeInterface;
      if (!b || !IFACE.test(b)) throw new ConfigError(`detectLocalMode BridgeInterface needs a valid detectLocal.bridgeInterface, got ${JSON.stringify(b)}`);
      return { mode: 'BridgeInterface', interface: b };
    }
    case 'InterfaceNamePrefix': {
      const p = cfg.detectLocal?.interfaceNamePrefix;
      if (!p || !IFACE.test(p)) throw new ConfigError(`detectLocalMode InterfaceNamePrefix needs a valid detectLocal.interfaceNamePrefix, got ${JSON.stringify(p)}`);
      return { mode: 'InterfaceNamePrefix', prefix: p };
    }
    default:
      throw new ConfigError(`unknown detectLocalMode ${JSON.stringify(mode)} (ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix)`);
  }
}

export interface SettingsInput {
  nodeName?: string;
  family?: IpFamily;
  nodeIPs?: string[];
  interfaceAddresses?: Array<{ iface: string; cidr: string }>;
  randomFully?: boolean;
  nfacctCounters?: boolean;
  podCIDRs?: string[];
}

/** Merges a parsed config with node facts into what the renderer needs. */
export function settingsFromConfig(cfg: KubeProxyConfig, input: SettingsInput): ProxySettings {
  const family = input.family ?? 'IPv4';
  const nodeIPs = (input.nodeIPs ?? []).map((s) => {
    const ip = parseIP(s);
    if (!ip) throw new ConfigError(`invalid node IP ${JSON.stringify(s)}`);
    return ip.text;
  });
  return {
    nodeName: input.nodeName ?? cfg.hostnameOverride ?? '',
    family,
    nodeIPs,
    interfaceAddresses: input.interfaceAddresses ?? [],
    localDetector: localDetectorFor(cfg, family, input.podCIDRs),
    nodePortAddresses: cfg.nodePortAddresses ?? [],
    masqueradeAll: cfg.masqueradeAll ?? false,
    masqueradeBit: cfg.masqueradeBit ?? 14,
    localhostNodePorts: cfg.localhostNodePorts ?? true,
    randomFully: input.randomFully ?? false,
    nfacctCounters: input.nfacctCounters ?? false,
    largeClusterEndpointsThreshold: 1000,
  };
}

/** The contract the proxy codes against: YAML text (or none) plus overrides; `mode` as in parseKubeProxyConfig. */
export function proxySettingsFromConfig(yamlText: string | undefined, overrides: Partial<ProxySettings> & { podCIDRs?: string[]; mode?: string }): ProxySettings {
  const cfg = parseKubeProxyConfig(yamlText, overrides.mode);
  const base = settingsFromConfig(cfg, {
    ...(overrides.nodeName !== undefined ? { nodeName: overrides.nodeName } : {}),
    ...(overrides.family !== undefined ? { family: overrides.family } : {}),
    ...(overrides.nodeIPs !== undefined ? { nodeIPs: overrides.nodeIPs } : {}),
    ...(overrides.podCIDRs !== undefined ? { podCIDRs: overrides.podCIDRs } : {}),
  });
  const { podCIDRs: _ignored, mode: _mode, ...rest } = overrides;
  return { ...base, ...rest, nodeIPs: base.nodeIPs };
}
