// Pure: whether an address or a pod network can work on a node. flannel accepts a Network of
// 0.0.0.0/0 or 127.0.0.0/8 and lease PublicIPs of 0.0.0.0 or 255.255.255.255; each of those
// breaks the node (every address routed into the overlay, loopback hijacked, FDB entries no
// packet can follow), so knet refuses them with a reason.
import { type Cidr, formatCidr, overlaps, parseCidr, parseIPv4 } from './cidr.ts';

interface Special { range: Cidr; what: string; /** Also no tunnel endpoint (link-local can be one). */ noEndpoint: boolean }

/** Ranges no pod network may touch; most are no node's unicast address either. */
const SPECIAL: readonly Special[] = [
  { range: parseCidr('0.0.0.0/8'), what: '"this network" (0.0.0.0/8)', noEndpoint: true },
  { range: parseCidr('127.0.0.0/8'), what: 'loopback (127.0.0.0/8)', noEndpoint: true },
  { range: parseCidr('169.254.0.0/16'), what: 'link-local (169.254.0.0/16)', noEndpoint: false },
  { range: parseCidr('224.0.0.0/4'), what: 'multicast (224.0.0.0/4)', noEndpoint: true },
  { range: parseCidr('240.0.0.0/4'), what: 'reserved and broadcast (240.0.0.0/4)', noEndpoint: true },
];

/** Why `ip` cannot be a node's tunnel endpoint, or null when it can. */
export function underlayAddressProblem(ip: string): string | null {
  let value: bigint;
  try {
    value = parseIPv4(ip);
  } catch {
    return `${JSON.stringify(ip)} is not an IPv4 address`;
  }
  const hit = SPECIAL.find((s) => s.noEndpoint && overlaps(s.range, { family: 4, base: value, len: 32 }));
  return hit ? `${ip} is a ${hit.what} address, not a node's unicast address` : null;
}

/** Why `network` cannot be the pod network of a node on `underlay`, or null when it can. */
export function networkProblem(network: Cidr, underlay: { iface: string; publicIP: string; prefixLen: number }): string | null {
  if (network.family !== 4) return null;
  if (network.len === 0) return `Network ${formatCidr(network)} is every address: the node would route all its traffic into the overlay`;
  const special = SPECIAL.find((s) => overlaps(s.range, network));
  if (special) return `Network ${formatCidr(network)} overlaps ${special.what}`;
  const ip = parseIPv4(underlay.publicIP);
  const len = underlay.prefixLen;
  const mask = len === 0 ? 0n : ((1n << BigInt(len)) - 1n) << BigInt(32 - len);
  const underlayNet: Cidr = { family: 4, base: ip & mask, len };
  if (overlaps(network, underlayNet)) {
    return `Network ${formatCidr(network)} overlaps the node network ${formatCidr(underlayNet)} of ${underlay.iface} (${underlay.publicIP}): pod routes would replace the node's own`;
  }
  return null;
}
