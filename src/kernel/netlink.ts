// rtnetlink adapter: links, addresses, routes, neighbours and FDB entries through one netlink
// socket in the calling process's namespace. It uses node-netlink's message codecs and its
// native socket addon, but loads the addon itself: node-netlink's own loader looks for the
// addon next to the package, which a bundled CNI plugin in /opt/cni/bin is not.
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { arch, constants as osConstants } from 'node:os';
import type * as rtm from 'netlink/dist/rt/structs.js';
import type * as rt from 'netlink/dist/rt/gen_structs.js';
import type * as ifla from 'netlink/dist/rt/ifla.js';

export type AddressMessage = rtm.AddressMessage;
export type RouteMessage = rtm.RouteMessage;
export type NeighborMessage = rtm.NeighborMessage;
export type { rt, ifla };

// Message types and flags from linux/rtnetlink.h and linux/netlink.h.
export const RTM = {
  NEWLINK: 16, DELLINK: 17, GETLINK: 18, SETLINK: 19,
  NEWADDR: 20, DELADDR: 21, GETADDR: 22,
  NEWROUTE: 24, DELROUTE: 25, GETROUTE: 26,
  NEWNEIGH: 28, DELNEIGH: 29, GETNEIGH: 30,
} as const;
export const NLM_F = { REQUEST: 1, ACK: 4, DUMP: 0x300, REPLACE: 0x100, EXCL: 0x200, CREATE: 0x400, APPEND: 0x800 } as const;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const AF_INET = 2;
const AF_BRIDGE = 7;
const IFF_UP = 1;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_PROTINFO = 12;
const IFLA_BRPORT_MODE = 4;
const NLA_F_NESTED = 0x8000;
const IFNAMSIZ = 16;

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

export class NetlinkError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(readonly op: string, errno: number) {
    // The kernel reports negative errno values in NLMSG_ERROR.
    const n = Math.abs(errno);
    const code = ERRNO_NAMES.get(n) ?? `E${n}`;
    super(`netlink ${op} failed: ${code}`);
    this.errno = n;
    this.code = code;
  }
}

interface NativeSocket {
  bind(port: number, groups: number): void;
  send(port: number, groups: number, data: Buffer[], cb: (err?: Error) => void): void;
  close(): void;
  address(): { port: number; groups: number };
  ref(): void;
  unref(): void;
}
interface NativeAddon {
  NativeNetlink: new (protocol: number, msgBuffer: number,
    onMessage: (msg: Buffer, rinfo: unknown) => void, onError: (err: Error) => void) => NativeSocket;
}

/** Where the netlink addon may be: $KNET_NETLINK_ADDON, beside the program, or in node_modules above it. */
export function netlinkAddonCandidates(startDirs: readonly string[], env = process.env): string[] {
  const out: string[] = [];
  if (env.KNET_NETLINK_ADDON) out.push(env.KNET_NETLINK_ADDON);
  const rel = join('prebuilds', `linux-${arch()}`, 'node.napi.node');
  for (const start of startDirs) {
    out.push(join(start, 'knet-netlink.node'));
    for (let d = start; ; d = dirname(d)) {
      out.push(join(d, 'node_modules', 'netlink', rel));
      if (dirname(d) === d) break;
    }
  }
  return out;
}

let addon: NativeAddon | undefined;
function loadAddon(): NativeAddon {
  if (addon) return addon;
  const starts: string[] = [];
  for (const p of [process.argv[1], process.cwd() + '/x']) {
    if (!p) continue;
    try { starts.push(dirname(realpathSync(p))); } catch { starts.push(dirname(p)); }
  }
  for (const file of netlinkAddonCandidates(starts)) {
    if (!existsSync(file)) continue;
    const m = { exports: {} as NativeAddon };
    process.dlopen(m, file);
    return (addon = m.exports);
  }
  throw new Error('netlink native addon not found (set KNET_NETLINK_ADDON or install knet-netlink.node beside the program)');
}

/** One netlink message as received: header fields and payload. */
export interface NetlinkMessage { type: number; flags: number; seq: number; data: Buffer }

function formatMessage(type: number, flags: number, seq: number, port: number, payload: readonly Uint8Array[]): Buffer {
  const body = Buffer.concat(payload as Uint8Array[]);
  const head = Buffer.alloc(16);
  head.writeUInt32LE(16 + body.length, 0);
  head.writeUInt16LE(type, 4);
  head.writeUInt16LE(flags, 6);
  head.writeUInt32LE(seq, 8);
  head.writeUInt32LE(port, 12);
  return Buffer.concat([head, body]);
}

