// One `knet agent` in process, on fakes: a lease source over an in-memory store (or any source
// a test gives), in-memory overlay kernels, a manual clock, a temp subnet file and a logger
// whose lines the test can read.
import type { ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { defaultBackends } from '../../src/agent/backends.ts';
import { EtcdLeaseSource } from '../../src/agent/etcd-source.ts';
import type { LeaseSource } from '../../src/agent/lease-source.ts';
import { SubnetRegistry } from '../../src/subnet/etcd-registry.ts';
import { subnetEnvEntries } from '../../src/subnet/subnet-env-text.ts';
import type { Underlay } from '../../src/kernel/vxlan.ts';
import { FakeClock } from './fake-clock.ts';
import { FakeOvsGreKernel, FakeVxlanKernel } from './fake-overlay-kernel.ts';
import type { MemoryKv } from './memory-kv.ts';

export const PREFIX = '/coreos.com/network';
export const SUBNETS = `${PREFIX}/subnets/`;

export interface LogLine { level: number; msg: string; [k: string]: unknown }

export interface TestAgent {
  agent: Agent;
  ip: string;
  vxlan: FakeVxlanKernel;
  ovs: FakeOvsGreKernel;
  subnetFile: string;
  logs: LogLine[];
  running: Promise<void>;
  /** Log messages at warn or above. */
  problems(): string[];
  subnetEnv(): Map<string, string> | null;
  masqApplied: number;
}

export interface AgentSetup {
  clock: FakeClock;
  ip: string;
  /** The in-memory etcd; ignored when `source` is given. */
  kv?: MemoryKv;
  source?: LeaseSource;
  ttlSeconds?: number;
  options?: Partial<AgentOptions>;
  readIpForward?: () => Promise<boolean>;
  /** Kernels to reuse (an agent restarted on the same node). */
  vxlan?: FakeVxlanKernel;
  ovs?: FakeOvsGreKernel;
  /** Subnet file to reuse (an agent restarted on the same node). */
  subnetFile?: string;
}

export function startTestAgent(t: ExecutionContext, s: AgentSetup): TestAgent {
  const dir = mkdtempSync(join(tmpdir(), 'knet-agent-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as LogLine); } });
  const source = s.source ?? new EtcdLeaseSource({ registry: new SubnetRegistry(s.kv!, PREFIX), clock: s.clock, random: () => 0, ...(s.ttlSeconds ? { ttlSeconds: s.ttlSeconds } : {}) });
  const vxlan = s.vxlan ?? new FakeVxlanKernel();
  const ovs = s.ovs ?? new FakeOvsGreKernel();
  const subnetFile = s.subnetFile ?? join(dir, 'subnet.env');
  const underlay: Underlay = { iface: 'eth0', publicIP: s.ip, prefixLen: 24, mtu: 1500 };
  const handle = {} as TestAgent;
  const agent = new Agent({
    subnetFile, healthzPort: 0, metricsPort: 0, ipMasq: true, iptablesBackend: 'nft', renewMarginMinutes: 60, resyncSeconds: 5, publicIP: s.ip, log,
    ...s.options,
  }, {
    source, clock: s.clock, backends: defaultBackends({ vxlan, ovsGre: ovs }),
    findUnderlay: async () => underlay,
    applyMasq: async () => { handle.masqApplied++; },
    readIpForward: s.readIpForward ?? (async () => true),
  });
  const running = agent.run();
  t.teardown(() => agent.stop());
  Object.assign(handle, {
    agent, ip: s.ip, vxlan, ovs, subnetFile, logs, running, masqApplied: 0,
    problems: () => logs.filter((l) => l.level >= 40).map((l) => `${l.msg}${l.err ? `: ${String(l.err)}` : ''}${l.reason ? `: ${String(l.reason)}` : ''}`),
    subnetEnv: () => (existsSync(subnetFile) ? subnetEnvValues(readFileSync(subnetFile, 'utf8')) : null),
  });
  return handle;
}

/** A peer's lease value in flannel's format. */
export function vxlanLease(ip: string, mac: string, vni = 1): string {
  return JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: vni, VtepMAC: mac } });
}

/** subnet.env as KEY -> VALUE text, read by the agent's and the plugin's own reader. */
export function subnetEnvValues(text: string): Map<string, string> {
  return new Map([...subnetEnvEntries(text)].map(([key, { value }]) => [key, value]));
}
