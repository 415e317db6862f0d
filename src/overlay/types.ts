// Kernel objects an overlay backend wants, as plain data. Desired and observed state use the
// same shapes so a diff is a comparison of keyed sets.

export interface RouteEntry {
  /** Destination prefix, e.g. "10.5.2.0/24". */
  dst: string;
  /** Gateway address. */
  via: string;
  dev: string;
  onlink: boolean;
}

export interface NeighEntry {
  ip: string;
  mac: string;
  dev: string;
}

export interface FdbEntry {
  mac: string;
  /** Remote VTEP (the peer's public IP). */
  dst: string;
  dev: string;
}

export interface OverlayState {
  routes: RouteEntry[];
  neighbours: NeighEntry[];
  fdb: FdbEntry[];
}

export interface OverlayDiff {
  /** Entries to create or replace. */
  add: OverlayState;
  /** Entries to delete (knet's own entries that nothing wants any more). */
  remove: OverlayState;
}

export const emptyState = (): OverlayState => ({ routes: [], neighbours: [], fdb: [] });

export const routeKey = (r: RouteEntry): string => r.dst;
export const neighKey = (n: NeighEntry): string => `${n.dev}|${n.ip}`;
export const fdbKey = (f: FdbEntry): string => `${f.dev}|${f.mac}|${f.dst}`;

const sameRoute = (a: RouteEntry, b: RouteEntry) => a.via === b.via && a.dev === b.dev && a.onlink === b.onlink;
const sameNeigh = (a: NeighEntry, b: NeighEntry) => a.mac === b.mac;

function diffKeyed<T>(desired: readonly T[], observed: readonly T[], key: (x: T) => string, same: (a: T, b: T) => boolean) {
  const have = new Map(observed.map((o) => [key(o), o]));
  const want = new Map(desired.map((d) => [key(d), d]));
  const add: T[] = [];
  const remove: T[] = [];
  for (const [k, d] of want) {
    const o = have.get(k);
    if (!o || !same(d, o)) add.push(d);
  }
  for (const [k, o] of have) if (!want.has(k)) remove.push(o);
  return { add, remove };
}

/**
 * What to change so that the kernel holds exactly `desired`. `observed` must contain only
 * entries knet made (the readers filter by route/neighbour protocol and by knet's device), so
 * nothing else is ever removed. Changed entries are replaced in place, not removed first.
 */
export function diffOverlay(desired: OverlayState, observed: OverlayState): OverlayDiff {
  const r = diffKeyed(desired.routes, observed.routes, routeKey, sameRoute);
  const n = diffKeyed(desired.neighbours, observed.neighbours, neighKey, sameNeigh);
  const f = diffKeyed(desired.fdb, observed.fdb, fdbKey, () => true);
  return { add: { routes: r.add, neighbours: n.add, fdb: f.add }, remove: { routes: r.remove, neighbours: n.remove, fdb: f.remove } };
}

export function diffSize(d: OverlayDiff): number {
  return d.add.routes.length + d.add.neighbours.length + d.add.fdb.length + d.remove.routes.length + d.remove.neighbours.length + d.remove.fdb.length;
}
