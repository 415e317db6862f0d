// The lab's shape, planned by pure functions: namespace names, underlay addresses, the flannel
// network config, the Service CIDR and the NodePort range. Everything a `lab up` creates is
// named here, so `lab down` and the tests can find exactly those objects again.
import { createHash } from 'node:crypto';
import type { Node } from '../model/k8s.ts';

export type OverlayBackend = 'vxlan' | 'ovs-gre';
export const BACKENDS: readonly OverlayBackend[] = ['vxlan', 'ovs-gre'];
export type ProxyMode = 'iptables' | 'nftables' | 'userspace';
export type SubnetManager = 'kube' | 'etcd';
export const SUBNET_MANAGERS: readonly SubnetManager[] = ['kube', 'etcd'];

export const UNDERLAY_BRIDGE = 'br0';
/**
 * ovs-gre: the OVS bridge in each node that holds the underlay port eth0 and the node's address
 * (the userspace datapath sends tunnel packets through it; src/overlay/ovs-gre/README.md).
 */
export const OVS_UNDERLAY_BRIDGE = 'brphy';
export const UNDERLAY_PREFIX = '192.168.50';
export const UNDERLAY_GATEWAY = `${UNDERLAY_PREFIX}.254`;
export const OUTSIDE_IP = `${UNDERLAY_PREFIX}.200`;
export const POD_NETWORK = '10.244.0.0/16';
/** The book's --service-cluster-ip-range. */
export const SERVICE_CIDR = '10.254.0.0/16';
export const NODEPORT_RANGE: readonly [number, number] = [30000, 32767];
/** The etcd node agents lease subnets in (flannel's etcd mode), on the underlay. */
export const ETCD_PORT = 2379;
/**
 * The lab API's own etcd (/registry/): on the underlay namespace's loopback only, so nothing
 * but the lab API reaches it (a cluster's kube-apiserver etcd is not on the node network either).
 */
export const REGISTRY_ETCD_PORT = 2381;
export const API_PORT = 6443;
/** kube-controller-manager's --node-cidr-mask-size for IPv4 (the lab's subnets are /24s, as flannel's). */
export const NODE_CIDR_MASK_SIZE = 24;
export const MAX_NODES = 100;
export const FLANNEL_PREFIX = '/coreos.com/network';

export interface LabNodePlan {
  /** Kubernetes node name (node-1 ...). */
  name: string;
  /** Network namespace holding the node. */
  ns: string;
  /** Underlay (public) address. */
  ip: string;
  /** The veth end on the underlay bridge (in the underlay namespace). */
  uplink: string;
}

export interface LabPlan {
  labId: string;
  nsPrefix: string;
  backend: OverlayBackend;
  proxyMode: ProxyMode;
  underlay: { ns: string; bridge: string; ip: string; prefixLen: number };
  outside: { ns: string; ip: string; uplink: string };
  nodes: LabNodePlan[];
  etcdEndpoint: string;
  apiServer: string;
  /**
   * Where node pod subnets come from: the Nodes' podCIDR, which the lab API allocates (kube
   * mode, what most flannel installs run), or leases in etcd (flannel's etcd mode; a state file
   * written before this field existed means etcd).
   */
  subnetManager?: SubnetManager;
  networkConfig: string;
  podNetwork: string;
  serviceCIDR: string;
  nodePortRange: readonly [number, number];
}

export interface PlanInput {
  labId: string;
  nodes: number;
  /** Default `knl-<labId>-`; tests pass a `knt-l...-` prefix. */
  nsPrefix?: string;
  backend?: string;
  proxyMode?: string;
  /** Default kube. */
  subnetManager?: string;
}

const LAB_ID = /^[a-z0-9]{1,12}$/;
const PREFIX = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}-$/;

export function defaultPrefix(labId: string): string {
  return `knl-${labId}-`;
}

