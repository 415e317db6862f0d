// Open vSwitch adapter: ovs-vsctl against an explicit database socket and ovs-ofctl against a
// bridge's management socket in an explicit run directory, optionally inside a named network
// namespace. Explicit paths keep a node namespace's daemons apart from any system OVS; every
// value that reaches an argument is validated first, and flows go through stdin.
import { join } from 'node:path';
import { run } from './exec.ts';
import { ipBatch } from './iproute.ts';
import { assertNetnsName } from './netns.ts';
import { parseCIDR } from '../util/ip.ts';

export interface OvsTarget {
  /** Named namespace the tools run in; null: the current one. */
  netns: string | null;
  /** OVS run directory (db.sock, BRIDGE.mgmt); on a real node /var/run/openvswitch. */
  runDir: string;
  /** Database socket; default RUNDIR/db.sock. */
  dbSocket?: string;
}

export const SYSTEM_OVS: OvsTarget = { netns: null, runDir: '/var/run/openvswitch' };

const NAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function assertOvsName(name: string): void {
  if (!NAME.test(name) || name === '.' || name === '..') throw new Error(`invalid OVS bridge/port name ${JSON.stringify(name)}`);
}

function assertPath(p: string): void {
  if (!p.startsWith('/') || /[\0\n\r]/.test(p)) throw new Error(`invalid OVS path ${JSON.stringify(p)}`);
}

export const dbSocketOf = (t: OvsTarget): string => t.dbSocket ?? join(t.runDir, 'db.sock');
export const mgmtSocketOf = (t: OvsTarget, bridge: string): string => join(t.runDir, `${bridge}.mgmt`);

function wrap(t: OvsTarget, file: string, args: string[]): [string, string[]] {
  assertPath(t.runDir);
  if (!t.netns) return [file, args];
  assertNetnsName(t.netns);
  return ['ip', ['netns', 'exec', t.netns, file, ...args]];
}

/** ovs-vsctl with the target's database; waits (bounded) for ovs-vswitchd to apply changes. */
export async function vsctl(t: OvsTarget, args: readonly string[]): Promise<string> {
  const db = dbSocketOf(t);
  assertPath(db);
  const [file, argv] = wrap(t, 'ovs-vsctl', [`--db=unix:${db}`, '--timeout=20', ...args]);
  return (await run(file, argv, { timeoutMs: 30_000 })).stdout;
}

/** ovs-ofctl (OpenFlow 1.3) against BRIDGE's management socket. */
export async function ofctl(t: OvsTarget, bridge: string, cmd: string, extra: readonly string[] = [], input?: string): Promise<string> {
  assertOvsName(bridge);
  const [file, argv] = wrap(t, 'ovs-ofctl', ['-O', 'OpenFlow13', ...extra, cmd, `unix:${mgmtSocketOf(t, bridge)}`, ...(input === undefined ? [] : ['-'])]);
  return (await run(file, argv, { timeoutMs: 30_000, ...(input === undefined ? {} : { input }) })).stdout;
}

export interface TunnelPortSpec {
  name: string;
  /** OVS interface type: "gre" here, "vxlan" for the benchmark's comparison. */
  type: 'gre' | 'vxlan';
  ofport: number;
}

export interface BridgeSpec {
  bridge: string;
  /** "system" (kernel module) on a real node, "netdev" (userspace datapath) without the module. */
  datapathType: 'system' | 'netdev';
  tunnel: TunnelPortSpec;
  /** Internal port wired to the pod bridge. */
  internal: { name: string; ofport: number };
}

function checkOfport(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 0xfeff) throw new Error(`invalid OpenFlow port number ${n}`);
}

/**
 * Creates or corrects the bridge, its tunnel port and its internal port in one idempotent
 * transaction (a no-op when everything is already so). fail-mode=secure: with no flows the
 * bridge drops everything instead of acting as a learning switch.
 */
