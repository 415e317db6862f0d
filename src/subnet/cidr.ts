// IPv4/IPv6 prefixes as plain data (base address as a bigint plus a length), so subnet
// arithmetic is the same for both families and never goes through strings.
import { Address6 } from 'ip-address';

import { formatIP, type Family } from '../util/ip.ts';

// Family and the one address formatter come from src/util/ip.ts, shared with the renderer.
export { formatIP, type Family };

export interface Cidr {
  family: Family;
  /** Address as an unsigned integer (32 or 128 bits). */
  base: bigint;
  len: number;
}

export const bitsOf = (f: Family): number => (f === 4 ? 32 : 128);

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function parseIPv4(text: string): bigint {
  if (typeof text !== 'string' || !IPV4.test(text)) throw new Error(`invalid IPv4 address ${JSON.stringify(text)}`);
  return text.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
}

export function isIPv4(text: unknown): text is string {
  return typeof text === 'string' && IPV4.test(text);
}

export function parseIPv6(text: string): bigint {
  if (typeof text !== 'string' || !text.includes(':') || text.includes('/') || !Address6.isValid(text)) {
    throw new Error(`invalid IPv6 address ${JSON.stringify(text)}`);
  }
  return new Address6(text).bigInt();
}

export function parseIP(text: string): { family: Family; value: bigint } {
  if (typeof text === 'string' && text.includes(':')) return { family: 6, value: parseIPv6(text) };
  return { family: 4, value: parseIPv4(text) };
}


export function hostMask(c: { family: Family; len: number }): bigint {
  return (1n << BigInt(bitsOf(c.family) - c.len)) - 1n;
}

/** Parses "A/N"; the address must be the network address unless `allowHostBits`. */
export function parseCidr(text: string, allowHostBits = false): Cidr {
  if (typeof text !== 'string') throw new Error(`invalid CIDR ${JSON.stringify(text)}`);
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) throw new Error(`invalid CIDR ${JSON.stringify(text)}`);
  const { family, value } = parseIP(m[1]!);
  const len = Number(m[2]);
  if (len > bitsOf(family)) throw new Error(`invalid CIDR ${JSON.stringify(text)}: prefix length ${len} too long`);
  const c: Cidr = { family, base: value, len };
  const host = value & hostMask(c);
  if (host !== 0n) {
    if (!allowHostBits) throw new Error(`invalid CIDR ${JSON.stringify(text)}: host bits set (network is ${formatCidr({ ...c, base: value - host })})`);
    c.base = value - host;
  }
  return c;
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

export function sameCidr(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.base === b.base && a.len === b.len;
}
