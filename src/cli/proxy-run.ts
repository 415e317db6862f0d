// `knet proxy`'s run: sources, data plane, daemon, health and metrics wired together. Loaded only
// when `knet proxy` runs, so other commands (`knet rules` most) do not pay for pino and the rest.
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import type { Server } from 'node:http';
import type { Logger } from '../util/log.ts';
import { parseDuration, parseKubeProxyConfig, settingsFromConfig } from '../rules/config.ts';
import type { IpFamily, ProxySettings } from '../rules/types.ts';
import type { DataPlane } from '../proxy/dataplane.ts';
import { readNodeFacts } from '../k8s/node.ts';
import { ipJson } from '../kernel/iproute.ts';
import type { IptablesBackend, IptablesTarget } from '../kernel/iptables.ts';
import { parseIP } from '../util/ip.ts';
import type { ProxyCliOptions } from './proxy.ts';

function backendOf(s: string): IptablesBackend | 'auto' {
  if (s === 'auto' || s === 'nft' || s === 'legacy') return s;
  throw new Error(`--iptables-backend: expected auto, nft or legacy, got ${JSON.stringify(s)}`);
}

async function interfaceAddresses(): Promise<Array<{ iface: string; cidr: string }>> {
  const links = await ipJson<{ ifname: string; addr_info?: Array<{ local: string; prefixlen: number }> }>(null, ['addr', 'show']);
  return links.flatMap((l) => (l.addr_info ?? []).map((a) => ({ iface: l.ifname, cidr: `${a.local}/${a.prefixlen}` })));
}

/** --manifests-settle in ms (undefined: the source's default). */
function manifestsSettle(o: ProxyCliOptions): number | undefined {
  if (o.manifestsSettle === undefined) return undefined;
  if (!o.manifests) throw new Error('--manifests-settle: only with --manifests');
  const ms = parseDuration(o.manifestsSettle, '--manifests-settle');
  if (ms < 0 || ms > 60_000) throw new Error('--manifests-settle: from 0s to 1m');
  return ms;
}