function parseMessages(buf: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  for (let off = 0; off + 16 <= buf.length;) {
    const len = buf.readUInt32LE(off);
    if (len < 16 || off + len > buf.length) throw new Error(`malformed netlink message (length ${len})`);
    out.push({ type: buf.readUInt16LE(off + 4), flags: buf.readUInt16LE(off + 6), seq: buf.readUInt32LE(off + 8), data: buf.subarray(off + 16, off + len) });
    off += (len + 3) & ~3;
  }
  return out;
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

/** What knet needs to know about a link. */
export interface LinkInfo { index: number; name: string; up: boolean; mtu: number; master: number; mac: string; kind: string }

const IFINFOMSG_LEN = 16;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_MASTER = 10;
const IFLA_NET_NS_FD = 28;

/** struct ifinfomsg: family, type, index, flags, change. */
function ifinfomsg(o: { family?: number; index?: number; flags?: number; change?: number }): Buffer {
  const b = Buffer.alloc(IFINFOMSG_LEN);
  b.writeUInt8(o.family ?? 0, 0);
  b.writeInt32LE(o.index ?? 0, 4);
  b.writeUInt32LE(o.flags ?? 0, 8);
  b.writeUInt32LE(o.change ?? 0, 12);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

interface LinkAttrsOut { name?: string; mtu?: number; mac?: Buffer; master?: number; netnsFd?: number }
function linkAttrs(o: LinkAttrsOut): Buffer[] {
  const a: Buffer[] = [];
  if (o.name !== undefined) a.push(nlattr(IFLA_IFNAME, cstr(o.name)));
  if (o.mtu) a.push(nlattr(IFLA_MTU, u32(o.mtu)));
  if (o.mac) a.push(nlattr(IFLA_ADDRESS, o.mac));
  if (o.master !== undefined) a.push(nlattr(IFLA_MASTER, u32(o.master)));
  if (o.netnsFd !== undefined) a.push(nlattr(IFLA_NET_NS_FD, u32(o.netnsFd)));
  return a;
}

export function parseLink(data: Buffer): LinkInfo {
  const attrs = parseAttrs(data.subarray(IFINFOMSG_LEN));
  const str = (b: Buffer | undefined) => (b ? b.toString('utf8').replace(/\0.*$/s, '') : '');
  let kind = '';
  const info = attrs.get(IFLA_LINKINFO);
  if (info) kind = str(parseAttrs(info).get(IFLA_INFO_KIND));
  return {
    index: data.readInt32LE(4),
    name: str(attrs.get(IFLA_IFNAME)),
    up: (data.readUInt32LE(8) & IFF_UP) !== 0,
    mtu: attrs.get(IFLA_MTU)?.readUInt32LE(0) ?? 0,
    master: attrs.get(IFLA_MASTER)?.readUInt32LE(0) ?? 0,
    mac: macString(attrs.get(IFLA_ADDRESS)),
    kind,
  };
}

interface Pending { op: string; msgs: NetlinkMessage[]; resolve: (m: NetlinkMessage[]) => void; reject: (e: Error) => void }

/** One NETLINK_ROUTE socket with request/acknowledge handling. */
export class Rtnl {
  private seq = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly sock: NativeSocket;
  private readonly port: number;

  constructor() {
    const A = loadAddon();
    this.sock = new A.NativeNetlink(0 /* NETLINK_ROUTE */, 0, (buf) => this.receive(buf), (err) => this.failAll(err));
    // Port 0 lets the kernel pick a unique port id.
    this.sock.bind(0, 0);
    this.port = this.sock.address().port;
    // Keeps the event loop alive only while a request waits for its answer.
    this.sock.unref();
  }

  private closed = false;
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }

  private settle(seq: number): Pending | undefined {
    const p = this.pending.get(seq);
    this.pending.delete(seq);
    if (this.pending.size === 0 && !this.closed) this.sock.unref();
    return p;
  }

  private failAll(err: Error): void {
    for (const seq of [...this.pending.keys()]) this.settle(seq)?.reject(err);
  }

  private receive(buf: Buffer): void {
    // An exception escaping a native callback aborts the process: report it to the waiters.
    try {
      this.dispatch(buf);
    } catch (e) {
      this.failAll(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private dispatch(buf: Buffer): void {
    for (const msg of parseMessages(buf)) {
      const p = this.pending.get(msg.seq);
      if (!p) continue;
      if (msg.type === NLMSG_ERROR) {
        const errno = msg.data.readInt32LE(0);
        this.settle(msg.seq);
        if (errno === 0) p.resolve(p.msgs);
        else p.reject(new NetlinkError(p.op, errno));
      } else if (msg.type === NLMSG_DONE) {
        this.settle(msg.seq);
        p.resolve(p.msgs);
      } else {
        p.msgs.push(msg);
      }
    }
  }

  /** Sends one request and resolves with its replies once acknowledged (or the dump is done). */
  request(op: string, type: number, flags: number, payload: Uint8Array[]): Promise<NetlinkMessage[]> {
    const seq = this.seq++;
    const data = [formatMessage(type, flags | NLM_F.REQUEST | NLM_F.ACK, seq, this.port, payload)];
    return new Promise((resolve, reject) => {
      if (this.closed) throw new Error('netlink socket is closed');
      if (this.pending.size === 0) this.sock.ref();
      this.pending.set(seq, { op, msgs: [], resolve, reject });
      this.sock.send(0, 0, data, (err) => {
        if (err) { this.settle(seq); reject(err); }
      });
    });
  }

  // ---- links ----

  private async linkRequest(op: string, type: number, flags: number, msg: Buffer, attrs: Buffer[]): Promise<LinkInfo[]> {
    const replies = await this.request(op, type, flags, [msg, ...attrs]);
    return replies.map((m) => parseLink(m.data));
  }

  async getLink(name: string): Promise<LinkInfo | null> {
    assertIfName(name);
    try {
      const [m] = await this.linkRequest(`get link ${name}`, RTM.GETLINK, 0, ifinfomsg({}), linkAttrs({ name }));
      return m ?? null;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'ENODEV') return null;
      throw e;
    }
  }

  async listLinks(): Promise<LinkInfo[]> {
    return this.linkRequest('list links', RTM.GETLINK, NLM_F.DUMP, ifinfomsg({}), []);
  }

  /** Creates a link of `kind` (bridge, dummy, vxlan...); kindData is the already encoded IFLA_INFO_DATA. */
  async createLink(o: { name: string; kind: string; mtu?: number; mac?: Buffer; up?: boolean; master?: number; kindData?: Uint8Array[] }): Promise<void> {
    assertIfName(o.name);
    const info = [nlattr(IFLA_INFO_KIND, cstr(o.kind))];
    if (o.kindData) info.push(nlattr(IFLA_INFO_DATA | NLA_F_NESTED, o.kindData));
    const attrs = linkAttrs({ name: o.name, ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.mac ? { mac: o.mac } : {}), ...(o.master ? { master: o.master } : {}) });
    await this.linkRequest(`create ${o.kind} ${o.name}`, RTM.NEWLINK, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(upFlags(o.up)),
      [...attrs, nlattr(IFLA_LINKINFO | NLA_F_NESTED, info)]);
  }

  /**
   * Creates a veth pair in one message: the host end here (optionally on a bridge and up), the
   * peer directly inside the namespace given by an open fd, already named and sized. (The kernel
   * refuses IFF_UP for a peer created in another namespace, so the caller brings it up there.)
   */
  async createVeth(o: {
    name: string; mtu: number; mac?: Buffer; master?: number; up?: boolean;
    peer: { name: string; netnsFd: number; mtu: number; mac?: Buffer };
  }): Promise<void> {
    assertIfName(o.name);
    assertIfName(o.peer.name);
    const peer = [ifinfomsg({}), ...linkAttrs({ name: o.peer.name, mtu: o.peer.mtu, netnsFd: o.peer.netnsFd, ...(o.peer.mac ? { mac: o.peer.mac } : {}) })];
    await this.createLink({
      name: o.name, kind: 'veth', mtu: o.mtu, up: !!o.up,
      ...(o.mac ? { mac: o.mac } : {}), ...(o.master ? { master: o.master } : {}),
      kindData: [nlattr(VETH_INFO_PEER, peer)],
    });
  }

  async setLink(index: number, o: { up?: boolean; mtu?: number; master?: number; mac?: Buffer }): Promise<void> {
    const attrs = linkAttrs({ ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.master !== undefined ? { master: o.master } : {}), ...(o.mac ? { mac: o.mac } : {}) });
    await this.linkRequest(`set link ${index}`, RTM.NEWLINK, 0, ifinfomsg({ index, ...upFlags(o.up) }), attrs);
  }

  /** Hairpin mode on a bridge port (bridge link set dev X hairpin on). */
  async setHairpin(index: number, on: boolean): Promise<void> {
    const protinfo = nlattr(IFLA_PROTINFO | NLA_F_NESTED, [nlattr(IFLA_BRPORT_MODE, Buffer.from([on ? 1 : 0]))]);
    await this.linkRequest(`hairpin ${index}`, RTM.SETLINK, 0, ifinfomsg({ family: AF_BRIDGE, index }), [protinfo]);
  }

  /** Deletes a link by name; false when it did not exist. */
  async deleteLink(name: string): Promise<boolean> {
    assertIfName(name);
    try {
      await this.linkRequest(`delete link ${name}`, RTM.DELLINK, 0, ifinfomsg({}), linkAttrs({ name }));
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'ENODEV') return false;
      throw e;
    }
  }

  // ---- addresses ----

  /** Adds an IPv4 address; false when it was already there. */
  async addAddress4(index: number, address: string, prefixLen: number): Promise<boolean> {
    const ip = ipv4Bytes(address);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index; then IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST.
    const msg = Buffer.alloc(8);
    msg.writeUInt8(AF_INET, 0);
    msg.writeUInt8(prefixLen, 1);
    msg.writeUInt32LE(index, 4);
    try {
      await this.request(`add address ${address}/${prefixLen}`, RTM.NEWADDR, NLM_F.CREATE | NLM_F.EXCL,
        [msg, nlattr(1, ip), nlattr(2, ip), nlattr(4, ipv4Bytes(broadcast4(address, prefixLen)))]);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'EEXIST') return false;
      throw e;
    }
  }

  /** A request encoded and decoded by node-netlink's full codecs (loaded on first use). */
  private async viaCodecs<T>(op: string, type: number, flags: number,
    format: (c: Codecs, out: AttrStreamT) => void, parse: (c: Codecs, data: Buffer) => T): Promise<T[]> {
    const { codecs, stream } = await loadCodecs();
    const out = stream();
    format(codecs, out);
    const replies = await this.request(op, type, flags, out.bufs);
    return replies.map((m) => parse(codecs, m.data));
  }

  async listAddresses(): Promise<AddressMessage[]> {
    return this.viaCodecs('list addresses', RTM.GETADDR, NLM_F.DUMP,
      (c, out) => c.formatAddressMessage({ kind: 'address', data: {}, attrs: {} }, out), (c, d) => c.parseAddressMessage(d));
  }

  // ---- routes and neighbours (generic, for the overlay agent) ----

  async routeRequest(type: number, flags: number, data: rt.Route, attrs: rt.RouteAttrs): Promise<RouteMessage[]> {
    return this.viaCodecs(`route request ${type}`, type, flags,
      (c, out) => c.formatRouteMessage({ kind: 'route', data, attrs }, out), (c, d) => c.parseRouteMessage(d));
  }

  async neighborRequest(type: number, flags: number, data: rt.Neighbor, attrs: rt.NeighborAttrs): Promise<NeighborMessage[]> {
    return this.viaCodecs(`neighbour request ${type}`, type, flags,
      (c, out) => c.formatNeighborMessage({ kind: 'neighbor', data, attrs }, out), (c, d) => c.parseNeighborMessage(d));
  }
}

