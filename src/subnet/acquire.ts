// Acquiring this node's lease the way flanneld does: list, choose (pure), create with a Version==0
// transaction, and on a lost race list again, up to 10 times.
import { type Cidr, formatCidr, formatIP } from './cidr.ts';
import { chooseSubnet } from './choose.ts';
import type { SubnetRange } from './config.ts';
import type { Lease, LeaseAttrs } from './lease.ts';
import { SUBNET_TTL_SECONDS, type SubnetRegistry } from './etcd-registry.ts';

export const RACE_RETRIES = 10;

export class OutOfSubnetsError extends Error {}

export interface AcquireInput {
  range: SubnetRange;
  attrs: LeaseAttrs;
  previous: Cidr | null;
  ttlSeconds?: number;
  random?: () => number;
  /** Milliseconds since the epoch; injectable for tests. */
  now?: () => number;
}

export interface Acquired {
  lease: Lease;
  how: 'reused' | 'subnet-file' | 'random';
  /** Stale leases of ours that no longer fit the config and were deleted. */
  deleted: Lease[];
}

export async function acquireLease(reg: SubnetRegistry, input: AcquireInput): Promise<Acquired> {
  const ttl = input.ttlSeconds ?? SUBNET_TTL_SECONDS;
  const deleted: Lease[] = [];
  // The etcd lease is granted while the list is in flight, saving a round trip; its expiry
  // counts from before the grant. A lost race keeps it for the next attempt.
  const at = (input.now ?? Date.now)();
  const grant = reg.grant(ttl);
  let granted: { id: string; at: number } | null = null;
  let handedOver = false;
  try {
    for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
      const pending: Promise<string> = granted ? Promise.resolve(granted.id) : grant;
      const [list, id] = await Promise.all([reg.listLeases({ serializable: true }), pending]);
      granted = { id, at };
      const { choice, incompatible } = chooseSubnet({
        range: input.range,
        leases: list.leases,
        publicIP: input.attrs.PublicIP,
        previous: input.previous,
        ...(input.random ? { random: input.random } : {}),
      });
      for (const l of incompatible) {
        await reg.deleteLease(l);
        deleted.push(l);
      }
      if (choice.kind === 'out-of-subnets') {
        const r = input.range;
        throw new OutOfSubnetsError(
          `out of subnets: every /${r.subnetLen} between ${formatIP(4, r.subnetMin)} and ${formatIP(4, r.subnetMax)} in ${formatCidr(r.network)} is leased or reserved`,
        );
      }
      if (choice.kind === 'reuse') {
        handedOver = true; // renewLease uses or revokes it
        return { lease: await reg.renewLease(choice.lease, input.attrs, ttl, granted), how: 'reused', deleted };
      }
      const lease = await reg.createLease(choice.subnet, input.attrs, ttl, granted);
      if (lease) {
        handedOver = true;
        return { lease, how: choice.reason, deleted };
      }
      // Another node created this key between our list and our transaction: look again.
    }
    throw new Error('max retries reached trying to acquire a subnet');
  } finally {
    // Never leave an unused etcd lease behind (also when the list failed before the grant).
    if (!handedOver) await grant.then((id) => reg.revoke(id), () => undefined);
  }
}
