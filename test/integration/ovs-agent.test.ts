// `knet agent --kube-subnet-mgr` with `"Backend": {"Type": "ovs-gre"}` end to end: three node
// namespaces, each with its own ovsdb-server + ovs-vswitchd (userspace datapath) and one agent
// process; the fake kube-apiserver reached through a relay in the underlay namespace, one Node
// per node with its podCIDR; pods on every node. (ovs-gre with leases in etcd runs in
// ovs-gre.test.ts; the agent's wiring is the same for both lease sources.)
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot } from '../helpers/netns.ts';
import { FakeApiServer } from '../helpers/fake-apiserver.ts';
import { serveApiOnUnderlay } from '../helpers/agent-cluster.ts';
import { addPod, avaScope, ovsNodes, primeTunnelNeighbours, startEchoServers, tcpEcho, waitFor, type OvsNode, type Pod } from '../helpers/ovs.ts';
import { run } from '../../src/kernel/exec.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { deleteFlowsStrict, dumpFlows, dumpFlowsWithStats } from '../../src/kernel/ovs.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const agentMain = join(repo, 'src', 'cli', 'agent-main.ts');
const CONFIG = '{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre","DatapathType":"netdev"}}';

function agentEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, KNET_LOG_LEVEL: 'info' };
  delete env.NODE_EXTRA_CA_CERTS; // makes every node start ~50 ms slower
  return env;
}

async function agentSupportsOvsGre(): Promise<boolean> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', agentMain, 'agent', '--help'], { env: agentEnv(), timeoutMs: 30_000 });
    return stdout.includes('--ovs-rundir');
  } catch {
    return false;
  }
}

const wired = isRoot && (await agentSupportsOvsGre());
const rootTest = wired ? test.serial : test.skip;

interface Agent { logs: () => string; stop: () => Promise<void> }
interface Node extends OvsNode { name: string; subnetFile: string; agent: Agent | null; pod: Pod | null }
interface Api { kubeconfig: string; netConf: string }

