// IPv4/IPv6 prefixes as plain data (base address as a bigint plus a length), so subnet
// arithmetic is the same for both families and never goes through strings.
import { bitsOf, formatIP, mustParseCIDR, mustParseIP, type Family } from '../util/ip.ts';

// Parsing, Family and the address formatter come from src/util/ip.ts (strict syntax: these are
// flannel's configs, leases and annotations), shared with the renderer and IPAM.
export { bitsOf, formatIP, type Family };

export interface Cidr {
  family: Family;
  /** Address as an unsigned integer (32 or 128 bits). */
  base: bigint;
  len: number;
}

export function parseIPv4(text: string): bigint {
  return mustParseIP(text, { syntax: 'strict', family: 4 }).value;
}

export { isIPv4 } from '../util/ip.ts';

export function parseIPv6(text: string): bigint {
  return mustParseIP(text, { syntax: 'strict', family: 6 }).value;
}

export function parseIP(text: string): { family: Family; value: bigint } {
  return mustParseIP(text, { syntax: 'strict' });
}

/** Parses "A/N"; the address must be the network address unless `allowHostBits`. */
export function parseCidr(text: string, allowHostBits = false): Cidr {
  const c = mustParseCIDR(text, { syntax: 'strict', hostBits: allowHostBits ? 'clear' : 'refuse' });
  return { family: c.family, base: c.value, len: c.prefix };
}

export function formatCidr(c: Cidr): string {
  return `${formatIP(c.family, c.base)}/${c.len}`;
}

export function size(c: Cidr): bigint {
  return 1n << BigInt(bitsOf(c.family) - c.len);
}

/** Last address of the prefix. */
export function lastAddress(c: Cidr): bigint {
  return c.base + size(c) - 1n;
}

export function containsIP(c: Cidr, ip: bigint): boolean {
  return ip >= c.base && ip <= lastAddress(c);
}

export function contains(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && outer.len <= inner.len && containsIP(outer, inner.base);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.base <= lastAddress(b) && b.base <= lastAddress(a);
}
