// Turns `knet agent` flags into AgentOptions and a lease source (etcd, or the Kubernetes API
// with --kube-subnet-mgr), runs the agent, stops it cleanly on a signal.
import { isAbsolute } from 'node:path';
import { makeLogger, type Logger } from '../util/log.ts';
import { parseEndpoints, assertEtcdPrefix, SubnetRegistry, type EtcdConnectOptions } from '../subnet/etcd-registry.ts';
import { annotationNames, assertNodeName } from '../subnet/kube-annotations.ts';
import { Agent, type AgentOptions } from './agent.ts';
import { EtcdLeaseSource } from './etcd-source.ts';
import type { LeaseSource } from './lease-source.ts';

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

export type LeaseSourceSpec =
  | { mode: 'etcd'; etcd: EtcdConnectOptions; prefix: string }
  | {
    mode: 'kube';
    kubeconfig?: string;
    apiUrl?: string;
    annotationPrefix: string;
    netConfPath: string;
    nodeName?: string;
    setNodeNetworkUnavailable: boolean;
  };

export interface AgentCommandOptions extends AgentOptions {
  source: LeaseSourceSpec;
}

function boolFlag(name: string, v: unknown): boolean {
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(v)}`);
}

function kubeSpec(f: Record<string, unknown>): LeaseSourceSpec {
  const kubeconfig = str(f.kubeconfig);
  const kubeconfigFile = str(f.kubeconfigFile);
  if (kubeconfig && kubeconfigFile && kubeconfig !== kubeconfigFile) throw new Error('--kubeconfig and --kubeconfig-file name different files; give one');
  const annotationPrefix = String(f.kubeAnnotationPrefix);
  annotationNames(annotationPrefix);
  const netConfPath = String(f.netConfigPath);
  if (!isAbsolute(netConfPath) || /[\0\n]/.test(netConfPath)) throw new Error(`--net-config-path must be an absolute file path, got ${JSON.stringify(netConfPath)}`);
  const spec: LeaseSourceSpec = {
    mode: 'kube', annotationPrefix, netConfPath,
    setNodeNetworkUnavailable: boolFlag('--set-node-network-unavailable', f.setNodeNetworkUnavailable ?? 'true'),
  };
  const file = kubeconfig ?? kubeconfigFile;
  if (file) spec.kubeconfig = file;
  const apiUrl = str(f.kubeApiUrl);
  if (apiUrl) spec.apiUrl = apiUrl;
  const nodeName = str(f.nodeName);
  if (nodeName) {
    assertNodeName(nodeName, '--node-name');
    spec.nodeName = nodeName;
  }
  return spec;
}

function etcdSpec(f: Record<string, unknown>): LeaseSourceSpec {
  const prefix = String(f.etcdPrefix);
  assertEtcdPrefix(prefix);
  const password = str(f.etcdPassword) ?? str(process.env.KNET_ETCD_PASSWORD);
  const etcd: EtcdConnectOptions = { endpoints: parseEndpoints(String(f.etcdEndpoints)) };
  for (const [k, flag] of [['caFile', 'etcdCafile'], ['certFile', 'etcdCertfile'], ['keyFile', 'etcdKeyfile'], ['username', 'etcdUsername']] as const) {
    const v = str(f[flag]);
    if (v) etcd[k] = v;
  }
  if (password) etcd.password = password;
  return { mode: 'etcd', etcd, prefix };
}

export function agentOptionsFromFlags(f: Record<string, unknown>, log: Logger): AgentCommandOptions {
  const backend = f.iptablesBackend;
  if (backend !== 'nft' && backend !== 'legacy') throw new Error(`--iptables-backend must be nft or legacy, got ${JSON.stringify(backend)}`);
  const o: AgentCommandOptions = {
    source: f.kubeSubnetMgr === true ? kubeSpec(f) : etcdSpec(f),
    subnetFile: String(f.subnetFile),
    healthzPort: Number(f.healthzPort),
    metricsPort: Number(f.metricsPort),
    ipMasq: f.ipMasq !== false,
    iptablesBackend: backend,
    renewMarginMinutes: Number(f.subnetLeaseRenewMargin),
    resyncSeconds: Number(f.resyncPeriod),
    log,
  };
  const iface = str(f.iface);
  const publicIP = str(f.publicIp);
  const device = str(f.vxlanDevice);
  if (iface) o.iface = iface;
  if (publicIP) o.publicIP = publicIP;
  if (device) o.device = device;
  const ovsRunDir = str(f.ovsRundir);
  if (ovsRunDir) o.ovsRunDir = ovsRunDir;
  return o;
}

/** The kube source's modules (the Kubernetes client, ~1 s to load) load only when it is used. */
export async function leaseSourceFromSpec(spec: LeaseSourceSpec, log: Logger): Promise<LeaseSource> {
  if (spec.mode === 'etcd') return new EtcdLeaseSource({ registry: SubnetRegistry.connect(spec.etcd, spec.prefix) });
  const { loadKubeConfig } = await import('../k8s/kubeconfig.ts');
  const { KubeLeaseSource } = await import('./kube-source.ts');
  const kubeConfig = loadKubeConfig({ ...(spec.kubeconfig ? { kubeconfig: spec.kubeconfig } : {}), ...(spec.apiUrl ? { apiUrl: spec.apiUrl } : {}) });
  return new KubeLeaseSource({
    kubeConfig, netConfPath: spec.netConfPath, annotationPrefix: spec.annotationPrefix, setNodeNetworkUnavailable: spec.setNodeNetworkUnavailable, log,
    ...(spec.nodeName ? { nodeName: spec.nodeName } : {}),
  });
}

export async function runAgentCommand(flags: Record<string, unknown>): Promise<void> {
  const log = makeLogger('knet-agent');
  const o = agentOptionsFromFlags(flags, log);
  const agent = new Agent(o, { source: await leaseSourceFromSpec(o.source, log) });
  const onSignal = (sig: string) => {
    log.info({ sig }, 'stopping; the data plane stays as it is');
    agent.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await agent.run();
}
