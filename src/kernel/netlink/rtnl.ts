// rtnetlink requests over any NetlinkTransport: links, addresses and routes in the transport's
// namespace. One request is in flight at a time (each waits for its acknowledgement or the end
// of its dump), so replies never need matching across requests.
import {
  AF_BRIDGE, IFLA, IFLA_BRPORT_MODE, IFLA_INFO, NLA_F_NESTED, NLM_F, NLMSG, RTM, VETH_INFO_PEER,
  NetlinkError, addressDumpRequest4, addressMessage4, assertIfName, cstr, decodeMessages, encodeMessage, errorCode,
  ifinfomsg, linkAttrs, nlattr, parseAddress, parseLink, parseRoute, routeDumpRequest4, routeMessage4, upFlags,
  type AddressInfo, type LinkInfo, type NetlinkMessage, type RouteInfo,
} from './codec.ts';
import type { NetlinkTransport } from './transport.ts';

export class Rtnl {
  private seq = 1;
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly transport: NetlinkTransport) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.transport.close();
  }

  /** Sends one request and resolves with its replies once acknowledged (or the dump is done). */
  request(op: string, type: number, flags: number, payload: readonly Uint8Array[]): Promise<NetlinkMessage[]> {
    const next = this.tail.then(() => this.exchange(op, type, flags, payload));
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async exchange(op: string, type: number, flags: number, payload: readonly Uint8Array[]): Promise<NetlinkMessage[]> {
    if (this.closed) throw new Error('netlink socket is closed');
    const seq = this.seq++;
    // A dump ends with NLMSG_DONE; anything else is asked to end with an acknowledgement.
    const dump = (flags & NLM_F.DUMP) === NLM_F.DUMP;
    await this.transport.send(encodeMessage(type, flags | NLM_F.REQUEST | (dump ? 0 : NLM_F.ACK), seq, payload));
    const replies: NetlinkMessage[] = [];
    for (;;) {
      for (const msg of decodeMessages(await this.transport.receive())) {
        // Late answers to an earlier request that failed part-way are not this request's.
        if (msg.seq !== seq) continue;
        if (msg.type === NLMSG.ERROR || msg.type === NLMSG.DONE) {
          const errno = errorCode(msg);
          if (errno !== 0) throw new NetlinkError(op, errno);
          return replies;
        }
        replies.push(msg);
      }
    }
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
    const info = [nlattr(IFLA_INFO.KIND, cstr(o.kind))];
    if (o.kindData) info.push(nlattr(IFLA_INFO.DATA | NLA_F_NESTED, o.kindData));
    const attrs = linkAttrs({ name: o.name, ...(o.mtu ? { mtu: o.mtu } : {}), ...(o.mac ? { mac: o.mac } : {}), ...(o.master ? { master: o.master } : {}) });
    await this.linkRequest(`create ${o.kind} ${o.name}`, RTM.NEWLINK, NLM_F.CREATE | NLM_F.EXCL, ifinfomsg(upFlags(o.up)),
      [...attrs, nlattr(IFLA.LINKINFO | NLA_F_NESTED, info)]);
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
    const protinfo = nlattr(IFLA.PROTINFO | NLA_F_NESTED, [nlattr(IFLA_BRPORT_MODE, Buffer.from([on ? 1 : 0]))]);
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

  // ---- IPv4 addresses and routes ----

  /** Sends a create-exclusive request; false when the kernel says the object was already there. */
  private async createExclusive(op: string, type: number, payload: readonly Uint8Array[]): Promise<boolean> {
    try {
      await this.request(op, type, NLM_F.CREATE | NLM_F.EXCL, payload);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'EEXIST') return false;
      throw e;
    }
  }

  /** Adds an IPv4 address; false when it was already there. */
  addAddress4(index: number, address: string, prefixLen: number): Promise<boolean> {
    return this.createExclusive(`add address ${address}/${prefixLen}`, RTM.NEWADDR, addressMessage4(index, address, prefixLen));
  }

  async listAddresses4(): Promise<AddressInfo[]> {
    const replies = await this.request('list addresses', RTM.GETADDR, NLM_F.DUMP, addressDumpRequest4());
    return replies.map((m) => parseAddress(m.data));
  }

  /** Adds a route in the main table (`ip route add DST via GW dev OIF`); false when it was already there. */
  addRoute4(o: { dst: string; dstLen: number; gateway?: string; oif: number }): Promise<boolean> {
    return this.createExclusive(`add route ${o.dst}/${o.dstLen}`, RTM.NEWROUTE, routeMessage4(o));
  }

  async listRoutes4(): Promise<RouteInfo[]> {
    const replies = await this.request('list routes', RTM.GETROUTE, NLM_F.DUMP, routeDumpRequest4());
    return replies.map((m) => parseRoute(m.data));
  }
}
