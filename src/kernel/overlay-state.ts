// Reads and changes the overlay's routes, neighbours and FDB entries with iproute2 (three execs
// per reconcile at most, whatever the peer count). knet marks its routes and neighbours with
// its own protocol number, so readers return only knet's entries and nothing else is removed.
import { bridgeBatch, bridgeJson, ipBatch, ipJson } from './iproute.ts';
import type { FdbEntry, NeighEntry, OverlayDiff, OverlayState, RouteEntry } from '../overlay/types.ts';
import { DEVICE_NAME as DEV, MAC_TEXT as MAC } from './vxlan.ts';
import { isIPv4, parseCIDR } from '../util/ip.ts';

/** Route/neighbour protocol number knet writes ("K"); unused by the kernel and common daemons. */
export const KNET_RTPROTO = 75;

function check(ok: boolean, what: string, v: string): void {
  if (!ok) throw new Error(`refusing to program invalid ${what} ${JSON.stringify(v)}`);
}

function checkRoute(r: RouteEntry): void {
  check(parseCIDR(r.dst, 'strict')?.family === 4, 'route destination', r.dst);
  check(isIPv4(r.via), 'gateway', r.via);
  check(DEV.test(r.dev), 'device', r.dev);
}
function checkNeigh(n: NeighEntry): void {
  check(isIPv4(n.ip), 'neighbour address', n.ip);
  check(MAC.test(n.mac), 'MAC', n.mac);
  check(DEV.test(n.dev), 'device', n.dev);
}
function checkFdb(f: FdbEntry): void {
  check(MAC.test(f.mac), 'MAC', f.mac);
  check(isIPv4(f.dst), 'VTEP address', f.dst);
  check(DEV.test(f.dev), 'device', f.dev);
}

export interface IpRoute { dst: string; gateway?: string; dev?: string; flags?: string[] }

/**
 * Gateway routes from `ip -j route show` as RouteEntries. iproute2 prints a host route without
 * its length ("10.5.2.7", not "10.5.2.7/32") and the default route as "default"; both are
 * given their prefix here so they compare with what knet wants and can be removed.
 */
export function routesFromIpJson(json: readonly IpRoute[]): RouteEntry[] {
  const out: RouteEntry[] = [];
  for (const r of json) {
    if (!r.gateway || !r.dev || typeof r.dst !== 'string') continue;
    const dst = r.dst === 'default' ? '0.0.0.0/0' : r.dst.includes('/') ? r.dst : `${r.dst}/32`;
    out.push({ dst, via: r.gateway, dev: r.dev, onlink: (r.flags ?? []).includes('onlink') });
  }
  return out;
}
interface IpNeigh { dst: string; lladdr?: string; state?: string[]; protocol?: string }
interface BridgeFdb { mac: string; dst?: string; state?: string; flags?: string[] }

async function linkExists(netns: string | null, dev: string): Promise<boolean> {
  const links = await ipJson<{ ifname: string }>(netns, ['link', 'show']);
  return links.some((l) => l.ifname === dev);
}

/**
 * knet's entries: routes with knet's protocol (any device), permanent neighbours with knet's
 * protocol on `device`, and permanent unicast FDB entries with a remote on `device` (a device
 * knet created; FDB entries carry no protocol).
 */
export async function readOverlayState(netns: string | null, device: string): Promise<OverlayState> {
  check(DEV.test(device), 'device', device);
  const routes = routesFromIpJson(await ipJson<IpRoute>(netns, ['route', 'show', 'table', 'main', 'proto', String(KNET_RTPROTO)]));
  if (!(await linkExists(netns, device))) return { routes, neighbours: [], fdb: [] };
  const neighbours = (await ipJson<IpNeigh>(netns, ['neigh', 'show', 'dev', device, 'nud', 'permanent']))
    .filter((n) => n.lladdr && n.protocol === String(KNET_RTPROTO))
    .map((n) => ({ ip: n.dst, mac: n.lladdr!, dev: device }));
  const fdb = (await bridgeJson<BridgeFdb>(netns, ['fdb', 'show', 'dev', device]))
    .filter((f) => f.dst && f.state === 'permanent' && f.mac !== '00:00:00:00:00:00' && (parseInt(f.mac.slice(0, 2), 16) & 1) === 0)
    .map((f) => ({ mac: f.mac, dst: f.dst!, dev: device }));
  // The kernel lists neighbours in hash order, which changes as entries come and go: sorted
  // state compares equal whenever the entries are equal.
  const byKey = <T>(key: (x: T) => string) => (a: T, b: T) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
  routes.sort(byKey((r) => r.dst));
  neighbours.sort(byKey((n) => n.ip));
  fdb.sort(byKey((f) => `${f.dst} ${f.mac}`));
  return { routes, neighbours, fdb };
}

export interface ApplyResult {
  errors: string[];
}

/**
 * Applies a diff: routes of vanished peers go first, then neighbours and FDB entries, and new
 * routes last so the kernel never has to resolve a gateway it has no neighbour for. Every
 * line is attempted (-force); failures are returned and the next reconcile retries them.
 */
export async function applyOverlayDiff(netns: string | null, d: OverlayDiff): Promise<ApplyResult> {
  [...d.add.routes, ...d.remove.routes].forEach(checkRoute);
  [...d.add.neighbours, ...d.remove.neighbours].forEach(checkNeigh);
  [...d.add.fdb, ...d.remove.fdb].forEach(checkFdb);
  const errors: string[] = [];
  const attempt = async (p: Promise<void>) => {
    try { await p; } catch (err) { errors.push((err as Error).message.slice(0, 2000)); }
  };
  const first = [
    ...d.remove.routes.map((r) => `route del ${r.dst} via ${r.via} dev ${r.dev} proto ${KNET_RTPROTO}`),
    ...d.remove.neighbours.map((n) => `neigh del ${n.ip} dev ${n.dev}`),
    ...d.add.neighbours.map((n) => `neigh replace ${n.ip} lladdr ${n.mac} dev ${n.dev} nud permanent protocol ${KNET_RTPROTO}`),
  ];
  await attempt(ipBatch(netns, first, true));
  const fdb = [
    ...d.remove.fdb.map((f) => `fdb del ${f.mac} dev ${f.dev} dst ${f.dst} self`),
    ...d.add.fdb.map((f) => `fdb replace ${f.mac} dev ${f.dev} dst ${f.dst} self permanent`),
  ];
  await attempt(bridgeBatch(netns, fdb, true));
  const routes = d.add.routes.map((r) => `route replace ${r.dst} via ${r.via} dev ${r.dev}${r.onlink ? ' onlink' : ''} proto ${KNET_RTPROTO}`);
  await attempt(ipBatch(netns, routes, true));
  return { errors };
}
