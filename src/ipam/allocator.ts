// Which address to hand out next: a pure function over the subnet, what is taken and where the
// last allocation stopped (round robin, so a just-released address is not reused at once).
import { broadcastOf, networkOf, type Cidr4 } from './ipv4.ts';

export interface Pool {
  subnet: Cidr4;
  gateway: number;
  /** Addresses never to hand out (config `exclude`). */
  reserved: ReadonlySet<number>;
}

/** First and last assignable address: never the network or the broadcast address. */
export function hostRange(subnet: Cidr4): { first: number; last: number } {
  const net = networkOf(subnet);
  if (subnet.prefix >= 31) throw new Error(`subnet /${subnet.prefix} is too small for pods`);
  return { first: net + 1, last: broadcastOf(subnet) - 1 };
}

export function isAssignable(pool: Pool, ip: number): boolean {
  const { first, last } = hostRange(pool.subnet);
  return ip >= first && ip <= last && ip !== pool.gateway && !pool.reserved.has(ip);
}

/**
 * Candidate addresses in the order to try them: after `lastReserved` (when it lies in the
 * range), wrapping round, skipping gateway, reserved and used addresses.
 */
export function* candidates(pool: Pool, used: ReadonlySet<number>, lastReserved?: number): Generator<number> {
  const { first, last } = hostRange(pool.subnet);
  const size = last - first + 1;
  const start = lastReserved !== undefined && lastReserved >= first && lastReserved <= last ? lastReserved + 1 - first : 0;
  for (let i = 0; i < size; i++) {
    const ip = first + ((start + i) % size);
    if (ip !== pool.gateway && !pool.reserved.has(ip) && !used.has(ip)) yield ip;
  }
}

/** The next free address, or null when the pool is exhausted. */
export function chooseAddress(pool: Pool, used: ReadonlySet<number>, lastReserved?: number): number | null {
  for (const ip of candidates(pool, used, lastReserved)) return ip;
  return null;
}
