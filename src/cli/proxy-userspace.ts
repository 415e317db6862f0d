// `knet proxy --proxy-mode userspace`: builds the userspace data path for runProxy
// (src/cli/proxy-run.ts), which keeps sources, daemon, health and metrics as in iptables mode.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { IptablesTarget } from '../kernel/iptables.ts';
import type { ProxySettings } from '../rules/types.ts';
import type { KubeProxyConfig } from '../rules/config.ts';
import type { UserspaceDataPlane } from '../proxy/userspace/dataplane.ts';

export interface UserspaceCliInput {
  target: IptablesTarget;
  settings: ProxySettings;
  log: Logger;
  /** The daemon's registry (daemon.metrics.registry), so /metrics serves the data-path metrics. */
  registry: Registry;
  /** The parsed KubeProxyConfiguration: its udpIdleTimeout and bindAddress are used. */
  config?: Pick<KubeProxyConfig, 'udpIdleTimeoutMs' | 'bindAddress'>;
  /** Forwarder processes (--userspace-workers); 0 or absent: the data path runs in the proxy process. */
  workers?: number;
}

export async function createUserspaceDataPlane(i: UserspaceCliInput): Promise<UserspaceDataPlane> {
  const udp = i.config?.udpIdleTimeoutMs;
  const bind = i.config?.bindAddress;
  const { UserspaceDataPlane } = await import('../proxy/userspace/dataplane.ts');
  const { kernelIptables } = await import('../kernel/iptables.ts');
  return new UserspaceDataPlane({
    iptables: kernelIptables(i.target), settings: i.settings, log: i.log, registry: i.registry,
    ...(i.workers ? { workers: i.workers } : {}),
    ...(udp !== undefined ? { udpIdleMs: udp } : {}),
    // An unspecified bind address listens everywhere and REDIRECTs; a specific one is DNATed to.
    ...(bind && bind !== '0.0.0.0' && bind !== '::' ? { bindAddress: bind } : {}),
  });
}

/** `knet proxy --cleanup` for this mode: removes the portal jumps and chains; returns how many. */
export async function cleanupUserspace(t: IptablesTarget): Promise<number> {
  const { cleanupPortals } = await import('../proxy/userspace/dataplane.ts');
  const { kernelIptables } = await import('../kernel/iptables.ts');
  return cleanupPortals(kernelIptables(t));
}
