// IPv4 addresses as unsigned 32-bit numbers, and strict CIDR parsing: every address and
// subnet the plugin hands to the kernel passes through here first.
export interface Cidr4 {
  /** The address as written (may have host bits set, e.g. a gateway "10.1.2.1/24"). */
  ip: number;
  prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;

export function parseIPv4(s: unknown): number {
  if (typeof s !== 'string') throw new Error(`invalid IPv4 address ${JSON.stringify(s)}`);
  const parts = s.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) throw new Error(`invalid IPv4 address ${JSON.stringify(s)}`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function isIPv4(s: unknown): boolean {
  try { parseIPv4(s); return true; } catch { return false; }
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr4(s: unknown): Cidr4 {
  if (typeof s !== 'string') throw new Error(`invalid IPv4 CIDR ${JSON.stringify(s)}`);
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(s);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || prefix > 32) throw new Error(`invalid IPv4 CIDR ${JSON.stringify(s)}`);
  return { ip: parseIPv4(m[1]), prefix };
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
