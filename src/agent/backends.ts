// Which overlay backend a network config's `Backend.Type` names, and how to build it: a
// registry of factories, so the agent does not know the backends and tests can register ones
// on in-memory kernels.
import { ConfigError, type BackendConfig } from '../subnet/config.ts';
import type { Cidr } from '../subnet/cidr.ts';
import type { Underlay } from '../kernel/vxlan.ts';
import type { OverlayBackend } from '../overlay/backend.ts';
import { VxlanBackend } from '../overlay/vxlan/backend.ts';
import { defaultVxlanDevice, parseVxlanConfig } from '../overlay/vxlan/config.ts';
import type { VxlanKernel } from '../overlay/vxlan/kernel.ts';
import { OVS_GRE_TYPE } from '../overlay/ovs-gre/config.ts';
import { ovsGreBackendFromConfig } from '../overlay/ovs-gre/backend.ts';
import type { OvsGreKernel } from '../overlay/ovs-gre/kernel.ts';

export interface BackendContext {
  backend: BackendConfig;
  /** The whole pod network (the config's Network). */
  network: Cidr;
  underlay: Underlay;
  /** VXLAN device name; default flannel.<VNI>. */
  device?: string;
  /** Open vSwitch run directory for ovs-gre. */
  ovsRunDir?: string;
}

/** Builds a backend; throws ConfigError when the Backend options are invalid. */
export type BackendFactory = (ctx: BackendContext) => OverlayBackend;

export class BackendRegistry {
  private readonly factories = new Map<string, BackendFactory>();

  register(type: string, factory: BackendFactory): this {
    this.factories.set(type, factory);
    return this;
  }

  get types(): string[] {
    return [...this.factories.keys()];
  }

  create(ctx: BackendContext): OverlayBackend {
    const factory = this.factories.get(ctx.backend.type);
    if (!factory) {
      throw new ConfigError(`backend type ${JSON.stringify(ctx.backend.type)} is not supported by knet agent (supported: ${this.types.map((t) => JSON.stringify(t)).join(', ')})`);
    }
    return factory(ctx);
  }
}

/** The kernels backends run on; absent ones are the real kernel and OVS daemons. */
export interface BackendKernels {
  vxlan?: VxlanKernel;
  ovsGre?: OvsGreKernel;
}

export function defaultBackends(kernels: BackendKernels = {}): BackendRegistry {
  return new BackendRegistry()
    .register('vxlan', (ctx) => {
      const config = parseVxlanConfig(ctx.backend);
      return new VxlanBackend({
        netns: null, config, device: ctx.device ?? defaultVxlanDevice(config.vni), underlay: ctx.underlay, network: ctx.network,
        ...(kernels.vxlan ? { kernel: kernels.vxlan } : {}),
      });
    })
    .register(OVS_GRE_TYPE, (ctx) => ovsGreBackendFromConfig({
      backend: ctx.backend, network: ctx.network, underlay: ctx.underlay,
      ...(ctx.ovsRunDir ? { ovsRunDir: ctx.ovsRunDir } : {}),
      ...(kernels.ovsGre ? { kernel: kernels.ovsGre } : {}),
    }));
}
