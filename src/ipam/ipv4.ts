// IPv4 addresses as unsigned 32-bit numbers for the plugin's arithmetic; the text is parsed by
// src/util/ip.ts in its strict syntax: every address and subnet the plugin hands to the kernel
// passes through there first.
import { formatIPv4, isIPv4, mustParseCIDR, mustParseIP } from '../util/ip.ts';

export { formatIPv4, isIPv4 };

export interface Cidr4 {
  /** The address as written (may have host bits set, e.g. a gateway "10.1.2.1/24"). */
  ip: number;
  prefix: number;
}

export function parseIPv4(s: unknown): number {
  return Number(mustParseIP(s, { syntax: 'strict', family: 4 }).value);
}

export function parseCidr4(s: unknown): Cidr4 {
  const c = mustParseCIDR(s, { syntax: 'strict', family: 4, hostBits: 'clear' });
  return { ip: Number(c.address), prefix: c.prefix };
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function networkOf(c: Cidr4): number {
  return (c.ip & maskOf(c.prefix)) >>> 0;
}

export function broadcastOf(c: Cidr4): number {
  return (networkOf(c) | (~maskOf(c.prefix) >>> 0)) >>> 0;
}

export function contains(c: Cidr4, ip: number): boolean {
  return ((ip & maskOf(c.prefix)) >>> 0) === networkOf(c);
}

export function formatCidr4(ip: number, prefix: number): string {
  return `${formatIPv4(ip)}/${prefix}`;
}

/** The subnet in canonical form (host bits cleared). */
export function canonicalCidr(c: Cidr4): string {
  return formatCidr4(networkOf(c), c.prefix);
}
