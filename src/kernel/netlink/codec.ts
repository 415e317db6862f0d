// rtnetlink messages as bytes: framing, attributes, and the link, address and route messages
// knet sends and reads. Pure (no sockets, no files): the same encoding serves the node-netlink
// socket under Node, the FFI socket in the Bun-built CNI plugin and the in-memory fake kernel.
import { constants as osConstants } from 'node:os';
import { formatIPv4, mustParseIP } from '../../util/ip.ts';

// Message types and flags from linux/rtnetlink.h and linux/netlink.h.
export const RTM = {
  NEWLINK: 16, DELLINK: 17, GETLINK: 18, SETLINK: 19,
  NEWADDR: 20, DELADDR: 21, GETADDR: 22,
  NEWROUTE: 24, DELROUTE: 25, GETROUTE: 26,
  NEWNEIGH: 28, DELNEIGH: 29, GETNEIGH: 30,
} as const;
export const NLM_F = { REQUEST: 1, MULTI: 2, ACK: 4, DUMP_INTR: 0x10, DUMP: 0x300, REPLACE: 0x100, EXCL: 0x200, CREATE: 0x400, APPEND: 0x800 } as const;
export const NLMSG = { ERROR: 2, DONE: 3 } as const;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const IFF_UP = 1;
export const NLA_F_NESTED = 0x8000;
const NLMSG_HDRLEN = 16;
const IFNAMSIZ = 16;

export const IFLA = { ADDRESS: 1, IFNAME: 3, MTU: 4, MASTER: 10, PROTINFO: 12, LINKINFO: 18, NET_NS_FD: 28 } as const;
export const IFLA_INFO = { KIND: 1, DATA: 2 } as const;
export const VETH_INFO_PEER = 1;
export const IFLA_BRPORT_MODE = 4;
export const IFA = { ADDRESS: 1, LOCAL: 2, BROADCAST: 4 } as const;
export const RTA = { DST: 1, OIF: 4, GATEWAY: 5, TABLE: 15 } as const;
export const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RTN_UNICAST = 1;
const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;
const RTMSG_LEN = 12;

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

/** The name of an errno value (EEXIST, ENODEV...), or E<n> when the platform has none. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

export class NetlinkError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(readonly op: string, errno: number) {
    // The kernel reports negative errno values in NLMSG_ERROR.
    const code = errnoName(errno);
    super(`netlink ${op} failed: ${code}`);
    this.errno = Math.abs(errno);
    this.code = code;
  }
}

/** One netlink message as received: header fields and payload. */
export interface NetlinkMessage { type: number; flags: number; seq: number; data: Buffer }

/** A whole message: header (port id 0: the kernel does not need the sender's) and payload. */
export function encodeMessage(type: number, flags: number, seq: number, payload: readonly Uint8Array[]): Buffer {
  const body = Buffer.concat(payload as Uint8Array[]);
  const out = Buffer.alloc(NLMSG_HDRLEN + body.length);
  out.writeUInt32LE(out.length, 0);
  out.writeUInt16LE(type, 4);
  out.writeUInt16LE(flags, 6);
  out.writeUInt32LE(seq, 8);
  body.copy(out, NLMSG_HDRLEN);
  return out;
}

