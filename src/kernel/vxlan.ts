// The VXLAN device and the underlay it rides on: discover the underlay interface, create or
// adopt `flannel.<VNI>` with flannel's settings (VNI, port, learning off unless asked), give it
// the lease's .0/32 address.
import { randomBytes } from 'node:crypto';
import { ipBatch, ipJson } from './iproute.ts';
import { isIPv4 } from '../util/ip.ts';

/** Shapes every value must have before it goes into an iproute2 command (kernel limits). */
export const DEVICE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
export const MAC_TEXT = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const MAC = MAC_TEXT;

export function assertDev(name: string): void {
  if (!DEVICE_NAME.test(name) || name === '.' || name === '..') throw new Error(`invalid device name ${JSON.stringify(name)}`);
}

interface IpAddrInfo { family: string; local: string; prefixlen: number; scope?: string }
interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  flags?: string[];
  addr_info?: IpAddrInfo[];
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; link?: string; port?: number; learning?: boolean; gbp?: boolean } };
}

export interface Underlay {
  iface: string;
  publicIP: string;
  prefixLen: number;
  mtu: number;
}

/**
 * Finds the underlay: by interface name (its first global IPv4 address), by public IP (the
 * interface holding it), or else the interface of the default route.
 */
export async function findUnderlay(netns: string | null, o: { iface?: string; publicIP?: string }): Promise<Underlay> {
  if (o.iface !== undefined) assertDev(o.iface);
  if (o.publicIP !== undefined && !isIPv4(o.publicIP)) throw new Error(`invalid public IP ${JSON.stringify(o.publicIP)}`);
  const links = await ipJson<IpLink>(netns, ['addr', 'show']);
  let iface = o.iface;
  if (!iface && !o.publicIP) {
    const def = await ipJson<{ dev?: string }>(netns, ['route', 'show', 'default']);
    iface = def.find((r) => r.dev)?.dev;
    if (!iface) throw new Error('no default route: give --iface or --public-ip to choose the underlay interface');
  }
  for (const l of links) {
    if (iface && l.ifname !== iface) continue;
    for (const a of l.addr_info ?? []) {
      if (a.family !== 'inet' || a.scope !== 'global') continue;
      if (o.publicIP && a.local !== o.publicIP) continue;
      // --iface with --public-ip: the public IP may be a NAT address not on the interface.
      return { iface: l.ifname, publicIP: a.local, prefixLen: a.prefixlen, mtu: l.mtu };
    }
    if (iface && o.publicIP) {
      const a = (l.addr_info ?? []).find((x) => x.family === 'inet' && x.scope === 'global');
      if (a) return { iface: l.ifname, publicIP: o.publicIP, prefixLen: a.prefixlen, mtu: l.mtu };
    }
  }
  if (iface) throw new Error(`interface ${iface} not found or has no global IPv4 address`);
  throw new Error(`no interface holds the public IP ${o.publicIP}; give --iface too if it is a NAT address`);
}

export interface VxlanDeviceSpec {
  name: string;
  vni: number;
  port: number;
  localIP: string;
  underlayIface: string;
  mtu: number;
  learning: boolean;
  gbp: boolean;
  /** MAC to use if the device has to be created (else a random locally administered one). */
  mac?: string | null;
}

export interface VxlanDevice {
  name: string;
  mac: string;
  created: boolean;
}

export function randomVtepMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02; // unicast, locally administered
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

async function readLink(netns: string | null, name: string): Promise<IpLink | null> {
  const all = await ipJson<IpLink>(netns, ['-d', 'link', 'show']);
  return all.find((l) => l.ifname === name) ?? null;
}

function compatible(l: IpLink, s: VxlanDeviceSpec): boolean {
  const d = l.linkinfo?.info_data;
  return l.linkinfo?.info_kind === 'vxlan' && !!d && d.id === s.vni && d.local === s.localIP && d.link === s.underlayIface &&
    d.port === s.port && !!d.learning === s.learning && !!d.gbp === s.gbp;
}

/** Adopts a compatible device (keeping its MAC) or recreates it; sets MTU and brings it up. */
export async function ensureVxlanDevice(netns: string | null, s: VxlanDeviceSpec): Promise<VxlanDevice> {
  assertDev(s.name);
  assertDev(s.underlayIface);
  if (!isIPv4(s.localIP)) throw new Error(`invalid local IP ${JSON.stringify(s.localIP)}`);
  for (const [n, v, max] of [['VNI', s.vni, 0xffffff], ['port', s.port, 65535], ['MTU', s.mtu, 65535]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > max) throw new Error(`invalid VXLAN ${n} ${v}`);
  }
  const existing = await readLink(netns, s.name);
  let created = false;
  let mac: string;
  if (existing && compatible(existing, s)) {
    mac = existing.address!;
  } else {
    if (existing) await ipBatch(netns, [`link del ${s.name}`]);
    mac = s.mac && MAC.test(s.mac) ? s.mac : randomVtepMac();
    await ipBatch(netns, [
      `link add ${s.name} address ${mac} type vxlan id ${s.vni} local ${s.localIP} dev ${s.underlayIface} dstport ${s.port} ${s.learning ? 'learning' : 'nolearning'}${s.gbp ? ' gbp' : ''}`,
    ]);
    created = true;
  }
  if (!existing || created || existing.mtu !== s.mtu || !(existing.flags ?? []).includes('UP')) {
    await ipBatch(netns, [`link set ${s.name} mtu ${s.mtu} up`]);
  }
  return { name: s.name, mac, created };
}

/**
 * Puts exactly `address`/32 (the lease's network address) on the device among addresses in
 * `network`; other addresses in the pod network (a previous lease) are removed.
 */
export async function setDeviceAddress(netns: string | null, device: string, address: string, inNetwork: (ip: string) => boolean): Promise<void> {
  assertDev(device);
  if (!isIPv4(address)) throw new Error(`invalid address ${JSON.stringify(address)}`);
  const [link] = await ipJson<IpLink>(netns, ['addr', 'show', 'dev', device]);
  const lines: string[] = [];
  let present = false;
  for (const a of link?.addr_info ?? []) {
    if (a.family !== 'inet') continue;
    if (a.local === address && a.prefixlen === 32) { present = true; continue; }
    if (inNetwork(a.local)) lines.push(`addr del ${a.local}/${a.prefixlen} dev ${device}`);
  }
  if (!present) lines.push(`addr add ${address}/32 dev ${device}`);
  await ipBatch(netns, lines);
}