export async function runProxy(o: ProxyCliOptions, log: Logger): Promise<void> {
  // A daemon's heap should stay small rather than grow fast: at 10k services in nftables mode
  // this took peak RSS from 175 to 161 MB with no measurable cost to sync times
  // (scripts/bench/proxy). Set here, not on the #! line, because it slows `knet rules` by a
  // quarter.
  setFlagsFromString('--optimize-for-size');
  const lockWait = Number(o.lockTimeout);
  if (!Number.isInteger(lockWait) || lockWait < 0) throw new Error('--lock-timeout: expected whole seconds');
  const requested = backendOf(o.iptablesBackend);
  const settleMs = manifestsSettle(o);
  const { detectBackend } = await import('../proxy/backend.ts');
  const { cleanupIptables } = await import('../proxy/jumps.ts');
  const { kernelIptables } = await import('../kernel/iptables.ts');

  const { cleanupNftables } = await import('./proxy-nftables.ts');
  // Every mode's rules, in both iptables backends: what a mode switch or --cleanup removes.
  const cleanupIptablesModes = async () => {
    for (const backend of ['nft', 'legacy'] as const) {
      try {
        const r = await cleanupIptables(kernelIptables({ backend, waitSeconds: lockWait }));
        const portals = await (await import('./proxy-userspace.ts')).cleanupUserspace({ backend, waitSeconds: lockWait });
        log.info({ backend, ...r, portalRules: portals }, 'cleaned up iptables rules');
      } catch (err) {
        log.warn({ backend, err: String(err) }, 'iptables cleanup failed (backend unusable?)');
      }
    }
  };
  if (o.cleanup) {
    await cleanupIptablesModes();
    log.info({ tables: await cleanupNftables(log) }, 'cleaned up nftables tables');
    return;
  }

  const yamlText = o.config ? readFileSync(o.config, 'utf8') : undefined;
  const cfg = parseKubeProxyConfig(yamlText, o.proxyMode, o.config);
  for (const w of cfg.warnings) log.warn({ config: o.config }, w);
  const mode = cfg.mode;
  if (mode !== 'iptables' && mode !== 'userspace' && mode !== 'nftables') throw new Error(`proxy mode ${JSON.stringify(mode)} is not supported by knet proxy (iptables, nftables or userspace)`);
  (await import('../proxy/runner.ts')).validateSyncPeriods(cfg.syncPeriodMs, cfg.minSyncPeriodMs, mode === 'nftables' ? 'nftables' : 'iptables');
  const workers = Number(o.userspaceWorkers);
  if (!/^\d+$/.test(o.userspaceWorkers) || workers > 8) throw new Error(`--userspace-workers: expected 0-8, got ${JSON.stringify(o.userspaceWorkers)}`);
  const { hostname } = await import('node:os');
  const nodeName = (o.hostnameOverride ?? cfg.hostnameOverride ?? hostname()).toLowerCase();
  for (const ip of o.nodeIp) if (!parseIP(ip)) throw new Error(`--node-ip: invalid IP ${JSON.stringify(ip)}`);

  // Starting a mode removes what the others left (as kube-proxy does between iptables and nftables).
  if (mode === 'nftables') await cleanupIptablesModes();
  else {
    const n = await cleanupNftables(log);
    if (n) log.info({ tables: n }, 'removed nftables tables of kube-proxy\'s nftables mode');
  }

  let backend: IptablesBackend;
  if (mode === 'nftables') backend = 'nft';
  else if (requested === 'auto') {
    const d = await detectBackend({ waitSeconds: lockWait });
    backend = d.backend;
    log.info({ backend, reason: d.reason }, 'iptables backend chosen');
    if (d.warning) log.warn(d.warning);
  } else backend = requested;
  const target: IptablesTarget = { backend, waitSeconds: lockWait };

  const ifaces = await interfaceAddresses();
  let nodeFacts = { ips: o.nodeIp, podCIDRs: [] as string[] };
  // The config parsed once above; node facts (IPs, pod CIDRs) change with the Node object.
  const makeSettings = (family?: IpFamily): ProxySettings =>
    settingsFromConfig(cfg, { nodeName, nodeIPs: nodeFacts.ips, podCIDRs: nodeFacts.podCIDRs, interfaceAddresses: ifaces, ...(family ? { family } : {}) });
  let settings = makeSettings();

  const { IptablesApplier } = await import('../proxy/iptables-applier.ts');
  const { ProxyDaemon } = await import('../proxy/daemon.ts');
  const { parseBindAddress, serveHealth } = await import('../proxy/health.ts');
  const { ProxyMetrics } = await import('../proxy/metrics.ts');
  const metrics = new ProxyMetrics();
  // Someone else changed the nftables table: sync now rather than at the next period.
  let resync = () => {};
  const dataplane: DataPlane & { setSettings(s: ProxySettings): void } = mode === 'userspace'
    ? await (await import('./proxy-userspace.ts')).createUserspaceDataPlane({ target, settings, log, registry: metrics.registry, workers, config: cfg })
    : mode === 'nftables'
      ? await (await import('./proxy-nftables.ts')).createNftablesDataPlane({ settingsFor: makeSettings, nodeIPs: () => nodeFacts.ips, log, registry: metrics.registry, onForeignChange: () => resync(), netlink: o.nftablesNetlink !== false })
      : new IptablesApplier({ iptables: kernelIptables(target), settings, log, registry: metrics.registry });
  let source;
  if (o.manifests) {
    const { ManifestDirSource } = await import('../k8s/manifest-dir.ts');
    source = new ManifestDirSource({ dir: o.manifests, nodeName, ...(settleMs === undefined ? {} : { settleMs }) });
  } else {
    const { InformerSource } = await import('../k8s/informer.ts');
    source = new InformerSource({ ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}), nodeName, log });
  }
  const fullSyncPeriodMs = o.fullSyncPeriod ? parseDuration(o.fullSyncPeriod, '--full-sync-period') : undefined;
  const daemon = new ProxyDaemon({
    source, dataplane, log, metrics,
    minSyncPeriodMs: cfg.minSyncPeriodMs, syncPeriodMs: cfg.syncPeriodMs,
    ...(fullSyncPeriodMs ? { fullSyncPeriodMs } : {}),
    onNode: (n) => {
      const facts = readNodeFacts(n);
      for (const w of facts.warnings) daemon.warn(`Node ${nodeName}`, w);
      const next = { ips: o.nodeIp.length ? o.nodeIp : facts.ips, podCIDRs: facts.podCIDRs };
      if (JSON.stringify(next) === JSON.stringify(nodeFacts)) return false;
      nodeFacts = next;
      settings = makeSettings();
      dataplane.setSettings(settings);
      log.info({ nodeIPs: settings.nodeIPs, podCIDRs: next.podCIDRs }, 'node facts changed');
      return true;
    },
  });
  resync = () => daemon.runner.run();

  const servers: Server[] = [];
  const healthAddr = o.healthzBindAddress ?? cfg.healthzBindAddress ?? '0.0.0.0:10256';
  if (healthAddr) {
    const a = parseBindAddress(healthAddr);
    servers.push(await serveHealth(daemon.health, a.host, a.port, (p, c) => daemon.metrics.countHealth(p, c)));
  }
  const metricsAddr = o.metricsBindAddress ?? cfg.metricsBindAddress ?? '127.0.0.1:10249';
  if (metricsAddr) {
    const a = parseBindAddress(metricsAddr);
    servers.push(await daemon.metrics.serve(a.host, a.port));
  }
  log.info({ nodeName, mode, backend, source: o.manifests ? `manifests ${o.manifests}` : 'kubernetes API', healthAddr, metricsAddr }, 'knet proxy starting');

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'stopping; rules stay in place');
      void daemon.stop().finally(() => {
        dataplane.close?.();
        for (const s of servers) s.close();
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    daemon.start().catch((err: unknown) => {
      log.error({ err: String(err) }, 'source failed to start');
      stop('error');
    });
  });
}
