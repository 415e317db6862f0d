// flannel's network config (`<prefix>/config`) parsed and validated with flannel's defaults
// (those flannel's documentation states): SubnetLen/SubnetMin/SubnetMax defaulting, alignment checks, Backend type.
import { type Cidr, type Family, bitsOf, contains, formatCidr, formatIP, lastAddress, parseCidr, parseIP, size } from './cidr.ts';

export interface SubnetRange {
  network: Cidr;
  subnetLen: number;
  /** Base address of the first and last usable subnet. */
  subnetMin: bigint;
  subnetMax: bigint;
}

export interface BackendConfig {
  /** Lower-cased backend type ("vxlan", "udp", "host-gw", ...). */
  type: string;
  /** The Backend object as given, for the backend's own parser. */
  raw: Record<string, unknown>;
}

export interface NetworkConfig {
  enableIPv4: boolean;
  enableIPv6: boolean;
  ipv4?: SubnetRange;
  ipv6?: SubnetRange;
  backend: BackendConfig;
}

export class ConfigError extends Error {}

/** Go's encoding/json matches object keys case-insensitively; so does flannel's config. */
function field(obj: Record<string, unknown>, name: string): unknown {
  if (name in obj) return obj[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(obj)) if (k.toLowerCase() === lower) return obj[k];
  return undefined;
}

function optBool(obj: Record<string, unknown>, name: string, dflt: boolean): boolean {
  const v = field(obj, name);
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optInt(obj: Record<string, unknown>, name: string): number | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null || v === 0) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function optString(obj: Record<string, unknown>, name: string): string | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${name} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function subnetRange(family: Family, obj: Record<string, unknown>, names: { net: string; len: string; min: string; max: string }): SubnetRange {
  const netText = optString(obj, names.net)!;
  let network: Cidr;
  try {
    network = parseCidr(netText);
  } catch (err) {
    throw new ConfigError(`${names.net}: ${(err as Error).message}`);
  }
  if (network.family !== family) throw new ConfigError(`${names.net} ${netText} is not an IPv${family} network`);
  const maxLen = family === 4 ? 30 : 126;
  const bits = bitsOf(family);
  let subnetLen = optInt(obj, names.len);
  if (subnetLen === undefined) {
    // flannel: /24 (IPv4) or /64 (IPv6) for big networks, else four subnets.
    const big = family === 4 ? 22 : 62;
    const minUseful = family === 4 ? 28 : 124;
    if (network.len > minUseful) throw new ConfigError(`network is too small. Minimum useful network prefix is /${minUseful}`);
    subnetLen = network.len <= big ? (family === 4 ? 24 : 64) : network.len + 2;
  } else {
    if (subnetLen > maxLen) throw new ConfigError(`${names.len} must be less than /${maxLen + 1}`);
    if (subnetLen > bits) throw new ConfigError(`${names.len} /${subnetLen} is longer than an address`);
    if (network.len > subnetLen - 2) {
      throw new ConfigError(`network must be able to accommodate at least four subnets (${names.net} ${formatCidr(network)} with ${names.len} ${subnetLen})`);
    }
  }
  const step = 1n << BigInt(bits - subnetLen);
  const bound = (name: string, dflt: bigint): bigint => {
    const text = optString(obj, name);
    if (text === undefined) return dflt;
    let v: { family: Family; value: bigint };
    try {
      v = parseIP(text);
    } catch (err) {
      throw new ConfigError(`${name}: ${(err as Error).message}`);
    }
    if (v.family !== family || v.value < network.base || v.value > lastAddress(network)) {
      throw new ConfigError(`${name} (${text}) is not within ${names.net} (${formatCidr(network)})`);
    }
    if (v.value % step !== 0n) throw new ConfigError(`${name} (${text}) is not on a ${names.len} (/${subnetLen}) boundary`);
    return v.value;
  };
  // The first subnet is skipped so that no interface address equals the network address.
  const subnetMin = bound(names.min, network.base + step);
  const subnetMax = bound(names.max, network.base + size(network) - step);
  if (subnetMin > subnetMax) {
    throw new ConfigError(`${names.min} (${formatIP(family, subnetMin)}) is above ${names.max} (${formatIP(family, subnetMax)})`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** Parses and validates flannel's network config JSON; throws ConfigError with flannel-like text. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`network config is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new ConfigError('network config must be a JSON object');
  const o = obj as Record<string, unknown>;
  const enableIPv4 = optBool(o, 'EnableIPv4', true);
  const enableIPv6 = optBool(o, 'EnableIPv6', false);
  if (!enableIPv4 && !enableIPv6) throw new ConfigError('EnableIPv4 and EnableIPv6 are both false: nothing to do');
  const cfg: NetworkConfig = { enableIPv4, enableIPv6, backend: parseBackend(field(o, 'Backend')) };
  if (enableIPv4) {
    if (optString(o, 'Network') === undefined) throw new ConfigError('please define a correct Network parameter in the flannel config');
    cfg.ipv4 = subnetRange(4, o, { net: 'Network', len: 'SubnetLen', min: 'SubnetMin', max: 'SubnetMax' });
  }
  if (enableIPv6) {
    if (optString(o, 'IPv6Network') === undefined) throw new ConfigError('please define a correct IPv6Network parameter in the flannel config');
    cfg.ipv6 = subnetRange(6, o, { net: 'IPv6Network', len: 'IPv6SubnetLen', min: 'IPv6SubnetMin', max: 'IPv6SubnetMax' });
  }
  return cfg;
}

function parseBackend(v: unknown): BackendConfig {
  // flannel's code (not its docs) makes a missing Backend mean "udp".
  if (v === undefined || v === null) return { type: 'udp', raw: {} };
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError('Backend must be a JSON object');
  const raw = v as Record<string, unknown>;
  const t = field(raw, 'Type');
  if (t === undefined || t === '') return { type: 'udp', raw };
  if (typeof t !== 'string') throw new ConfigError(`Backend.Type must be a string, got ${JSON.stringify(t)}`);
  return { type: t.toLowerCase(), raw };
}

export { field as configField };

/** A subnet is usable under a config if it has the config's length and lies in [min, max]. */
export function subnetFits(range: SubnetRange, subnet: Cidr): boolean {
  return (
    subnet.family === range.network.family &&
    subnet.len === range.subnetLen &&
    contains(range.network, subnet) &&
    subnet.base >= range.subnetMin &&
    subnet.base <= range.subnetMax
  );
}
