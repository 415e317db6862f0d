// `knet proxy`: the kube-proxy replacement (iptables or nftables mode, or a userspace balancer).
// Options here; the wiring (proxy-run.ts) loads when the command runs. The sources (src/k8s), the
// daemon and data paths (src/proxy) and the shared renderers (src/rules) do the work.
import { Option, type Command } from 'commander';

export interface ProxyCliOptions {
  config?: string;
  kubeconfig?: string;
  hostnameOverride?: string;
  manifests?: string;
  manifestsSettle?: string;
  cleanup?: boolean;
  iptablesBackend: string;
  proxyMode?: string;
  healthzBindAddress?: string;
  metricsBindAddress?: string;
  nodeIp: string[];
  lockTimeout: string;
  fullSyncPeriod?: string;
  userspaceWorkers: string;
  nftablesNetlink?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];

export function registerProxy(program: Command): void {
  program
    .command('proxy')
    .description('kube-proxy compatible service proxy: watch Services and EndpointSlices, program iptables or nftables (or balance in userspace)')
    .option('--config <file>', 'KubeProxyConfiguration YAML (kube-proxy defaults when absent; refused, as by kube-proxy, when invalid)')
    .option('--kubeconfig <file>', 'kubeconfig for the API server (default: in-cluster config, then ~/.kube/config)')
    .option('--hostname-override <name>', 'this node\'s name (default: config hostnameOverride, then the host name)')
    .option('--manifests <dir>', 'read Services/EndpointSlices/Endpoints from a directory of manifests (watched; waited for if missing) instead of the API; write each file elsewhere and rename it into place')
    .option('--manifests-settle <duration>', 'with --manifests: how long a changed file must stay unchanged before it is read (default 500ms, so a file written in place is read whole; 0s when every file is renamed into place)')
    .option('--cleanup', 'remove every rule the proxy (or kube-proxy) wrote in any mode (iptables in both backends, nftables, userspace portals), and exit')
    .option('--proxy-mode <mode>', 'iptables (kube-proxy\'s rules), nftables (kube-proxy\'s nftables table) or userspace (a TCP/UDP balancer behind portal rules); default: the config\'s mode, else iptables. Starting one mode removes the others\' rules')
    .option('--iptables-backend <mode>', 'auto (detect like iptables-wrappers), nft or legacy', 'auto')
    .option('--healthz-bind-address <addr>', 'HOST:PORT for /healthz and /livez (default 0.0.0.0:10256; "" disables)')
    .option('--metrics-bind-address <addr>', 'HOST:PORT for /metrics (default 127.0.0.1:10249; "" disables)')
    .option('--node-ip <ip>', 'node IP (repeatable or comma-separated; default: from the Node object)', collect, [])
    .option('--lock-timeout <seconds>', 'seconds to wait for the xtables lock', '5')
    .option('--full-sync-period <duration>', 'full re-render and reconcile period (e.g. 1h)')
    .option('--no-nftables-netlink', 'nftables mode: write every transaction through nft -f; by default those of services go as netlink batches from the proxy itself (the messages nft would send, without nft first reading its cache of the whole table; 10k services: one change 78 ms instead of 355 ms; the first full sync 8.6 s instead of 14 s where net.core.wmem_max lets the socket take megabyte batches); service chains are then flushed and refilled in place, as kube-proxy does, not written in front of their old rules')
    // The opt-in of an earlier version: batches are the default now.
    .addOption(new Option('--nftables-netlink').hideHelp())
    .option('--userspace-workers <n>', 'userspace mode: forwarder processes that carry the traffic (1-8; Bun executables built beside the CLI, several share TCP ports without affinity); 0: in the proxy process itself, on Node', '1')
    .action(async (o: ProxyCliOptions) => {
      const [{ runProxy }, { makeLogger }] = await Promise.all([import('./proxy-run.ts'), import('../util/log.ts')]);
      await runProxy(o, makeLogger('knet-proxy'));
    });
}

