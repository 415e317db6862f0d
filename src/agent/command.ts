// Turns `knet agent` flags into AgentOptions, runs the agent, stops it cleanly on a signal.
import { makeLogger } from '../util/log.ts';
import { parseEndpoints, assertEtcdPrefix } from '../subnet/etcd-registry.ts';
import { Agent, type AgentOptions } from './agent.ts';

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

export function agentOptionsFromFlags(f: Record<string, unknown>, log: AgentOptions['log']): AgentOptions {
  const backend = f.iptablesBackend;
  if (backend !== 'nft' && backend !== 'legacy') throw new Error(`--iptables-backend must be nft or legacy, got ${JSON.stringify(backend)}`);
  const prefix = String(f.etcdPrefix);
  assertEtcdPrefix(prefix);
  const password = str(f.etcdPassword) ?? str(process.env.KNET_ETCD_PASSWORD);
  const etcd: AgentOptions['etcd'] = { endpoints: parseEndpoints(String(f.etcdEndpoints)) };
  for (const [k, flag] of [['caFile', 'etcdCafile'], ['certFile', 'etcdCertfile'], ['keyFile', 'etcdKeyfile'], ['username', 'etcdUsername']] as const) {
    const v = str(f[flag]);
    if (v) etcd[k] = v;
  }
  if (password) etcd.password = password;
  const o: AgentOptions = {
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
  // Test hook: a short TTL makes renewal observable without waiting a day.
  const ttl = process.env.KNET_AGENT_LEASE_TTL_SECONDS;
  if (ttl) {
    if (!/^\d+$/.test(ttl) || Number(ttl) < 10) throw new Error(`KNET_AGENT_LEASE_TTL_SECONDS must be an integer >= 10, got ${JSON.stringify(ttl)}`);
    o.leaseTtlSeconds = Number(ttl);
  }
  return o;
}

export async function runAgentCommand(flags: Record<string, unknown>): Promise<void> {
  const log = makeLogger('knet-agent');
  const agent = new Agent(agentOptionsFromFlags(flags, log));
  const onSignal = (sig: string) => {
    log.info({ sig }, 'stopping; the data plane stays as it is');
    agent.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await agent.run();
}
