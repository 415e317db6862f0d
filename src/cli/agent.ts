// `knet agent`: flannel-compatible subnet leases, in etcd or from the Node's podCIDR (the kube
// subnet manager), and a self-healing overlay. Flag names follow flanneld's where they mean the
// same thing.
import type { Command } from 'commander';

function intFlag(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the node agent: lease a pod subnet (in etcd with flannel\'s keys, or the Node\'s podCIDR with --kube-subnet-mgr) and program the VXLAN or OVS GRE overlay')
    .option('--kube-subnet-mgr', 'take the subnet from this Node\'s spec.podCIDR and learn peers from Node annotations, as flannel\'s kube subnet manager (no etcd)')
    .option('--kubeconfig <file>', 'kube subnet manager: kubeconfig for the API server (default: in-cluster config, then ~/.kube/config)')
    .option('--kubeconfig-file <file>', 'flannel\'s name for --kubeconfig')
    .option('--kube-api-url <url>', 'kube subnet manager: API server URL, overriding the kubeconfig\'s')
    .option('--kube-annotation-prefix <prefix>', 'kube subnet manager: prefix of the Node annotations', 'flannel.alpha.coreos.com')
    .option('--net-config-path <file>', 'kube subnet manager: flannel\'s network config (net-conf.json)', '/etc/kube-flannel/net-conf.json')
    .option('--node-name <name>', 'kube subnet manager: this node\'s name (default: $NODE_NAME, else the node of the pod $POD_NAMESPACE/$POD_NAME)')
    .option('--set-node-network-unavailable <true|false>', 'kube subnet manager: set the Node\'s NetworkUnavailable condition to False once the lease is in place', 'true')
    .option('--etcd-endpoints <urls>', 'comma-separated etcd URLs', 'http://127.0.0.1:4001,http://127.0.0.1:2379')
    .option('--etcd-prefix <path>', 'etcd key prefix', '/coreos.com/network')
    .option('--etcd-cafile <file>', 'CA certificate for etcd TLS')
    .option('--etcd-certfile <file>', 'client certificate for etcd TLS')
    .option('--etcd-keyfile <file>', 'client key for etcd TLS')
    .option('--etcd-username <name>', 'etcd user')
    .option('--etcd-password <password>', 'etcd password (or env KNET_ETCD_PASSWORD)')
    .option('--iface <name>', 'underlay interface (default: the default route\'s)')
    .option('--public-ip <ip>', 'IP peers use to reach this node (default: the interface\'s first IPv4)')
    .option('--subnet-file <path>', 'where to write the subnet env file', '/run/flannel/subnet.env')
    .option('--healthz-port <n>', 'serve /healthz on 127.0.0.1:N (0: off)', intFlag('--healthz-port', 0, 65535), 0)
    .option('--metrics-port <n>', 'serve /metrics on 127.0.0.1:N (0: off)', intFlag('--metrics-port', 0, 65535), 0)
    .option('--no-ip-masq', 'do not install masquerade rules for traffic leaving the pod network')
    .option('--iptables-backend <nft|legacy>', 'iptables backend for masquerade rules', 'nft')
    .option('--subnet-lease-renew-margin <minutes>', 'renew the lease this long before it expires', intFlag('--subnet-lease-renew-margin', 1, 1439), 60)
    .option('--resync-period <seconds>', 'full reconcile period', intFlag('--resync-period', 1, 86400), 60)
    .option('--vxlan-device <name>', 'VXLAN device name (default flannel.<VNI>)')
    .option('--ovs-rundir <dir>', 'Open vSwitch run directory (db.sock, BRIDGE.mgmt) for the ovs-gre backend', '/var/run/openvswitch')
    .action(async (opts: Record<string, unknown>) => {
      const { runAgentCommand } = await import('../agent/command.ts');
      await runAgentCommand(opts);
    });
}