/** The messages of one datagram. */
export function decodeMessages(datagram: Uint8Array): NetlinkMessage[] {
  const buf = Buffer.from(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const out: NetlinkMessage[] = [];
  for (let off = 0; off + NLMSG_HDRLEN <= buf.length;) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) throw new Error(`malformed netlink message (length ${len})`);
    out.push({ type: buf.readUInt16LE(off + 4), flags: buf.readUInt16LE(off + 6), seq: buf.readUInt32LE(off + 8), data: buf.subarray(off + NLMSG_HDRLEN, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
}

/** NLMSG_ERROR's errno (0 is an acknowledgement). */
export function errorCode(msg: NetlinkMessage): number {
  return msg.data.length >= 4 ? msg.data.readInt32LE(0) : 0;
}

/** The acknowledgement or error answering a request (the kernel echoes the request's header after the errno). */
export function encodeError(seq: number, errno: number): Buffer {
  const body = Buffer.alloc(4 + NLMSG_HDRLEN);
  body.writeInt32LE(-Math.abs(errno), 0);
  return encodeMessage(NLMSG.ERROR, 0, seq, [body]);
}

/** Attributes of a message body as type -> payload (nested flag stripped). */
export function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + 4 <= buf.length;) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.set(buf.readUInt16LE(off + 2) & 0x3fff, buf.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

/** One netlink attribute (TLV, 4-byte aligned) around already encoded payload. */
export function nlattr(type: number, payload: Uint8Array | readonly Uint8Array[]): Buffer {
  const body = payload instanceof Uint8Array ? payload : Buffer.concat(payload as Uint8Array[]);
  const len = 4 + body.length;
  const buf = Buffer.alloc((len + 3) & ~3);
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  buf.set(body, 4);
  return buf;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

export function cstr(s: string): Buffer {
  return Buffer.from(s + '\0');
}

function str(b: Buffer | undefined): string {
  if (!b) return '';
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul < 0 ? b.length : nul);
}

// ---- links ----

/** What knet needs to know about a link. */
export interface LinkInfo { index: number; name: string; up: boolean; mtu: number; master: number; mac: string; kind: string }

/** struct ifinfomsg: family, type, index, flags, change. */
export function ifinfomsg(o: { family?: number; index?: number; flags?: number; change?: number }): Buffer {
  const b = Buffer.alloc(IFINFOMSG_LEN);
  b.writeUInt8(o.family ?? 0, 0);
  b.writeInt32LE(o.index ?? 0, 4);
  b.writeUInt32LE(o.flags ?? 0, 8);
  b.writeUInt32LE(o.change ?? 0, 12);
  return b;
}

export function upFlags(up: boolean | undefined): { flags?: number; change?: number } {
  return up ? { flags: IFF_UP, change: IFF_UP } : {};
}

export interface LinkAttrs { name?: string; mtu?: number; mac?: Buffer; master?: number; netnsFd?: number }
export function linkAttrs(o: LinkAttrs): Buffer[] {
  const a: Buffer[] = [];
  if (o.name !== undefined) a.push(nlattr(IFLA.IFNAME, cstr(o.name)));
  if (o.mtu) a.push(nlattr(IFLA.MTU, u32(o.mtu)));
  if (o.mac) a.push(nlattr(IFLA.ADDRESS, o.mac));
  if (o.master !== undefined) a.push(nlattr(IFLA.MASTER, u32(o.master)));
  if (o.netnsFd !== undefined) a.push(nlattr(IFLA.NET_NS_FD, u32(o.netnsFd)));
  return a;
}

/** A link message (RTM_NEWLINK reply or request) as LinkInfo. */
export function parseLink(data: Buffer): LinkInfo {
  const attrs = parseAttrs(data.subarray(IFINFOMSG_LEN));
  const info = attrs.get(IFLA.LINKINFO);
  return {
    index: data.readInt32LE(4),
    name: str(attrs.get(IFLA.IFNAME)),
    up: (data.readUInt32LE(8) & IFF_UP) !== 0,
    mtu: attrs.get(IFLA.MTU)?.readUInt32LE(0) ?? 0,
    master: attrs.get(IFLA.MASTER)?.readUInt32LE(0) ?? 0,
    mac: macString(attrs.get(IFLA.ADDRESS)),
    kind: info ? str(parseAttrs(info).get(IFLA_INFO.KIND)) : '',
  };
}

/** The fields of an ifinfomsg header (for the fake kernel, which reads requests). */
export function parseIfinfo(data: Buffer): { family: number; index: number; flags: number; change: number; attrs: Map<number, Buffer> } {
  return { family: data.readUInt8(0), index: data.readInt32LE(4), flags: data.readUInt32LE(8), change: data.readUInt32LE(12), attrs: parseAttrs(data.subarray(IFINFOMSG_LEN)) };
}

// ---- IPv4 addresses ----

export interface AddressInfo { family: number; prefixLen: number; index: number; address: string; local: string }

/** RTM_NEWADDR/GETADDR body for an IPv4 address (the broadcast address is the subnet's, as `ip addr add` with `brd +`). */
export function addressMessage4(index: number, address: string, prefixLen: number): Buffer[] {
  const ip = ipv4Bytes(address);
  // struct ifaddrmsg: family, prefixlen, flags, scope, index.
  const msg = Buffer.alloc(IFADDRMSG_LEN);
  msg.writeUInt8(AF_INET, 0);
  msg.writeUInt8(prefixLen, 1);
  msg.writeUInt32LE(index, 4);
  return [msg, nlattr(IFA.ADDRESS, ip), nlattr(IFA.LOCAL, ip), nlattr(IFA.BROADCAST, ipv4Bytes(broadcast4(address, prefixLen)))];
}

export function addressDumpRequest4(): Buffer[] {
  const msg = Buffer.alloc(IFADDRMSG_LEN);
  msg.writeUInt8(AF_INET, 0);
  return [msg];
}

export function parseAddress(data: Buffer): AddressInfo {
  const attrs = parseAttrs(data.subarray(IFADDRMSG_LEN));
  const family = data.readUInt8(0);
  const ip = (b: Buffer | undefined) => (b && family === AF_INET && b.length === 4 ? [...b].join('.') : '');
  const address = ip(attrs.get(IFA.ADDRESS));
  return { family, prefixLen: data.readUInt8(1), index: data.readUInt32LE(4), address, local: ip(attrs.get(IFA.LOCAL)) || address };
}

// ---- IPv4 routes ----

export interface RouteInfo { family: number; dstLen: number; table: number; type: number; dst: string; gateway: string; oif: number }

/** RTM_NEWROUTE body: a unicast route in the main table, `dst/dstLen via gateway dev oif` as `ip route add` makes it. */
export function routeMessage4(o: { dst: string; dstLen: number; gateway?: string; oif: number }): Buffer[] {
  // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
  const msg = Buffer.alloc(RTMSG_LEN);
  msg.writeUInt8(AF_INET, 0);
  msg.writeUInt8(o.dstLen, 1);
  msg.writeUInt8(RT_TABLE_MAIN, 4);
  msg.writeUInt8(RTPROT_BOOT, 5);
  msg.writeUInt8(RT_SCOPE_UNIVERSE, 6);
  msg.writeUInt8(RTN_UNICAST, 7);
  const out: Buffer[] = [msg];
  if (o.dstLen > 0) out.push(nlattr(RTA.DST, ipv4Bytes(o.dst)));
  if (o.gateway) out.push(nlattr(RTA.GATEWAY, ipv4Bytes(o.gateway)));
  out.push(nlattr(RTA.OIF, u32(o.oif)));
  return out;
}

export function routeDumpRequest4(): Buffer[] {
  const msg = Buffer.alloc(RTMSG_LEN);
  msg.writeUInt8(AF_INET, 0);
  return [msg];
}

export function parseRoute(data: Buffer): RouteInfo {
  const attrs = parseAttrs(data.subarray(RTMSG_LEN));
  const ip = (b: Buffer | undefined) => (b && b.length === 4 ? [...b].join('.') : '');
  const tableAttr = attrs.get(RTA.TABLE);
  return {
    family: data.readUInt8(0),
    dstLen: data.readUInt8(1),
    table: tableAttr ? tableAttr.readUInt32LE(0) : data.readUInt8(4),
    type: data.readUInt8(7),
    dst: ip(attrs.get(RTA.DST)) || '0.0.0.0',
    gateway: ip(attrs.get(RTA.GATEWAY)),
    oif: attrs.get(RTA.OIF)?.readUInt32LE(0) ?? 0,
  };
}

// ---- values ----

const IFNAME = /^[A-Za-z0-9_.-]+$/;
/** Kernel interface names: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'. */
export function assertIfName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ || !IFNAME.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid interface name ${JSON.stringify(name)}`);
  }
}

export function ipv4Bytes(ip: string): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(Number(mustParseIP(ip, { syntax: 'strict', family: 4 }).value));
  return bytes;
}

export function broadcast4(ip: string, prefixLen: number): string {
  const n = ipv4Bytes(ip).readUInt32BE(0);
  const mask = prefixLen === 0 ? 0 : (~0 << (32 - prefixLen)) >>> 0;
  const b = ((n & mask) | (~mask >>> 0)) >>> 0;
  return formatIPv4(b);
}

export function macString(b: Buffer | undefined): string {
  return b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : '';
}

export function macBytes(mac: string): Buffer {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new Error(`invalid MAC address ${mac}`);
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}
