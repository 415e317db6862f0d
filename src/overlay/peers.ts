// Pure: which peer leases an overlay backend may program, one policy for every backend. A
// well-formed lease can still be harmful: a subnet inside this node's own would send local pod
// traffic to a remote node, a wide one would swallow every unleased address, a public IP of
// 0.0.0.0, broadcast, multicast or loopback is no tunnel endpoint. Conflicts are settled in
// favour of the lease established first (a lower `since`), then by key, so a newcomer never
// evicts a working peer and every node settles the same way whatever order it learned leases in.
import { type Cidr, contains, formatCidr, overlaps } from '../subnet/cidr.ts';
import { underlayAddressProblem } from '../subnet/usable.ts';
import type { Lease } from '../subnet/lease.ts';

export interface Skipped {
  key: string;
  reason: string;
}

export interface PeerSelectionInput {
  network: Cidr;
  own: Lease;
  peers: readonly Lease[];
  /** The lease BackendType this backend can talk to. */
  backendType: string;
}

export interface PeerSelection {
  /** Usable peers, in establishment order. */
  accepted: Lease[];
  skipped: Skipped[];
}

/** Establishment order: lower `since` first, leases without one last, then by key. */
export function byEstablishment(a: Lease, b: Lease): number {
  const sa = a.since ?? Number.POSITIVE_INFINITY;
  const sb = b.since ?? Number.POSITIVE_INFINITY;
  if (sa !== sb) return sa < sb ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

export function selectPeers(input: PeerSelectionInput): PeerSelection {
  const { network, own } = input;
  const accepted: Lease[] = [];
  const skipped: Skipped[] = [];
  for (const peer of [...input.peers].sort(byEstablishment)) {
    if (peer.key === own.key) continue;
    const skip = (reason: string) => skipped.push({ key: peer.key, reason });
    if (peer.attrs.BackendType !== input.backendType) { skip(`backend type ${JSON.stringify(peer.attrs.BackendType ?? '')} is not ${input.backendType}`); continue; }
    if (peer.attrs.PublicIP === own.attrs.PublicIP) { skip('has this node\'s public IP (stale lease)'); continue; }
    const bad = underlayAddressProblem(peer.attrs.PublicIP);
    if (bad) { skip(`public IP ${bad}`); continue; }
    if (!contains(network, peer.subnet)) { skip(`subnet is outside the network ${formatCidr(network)}`); continue; }
    if (peer.subnet.len !== own.subnet.len) { skip(`subnet ${formatCidr(peer.subnet)} is a /${peer.subnet.len}; every node's subnet here is a /${own.subnet.len}`); continue; }
    if (overlaps(peer.subnet, own.subnet)) { skip(`subnet overlaps this node's subnet ${formatCidr(own.subnet)}`); continue; }
    const clash = accepted.find((l) => overlaps(l.subnet, peer.subnet));
    if (clash) { skip(`subnet overlaps ${formatCidr(clash.subnet)} of ${clash.attrs.PublicIP}, which holds it since earlier`); continue; }
    accepted.push(peer);
  }
  return { accepted, skipped };
}
