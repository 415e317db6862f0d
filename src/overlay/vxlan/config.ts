// The vxlan Backend options as flannel names them (VNI, Port, GBP, DirectRouting ...), keys
// matched case-insensitively like Go's JSON.
import { configField, ConfigError, type BackendConfig } from '../../subnet/config.ts';

export interface VxlanConfig {
  vni: number;
  /** UDP port; flannel's 0 means the kernel default, which is 8472 on Linux. */
  port: number;
  /** Override of the underlay MTU the device MTU is derived from. */
  mtu: number | null;
  gbp: boolean;
  learning: boolean;
  directRouting: boolean;
}

export const VXLAN_OVERHEAD = 50;
export const DEFAULT_VXLAN_PORT = 8472;

function num(raw: Record<string, unknown>, name: string, dflt: number, max: number): number {
  const v = configField(raw, name);
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new ConfigError(`Backend.${name} must be an integer in 0..${max}, got ${JSON.stringify(v)}`);
  return v;
}

function bool(raw: Record<string, unknown>, name: string): boolean {
  const v = configField(raw, name);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new ConfigError(`Backend.${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function parseVxlanConfig(b: BackendConfig): VxlanConfig {
  if (b.type !== 'vxlan') throw new ConfigError(`backend type ${JSON.stringify(b.type)} is not supported by knet agent (only "vxlan")`);
  const vni = num(b.raw, 'VNI', 1, 0xffffff);
  const port = num(b.raw, 'Port', 0, 65535) || DEFAULT_VXLAN_PORT;
  const mtu = num(b.raw, 'MTU', 0, 65535) || null;
  if (mtu !== null && mtu < 576 + VXLAN_OVERHEAD) throw new ConfigError(`Backend.MTU ${mtu} is too small`);
  return { vni, port, mtu, gbp: bool(b.raw, 'GBP'), learning: bool(b.raw, 'Learning'), directRouting: bool(b.raw, 'DirectRouting') };
}

export { assertDev as assertDeviceName } from '../../kernel/vxlan.ts';

export const defaultVxlanDevice = (vni: number): string => `flannel.${vni}`;
