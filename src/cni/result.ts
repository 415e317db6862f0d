// ADD results in the shape of the requested CNI version, and the pure parts of a pod's plan:
// interface names and MAC addresses.
import { fnv1aHex } from '../ipam/hash.ts';
import type { CniVersion } from './config.ts';

export interface ResultInterface { name: string; mac: string; mtu?: number; sandbox?: string }
export interface ResultIp { address: string; gateway: string; interface: number; version?: '4' }
export interface ResultRoute { dst: string; gw?: string }
export interface CniResult {
  cniVersion: string;
  interfaces: ResultInterface[];
  ips: ResultIp[];
  routes: ResultRoute[];
  dns: Record<string, unknown>;
}

export interface AttachmentFacts {
  bridge: { name: string; mac: string };
  hostVeth: { name: string; mac: string };
  pod: { name: string; mac: string; sandbox: string };
  mtu: number;
  address: string; // CIDR
  gateway: string;
  routes: { dst: string; gw: string }[];
  dns?: Record<string, unknown>;
}

/**
 * Builds the result: interfaces bridge, host veth, pod interface (index 2, as the reference
 * bridge plugin reports them), appended to a previous plugin's result when there is one.
 */
export function buildResult(version: CniVersion, f: AttachmentFacts, prev?: Record<string, unknown>): CniResult {
  const withMtu = version === '1.1.0';
  const iface = (x: ResultInterface): ResultInterface => (withMtu ? { ...x, mtu: f.mtu } : x);
  const prevIfaces = Array.isArray(prev?.interfaces) ? (prev!.interfaces as ResultInterface[]) : [];
  const prevIps = Array.isArray(prev?.ips) ? (prev!.ips as ResultIp[]) : [];
  const prevRoutes = Array.isArray(prev?.routes) ? (prev!.routes as ResultRoute[]) : [];
  const base = prevIfaces.length;
  const ip: ResultIp = { address: f.address, gateway: f.gateway, interface: base + 2 };
  const legacy = version.startsWith('0.');
  return {
    cniVersion: version,
    interfaces: [
      ...prevIfaces,
      iface({ name: f.bridge.name, mac: f.bridge.mac }),
      iface({ name: f.hostVeth.name, mac: f.hostVeth.mac }),
      iface({ name: f.pod.name, mac: f.pod.mac, sandbox: f.pod.sandbox }),
    ],
    ips: [...prevIps, legacy ? { version: '4', ...ip } : ip],
    routes: [...prevRoutes, ...f.routes.map((r) => ({ dst: r.dst, gw: r.gw }))],
    dns: f.dns ?? {},
  };
}

/** The host end's name: stable per (container, interface), so DEL and GC find it without state. */
export function hostVethName(containerId: string, ifname: string): string {
  return 'veth' + fnv1aHex(`${containerId}/${ifname}`);
}

/** Pod MAC derived from its IPv4 address (0a:58 prefix, locally administered, as kubenet did). */
export function podMac(ip: string): string {
  return ['0a', '58', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/** Six random bytes (Math.random: a MAC needs no cryptographic randomness, and no node:crypto load). */
export function randomBytes6(): Buffer {
  return Buffer.from(Array.from({ length: 6 }, () => Math.floor(Math.random() * 256)));
}

/** A locally administered unicast MAC from random bytes (the bridge's stays fixed as ports come and go). */
export function randomMac(bytes: Buffer = randomBytes6()): string {
  const b = Buffer.from(bytes.subarray(0, 6));
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
