// Which subnet this node should hold, by flanneld's rules, as a pure function: reuse the lease that
// carries our public IP, else the subnet remembered in subnet.env, else a random free one among
// the first 100 free subnets from SubnetMin upward.
import { type Cidr, overlaps, size } from './cidr.ts';
import { type SubnetRange, subnetFits } from './config.ts';
import type { Lease } from './lease.ts';

export const FREE_SUBNET_SAMPLE = 100;

export type SubnetChoice =
  | { kind: 'reuse'; lease: Lease }
  | { kind: 'new'; subnet: Cidr; reason: 'subnet-file' | 'random' }
  | { kind: 'out-of-subnets' };

export interface ChoiceInput {
  range: SubnetRange;
  leases: readonly Lease[];
  publicIP: string;
  /** Subnet from the previous run's subnet file, if any. */
  previous: Cidr | null;
  /** Returns [0, 1); injectable for tests. */
  random?: () => number;
}

export interface ChoiceResult {
  choice: SubnetChoice;
  /** Leases with our public IP that no longer fit the config: to be deleted (as flannel does). */
  incompatible: Lease[];
}

export function chooseSubnet(input: ChoiceInput): ChoiceResult {
  const { range, leases, publicIP } = input;
  const incompatible: Lease[] = [];
  for (const l of leases) {
    if (l.attrs.PublicIP !== publicIP) continue;
    if (subnetFits(range, l.subnet)) return { choice: { kind: 'reuse', lease: l }, incompatible };
    // A reservation is an operator's decision; never delete it.
    if (l.etcdLease !== '0') incompatible.push(l);
  }
  const live = leases.filter((l) => !incompatible.includes(l));
  const taken = (c: Cidr) => live.some((l) => overlaps(l.subnet, c));
  if (input.previous && subnetFits(range, input.previous) && !taken(input.previous)) {
    return { choice: { kind: 'new', subnet: input.previous, reason: 'subnet-file' }, incompatible };
  }
  const free = freeSubnets(range, live.map((l) => l.subnet), FREE_SUBNET_SAMPLE);
  if (free.length === 0) return { choice: { kind: 'out-of-subnets' }, incompatible };
  const r = (input.random ?? Math.random)();
  const pick = free[Math.min(free.length - 1, Math.floor(r * free.length))]!;
  return { choice: { kind: 'new', subnet: pick, reason: 'random' }, incompatible };
}

/** Up to `limit` subnets in [min, max] that overlap no taken prefix, lowest first. */
export function freeSubnets(range: SubnetRange, takenPrefixes: readonly Cidr[], limit: number): Cidr[] {
  const family = range.network.family;
  const step = size({ family, base: 0n, len: range.subnetLen });
  const sorted = takenPrefixes.filter((c) => c.family === family).slice().sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  const out: Cidr[] = [];
  let i = 0;
  for (let base = range.subnetMin; base <= range.subnetMax && out.length < limit; base += step) {
    const cand: Cidr = { family, base, len: range.subnetLen };
    // Skip taken prefixes that end before this candidate (sorted by start, so a larger prefix
    // that started earlier but still covers `base` stops the skip and is checked below).
    while (i < sorted.length && sorted[i]!.base + size(sorted[i]!) <= base) i++;
    let clash = false;
    for (let j = i; j < sorted.length && sorted[j]!.base <= base + step - 1n; j++) {
      if (overlaps(sorted[j]!, cand)) { clash = true; break; }
    }
    if (!clash) out.push(cand);
  }
  return out;
}
