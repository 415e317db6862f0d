// Pure: from this node's lease and the peers' leases, the routes, neighbours and FDB entries a
// VXLAN node must hold: per peer an onlink route via its subnet's .0, a permanent neighbour and
// an FDB entry. Which peers are usable is src/overlay/peers.ts (shared with ovs-gre); this adds
// the VXLAN checks (BackendData, VNI, one owner per VTEP MAC).
import { type Cidr, containsIP, formatCidr, formatIP, parseIPv4 } from '../../subnet/cidr.ts';
import { selectPeers } from '../peers.ts';
import { type Lease, parseVxlanBackendData } from '../../subnet/lease.ts';
import { type OverlayState, emptyState } from '../types.ts';

export interface VxlanDesiredInput {
  device: string;
  vni: number;
  network: Cidr;
  own: Lease;
  peers: readonly Lease[];
  directRouting: boolean;
  /** Underlay interface and prefix; DirectRouting uses a plain route to peers inside it. */
  underlay: { iface: string; subnet: Cidr } | null;
}

export interface VxlanDesired {
  state: OverlayState;
  programmed: number;
  skipped: { key: string; reason: string }[];
}

export function desiredVxlanState(input: VxlanDesiredInput): VxlanDesired {
  const state = emptyState();
  const { accepted, skipped } = selectPeers({ network: input.network, own: input.own, peers: input.peers, backendType: 'vxlan' });
  let programmed = 0;
  const macHolder = new Map<string, string>();
  // Accepted peers come in establishment order, so a VTEP MAC claimed twice stays with the
  // lease that had it first (two FDB owners would make traffic flap between them).
  for (const peer of accepted) {
    const skip = (reason: string) => skipped.push({ key: peer.key, reason });
    let data;
    try {
      data = parseVxlanBackendData(peer.attrs.BackendData);
    } catch (err) {
      skip(`bad BackendData: ${(err as Error).message}`);
      continue;
    }
    if (data.VNI !== input.vni) { skip(`VNI ${data.VNI} differs from this node's ${input.vni}`); continue; }
    const dst = formatCidr(peer.subnet);
    if (input.directRouting && input.underlay && containsIP(input.underlay.subnet, parseIPv4(peer.attrs.PublicIP))) {
      state.routes.push({ dst, via: peer.attrs.PublicIP, dev: input.underlay.iface, onlink: false });
      programmed++;
      continue;
    }
    const holder = macHolder.get(data.VtepMAC);
    if (holder) { skip(`VtepMAC ${data.VtepMAC} is already used by ${holder}, which holds it since earlier`); continue; }
    if (data.VtepMAC === ownMac(input.own)) { skip(`VtepMAC ${data.VtepMAC} is this node's own`); continue; }
    macHolder.set(data.VtepMAC, peer.key);
    const gw = formatIP(4, peer.subnet.base);
    state.neighbours.push({ ip: gw, mac: data.VtepMAC, dev: input.device });
    state.fdb.push({ mac: data.VtepMAC, dst: peer.attrs.PublicIP, dev: input.device });
    state.routes.push({ dst, via: gw, dev: input.device, onlink: true });
    programmed++;
  }
  skipped.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { state, programmed, skipped };
}

function ownMac(own: Lease): string | null {
  try {
    return parseVxlanBackendData(own.attrs.BackendData).VtepMAC;
  } catch {
    return null;
  }
}
