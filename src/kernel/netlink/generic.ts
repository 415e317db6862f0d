// Route and neighbour requests of any shape, encoded and decoded by node-netlink's generated
// codecs (for the overlay agent, which runs beside node_modules). Kept out of rtnl.ts: the codecs
// are large (~150 KB, ~20 ms to load) and the CNI plugin, which only makes links, addresses and
// routes with codec.ts, must not carry them.
import * as codecs from 'netlink/dist/rt/structs.js';
import { AttrStream } from 'netlink/dist/structs.js';
import type * as rt from 'netlink/dist/rt/gen_structs.js';
import type * as ifla from 'netlink/dist/rt/ifla.js';
import type { Rtnl } from './rtnl.ts';

export type RouteMessage = codecs.RouteMessage;
export type { rt, ifla };

async function viaCodecs<T>(nl: Rtnl, op: string, type: number, flags: number, format: (out: AttrStream) => void, parse: (data: Buffer) => T): Promise<T[]> {
  const out = new AttrStream();
  format(out);
  const replies = await nl.request(op, type, flags, out.bufs);
  return replies.map((m) => parse(m.data));
}

export function routeRequest(nl: Rtnl, type: number, flags: number, data: rt.Route, attrs: rt.RouteAttrs): Promise<RouteMessage[]> {
  return viaCodecs(nl, `route request ${type}`, type, flags,
    (out) => codecs.formatRouteMessage({ kind: 'route', data, attrs }, out), (d) => codecs.parseRouteMessage(d));
}
