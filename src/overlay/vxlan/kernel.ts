// The kernel calls the VXLAN backend makes, as a seam: the device, its address, and the
// routes, neighbours and FDB entries knet owns. `iprouteVxlanKernel` does them with iproute2
// (optionally in a named namespace); tests give the backend an in-memory kernel instead.
import type { OverlayDiff, OverlayState } from '../types.ts';
import { type VxlanDevice, type VxlanDeviceSpec, ensureVxlanDevice, setDeviceAddress } from '../../kernel/vxlan.ts';
import { type ApplyResult, applyOverlayDiff, readOverlayState } from '../../kernel/overlay-state.ts';

export interface VxlanKernel {
  /** Adopts a compatible device (keeping its MAC) or recreates it; sets MTU, brings it up. */
  ensureDevice(spec: VxlanDeviceSpec): Promise<VxlanDevice>;
  /** Exactly `address`/32 on the device among addresses for which `inNetwork` holds. */
  setDeviceAddress(device: string, address: string, inNetwork: (ip: string) => boolean): Promise<void>;
  /** knet's own routes, neighbours and FDB entries for `device`. */
  readState(device: string): Promise<OverlayState>;
  /** Applies every change it can; failures come back in `errors`. */
  apply(diff: OverlayDiff): Promise<ApplyResult>;
}

export function iprouteVxlanKernel(netns: string | null): VxlanKernel {
  return {
    ensureDevice: (spec) => ensureVxlanDevice(netns, spec),
    setDeviceAddress: (device, address, inNetwork) => setDeviceAddress(netns, device, address, inNetwork),
    readState: (device) => readOverlayState(netns, device),
    apply: (diff) => applyOverlayDiff(netns, diff),
  };
}