export async function ensureBridge(t: OvsTarget, s: BridgeSpec): Promise<void> {
  for (const n of [s.bridge, s.tunnel.name, s.internal.name]) assertOvsName(n);
  checkOfport(s.tunnel.ofport);
  checkOfport(s.internal.ofport);
  await vsctl(t, [
    '--may-exist', 'add-br', s.bridge,
    '--', 'set', 'Bridge', s.bridge, `datapath_type=${s.datapathType}`, 'fail_mode=secure', 'protocols=OpenFlow13',
    '--', '--may-exist', 'add-port', s.bridge, s.tunnel.name,
    '--', 'set', 'Interface', s.tunnel.name, `type=${s.tunnel.type}`, 'options:remote_ip=flow', 'options:key=flow', `ofport_request=${s.tunnel.ofport}`,
    '--', '--may-exist', 'add-port', s.bridge, s.internal.name,
    '--', 'set', 'Interface', s.internal.name, 'type=internal', `ofport_request=${s.internal.ofport}`,
  ]);
}

/** The OpenFlow port number OVS gave each interface (-1 when it failed to open one). */
export async function readOfports(t: OvsTarget, names: readonly string[]): Promise<Map<string, number>> {
  names.forEach(assertOvsName);
  const out = await vsctl(t, ['--format=json', '--columns=name,ofport', 'list', 'Interface', ...names]);
  const data = JSON.parse(out) as { data: [string, number | [string, unknown[]]][] };
  const m = new Map<string, number>();
  for (const [name, ofport] of data.data) m.set(name, typeof ofport === 'number' ? ofport : -1);
  return m;
}

/** The bridge's flows as ovs-ofctl prints them, without statistics, one per element. */
export async function dumpFlows(t: OvsTarget, bridge: string): Promise<string[]> {
  const out = await ofctl(t, bridge, 'dump-flows', ['--no-stats', '--no-names']);
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('OFPST_') && !l.startsWith('NXST_'));
}

/** Flow lines with statistics (n_packets, duration), for tests and diagnostics. */
export async function dumpFlowsWithStats(t: OvsTarget, bridge: string): Promise<string[]> {
  const out = await ofctl(t, bridge, 'dump-flows', ['--no-names']);
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('OFPST_') && !l.startsWith('NXST_'));
}

/**
 * Makes the bridge's flow table exactly `flows` in one OpenFlow bundle: the switch applies all
 * adds, modifies and deletes at once or none of them, so no packet sees a half-updated table.
 */
export async function replaceFlows(t: OvsTarget, bridge: string, flows: readonly string[]): Promise<void> {
  for (const f of flows) if (/[\n\r\0]/.test(f)) throw new Error(`refusing flow with control characters: ${JSON.stringify(f)}`);
  await ofctl(t, bridge, 'replace-flows', ['--bundle'], flows.map((f) => `${f}\n`).join(''));
}

/** Deletes one flow by its match (tests use it to play "an operator deleted a flow"). */
export async function deleteFlowsStrict(t: OvsTarget, bridge: string, match: string): Promise<void> {
  if (/[\n\r\0]/.test(match)) throw new Error('invalid match');
  assertOvsName(bridge);
  const [file, argv] = wrap(t, 'ovs-ofctl', ['-O', 'OpenFlow13', '--strict', 'del-flows', `unix:${mgmtSocketOf(t, bridge)}`, match]);
  await run(file, argv);
}

export async function bridgeExists(t: OvsTarget, bridge: string): Promise<boolean> {
  assertOvsName(bridge);
  try {
    await vsctl(t, ['br-exists', bridge]);
    return true;
  } catch {
    return false;
  }
}

export async function deleteBridge(t: OvsTarget, bridge: string): Promise<void> {
  assertOvsName(bridge);
  await vsctl(t, ['--if-exists', 'del-br', bridge]);
}

/**
 * Queue length for the taps that stand for internal ports on the userspace datapath (`brphy`, the
 * backend's `tun0`). The kernel hands a tap's transmissions (towards OVS) to a ring of txqueuelen
 * packets and drops, without pushing back, what does not fit; a pod's or node's 64 KiB GSO send
 * lands there as ~45 segments at once and OVS's main thread is not always there to take them
 * (issue #8: tap TX dropped equal to the sender's retransmits at the default 1000). Packets are at
 * most MTU-sized here (no vnet header), so this bounds the ring at a few MiB.
 */
export const OVS_TAP_TXQUEUELEN = 5000;

/** How OVS reads the underlay port: AF_XDP rings, or a plain AF_PACKET socket (OVS type "system"). */
export type UnderlayPortKind = 'afxdp' | 'packet';

