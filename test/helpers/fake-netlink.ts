// An in-memory rtnetlink kernel behind the NetlinkTransport seam: namespaces with links
// (bridge, veth pairs across namespaces, anything else by kind), IPv4 addresses and main-table
// routes, answering the same byte-level messages the real kernel does, with the kernel's errors
// for the cases knet meets (EEXIST, ENODEV, ENETUNREACH, EBADF) and injectable failures.
// Unit tests run the plugin and the adapter against it without root.
import { constants as osConstants } from 'node:os';
import {
  AF_BRIDGE, IFF_UP, IFLA, IFLA_BRPORT_MODE, IFLA_INFO, NLA_F_NESTED, NLM_F, NLMSG, RTA, RTM, RT_TABLE_MAIN, VETH_INFO_PEER,
  addressMessage4, cstr, decodeMessages, encodeError, encodeMessage, ifinfomsg, linkAttrs, macBytes, nlattr, parseAddress,
  parseAttrs, parseIfinfo, parseRoute, routeMessage4, u32, type NetlinkMessage,
} from '../../src/kernel/netlink/codec.ts';
import type { NetlinkTransport } from '../../src/kernel/netlink/transport.ts';

export interface FakeLink { index: number; name: string; kind: string; mtu: number; mac: string; up: boolean; master: number; hairpin: boolean; peer?: { ns: FakeNetns; index: number } }
export interface FakeAddress { index: number; address: string; prefixLen: number }
export interface FakeRoute { dst: string; dstLen: number; gateway: string; oif: number; table: number; connected: boolean }

const ERRNO = osConstants.errno as Record<string, number>;

class KernelError extends Error {
  constructor(readonly errno: string) { super(errno); }
}

