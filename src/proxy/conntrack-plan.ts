// Which conntrack entries to delete after a sync (kube-proxy's deleteStaleServices/Endpoints).
// Pure: compares the service ports of changed services before and after. A UDP or SCTP flow has
// no handshake, so conntrack keeps sending it to a removed endpoint, or to nowhere after a
// service had no endpoints (the REJECT/blackhole entry), until the entry is deleted.
import type { ConntrackFilter } from '../kernel/conntrack.ts';
import type { ServicePortInfo } from '../rules/model.ts';
import type { IpFamily } from '../rules/types.ts';

const key = (p: ServicePortInfo) => `${p.portName}/${p.protocol}`;
const usable = (p: ServicePortInfo) => p.endpoints.filter((e) => e.ready || (e.serving && e.terminating));

function ipsOf(p: ServicePortInfo): string[] {
  return [...new Set([p.clusterIP, ...p.externalIPs, ...p.loadBalancerVIPs].filter((ip) => ip && ip !== 'None'))];
}

export function conntrackCleanup(before: readonly ServicePortInfo[], after: readonly ServicePortInfo[]): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  const seen = new Set<string>();
  const add = (f: ConntrackFilter) => {
    const k = JSON.stringify(f);
    if (!seen.has(k)) { seen.add(k); out.push(f); }
  };
  const prev = new Map(before.map((p) => [key(p), p]));
  const cur = new Map(after.map((p) => [key(p), p]));
  for (const [k, old] of prev) {
    if (old.protocol === 'tcp') continue;
    const now = cur.get(k);
    const keep = new Set(now ? usable(now).map((e) => e.addr) : []);
    for (const ep of usable(old)) {
      if (keep.has(ep.addr)) continue;
      for (const ip of ipsOf(old)) add({ protocol: old.protocol, origDst: ip, dstNat: ep.ip });
      if (old.nodePort) add({ protocol: old.protocol, dport: old.nodePort, dstNat: ep.ip });
    }
  }
  for (const [k, now] of cur) {
    if (now.protocol === 'tcp') continue;
    const old = prev.get(k);
    const had = old ? usable(old).length : 0;
    if (had > 0 || usable(now).length === 0) continue;
    // 0 -> N: flows that were answered by a REJECT (or nothing) must start over.
    for (const ip of ipsOf(now)) add({ protocol: now.protocol, origDst: ip });
    if (now.nodePort) add({ protocol: now.protocol, dport: now.nodePort });
  }
  return out;
}

/**
 * Deletes what conntrackCleanup plans, entry by entry (`remove`: conntrack -D in a namespace),
 * for every data plane. A failed deletion is logged and the rest go on: stale entries only
 * delay a UDP flow's move, they never justify failing the sync.
 */
export async function cleanStaleConntrack(
  before: readonly ServicePortInfo[], after: readonly ServicePortInfo[], family: IpFamily,
  remove: (filter: ConntrackFilter) => Promise<number>,
  log: { info(o: object, msg: string): void; warn(o: object, msg: string): void },
): Promise<void> {
  for (const f of conntrackCleanup(before, after)) {
    try {
      const n = await remove(family === 'IPv6' ? { ...f, family: 'IPv6' } : f);
      if (n) log.info({ filter: f, deleted: n }, 'deleted stale conntrack entries');
    } catch (err) {
      log.warn({ filter: f, err: String(err) }, 'conntrack clean-up failed');
    }
  }
}
