// Address maths shared by the renderer, IPAM and the overlay. Parsing is "sloppy" the way
// Kubernetes' ParseIPSloppy is: IPv4 octets with leading zeros are read as decimal
// ("10.180.00.001" is 10.180.0.1), because objects stored before stricter validation exist.
import { Address6 } from 'ip-address';

export type Family = 4 | 6;

export interface ParsedIP {
  family: Family;
  /** Canonical text: dotted quad, or RFC 5952 IPv6. */
  text: string;
  /** IPv4 as a 32-bit number, IPv6 as a 128-bit bigint. */
  value: bigint;
}

export interface ParsedCIDR {
  family: Family;
  /** Network address in canonical text. */
  network: string;
  prefix: number;
  /** Canonical "network/prefix". */
  text: string;
  value: bigint;
}

/**
 * A dotted quad without regex or substrings (this runs for every endpoint of every service on
 * each render): the text is the input itself unless an octet had leading zeros.
 */
function parseIPv4(s: string): ParsedIP | null {
  const n = s.length;
  if (n < 7 || n > 15) return null;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let canonical = true;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || octet > 255) return null;
      value = value * 256 + octet;
      if (i < n && ++dots > 3) return null;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (++digits > 3) return null;
      if (digits === 2 && octet === 0) canonical = false;
      octet = octet * 10 + (c - 48);
    } else {
      return null;
    }
  }
  if (dots !== 3) return null;
  const text = canonical ? s : `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
  // One BigInt per address.
  return { family: 4, text, value: BigInt(value) };
}

function parseIPv6(s: string): ParsedIP | null {
  if (!s.includes(':') || s.includes('/') || s.includes('%')) return null;
  if (!Address6.isValid(s)) return null;
  const a = new Address6(s);
  // An IPv4-mapped address is IPv4 for Kubernetes (Go's net.IP.To4 is non-nil).
  if (a.is4()) {
    const v4 = parseIPv4(a.to4().correctForm());
    if (v4) return v4;
  }
  return { family: 6, text: a.correctForm(), value: BigInt(a.bigInt().toString()) };
}

export function parseIP(s: string | undefined | null): ParsedIP | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 64) return null;
  return parseIPv4(s) ?? parseIPv6(s);
}

export function parseCIDR(s: string | undefined | null): ParsedCIDR | null {
  if (typeof s !== 'string') return null;
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIP(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  const bits = ip.family === 4 ? 32 : 128;
  if (prefix > bits) return null;
  const hostBits = BigInt(bits - prefix);
  const value = (ip.value >> hostBits) << hostBits;
  const network = formatIP(ip.family, value);
  return { family: ip.family, network, prefix, text: `${network}/${prefix}`, value };
}

export function formatIP(family: Family, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  return new Address6(groups.join(':')).correctForm();
}

export function cidrContains(cidr: ParsedCIDR, ip: ParsedIP): boolean {
  if (cidr.family !== ip.family) return false;
  const bits = cidr.family === 4 ? 32 : 128;
  const hostBits = BigInt(bits - cidr.prefix);
  return (ip.value >> hostBits) === (cidr.value >> hostBits);
}

export function familyOf(s: string): Family | null {
  return parseIP(s)?.family ?? null;
}

/** "ip:port", with brackets for IPv6 (Go's net.JoinHostPort). */
export function joinHostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Why an address cannot be a Service endpoint, or null when it can: it is in a range the
 * Kubernetes API refuses for endpoints (unspecified, loopback, link-local unicast, link-local
 * multicast). A proxy that DNATed to 127.0.0.1 would expose the node's own loopback services.
 */
export function refusedEndpointRange(ip: ParsedIP): string | null {
  const v = ip.value;
  if (ip.family === 4) {
    if (v === 0n) return `${ip.text} is unspecified`;
    if (v >> 24n === 127n) return `${ip.text} is in the loopback range (127.0.0.0/8)`;
    if (v >> 16n === 0xa9fen) return `${ip.text} is in the link-local range (169.254.0.0/16)`;
    if (v >> 8n === 0xe00000n) return `${ip.text} is in the link-local multicast range (224.0.0.0/24)`;
    return null;
  }
  if (v === 0n) return `${ip.text} is unspecified`;
  if (v === 1n) return `${ip.text} is the loopback address`;
  if (v >> 118n === 0x3fan) return `${ip.text} is in the link-local range (fe80::/10)`;
  // ffX2::/16: multicast (ff) with link-local scope (2), whatever the flags.
  if (v >> 120n === 0xffn && ((v >> 112n) & 0xfn) === 2n) return `${ip.text} is in the link-local multicast range (ff02::/16)`;
  return null;
}
