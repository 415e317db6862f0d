// The one parser of IP address and CIDR text: every other module (the renderer, IPAM, the subnet
// code, the kernel adapters) takes its addresses from here, as a typed view over these results.
// No npm dependency, because the CNI plugin is compiled into one small executable.
//
// Two syntaxes, because the inputs differ:
// - 'sloppy' reads Services and EndpointSlices the way Kubernetes' ParseIPSloppy does: IPv4 octets
//   with leading zeros are decimal ("10.180.00.001" is 10.180.0.1), because objects stored before
//   stricter validation exist; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv4.
// - 'strict' is for what knet's own configs, flannel's files and the CNI hand over: an octet
//   with a leading zero is refused (is "010" octal or decimal? tools disagree), and the family
//   is the one the text is written in.
// Both refuse octets above 255, IPv6 zones ("%eth0"), and prefix lengths beyond the family's bits.

export type Family = 4 | 6;
export type IPSyntax = 'sloppy' | 'strict';

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
  /** The network address (host bits cleared). */
  value: bigint;
  /** The address as written, host bits included ("10.1.2.1/24" is a gateway's address). */
  address: bigint;
}

/**
 * A dotted quad without regex or substrings (this runs for every endpoint of every service on
 * each render): the text is the input itself unless an octet had leading zeros.
 */
function parseIPv4(s: string, syntax: IPSyntax): ParsedIP | null {
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
      if (digits === 2 && octet === 0) {
        if (syntax === 'strict') return null;
        canonical = false;
      }
      octet = octet * 10 + (c - 48);
    } else {
      return null;
    }
  }
  if (dots !== 3) return null;
  const text = canonical ? s : formatIPv4(value);
  // One BigInt per address.
  return { family: 4, text, value: BigInt(value) };
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** RFC 4291 text: eight groups, one "::" for one or more zero groups, maybe a dotted-quad tail. */
function parseIPv6(s: string, syntax: IPSyntax): ParsedIP | null {
  if (s.length > 45) return null;
  let hex = s;
  const lastColon = s.lastIndexOf(':');
  if (lastColon < 0) return null;
  if (s.includes('.', lastColon)) {
    const tail = parseIPv4(s.slice(lastColon + 1), syntax);
    if (!tail) return null;
    const v = Number(tail.value);
    hex = `${s.slice(0, lastColon + 1)}${(v >>> 16).toString(16)}:${(v & 0xffff).toString(16)}`;
  }
  const gap = hex.indexOf('::');
  if (gap >= 0 && hex.includes('::', gap + 1)) return null;
  const groupsOf = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groupsOf(gap < 0 ? hex : hex.slice(0, gap));
  const tail = gap < 0 ? [] : groupsOf(hex.slice(gap + 2));
  if (gap < 0 ? head.length !== 8 : head.length + tail.length > 7) return null;
  let value = 0n;
  for (const g of head) {
    if (!HEX_GROUP.test(g)) return null;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  value <<= BigInt(16 * (8 - head.length - tail.length));
  for (const g of tail) {
    if (!HEX_GROUP.test(g)) return null;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  // Go's net.IP.To4 is non-nil for ::ffff:0:0/96, so Kubernetes treats those as IPv4.
  if (syntax === 'sloppy' && value >> 32n === 0xffffn) {
    const v4 = Number(value & 0xffffffffn);
    return { family: 4, text: formatIPv4(v4), value: BigInt(v4) };
  }
  return { family: 6, text: formatIPv6(value), value };
}

export function parseIP(s: string | undefined | null, syntax: IPSyntax = 'sloppy'): ParsedIP | null {
  if (typeof s !== 'string' || s.length === 0 || s.length > 64) return null;
  return parseIPv4(s, syntax) ?? parseIPv6(s, syntax);
}

const PREFIX_LENGTH = { sloppy: /^\d{1,3}$/, strict: /^(0|[1-9]\d{0,2})$/ };

/** A CIDR, or why the text is not one (the throwing views report the reason). */
function readCIDR(s: unknown, syntax: IPSyntax): ParsedCIDR | string {
  if (typeof s !== 'string') return 'not a string';
  const slash = s.indexOf('/');
  if (slash < 0) return 'no prefix length';
  const ip = parseIP(s.slice(0, slash), syntax);
  if (!ip) return 'bad address';
  const prefixText = s.slice(slash + 1);
  if (!PREFIX_LENGTH[syntax].test(prefixText)) return 'bad prefix length';
  const prefix = Number(prefixText);
  if (prefix > bitsOf(ip.family)) return `prefix length ${prefix} too long`;
  const hostBits = BigInt(bitsOf(ip.family) - prefix);
  const value = (ip.value >> hostBits) << hostBits;
  const network = formatIP(ip.family, value);
  return { family: ip.family, network, prefix, text: `${network}/${prefix}`, value, address: ip.value };
}

/** "A/N"; host bits are allowed and cleared in `value` (`address` keeps them). */
export function parseCIDR(s: string | undefined | null, syntax: IPSyntax = 'sloppy'): ParsedCIDR | null {
  const c = readCIDR(s, syntax);
  return typeof c === 'string' ? null : c;
}

export interface IPRequirement {
  syntax?: IPSyntax;
  /** Only this family is accepted. */
  family?: Family;
}

const familyName = (family: Family | undefined): string => (family ? `IPv${family}` : 'IP');

/** parseIP that throws `invalid IPv4 address "…"` (or IPv6/IP) instead of returning null. */
export function mustParseIP(s: unknown, req: IPRequirement = {}): ParsedIP {
  const ip = typeof s === 'string' ? parseIP(s, req.syntax) : null;
  if (!ip || (req.family && ip.family !== req.family)) throw new Error(`invalid ${familyName(req.family)} address ${JSON.stringify(s)}`);
  return ip;
}

export interface CIDRRequirement extends IPRequirement {
  /** 'clear': "10.1.2.1/24" is 10.1.2.0/24; 'refuse': it is an error. Either way `address` keeps what was written. */
  hostBits: 'clear' | 'refuse';
}

/** parseCIDR that throws `invalid IPv4 CIDR "…": reason` instead of returning null. */
export function mustParseCIDR(s: unknown, req: CIDRRequirement): ParsedCIDR {
  const c = readCIDR(s, req.syntax ?? 'sloppy');
  const invalid = `invalid ${req.family ? `IPv${req.family} ` : ''}CIDR ${JSON.stringify(s)}`;
  if (typeof c === 'string') throw new Error(c.startsWith('prefix length') ? `${invalid}: ${c}` : invalid);
  if (req.family && c.family !== req.family) throw new Error(invalid);
  if (req.hostBits === 'refuse' && c.address !== c.value) throw new Error(`${invalid}: host bits set (network is ${c.text})`);
  return c;
}

/** A dotted quad in the strict syntax. */
export function isIPv4(s: unknown): s is string {
  return typeof s === 'string' && parseIP(s, 'strict')?.family === 4;
}

export const bitsOf = (family: Family): number => (family === 4 ? 32 : 128);

export function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as "::". */
function formatIPv6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) { bestStart = i; bestLength = j - i; }
    i = j;
  }
  const hex = (part: number[]): string => part.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

export function formatIP(family: Family, value: bigint): string {
  return family === 4 ? formatIPv4(Number(value)) : formatIPv6(value);
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