function ipNum(ip: string): number {
  return ip.split('.').reduce((n, o) => ((n << 8) | Number(o)) >>> 0, 0);
}
function networkOf(ip: string, len: number): string {
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  const n = (ipNum(ip) & mask) >>> 0;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export class FakeNetns {
  readonly links = new Map<number, FakeLink>();
  addresses: FakeAddress[] = [];
  routes: FakeRoute[] = [];
  constructor(readonly name: string) {}

  byName(name: string): FakeLink | undefined {
    for (const l of this.links.values()) if (l.name === name) return l;
    return undefined;
  }

  /** A comparable picture of the namespace (for "nothing left behind" checks). */
  snapshot(): unknown {
    return {
      links: [...this.links.values()].map((l) => ({ name: l.name, kind: l.kind, mtu: l.mtu, up: l.up, master: l.master ? this.links.get(l.master)?.name : '', hairpin: l.hairpin })).sort((a, b) => a.name.localeCompare(b.name)),
      addresses: this.addresses.map((a) => `${this.links.get(a.index)?.name} ${a.address}/${a.prefixLen}`).sort(),
      routes: this.routes.map((r) => `${r.dst}/${r.dstLen} via ${r.gateway || '-'} dev ${this.links.get(r.oif)?.name}`).sort(),
    };
  }
}

export class FakeKernel {
  readonly namespaces = new Map<string, FakeNetns>();
  private readonly fds = new Map<number, FakeNetns>();
  private nextIndex = 2;
  private nextFd = 1000;
  private faults: { type: number; errno: string; times: number }[] = [];
  /** Every request handled, as [namespace, message type]. */
  readonly log: [string, number][] = [];

  netns(name: string): FakeNetns {
    let ns = this.namespaces.get(name);
    if (!ns) {
      ns = new FakeNetns(name);
      ns.links.set(1, { index: 1, name: 'lo', kind: '', mtu: 65536, mac: '00:00:00:00:00:00', up: true, master: 0, hairpin: false });
      this.namespaces.set(name, ns);
    }
    return ns;
  }

  removeNetns(name: string): void {
    const ns = this.namespaces.get(name);
    if (!ns) return;
    for (const l of [...ns.links.values()]) if (l.peer) this.unlink(ns, l);
    this.namespaces.delete(name);
    for (const [fd, n] of this.fds) if (n === ns) this.fds.delete(fd);
  }

  /** A stand-in file descriptor for IFLA_NET_NS_FD. */
  fdOf(name: string): number {
    const fd = this.nextFd++;
    this.fds.set(fd, this.netns(name));
    return fd;
  }

  closeFd(fd: number): void {
    this.fds.delete(fd);
  }

  openFds(): number {
    return this.fds.size;
  }

  /** The next `times` requests of `type` fail with `errno` (e.g. 'EPERM'). */
  failOn(type: number, errno: string, times = 1): void {
    if (!(errno in ERRNO)) throw new Error(`unknown errno ${errno}`);
    this.faults.push({ type, errno, times });
  }

  transport(nsName: string): NetlinkTransport {
    const ns = this.netns(nsName);
    const queue: Uint8Array[] = [];
    let closed = false;
    return {
      send: (datagram) => {
        if (closed) throw new Error('fake netlink socket is closed');
        for (const msg of decodeMessages(datagram)) queue.push(...this.handle(ns, msg));
      },
      receive: () => {
        const next = queue.shift();
        return next ? Promise.resolve(next) : Promise.reject(new Error('fake kernel: no reply pending (a request without NLM_F_ACK?)'));
      },
      close: () => { closed = true; },
    };
  }

  private handle(ns: FakeNetns, msg: NetlinkMessage): Uint8Array[] {
    this.log.push([ns.name, msg.type]);
    const ack = (msg.flags & NLM_F.ACK) !== 0;
    const dump = (msg.flags & NLM_F.DUMP) === NLM_F.DUMP;
    try {
      const fault = this.faults.find((f) => f.type === msg.type && f.times > 0);
      if (fault) {
        fault.times--;
        throw new KernelError(fault.errno);
      }
      const replies = this.apply(ns, msg, dump).map((body) => encodeMessage(body.type, dump ? NLM_F.MULTI : 0, msg.seq, body.payload));
      if (dump) return [...replies, encodeMessage(NLMSG.DONE, NLM_F.MULTI, msg.seq, [u32(0)])];
      return ack ? [...replies, encodeError(msg.seq, 0)] : replies;
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      return [encodeError(msg.seq, ERRNO[e.errno]!)];
    }
  }

  private apply(ns: FakeNetns, msg: NetlinkMessage, dump: boolean): { type: number; payload: Buffer[] }[] {
    switch (msg.type) {
      case RTM.GETLINK: {
        if (dump) return [...ns.links.values()].map((l) => this.linkReply(l));
        return [this.linkReply(this.findLink(ns, msg.data))];
      }
      case RTM.NEWLINK: this.newLink(ns, msg); return [];
      case RTM.SETLINK: this.setLink(ns, msg); return [];
      case RTM.DELLINK: this.unlink(ns, this.findLink(ns, msg.data)); return [];
      case RTM.NEWADDR: this.newAddress(ns, msg.data); return [];
      case RTM.GETADDR: return ns.addresses.map((a) => ({ type: RTM.NEWADDR, payload: addressMessage4(a.index, a.address, a.prefixLen) }));
      case RTM.NEWROUTE: this.newRoute(ns, msg.data); return [];
      case RTM.GETROUTE: return ns.routes.map((r) => ({ type: RTM.NEWROUTE, payload: [...routeMessage4({ dst: r.dst, dstLen: r.dstLen, oif: r.oif, ...(r.gateway ? { gateway: r.gateway } : {}) }), nlattr(RTA.TABLE, u32(r.table))] }));
      default: throw new KernelError('EOPNOTSUPP');
    }
  }

  private linkReply(l: FakeLink): { type: number; payload: Buffer[] } {
    const info = l.kind ? [nlattr(IFLA.LINKINFO | NLA_F_NESTED, [nlattr(IFLA_INFO.KIND, cstr(l.kind))])] : [];
    return {
      type: RTM.NEWLINK,
      payload: [ifinfomsg({ index: l.index, flags: l.up ? IFF_UP : 0 }), ...linkAttrs({ name: l.name, mtu: l.mtu, mac: macBytes(l.mac), master: l.master }), ...info],
    };
  }

  private findLink(ns: FakeNetns, data: Buffer): FakeLink {
    const m = parseIfinfo(data);
    const name = m.attrs.get(IFLA.IFNAME);
    const link = m.index ? ns.links.get(m.index) : name ? ns.byName(name.toString('utf8').replace(/\0.*$/s, '')) : undefined;
    if (!link) throw new KernelError('ENODEV');
    return link;
  }

  private makeLink(ns: FakeNetns, kind: string, m: ReturnType<typeof parseIfinfo>): FakeLink {
    const name = m.attrs.get(IFLA.IFNAME)?.toString('utf8').replace(/\0.*$/s, '');
    if (!name) throw new KernelError('EINVAL');
    if (ns.byName(name)) throw new KernelError('EEXIST');
    const mac = m.attrs.get(IFLA.ADDRESS);
    return {
      index: this.nextIndex++, name, kind, mtu: m.attrs.get(IFLA.MTU)?.readUInt32LE(0) ?? 1500,
      mac: mac ? [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':') : '02:00:00:00:00:' + (this.nextIndex & 255).toString(16).padStart(2, '0'),
      up: (m.flags & m.change & IFF_UP) !== 0, master: 0, hairpin: false,
    };
  }

  private newLink(ns: FakeNetns, msg: NetlinkMessage): void {
    const m = parseIfinfo(msg.data);
    const name = m.attrs.get(IFLA.IFNAME)?.toString('utf8').replace(/\0.*$/s, '');
    const existing = m.index ? ns.links.get(m.index) : name ? ns.byName(name) : undefined;
    if (existing) {
      if (msg.flags & NLM_F.EXCL) throw new KernelError('EEXIST');
      this.modify(ns, existing, m);
      return;
    }
    if (m.index || !(msg.flags & NLM_F.CREATE)) throw new KernelError('ENODEV');
    const info = m.attrs.get(IFLA.LINKINFO);
    const infoAttrs = info ? parseAttrs(info) : new Map<number, Buffer>();
    const kind = infoAttrs.get(IFLA_INFO.KIND)?.toString('utf8').replace(/\0.*$/s, '');
    if (!kind) throw new KernelError('EOPNOTSUPP');
    const link = this.makeLink(ns, kind, m);
    if (kind === 'veth') {
      const data = infoAttrs.get(IFLA_INFO.DATA);
      const peerMsg = data ? parseAttrs(data).get(VETH_INFO_PEER) : undefined;
      if (!peerMsg) throw new KernelError('EINVAL');
      const pm = parseIfinfo(peerMsg);
      const fd = pm.attrs.get(IFLA.NET_NS_FD)?.readUInt32LE(0);
      const peerNs = fd === undefined ? ns : this.fds.get(fd);
      if (!peerNs) throw new KernelError('EBADF');
      const peer = this.makeLink(peerNs, 'veth', pm);
      if (peerNs === ns && peer.name === link.name) throw new KernelError('EEXIST');
      this.attachMaster(ns, link, m.attrs.get(IFLA.MASTER)?.readUInt32LE(0));
      peer.peer = { ns, index: link.index };
      link.peer = { ns: peerNs, index: peer.index };
      peerNs.links.set(peer.index, peer);
    } else {
      this.attachMaster(ns, link, m.attrs.get(IFLA.MASTER)?.readUInt32LE(0));
    }
    ns.links.set(link.index, link);
    if (link.up) this.linkUp(ns, link);
  }

  private attachMaster(ns: FakeNetns, link: FakeLink, master: number | undefined): void {
    if (master === undefined) return;
    if (master === 0) { link.master = 0; return; }
    const br = ns.links.get(master);
    if (!br) throw new KernelError('ENODEV');
    if (br.kind !== 'bridge') throw new KernelError('EOPNOTSUPP');
    link.master = master;
  }

  private modify(ns: FakeNetns, link: FakeLink, m: ReturnType<typeof parseIfinfo>): void {
    this.attachMaster(ns, link, m.attrs.get(IFLA.MASTER)?.readUInt32LE(0));
    const mtu = m.attrs.get(IFLA.MTU);
    if (mtu) link.mtu = mtu.readUInt32LE(0);
    const mac = m.attrs.get(IFLA.ADDRESS);
    if (mac) link.mac = [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
    if (m.change & IFF_UP) {
      const up = (m.flags & IFF_UP) !== 0;
      if (up && !link.up) { link.up = true; this.linkUp(ns, link); }
      if (!up && link.up) { link.up = false; ns.routes = ns.routes.filter((r) => r.oif !== link.index); }
    }
  }

  private linkUp(ns: FakeNetns, link: FakeLink): void {
    for (const a of ns.addresses.filter((x) => x.index === link.index)) this.connectedRoute(ns, a);
  }

  private connectedRoute(ns: FakeNetns, a: FakeAddress): void {
    const dst = networkOf(a.address, a.prefixLen);
    if (!ns.routes.some((r) => r.connected && r.oif === a.index && r.dst === dst && r.dstLen === a.prefixLen)) {
      ns.routes.push({ dst, dstLen: a.prefixLen, gateway: '', oif: a.index, table: RT_TABLE_MAIN, connected: true });
    }
  }

  private setLink(ns: FakeNetns, msg: NetlinkMessage): void {
    const m = parseIfinfo(msg.data);
    const link = ns.links.get(m.index);
    if (!link) throw new KernelError('ENODEV');
    if (m.family !== AF_BRIDGE) { this.modify(ns, link, m); return; }
    if (!link.master) throw new KernelError('EOPNOTSUPP');
    const prot = m.attrs.get(IFLA.PROTINFO);
    const mode = prot ? parseAttrs(prot).get(IFLA_BRPORT_MODE) : undefined;
    if (mode) link.hairpin = mode[0] === 1;
  }

  private unlink(ns: FakeNetns, link: FakeLink): void {
    const drop = (n: FakeNetns, l: FakeLink) => {
      n.links.delete(l.index);
      n.addresses = n.addresses.filter((a) => a.index !== l.index);
      n.routes = n.routes.filter((r) => r.oif !== l.index);
      for (const port of n.links.values()) if (port.master === l.index) port.master = 0;
    };
    drop(ns, link);
    if (link.peer) {
      const peer = link.peer.ns.links.get(link.peer.index);
      if (peer) drop(link.peer.ns, peer);
    }
  }

  private newAddress(ns: FakeNetns, data: Buffer): void {
    const a = parseAddress(data);
    if (!ns.links.has(a.index)) throw new KernelError('ENODEV');
    if (ns.addresses.some((x) => x.index === a.index && x.address === a.local && x.prefixLen === a.prefixLen)) throw new KernelError('EEXIST');
    const added = { index: a.index, address: a.local, prefixLen: a.prefixLen };
    ns.addresses.push(added);
    if (ns.links.get(a.index)!.up) this.connectedRoute(ns, added);
  }

  private newRoute(ns: FakeNetns, data: Buffer): void {
    const r = parseRoute(data);
    const link = ns.links.get(r.oif);
    if (!link) throw new KernelError('ENODEV');
    if (!link.up) throw new KernelError('ENETDOWN');
    // The kernel wants the gateway reachable through a connected route on the same device.
    if (r.gateway && !ns.routes.some((c) => c.connected && c.oif === r.oif && networkOf(r.gateway, c.dstLen) === c.dst)) throw new KernelError('ENETUNREACH');
    if (ns.routes.some((x) => x.dst === r.dst && x.dstLen === r.dstLen && x.table === r.table)) throw new KernelError('EEXIST');
    ns.routes.push({ dst: r.dst, dstLen: r.dstLen, gateway: r.gateway, oif: r.oif, table: r.table, connected: false });
  }
}