export function planLab(i: PlanInput): LabPlan {
  if (!LAB_ID.test(i.labId)) throw new Error(`lab id must be 1-12 lower-case letters or digits: ${JSON.stringify(i.labId)}`);
  if (!Number.isInteger(i.nodes) || i.nodes < 1 || i.nodes > MAX_NODES) throw new Error(`--nodes must be an integer from 1 to ${MAX_NODES}, got ${i.nodes}`);
  const backend = (i.backend ?? 'vxlan') as OverlayBackend;
  if (!BACKENDS.includes(backend)) throw new Error(`--backend must be ${BACKENDS.join(' or ')}, got ${JSON.stringify(i.backend)}`);
  const proxyMode = i.proxyMode ?? 'iptables';
  if (proxyMode !== 'iptables' && proxyMode !== 'nftables' && proxyMode !== 'userspace') throw new Error(`--proxy-mode must be iptables, nftables or userspace, got ${JSON.stringify(proxyMode)}`);
  const subnetManager = (i.subnetManager ?? 'kube') as SubnetManager;
  if (!SUBNET_MANAGERS.includes(subnetManager)) throw new Error(`--subnet-manager must be ${SUBNET_MANAGERS.join(' or ')}, got ${JSON.stringify(i.subnetManager)}`);
  const nsPrefix = i.nsPrefix ?? defaultPrefix(i.labId);
  if (!PREFIX.test(nsPrefix)) throw new Error(`namespace prefix must end in "-" and hold only letters, digits, "_", "." and "-": ${JSON.stringify(nsPrefix)}`);
  const nodes: LabNodePlan[] = [];
  for (let n = 1; n <= i.nodes; n++) {
    nodes.push({ name: `node-${n}`, ns: `${nsPrefix}node-${n}`, ip: `${UNDERLAY_PREFIX}.${n}`, uplink: `n${n}` });
  }
  return {
    labId: i.labId,
    nsPrefix,
    backend,
    proxyMode,
    subnetManager,
    underlay: { ns: `${nsPrefix}underlay`, bridge: UNDERLAY_BRIDGE, ip: UNDERLAY_GATEWAY, prefixLen: 24 },
    outside: { ns: `${nsPrefix}outside`, ip: OUTSIDE_IP, uplink: 'outside' },
    nodes,
    etcdEndpoint: `http://${UNDERLAY_GATEWAY}:${ETCD_PORT}`,
    apiServer: `http://${UNDERLAY_GATEWAY}:${API_PORT}`,
    // ovs-gre: the lab's OVS daemons run without the kernel module (userspace datapath).
    networkConfig: JSON.stringify({ Network: POD_NETWORK, Backend: backend === 'ovs-gre' ? { Type: backend, DatapathType: 'netdev' } : { Type: backend } }),
    podNetwork: POD_NETWORK,
    serviceCIDR: SERVICE_CIDR,
    nodePortRange: NODEPORT_RANGE,
  };
}

/** Every namespace of a lab starts with its prefix; a pod's namespace is derived from its key. */
export function podNetnsName(nsPrefix: string, namespace: string, name: string): string {
  const h = createHash('sha256').update(`${namespace}/${name}`).digest('hex').slice(0, 10);
  return `${nsPrefix}p-${h}`;
}

/**
 * The `ip batch` lines that wire the underlay: a bridge, one veth per node and the outside host.
 * ovs-gre: a node's address and default route go on its OVS bridge `brphy` once OVS runs
 * (`ovsNodeLinks`), so here eth0 is only brought up.
 */
export function underlayLinks(p: LabPlan): { underlay: string[]; perNode: Map<string, string[]>; outside: string[] } {
  const u = p.underlay;
  const underlay = [`link add ${u.bridge} type bridge`, `addr add ${u.ip}/${u.prefixLen} dev ${u.bridge}`, `link set ${u.bridge} up`];
  const perNode = new Map<string, string[]>();
  for (const n of p.nodes) {
    underlay.push(`link add ${n.uplink} type veth peer name eth0 netns ${n.ns}`, `link set ${n.uplink} master ${u.bridge} up`);
    perNode.set(n.ns, p.backend === 'ovs-gre' ? ['link set eth0 up'] : [`addr add ${n.ip}/${u.prefixLen} dev eth0`, 'link set eth0 up', `route add default via ${u.ip}`]);
  }
  underlay.push(`link add ${p.outside.uplink} type veth peer name eth0 netns ${p.outside.ns}`, `link set ${p.outside.uplink} master ${u.bridge} up`);
  const outside = [`addr add ${p.outside.ip}/${u.prefixLen} dev eth0`, 'link set eth0 up'];
  return { underlay, perNode, outside };
}

/** ovs-gre: the node's default route, once its address is on `brphy`. */
export function ovsNodeRoute(p: LabPlan): string {
  return `route replace default via ${p.underlay.ip} dev ${OVS_UNDERLAY_BRIDGE}`;
}

/** The plan's subnet manager (a plan from before the field existed ran etcd mode). */
export function subnetManagerOf(p: LabPlan): SubnetManager {
  return p.subnetManager ?? 'etcd';
}