/** Parses an ovs-vsctl set column such as `[afxdp, gre, "system"]`. */
export function parseOvsSet(out: string): string[] {
  const s = out.trim().replace(/^\[|\]$/g, '').trim();
  return s === '' ? [] : s.split(',').map((x) => x.trim().replace(/^"|"$/g, ''));
}

/** The interface's receive queues (the kernel's real_num_rx_queues: one rx-N per queue in sysfs). */
export async function rxQueueCount(netns: string | null, iface: string): Promise<number> {
  assertOvsName(iface);
  const args = ['-1', `/sys/class/net/${iface}/queues`];
  if (netns) assertNetnsName(netns);
  const { stdout } = netns ? await run('ip', ['netns', 'exec', netns, 'ls', ...args]) : await run('ls', args);
  return Math.max(1, stdout.split('\n').filter((l) => /^rx-\d+$/.test(l.trim())).length);
}

/**
 * The userspace datapath's native tunnels leave through an OVS bridge that holds the underlay
 * address: this puts `iface` on bridge `bridge` (datapath netdev) and moves `cidr` onto the bridge.
 * Node setup for labs and tests; a kernel-datapath node does not need it.
 *
 * How OVS reads the port matters (issue #8). A plain port is an AF_PACKET socket whose receive
 * buffer is the namespace's net.core.rmem_default (208 KiB, read-only in a child namespace):
 * about 80 full-size frames. OVS drains it from its main thread between other work, so a TCP
 * burst arriving from the underlay overflows it (`ss -0 -e -m`: skmem d<drops>; about 1 segment
 * in 7 at full speed, every one a retransmit, pod to pod and node to node alike). With
 * `kind: 'afxdp'` (the default when this OVS lists `afxdp-nonpmd` in iface_types) the port is
 * `type=afxdp-nonpmd`: an XDP program hands frames to an AF_XDP socket with rings of thousands
 * of frames, still polled by the main thread (no busy-polling PMD thread), one socket per
 * receive queue (`options:n_rxq` = the interface's queues; frames on an unbound queue would go
 * to the kernel and be lost). If OVS cannot open the port that way it falls back to AF_PACKET.
 * Returns the kind in use.
 */
export async function attachUnderlayToBridge(t: OvsTarget, bridge: string, iface: string, cidr: string, opts: { kind?: UnderlayPortKind } = {}): Promise<UnderlayPortKind> {
  assertOvsName(bridge);
  assertOvsName(iface);
  if (parseCIDR(cidr, 'strict')?.family !== 4) throw new Error(`invalid underlay address ${JSON.stringify(cidr)}`);
  const afxdpAvailable = parseOvsSet(await vsctl(t, ['get', 'Open_vSwitch', '.', 'iface_types'])).includes('afxdp-nonpmd');
  let kind: UnderlayPortKind = (opts.kind ?? 'afxdp') === 'afxdp' && afxdpAvailable ? 'afxdp' : 'packet';
  const packetPort = ['--', 'set', 'Interface', iface, 'type=system', '--', 'remove', 'Interface', iface, 'options', 'n_rxq'];
  const port = kind === 'afxdp'
    ? ['--', 'set', 'Interface', iface, 'type=afxdp-nonpmd', `options:n_rxq=${await rxQueueCount(t.netns, iface)}`]
    : packetPort;
  await vsctl(t, ['--may-exist', 'add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev',
    '--', '--may-exist', 'add-port', bridge, iface, ...port]);
  if (kind === 'afxdp' && (await readOfports(t, [iface])).get(iface) === -1) {
    // OVS could not open it so (no XDP on this interface, no AF_XDP in the kernel): the plain socket.
    kind = 'packet';
    await vsctl(t, packetPort.slice(1));
  }
  await ipBatch(t.netns, [`addr del ${cidr} dev ${iface}`], true).catch(() => undefined);
  // `arp off`: the kernel still sees frames on an AF_PACKET port and would answer ARP for the
  // bridge's address with the port's MAC; tunnel packets sent to that MAC are never decapsulated.
  await ipBatch(t.netns, [`addr replace ${cidr} dev ${bridge}`, `link set ${iface} arp off up`, `link set ${bridge} txqueuelen ${OVS_TAP_TXQUEUELEN} up`]);
  return kind;
}
