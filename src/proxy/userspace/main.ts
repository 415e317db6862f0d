// A standalone userspace-mode proxy over a manifest directory, for process-level tests and the
// benchmark (run inside a namespace: ip netns exec NS node --import tsx main.ts ...). The real
// command is `knet proxy --proxy-mode userspace` (src/cli/proxy-userspace.ts).
import { parseArgs } from 'node:util';
import { ManifestDirSource } from '../../k8s/manifest-dir.ts';
import { proxySettingsFromConfig } from '../../rules/config.ts';
import { makeLogger } from '../../util/log.ts';
import { ProxyDaemon } from '../daemon.ts';
import { parseBindAddress } from '../health.ts';
import { ProxyMetrics } from '../metrics.ts';
import { UserspaceDataPlane } from './dataplane.ts';
import { kernelIptables } from '../../kernel/iptables.ts';

const { values: a } = parseArgs({
  options: {
    manifests: { type: 'string' },
    'node-ip': { type: 'string' },
    'node-name': { type: 'string', default: 'node1' },
    backend: { type: 'string', default: 'nft' },
    metrics: { type: 'string', default: '' },
    'udp-idle-ms': { type: 'string', default: '250' },
    'tcp-idle-ms': { type: 'string', default: '3600000' },
    'max-udp-flows': { type: 'string', default: '4096' },
    'min-sync-ms': { type: 'string', default: '100' },
    // Forwarder processes, as `knet proxy --userspace-workers` (0: the data path in this process).
    workers: { type: 'string', default: '1' },
  },
});
if (!a.manifests) throw new Error('--manifests is required');
if (a.backend !== 'nft' && a.backend !== 'legacy') throw new Error('--backend: nft or legacy');
const num = (s: string, what: string) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${what}: expected a whole number`);
  return n;
};

const log = makeLogger('knet-proxy-userspace');
const settings = proxySettingsFromConfig(undefined, { nodeName: a['node-name']!, nodeIPs: a['node-ip'] ? [a['node-ip']] : [] });
const metrics = new ProxyMetrics();
const dataplane = new UserspaceDataPlane({
  iptables: kernelIptables({ backend: a.backend, waitSeconds: 5 }), settings, log, registry: metrics.registry,
  udpIdleMs: num(a['udp-idle-ms']!, '--udp-idle-ms'), tcpIdleMs: num(a['tcp-idle-ms']!, '--tcp-idle-ms'),
  maxUdpFlows: num(a['max-udp-flows']!, '--max-udp-flows'), workers: num(a.workers!, '--workers'),
});
const daemon = new ProxyDaemon({
  source: new ManifestDirSource({ dir: a.manifests, nodeName: a['node-name']!, pollMs: 60_000, debounceMs: 5 }),
  dataplane, log, metrics, minSyncPeriodMs: num(a['min-sync-ms']!, '--min-sync-ms'), syncPeriodMs: 30_000,
});
const server = a.metrics ? await metrics.serve(parseBindAddress(a.metrics).host, parseBindAddress(a.metrics).port) : null;
const stop = () => {
  void daemon.stop().finally(() => {
    dataplane.close();
    server?.close();
    process.exit(0);
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
await daemon.start();
