// Parsing and validation of what a runtime hands the plugin: the network config on stdin,
// flannel's subnet.env, and the CNI_* environment. Pure: no kernel, no files (callers pass the
// subnet file's text in), so every rule here has a unit test without root.
import { ErrCode, CniError, invalidConfig, invalidEnv } from './errors.ts';
import { canonicalCidr, contains, formatIPv4, networkOf, parseCidr4, parseIPv4, type Cidr4 } from '../ipam/ipv4.ts';
import { hostRange } from '../ipam/allocator.ts';
import { SubnetFileError, parseSubnetEnv as parseSubnetEnvText, type SubnetEnvValues } from '../subnet/subnet-env-text.ts';
import { isRecord } from '../model/json.ts';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export type Command = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'];

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
export const DEFAULT_BRIDGE = 'cni0';
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const SAFE_PATH = /^\/[A-Za-z0-9_.:@+=,\/-]*$/;

export interface RouteConf { dst: string; gw?: string }
export interface Attachment { containerID: string; ifname: string }

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  subnetFile: string;
  subnet?: string;
  network?: string;
  bridge: string;
  mtu?: number;
  hairpinMode: boolean;
  ipMasq?: boolean;
  iptablesBackend?: 'nft' | 'legacy';
  dataDir: string;
  routes?: RouteConf[];
  exclude: string[];
  dns?: Record<string, unknown>;
  prevResult?: Record<string, unknown>;
  validAttachments?: Attachment[];
}

type Json = Record<string, unknown>;

export function assertSafePath(what: string, p: unknown): string {
  if (typeof p !== 'string' || !SAFE_PATH.test(p) || p.split('/').some((s) => s === '..') || p.length > 4096) {
    throw invalidConfig(`${what} must be an absolute path without "..": ${JSON.stringify(p)}`);
  }
  return p;
}

/** Decodes stdin; a decoding failure is error 6, an unsupported version error 1. */
export function decodeStdin(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CniError(ErrCode.DecodingFailure, 'failed to decode network configuration', (e as Error).message);
  }
  if (!isRecord(v)) throw new CniError(ErrCode.DecodingFailure, 'failed to decode network configuration', 'stdin is not a JSON object');
  return v;
}