/**
 * The node agent's command line after `knet agent`: the subnet manager's flags (kube: the Node
 * and its kubeconfig, flannel's net-conf.json; etcd: the flannel etcd), then the common ones.
 */
export function agentArgs(p: LabPlan, node: LabNodePlan, files: { subnetFile: string; kubeconfig: string; netConf: string; ovsRunDir: string }): string[] {
  const source = subnetManagerOf(p) === 'kube'
    ? ['--kube-subnet-mgr', '--kubeconfig', files.kubeconfig, '--node-name', node.name, '--net-config-path', files.netConf]
    : ['--etcd-endpoints', p.etcdEndpoint, '--etcd-prefix', FLANNEL_PREFIX];
  return [...source, '--iface', agentIface(p), '--public-ip', node.ip, '--subnet-file', files.subnetFile, '--iptables-backend', 'nft',
    '--resync-period', '30', '--healthz-port', '10260', ...(p.backend === 'ovs-gre' ? ['--ovs-rundir', files.ovsRunDir] : [])];
}

/**
 * A lab node's Node object, with what a kubelet would report (the lab has none: its node
 * processes are the agent and proxy). podCIDR null: left for the lab API to allocate (kube mode).
 */
export function labNodeObject(node: LabNodePlan, podCIDR: string | null, now: Date): Node {
  return {
    metadata: { name: node.name, labels: { 'kubernetes.io/hostname': node.name } },
    spec: podCIDR ? { podCIDR, podCIDRs: [podCIDR] } : {},
    status: {
      addresses: [{ type: 'InternalIP', address: node.ip }, { type: 'Hostname', address: node.name }],
      conditions: [{ type: 'Ready', status: 'True', reason: 'LabNodeReady', message: 'the lab node\'s agent and proxy are running', lastTransitionTime: now.toISOString().replace(/\.\d+Z$/, 'Z') }],
    },
  };
}

/** The interface the node agent uses for its public address. */
export function agentIface(p: LabPlan): string {
  return p.backend === 'ovs-gre' ? OVS_UNDERLAY_BRIDGE : 'eth0';
}

/** The KubeProxyConfiguration every node's proxy runs with. */
export function kubeProxyConfig(p: LabPlan, node: LabNodePlan, masqueradeAll: boolean): string {
  return [
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
    'kind: KubeProxyConfiguration',
    `mode: ${p.proxyMode}`,
    `hostnameOverride: ${node.name}`,
    `clusterCIDR: ${p.podNetwork}`,
    `metricsBindAddress: 127.0.0.1:10249`,
    `healthzBindAddress: 0.0.0.0:10256`,
    // The masquerade settings and sync periods are read from the mode's own section.
    p.proxyMode === 'nftables' ? 'nftables:' : 'iptables:',
    `  masqueradeAll: ${masqueradeAll}`,
    '  minSyncPeriod: 0s',
    '  syncPeriod: 30s',
    '',
  ].join('\n');
}

/**
 * A kubeconfig for the lab API (plain HTTP inside the lab's underlay), with the bearer token of
 * one of the lab's users (the API's token file names them).
 */
export function kubeconfigText(server: string, token: string, user = 'knet-lab'): string {
  return [
    'apiVersion: v1', 'kind: Config', 'current-context: knet-lab',
    'clusters:', '- name: knet-lab', '  cluster:', `    server: ${server}`,
    // The lab API is plain HTTP inside the lab; client-node only allows that with this set.
    '    insecure-skip-tls-verify: true',
    'users:', `- name: ${user}`, '  user:', `    token: ${token}`,
    'contexts:', '- name: knet-lab', '  context:', '    cluster: knet-lab', `    user: ${user}`, '',
  ].join('\n');
}

/** The CNI conflist written per node: knet's plugin, reading the node agent's subnet file. */
export function cniConflist(o: { subnetFile: string; dataDir: string }): string {
  return JSON.stringify({
    cniVersion: '1.1.0',
    name: 'knet',
    plugins: [{ type: 'knet', subnetFile: o.subnetFile, bridge: 'cni0', hairpinMode: true, dataDir: o.dataDir, iptablesBackend: 'nft' }],
  }, null, 2) + '\n';
}

/** The plugin config a runtime hands one plugin of a list: name and cniVersion injected. */
export function pluginConfFromList(conflist: string): Record<string, unknown> {
  const l = JSON.parse(conflist) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  const first = l.plugins[0];
  if (!first) throw new Error('conflist has no plugins');
  return { cniVersion: l.cniVersion, name: l.name, ...first };
}
