// Turns `knet agent` flags into AgentOptions and a lease source, runs the agent, stops it
// cleanly on a signal.
import { makeLogger } from '../util/log.ts';
import { parseEndpoints, assertEtcdPrefix, SubnetRegistry, type EtcdConnectOptions } from '../subnet/etcd-registry.ts';
import { Agent, type AgentOptions } from './agent.ts';
import { EtcdLeaseSource } from './etcd-source.ts';
import type { LeaseSource } from './lease-source.ts';

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

export function agentOptionsFromFlags(f: Record<string, unknown>, log: AgentOptions['log']): AgentOptions & { etcd: EtcdConnectOptions; prefix: string } {
  const backend = f.iptablesBackend;
  if (backend !== 'nft' && backend !== 'legacy') throw new Error(`--iptables-backend must be nft or legacy, got ${JSON.stringify(backend)}`);
  const prefix = String(f.etcdPrefix);
  assertEtcdPrefix(prefix);
  const password = str(f.etcdPassword) ?? str(process.env.KNET_ETCD_PASSWORD);
  const etcd: EtcdConnectOptions = { endpoints: parseEndpoints(String(f.etcdEndpoints)) };
  for (const [k, flag] of [['caFile', 'etcdCafile'], ['certFile', 'etcdCertfile'], ['keyFile', 'etcdKeyfile'], ['username', 'etcdUsername']] as const) {
    const v = str(f[flag]);
    if (v) etcd[k] = v;
  }
  if (password) etcd.password = password;
  const o: AgentOptions & { etcd: EtcdConnectOptions; prefix: string } = {
    etcd,
    prefix,
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

export function leaseSourceFromFlags(o: { etcd: EtcdConnectOptions; prefix: string }): LeaseSource {
  return new EtcdLeaseSource({ registry: SubnetRegistry.connect(o.etcd, o.prefix) });
}

export async function runAgentCommand(flags: Record<string, unknown>): Promise<void> {
  const log = makeLogger('knet-agent');
  const o = agentOptionsFromFlags(flags, log);
  const agent = new Agent(o, { source: leaseSourceFromFlags(o) });
  const onSignal = (sig: string) => {
    log.info({ sig }, 'stopping; the data plane stays as it is');
    agent.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await agent.run();
}