function startAgent(t: ExecutionContext, api: Api, n: Node): Agent {
  const proc: ChildProcess = spawn('ip', ['netns', 'exec', n.ns, process.execPath, '--import', 'tsx', agentMain, 'agent',
    '--kube-subnet-mgr', '--kubeconfig', api.kubeconfig, '--net-config-path', api.netConf, '--node-name', n.name,
    '--iface', 'brphy', '--subnet-file', n.subnetFile, '--resync-period', '2',
    '--ovs-rundir', n.ovs.runDir], { cwd: repo, env: agentEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  t.teardown(stop);
  const agent = { logs: () => log, stop };
  n.agent = agent;
  return agent;
}

const env = (n: Node) => new Map(readFileSync(n.subnetFile, 'utf8').trim().split('\n').map((l) => l.split('=') as [string, string]));
const subnetOf = (n: Node) => env(n).get('FLANNEL_SUBNET')!.replace(/\.1\//, '.0/');
const flowsTo = (flows: string[], subnet: string) => flows.filter((f) => f.includes(`nw_dst=${subnet}`) || f.includes(`arp_tpa=${subnet}`));

async function udpEcho(from: Pod, to: Pod): Promise<boolean> {
  const msg = `udp ${from.ip} -> ${to.ip}\n`;
  try {
    const { stdout } = await run('ip', ['netns', 'exec', from.ns, 'socat', '-T', '1', '-', `UDP:${to.ip}:8081`], { input: msg, timeoutMs: 5000 });
    return stdout === msg;
  } catch {
    return false;
  }
}

rootTest('three ovs-gre agents on the kube subnet manager: pods talk TCP and UDP; hand-deleted flow heals; restart keeps flows; a removed lease removes its flows', async (t) => {
  const scope = avaScope(t);
  const { underlay, nodes: bare } = await ovsNodes(scope, 3, 'knt-a');
  await ipBatch(underlay, ['addr add 192.168.50.254/24 dev br0']);
  const dir = mkdtempSync(join(tmpdir(), 'knet-ovs-agent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const server = new FakeApiServer();
  await server.start({ socket: join(dir, 'api.sock') });
  t.teardown(() => server.close());
  const api: Api = { kubeconfig: await serveApiOnUnderlay(t, underlay, join(dir, 'api.sock'), dir), netConf: join(dir, 'net-conf.json') };
  writeFileSync(api.netConf, CONFIG);
  const nodes: Node[] = bare.map((b, i) => ({ ...b, name: `node-${i + 1}`, subnetFile: join(dir, `node${i + 1}`, 'subnet.env'), agent: null, pod: null }));
  nodes.forEach((n, i) => server.upsert('nodes', { metadata: { name: n.name }, spec: { podCIDR: `10.246.${i + 1}.0/24` } }));
  const logs = () => nodes.map((n) => `--- agent ${n.ip}\n${n.agent?.logs().slice(-3000) ?? ''}`).join('\n');
  for (const n of nodes) startAgent(t, api, n);

  for (const n of nodes) {
    // client-node makes a cold agent start take seconds (tens on a loaded machine).
    await waitFor(`subnet file of ${n.ip}`, () => existsSync(n.subnetFile), 90_000, logs);
    const e = env(n);
    t.is(e.get('FLANNEL_MTU'), '1458');
    const [gw, len] = e.get('FLANNEL_SUBNET')!.split('/');
    n.pod = await addPod(scope, n, { podBridge: 'cni0', gateway: gw!, prefixLen: Number(len), mtu: Number(e.get('FLANNEL_MTU')) });
    startEchoServers(scope, n.pod);
  }
  await primeTunnelNeighbours(nodes);
  const [a, b, c] = nodes as [Node, Node, Node];
  for (const from of nodes) {
    for (const to of nodes) {
      if (from === to) continue;
      await waitFor(`TCP ${from.pod!.ip} -> ${to.pod!.ip}`, () => tcpEcho(from.pod!, to.pod!), 20_000, logs);
      await waitFor(`UDP ${from.pod!.ip} -> ${to.pod!.ip}`, () => udpEcho(from.pod!, to.pod!), 20_000, logs);
    }
  }
  t.is((await dumpFlows(a.ovs.target, 'obr0')).length, 6);

  // A flow deleted by hand comes back at the next periodic reconcile (2 s here).
  await deleteFlowsStrict(a.ovs.target, 'obr0', `priority=100,ip,in_port=9,nw_dst=${subnetOf(b)}`);
  t.is(flowsTo(await dumpFlows(a.ovs.target, 'obr0'), subnetOf(b)).length, 1);
  await waitFor('the deleted flow to come back', async () => flowsTo(await dumpFlows(a.ovs.target, 'obr0'), subnetOf(b)).length === 2, 10_000, logs);
  await waitFor('TCP a -> b after heal', () => tcpEcho(a.pod!, b.pod!), 10_000, logs);

  // Agent restart: the data plane keeps working while it is down, and the new agent finds the
  // table as it should be and leaves it alone (the flow's packet counter is not reset).
  const counter = async () => Number(/n_packets=(\d+)/.exec((await dumpFlowsWithStats(a.ovs.target, 'obr0')).find((f) => f.includes(`ip,in_port=9,nw_dst=${subnetOf(c)}`))!)![1]);
  await a.agent!.stop();
  t.true(await tcpEcho(a.pod!, c.pod!));
  const before = await counter();
  t.true(before > 0);
  startAgent(t, api, a);
  await waitFor('restarted agent to reconcile', () => a.agent!.logs().includes('wrote subnet file'), 90_000, logs);
  t.true(await counter() >= before);
  t.is((await dumpFlows(a.ovs.target, 'obr0')).length, 6);
  t.true(await tcpEcho(a.pod!, c.pod!));

  // A peer's Node removed (its agent gone) removes its flows elsewhere.
  await c.agent!.stop();
  server.remove('nodes', undefined, c.name);
  for (const n of [a, b]) {
    await waitFor(`${n.ip} to drop the flows of ${subnetOf(c)}`, async () => flowsTo(await dumpFlows(n.ovs.target, 'obr0'), subnetOf(c)).length === 0, 10_000, logs);
    t.is((await dumpFlows(n.ovs.target, 'obr0')).length, 4);
  }
  t.false(await tcpEcho(a.pod!, c.pod!, 1));
  t.true(await tcpEcho(a.pod!, b.pod!));
});
