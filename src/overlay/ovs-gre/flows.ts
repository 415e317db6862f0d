// Pure: the OpenFlow table an ovs-gre node must hold, from its own lease and its peers' leases
// (the seed's GRE setup), and the comparison with what the switch reports. Flow text is written
// in the form `ovs-ofctl dump-flows --no-stats` prints, and both sides are normalised, so an
// unchanged table costs one dump and no write.
import { type Cidr, formatCidr } from '../../subnet/cidr.ts';
import { selectPeers } from '../peers.ts';
import type { Lease } from '../../subnet/lease.ts';
import { OVS_GRE_TYPE } from './config.ts';

export interface FlowInput {
  network: Cidr;
  own: Lease;
  peers: readonly Lease[];
  tunnelOfport: number;
  internalOfport: number;
}

export interface DesiredFlows {
  flows: string[];
  programmed: number;
  skipped: { key: string; reason: string }[];
}

export const FLOW_PRIORITY = 100;

export function desiredFlows(input: FlowInput): DesiredFlows {
  const { tunnelOfport: tun, internalOfport: int } = input;
  const p = `priority=${FLOW_PRIORITY}`;
  const own = formatCidr(input.own.subnet);
  // From the tunnel, only what is addressed to this node's pods reaches the pod bridge.
  const flows = [
    `${p},ip,in_port=${tun},nw_dst=${own} actions=output:${int}`,
    `${p},arp,in_port=${tun},arp_tpa=${own} actions=output:${int}`,
  ];
  const { accepted, skipped } = selectPeers({ network: input.network, own: input.own, peers: input.peers, backendType: OVS_GRE_TYPE });
  for (const peer of accepted) {
    const dst = formatCidr(peer.subnet);
    const out = `set_field:${peer.attrs.PublicIP}->tun_dst,output:${tun}`;
    flows.push(`${p},ip,in_port=${int},nw_dst=${dst} actions=${out}`);
    flows.push(`${p},arp,in_port=${int},arp_tpa=${dst} actions=${out}`);
  }
  const programmed = accepted.length;
  skipped.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { flows, programmed, skipped };
}

/**
 * A flow line in a canonical form: statistics and zero cookie/table dropped, match fields sorted
 * (ovs-ofctl may print them in another order than they were written).
 */
export function normalizeFlow(line: string): string {
  const text = line.trim();
  const i = text.indexOf(' actions=');
  const match = i < 0 ? text : text.slice(0, i);
  const actions = i < 0 ? '' : text.slice(i + ' actions='.length).trim();
  const STATS = /^(duration|n_packets|n_bytes|idle_age|hard_age|reset_counts)=/;
  const fields = match.split(/,\s*/).map((f) => f.trim()).filter((f) => f !== '' && !STATS.test(f) && f !== 'cookie=0x0' && f !== 'table=0');
  if (!fields.some((f) => f.startsWith('priority='))) fields.push('priority=32768');
  return `${fields.sort().join(',')} actions=${actions}`;
}

export interface FlowDiff {
  add: string[];
  remove: string[];
}

/** Flows to add and to remove so that the switch holds exactly `desired`. */
export function diffFlows(desired: readonly string[], observed: readonly string[]): FlowDiff {
  const want = new Map(desired.map((f) => [normalizeFlow(f), f]));
  const have = new Map(observed.map((f) => [normalizeFlow(f), f]));
  return {
    add: [...want].filter(([k]) => !have.has(k)).map(([, f]) => f),
    remove: [...have].filter(([k]) => !want.has(k)).map(([, f]) => f),
  };
}