export function checkVersion(v: unknown): CniVersion {
  if (typeof v !== 'string' || !(SUPPORTED_VERSIONS as readonly string[]).includes(v)) {
    throw new CniError(ErrCode.IncompatibleVersion, 'incompatible CNI version',
      `cniVersion ${JSON.stringify(v)} is not one of ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  return v as CniVersion;
}

function optBool(j: Json, key: string): boolean | undefined {
  const v = j[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw invalidConfig(`${key} must be true or false, not ${JSON.stringify(v)}`);
  return v;
}

function parseRoutes(v: unknown): RouteConf[] {
  if (!Array.isArray(v)) throw invalidConfig('routes must be a list of {dst, gw}');
  return v.map((r, i) => {
    if (!isRecord(r)) throw invalidConfig(`routes[${i}] must be an object`);
    try {
      const dst = parseCidr4(r.dst);
      if (dst.ip !== networkOf(dst)) throw new Error(`routes[${i}].dst ${String(r.dst)} has host bits set`);
      const out: RouteConf = { dst: canonicalCidr(dst) };
      if (r.gw !== undefined) { parseIPv4(r.gw); out.gw = r.gw as string; }
      return out;
    } catch (e) {
      throw invalidConfig(e instanceof CniError ? e.details : `routes[${i}]: ${(e as Error).message}`);
    }
  });
}

function parseAttachments(j: Json): Attachment[] | undefined {
  // libcni sends both keys (the spec renamed it); either is accepted.
  const v = j['cni.dev/valid-attachments'] ?? j['cni.dev/attachments'];
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw invalidConfig('cni.dev/valid-attachments must be a list');
  return v.map((a, i) => {
    if (!isRecord(a) || typeof a.containerID !== 'string' || typeof a.ifname !== 'string') {
      throw invalidConfig(`cni.dev/valid-attachments[${i}] must be {containerID, ifname}`);
    }
    return { containerID: a.containerID, ifname: a.ifname };
  });
}

/** Validates the plugin's network configuration (stdin of ADD, DEL, CHECK, GC, STATUS). */
export function parseNetConf(j: Json): NetConf {
  const cniVersion = checkVersion(j.cniVersion);
  if (typeof j.name !== 'string' || !NETWORK_NAME.test(j.name) || j.name.length > 128) {
    throw invalidConfig(`name must start with a letter or digit and hold only letters, digits, "_", "." and "-": ${JSON.stringify(j.name)}`);
  }
  if (j.type !== 'knet') throw invalidConfig(`type must be "knet", not ${JSON.stringify(j.type)}`);
  const conf: NetConf = {
    cniVersion,
    name: j.name,
    type: 'knet',
    subnetFile: j.subnetFile === undefined ? DEFAULT_SUBNET_FILE : assertSafePath('subnetFile', j.subnetFile),
    bridge: DEFAULT_BRIDGE,
    hairpinMode: optBool(j, 'hairpinMode') ?? false,
    dataDir: j.dataDir === undefined ? `/var/lib/cni/networks/${j.name}` : assertSafePath('dataDir', j.dataDir),
    exclude: [],
  };
  if (j.bridge !== undefined) {
    if (typeof j.bridge !== 'string' || !IFNAME.test(j.bridge)) throw invalidConfig(`bridge must be an interface name of 1-15 characters: ${JSON.stringify(j.bridge)}`);
    conf.bridge = j.bridge;
  }
  if (j.subnet !== undefined) {
    try {
      const c = parseCidr4(j.subnet);
      hostRange(c);
      conf.subnet = j.subnet as string;
    } catch (e) {
      throw invalidConfig(`subnet: ${(e as Error).message}`);
    }
  }
  if (j.network !== undefined) {
    try { parseCidr4(j.network); conf.network = j.network as string; } catch (e) { throw invalidConfig(`network: ${(e as Error).message}`); }
  }
  if (j.mtu !== undefined) {
    if (!Number.isInteger(j.mtu) || (j.mtu as number) < 576 || (j.mtu as number) > 65535) throw invalidConfig(`mtu must be an integer from 576 to 65535: ${JSON.stringify(j.mtu)}`);
    conf.mtu = j.mtu as number;
  }
  const ipMasq = optBool(j, 'ipMasq');
  if (ipMasq !== undefined) conf.ipMasq = ipMasq;
  if (j.iptablesBackend !== undefined) {
    if (j.iptablesBackend !== 'nft' && j.iptablesBackend !== 'legacy') throw invalidConfig('iptablesBackend must be "nft" or "legacy"');
    conf.iptablesBackend = j.iptablesBackend;
  }
  if (j.routes !== undefined) conf.routes = parseRoutes(j.routes);
  if (j.exclude !== undefined) {
    if (!Array.isArray(j.exclude)) throw invalidConfig('exclude must be a list of IPv4 addresses or CIDRs');
    for (const x of j.exclude) {
      try { if (typeof x === 'string' && x.includes('/')) parseCidr4(x); else parseIPv4(x); } catch (e) { throw invalidConfig(`exclude: ${(e as Error).message}`); }
      conf.exclude.push(x as string);
    }
  }
  if (j.dns !== undefined) {
    if (!isRecord(j.dns)) throw invalidConfig('dns must be an object');
    conf.dns = j.dns;
  }
  if (j.prevResult !== undefined) {
    if (!isRecord(j.prevResult)) throw invalidConfig('prevResult must be an object');
    conf.prevResult = j.prevResult;
  }
  const att = parseAttachments(j);
  if (att) conf.validAttachments = att;
  return conf;
}

// ---- flannel's subnet.env ----

export type SubnetEnv = SubnetEnvValues;

/** subnet.env parsed by src/subnet/subnet-env-text.ts; a bad one is the spec's error 7. */
export function parseSubnetEnv(text: string, file = 'the subnet file'): SubnetEnv {
  try {
    return parseSubnetEnvText(text, file);
  } catch (e) {
    if (e instanceof SubnetFileError) throw invalidConfig(e.message);
    throw e;
  }
}

// ---- the network as the plugin will build it ----

export interface NetworkPlan {
  subnet: Cidr4;
  gateway: number;
  /** The whole cluster network: pod traffic to it is never masqueraded. */
  clusterNetwork: Cidr4;
  mtu: number;
  ipMasq: boolean;
  routes: { dst: string; gw: string }[];
  reserved: Set<number>;
}

/** Combines the config and (when the config has no static subnet) the subnet file. */
export function planNetwork(conf: NetConf, subnetEnv: SubnetEnv | null): NetworkPlan {
  const subnetText = conf.subnet ?? subnetEnv?.subnet;
  if (!subnetText) throw new CniError(ErrCode.TryAgainLater, 'subnet not known yet', `${conf.subnetFile} is missing and the config has no subnet`);
  const given = parseCidr4(subnetText);
  const subnet = { ip: networkOf(given), prefix: given.prefix };
  const gateway = subnet.ip + 1;
  const networkText = conf.network ?? subnetEnv?.network;
  const clusterNetwork = networkText ? parseCidr4(networkText) : subnet;
  if (!contains(clusterNetwork, subnet.ip)) throw invalidConfig(`subnet ${subnetText} is outside the network ${networkText}`);
  const gw = formatIPv4(gateway);
  const routes = (conf.routes ?? [{ dst: '0.0.0.0/0' }]).map((r) => ({ dst: r.dst, gw: r.gw ?? gw }));
  for (const r of routes) {
    if (!contains(subnet, parseIPv4(r.gw))) throw invalidConfig(`route gateway ${r.gw} is not in the pod subnet ${canonicalCidr(subnet)}`);
  }
  const reserved = new Set<number>();
  for (const x of conf.exclude) {
    if (x.includes('/')) {
      const c = parseCidr4(x);
      const start = networkOf(c);
      const size = 2 ** (32 - c.prefix);
      if (size > 65536) throw invalidConfig(`exclude ${x} is too large`);
      for (let i = 0; i < size; i++) reserved.add(start + i);
    } else {
      reserved.add(parseIPv4(x));
    }
  }
  // flannel's rule: when flanneld masquerades (FLANNEL_IPMASQ=true) the plugin must not.
  const ipMasq = conf.ipMasq ?? (subnetEnv?.ipMasq === undefined ? false : !subnetEnv.ipMasq);
  return { subnet, gateway, clusterNetwork, mtu: conf.mtu ?? subnetEnv?.mtu ?? 1500, ipMasq, routes, reserved };
}

// ---- environment ----

export interface CniEnv {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
}

/** Validates CNI_* variables for a command; every problem names the variable (error 4). */
export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND;
  if (!command || !(COMMANDS as readonly string[]).includes(command)) {
    throw invalidEnv(`CNI_COMMAND must be one of ${COMMANDS.join(', ')}, not ${JSON.stringify(command ?? '')}`);
  }
  const out: CniEnv = { command: command as Command, containerId: env.CNI_CONTAINERID ?? '', netns: env.CNI_NETNS ?? '',
    ifname: env.CNI_IFNAME ?? '', args: env.CNI_ARGS ?? '', path: env.CNI_PATH ?? '' };
  const needs = command === 'ADD' || command === 'CHECK' ? ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']
    : command === 'DEL' ? ['CNI_CONTAINERID', 'CNI_IFNAME'] : [];
  const missing = needs.filter((k) => !env[k]);
  if (missing.length) throw invalidEnv(`missing ${missing.join(', ')}`);
  if (needs.length) {
    if (!CONTAINER_ID.test(out.containerId) || out.containerId.length > 1024) {
      throw invalidEnv(`CNI_CONTAINERID must start with a letter or digit and hold only letters, digits, "_", "." and "-": ${JSON.stringify(out.containerId)}`);
    }
    if (!IFNAME.test(out.ifname) || out.ifname === '.' || out.ifname === '..') {
      throw invalidEnv(`CNI_IFNAME must be 1-15 characters of letters, digits, "_", "." and "-": ${JSON.stringify(out.ifname)}`);
    }
  }
  if (out.netns && (!SAFE_PATH.test(out.netns) || out.netns.split('/').includes('..'))) {
    throw invalidEnv(`CNI_NETNS must be an absolute path without "..": ${JSON.stringify(out.netns)}`);
  }
  return out;
}