// node-netlink's generated codecs cover every rtnetlink message but are large (~150 KB, ~20 ms
// to load), which a CNI call that only makes links and addresses must not pay. They are
// imported by a computed specifier so bundlers leave them out of the plugin; the agent, which
// runs beside node_modules, loads them on first use.
type Codecs = typeof rtm;
type Structs = typeof import('netlink/dist/structs.js');
type AttrStreamT = InstanceType<Structs['AttrStream']>;
async function loadCodecs(): Promise<{ codecs: Codecs; stream: () => AttrStreamT }> {
  const base = 'netlink/dist/';
  const [codecs, structs] = await Promise.all([
    import(base + 'rt/structs.js') as Promise<Codecs>,
    import(base + 'structs.js') as Promise<Structs>,
  ]);
  return { codecs, stream: () => new structs.AttrStream() };
}

// ---- helpers ----

const IFNAME = /^[A-Za-z0-9_.-]+$/;
/** Kernel interface names: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'. */
export function assertIfName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ || !IFNAME.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid interface name ${JSON.stringify(name)}`);
  }
}

function upFlags(up: boolean | undefined): { flags?: number; change?: number } {
  return up ? { flags: IFF_UP, change: IFF_UP } : {};
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0');
}

/** One netlink attribute (TLV, 4-byte aligned) around already encoded payload. */
export function nlattr(type: number, payload: Uint8Array | Uint8Array[]): Buffer {
  const body = Buffer.concat(Array.isArray(payload) ? payload : [payload]);
  const len = 4 + body.length;
  const buf = Buffer.alloc((len + 3) & ~3);
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  body.copy(buf, 4);
  return buf;
}

export function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`invalid IPv4 address ${ip}`);
  return Buffer.from(parts);
}

function broadcast4(ip: string, prefixLen: number): string {
  const n = ipv4Bytes(ip).readUInt32BE(0);
  const mask = prefixLen === 0 ? 0 : (~0 << (32 - prefixLen)) >>> 0;
  const b = ((n & mask) | (~mask >>> 0)) >>> 0;
  return [b >>> 24, (b >>> 16) & 255, (b >>> 8) & 255, b & 255].join('.');
}

export function macString(b: Buffer | undefined): string {
  return b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : '';
}

export function macBytes(mac: string): Buffer {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new Error(`invalid MAC address ${mac}`);
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export { IFF_UP, AF_INET, AF_BRIDGE };
