// subnet.env's text, pure: written by formatSubnetEnv, read by parseSubnetEnv, as flanneld
// writes and reads it. The file itself (checked reads, atomic writes) is subnet-env.ts.
import { type Cidr, formatCidr, formatIP, parseCidr } from './cidr.ts';
import { mustParseCIDR } from '../util/ip.ts';

export interface SubnetEnv {
  network: Cidr;
  /** The lease subnet; written as its first address with the prefix (10.5.52.1/24). */
  subnet: Cidr;
  ipv6Network?: Cidr;
  ipv6Subnet?: Cidr;
  mtu: number;
  ipMasq: boolean;
}

export function formatSubnetEnv(e: SubnetEnv): string {
  const firstIP = (c: Cidr) => `${formatIP(c.family, c.base + 1n)}/${c.len}`;
  const lines = [`FLANNEL_NETWORK=${formatCidr(e.network)}`, `FLANNEL_SUBNET=${firstIP(e.subnet)}`];
  if (e.ipv6Network && e.ipv6Subnet) {
    lines.push(`FLANNEL_IPV6_NETWORK=${formatCidr(e.ipv6Network)}`, `FLANNEL_IPV6_SUBNET=${firstIP(e.ipv6Subnet)}`);
  }
  lines.push(`FLANNEL_MTU=${e.mtu}`, `FLANNEL_IPMASQ=${e.ipMasq}`);
  return lines.join('\n') + '\n';
}

/** 'invalid': the path cannot be a subnet file, or its text is not one; 'unreadable': an I/O error. */
export class SubnetFileError extends Error {
  constructor(message: string, readonly kind: 'invalid' | 'unreadable') {
    super(message);
    this.name = 'SubnetFileError';
  }
}

/** What the plugin takes from a subnet file, as written there. */
export interface SubnetEnvValues {
  network?: string;
  /** The pod subnet as its first address with the prefix (10.5.52.1/24). */
  subnet: string;
  mtu?: number;
  ipMasq?: boolean;
}

/**
 * The KEY=VALUE lines of subnet.env, as flanneld and knet's agent write them (blank lines and
 * # comments ignored, one pair of double quotes taken off), with their line numbers.
 */
export function subnetEnvEntries(text: string, file = 'the subnet file'): Map<string, { value: string; line: number }> {
  const kv = new Map<string, { value: string; line: number }>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 1) throw new SubnetFileError(`${file}: line ${i + 1} is not KEY=VALUE (is it a subnet file?)`, 'invalid');
    kv.set(line.slice(0, eq), { value: line.slice(eq + 1).replace(/^"(.*)"$/, '$1'), line: i + 1 });
  }
  return kv;
}

/** Parses and checks subnet.env. Errors name the file, the line and the key, never the text. */
export function parseSubnetEnv(text: string, file = 'the subnet file'): SubnetEnvValues {
  const kv = subnetEnvEntries(text, file);
  const bad = (key: string, what: string) => new SubnetFileError(`${file}: ${key} (line ${kv.get(key)!.line}) is not ${what}`, 'invalid');
  const subnet = kv.get('FLANNEL_SUBNET')?.value;
  if (!subnet) throw new SubnetFileError(`${file} has no FLANNEL_SUBNET (is it a subnet file?)`, 'invalid');
  const out: SubnetEnvValues = { subnet };
  // A /31 or /32 leaves no address for a pod beside the gateway.
  try { if (mustParseCIDR(subnet, { syntax: 'strict', family: 4, hostBits: 'clear' }).prefix >= 31) throw new Error(); } catch { throw bad('FLANNEL_SUBNET', 'an IPv4 CIDR with room for pods'); }
  const network = kv.get('FLANNEL_NETWORK')?.value;
  if (network) {
    try { mustParseCIDR(network, { syntax: 'strict', family: 4, hostBits: 'clear' }); } catch { throw bad('FLANNEL_NETWORK', 'an IPv4 CIDR'); }
    out.network = network;
  }
  const mtu = kv.get('FLANNEL_MTU')?.value;
  if (mtu !== undefined) {
    const n = Number(mtu);
    if (!Number.isInteger(n) || n < 576 || n > 65535) throw bad('FLANNEL_MTU', 'an MTU from 576 to 65535');
    out.mtu = n;
  }
  // flannel reads it as a Go boolean: 1/t/T/TRUE/true/True or 0/f/F/FALSE/false/False; anything
  // else ("yes", a typo) is refused rather than taken as false (which would masquerade twice).
  const masq = kv.get('FLANNEL_IPMASQ')?.value;
  if (masq !== undefined) {
    if (/^(?:1|t|T|TRUE|true|True)$/.test(masq)) out.ipMasq = true;
    else if (/^(?:0|f|F|FALSE|false|False)$/.test(masq)) out.ipMasq = false;
    else throw bad('FLANNEL_IPMASQ', 'true or false');
  }
  return out;
}

/** The IPv4 pod subnet a subnet file records (network address form), or null when it records none. */
export function subnetFromEnv(text: string): Cidr | null {
  try {
    return parseCidr(parseSubnetEnv(text).subnet, true);
  } catch {
    return null;
  }
}
