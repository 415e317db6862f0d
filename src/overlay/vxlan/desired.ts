// Pure: from this node's lease and the peers' leases, the routes, neighbours and FDB entries a
// VXLAN node must hold (facts A.8). Every peer value was validated when the lease was parsed;
// here peers that cannot be programmed safely are skipped with a reason.
import { type Cidr, contains, containsIP, formatCidr, formatIP, parseIPv4 } from '../../subnet/cidr.ts';
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
  const skipped: { key: string; reason: string }[] = [];
  let programmed = 0;
  const seenMacs = new Map<string, string>();
  const sorted = [...input.peers].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const peer of sorted) {
    if (peer.key === input.own.key) continue;
    const skip = (reason: string) => skipped.push({ key: peer.key, reason });
    if (peer.attrs.BackendType !== 'vxlan') { skip(`backend type ${JSON.stringify(peer.attrs.BackendType ?? '')} is not vxlan`); continue; }
    if (peer.attrs.PublicIP === input.own.attrs.PublicIP) { skip('has this node\'s public IP (stale lease)'); continue; }
    if (!contains(input.network, peer.subnet)) { skip(`subnet is outside the network ${formatCidr(input.network)}`); continue; }
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
    // Two peers with one VTEP MAC would make the FDB flap between them; keep the first.
    const holder = seenMacs.get(data.VtepMAC);
    if (holder) { skip(`VtepMAC ${data.VtepMAC} is already used by ${holder}`); continue; }
    seenMacs.set(data.VtepMAC, peer.key);
    const gw = formatIP(4, peer.subnet.base);
    state.neighbours.push({ ip: gw, mac: data.VtepMAC, dev: input.device });
    state.fdb.push({ mac: data.VtepMAC, dst: peer.attrs.PublicIP, dev: input.device });
    state.routes.push({ dst, via: gw, dev: input.device, onlink: true });
    programmed++;
  }
  return { state, programmed, skipped };
}
