// The ovs-gre Backend options, keys matched case-insensitively like the rest of flannel's
// config. Names and port numbers default to the seed's setup: bridge obr0, GRE port gre0 at
// OpenFlow port 10, internal port tun0 at OpenFlow port 9.
import { configField, ConfigError, type BackendConfig } from '../../subnet/config.ts';

export const OVS_GRE_TYPE = 'ovs-gre';

export interface OvsGreConfig {
  bridge: string;
  tunnelPort: string;
  internalPort: string;
  /** The Linux bridge pods hang off (the CNI plugin's bridge). */
  podBridge: string;
  tunnelOfport: number;
  internalOfport: number;
  /** "system" needs the openvswitch kernel module; "netdev" is the userspace datapath. */
  datapathType: 'system' | 'netdev';
  /** Override of the underlay MTU the pod MTU is derived from. */
  mtu: number | null;
}

/**
 * Ethernet over GRE with a key: outer IPv4 20 + GRE 4 + key 4 + inner Ethernet 14. The pod
 * bridge and tun0 carry the inner frame, so a pod packet of underlay MTU - 42 fills the underlay.
 */
export const GRE_OVERHEAD = 42;
/** The same for OVS VXLAN (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). */
export const VXLAN_OVERHEAD = 50;

const NAME = /^[A-Za-z0-9_.-]{1,15}$/;

function name(raw: Record<string, unknown>, key: string, dflt: string): string {
  const v = configField(raw, key);
  if (v === undefined || v === null || v === '') return dflt;
  if (typeof v !== 'string' || !NAME.test(v) || v === '.' || v === '..') throw new ConfigError(`Backend.${key} must be an interface name of 1-15 characters, got ${JSON.stringify(v)}`);
  return v;
}

function int(raw: Record<string, unknown>, key: string, dflt: number, min: number, max: number): number {
  const v = configField(raw, key);
  if (v === undefined || v === null || v === 0) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(`Backend.${key} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return v;
}

export function parseOvsGreConfig(b: BackendConfig): OvsGreConfig {
  if (b.type !== OVS_GRE_TYPE) throw new ConfigError(`backend type ${JSON.stringify(b.type)} is not ${OVS_GRE_TYPE}`);
  const dp = configField(b.raw, 'DatapathType') ?? 'system';
  if (dp !== 'system' && dp !== 'netdev') throw new ConfigError(`Backend.DatapathType must be "system" or "netdev", got ${JSON.stringify(dp)}`);
  const mtu = int(b.raw, 'MTU', 0, 576 + GRE_OVERHEAD, 65535) || null;
  const c: OvsGreConfig = {
    bridge: name(b.raw, 'Bridge', 'obr0'),
    tunnelPort: name(b.raw, 'TunnelPort', 'gre0'),
    internalPort: name(b.raw, 'InternalPort', 'tun0'),
    podBridge: name(b.raw, 'PodBridge', 'cni0'),
    // 0xff00 and above are OpenFlow's reserved port numbers.
    tunnelOfport: int(b.raw, 'TunnelOfport', 10, 1, 0xfeff),
    internalOfport: int(b.raw, 'InternalOfport', 9, 1, 0xfeff),
    datapathType: dp,
    mtu,
  };
  if (c.tunnelOfport === c.internalOfport) throw new ConfigError('Backend.TunnelOfport and Backend.InternalOfport must differ');
  const names = [c.bridge, c.tunnelPort, c.internalPort, c.podBridge];
  if (new Set(names).size !== names.length) throw new ConfigError(`Backend.Bridge, TunnelPort, InternalPort and PodBridge must all differ, got ${names.join(', ')}`);
  return c;
}
