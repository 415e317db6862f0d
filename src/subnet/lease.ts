// Subnet leases in flannel's exact etcd format, so both can share one etcd: key `10.5.52.0-24` (dual stack
// `10.5.52.0-24&fd00::-56`), value {"PublicIP","PublicIPv6","BackendType","BackendData",...}.
// Everything read from etcd is validated here before it can reach the kernel.
import { type Cidr, formatCidr, formatIP, isIPv4, parseCidr, parseIPv4, parseIPv6 } from './cidr.ts';

/** flannel's lease.LeaseAttrs, field names and order as flannel writes them. */
export interface LeaseAttrs {
  PublicIP: string;
  PublicIPv6: string | null;
  BackendType?: string;
  BackendData?: unknown;
  BackendV6Data?: unknown;
}

export interface Lease {
  /** The key's last path element, e.g. "10.5.52.0-24". */
  key: string;
  subnet: Cidr;
  ipv6Subnet: Cidr | null;
  attrs: LeaseAttrs;
  /** etcd lease id ("0" for a reservation: a key written without a lease). */
  etcdLease: string;
  /** Expiry in ms since the epoch, null for reservations or when unknown. */
  expiresAt: number | null;
  /**
   * When the lease was established, as an ordinal the whole cluster agrees on (etcd: the key's
   * create revision; Kubernetes: the Node's creation time in ms). Conflicting leases resolve
   * in favour of the lower value; absent sorts last.
   */
  since?: number;
}

const KEY = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&([0-9a-f:]+)-(\d{1,3}))?$/;

export function makeSubnetKey(subnet: Cidr, ipv6Subnet: Cidr | null = null): string {
  const v4 = `${formatIP(4, subnet.base)}-${subnet.len}`;
  return ipv6Subnet ? `${v4}&${formatIP(6, ipv6Subnet.base)}-${ipv6Subnet.len}` : v4;
}

/** Parses a subnet key; throws on anything that is not a well-formed, aligned prefix. */
export function parseSubnetKey(key: string): { subnet: Cidr; ipv6Subnet: Cidr | null } {
  const m = KEY.exec(key);
  if (!m) throw new Error(`invalid subnet key ${JSON.stringify(key)}`);
  const subnet = parseCidr(`${m[1]}/${m[2]}`);
  if (subnet.family !== 4) throw new Error(`invalid subnet key ${JSON.stringify(key)}`);
  const ipv6Subnet = m[3] ? parseCidr(`${m[3]}/${m[4]}`) : null;
  if (ipv6Subnet && ipv6Subnet.family !== 6) throw new Error(`invalid subnet key ${JSON.stringify(key)}`);
  return { subnet, ipv6Subnet };
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function normalizeMac(mac: unknown): string {
  if (typeof mac !== 'string' || !MAC.test(mac.toLowerCase())) throw new Error(`invalid MAC address ${JSON.stringify(mac)}`);
  const lower = mac.toLowerCase();
  if (lower === '00:00:00:00:00:00' || (parseInt(lower.slice(0, 2), 16) & 1) === 1) {
    throw new Error(`MAC address ${mac} is not a unicast address`);
  }
  return lower;
}

/** Parses and validates a lease value. Unknown BackendData is kept as is (backends validate it). */
export function parseLeaseAttrs(text: string): LeaseAttrs {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`lease value is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('lease value must be a JSON object');
  const o = v as Record<string, unknown>;
  if (!isIPv4(o.PublicIP)) throw new Error(`lease PublicIP ${JSON.stringify(o.PublicIP)} is not an IPv4 address`);
  const attrs: LeaseAttrs = { PublicIP: o.PublicIP, PublicIPv6: null };
  if (o.PublicIPv6 !== undefined && o.PublicIPv6 !== null) {
    if (typeof o.PublicIPv6 !== 'string') throw new Error('lease PublicIPv6 must be a string or null');
    parseIPv6(o.PublicIPv6);
    attrs.PublicIPv6 = o.PublicIPv6;
  }
  if (o.BackendType !== undefined) {
    if (typeof o.BackendType !== 'string') throw new Error('lease BackendType must be a string');
    attrs.BackendType = o.BackendType;
  }
  if (o.BackendData !== undefined) attrs.BackendData = o.BackendData;
  if (o.BackendV6Data !== undefined) attrs.BackendV6Data = o.BackendV6Data;
  return attrs;
}

/** Serialises attrs with flannel's field order and omitempty behaviour. */
export function formatLeaseAttrs(a: LeaseAttrs): string {
  const out: Record<string, unknown> = { PublicIP: a.PublicIP, PublicIPv6: a.PublicIPv6 ?? null };
  if (a.BackendType) out.BackendType = a.BackendType;
  if (a.BackendData !== undefined && a.BackendData !== null) out.BackendData = a.BackendData;
  if (a.BackendV6Data !== undefined && a.BackendV6Data !== null) out.BackendV6Data = a.BackendV6Data;
  return JSON.stringify(out);
}

/** The vxlan backend's BackendData: {"VNI":1,"VtepMAC":"..."}. */
export interface VxlanBackendData {
  VNI: number;
  VtepMAC: string;
}

export function parseVxlanBackendData(data: unknown): VxlanBackendData {
  if (typeof data !== 'object' || data === null) throw new Error('vxlan BackendData must be an object');
  const o = data as Record<string, unknown>;
  const vni = o.VNI ?? 1;
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new Error(`invalid VNI ${JSON.stringify(o.VNI)}`);
  return { VNI: vni, VtepMAC: normalizeMac(o.VtepMAC) };
}

/** Builds a Lease from an etcd key/value pair; throws a clear error on any malformed part. */
export function leaseFromKv(key: string, value: string, etcdLease: string, expiresAt: number | null): Lease {
  const { subnet, ipv6Subnet } = parseSubnetKey(key);
  return { key, subnet, ipv6Subnet, attrs: parseLeaseAttrs(value), etcdLease, expiresAt };
}

export function describeLease(l: Lease): string {
  return `${formatCidr(l.subnet)} (PublicIP ${l.attrs.PublicIP})`;
}

export { parseIPv4 };
