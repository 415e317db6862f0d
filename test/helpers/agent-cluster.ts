// Agent clusters for end-to-end tests: node namespaces on an "underlay" bridge namespace
// (192.168.50.254/24), one `knet agent` process per node (flags given by the test: etcd or the
// kube subnet manager), pods as namespaces on each node's cni0 bridge, and the probes the
// tests use (ICMP, TCP echo, /healthz), all inside knt-a* namespaces removed on teardown.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { testNetns } from './netns.ts';
import { ipBatch, ipJson } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { waitFor as waitUntil } from '../../src/util/wait.ts';
import { subnetEnvValues } from './agent-harness.ts';
import { probe, tempDir } from './cni.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const agentMain = join(repo, 'src', 'cli', 'agent-main.ts');
export const HEALTHZ = 10260;

export interface Agent { proc: ChildProcess; logs: () => string; stop: (signal?: NodeJS.Signals) => Promise<void> }
export interface Node { name: string; ns: string; ip: string; subnetFile: string; agent: Agent | null; pod: string | null; podIP: string | null }
export interface Nodes { underlay: string; dir: string; nodes: Node[] }

// Waits here default to 20 s, polling every 200 ms.
export const waitFor = <T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000) => waitUntil(what, fn, timeoutMs, 200);

export const inNs = (ns: string, file: string, args: string[], input?: string) => run('ip', ['netns', 'exec', ns, file, ...args], input === undefined ? {} : { input });

/** `count` node namespaces on the underlay bridge, forwarding on, no agent yet. */
export async function makeNodes(t: ExecutionContext, count: number): Promise<Nodes> {
  const underlay = await testNetns(t, 'knt-a');
  await ipBatch(underlay, ['link add br0 type bridge', 'addr add 192.168.50.254/24 dev br0', 'link set br0 up']);
  const dir = tempDir(t, 'knet-agent-e2e-');
  const nodes: Node[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = await testNetns(t, 'knt-a');
    const ip = `192.168.50.${i}`;
    await ipBatch(underlay, [`link add n${i} type veth peer name eth0 netns ${ns}`, `link set n${i} master br0 up`]);
    await ipBatch(ns, [`addr add ${ip}/24 dev eth0`, 'link set eth0 up']);
    await inNs(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    nodes.push({ name: `node-${i}`, ns, ip, subnetFile: join(dir, `node${i}`, 'subnet.env'), agent: null, pod: null, podIP: null });
  }
  return { underlay, dir, nodes };
}

/** Starts `knet agent` in the node's namespace with the common flags and the test's `flags`. */
export function startAgent(t: ExecutionContext, n: Node, flags: string[]): Agent {
  const env: NodeJS.ProcessEnv = { ...process.env, KNET_LOG_LEVEL: 'info' };
  delete env.NODE_EXTRA_CA_CERTS; // makes every node start ~50 ms slower
  const proc = spawn('ip', ['netns', 'exec', n.ns, process.execPath, '--import', 'tsx', agentMain, 'agent',
    '--iface', 'eth0', '--subnet-file', n.subnetFile,
    '--healthz-port', String(HEALTHZ), '--metrics-port', String(HEALTHZ + 1), '--resync-period', '2', ...flags], { cwd: repo, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  t.teardown(() => stop('SIGKILL'));
  const agent = { proc, logs: () => log, stop };
  n.agent = agent;
  return agent;
}

export function subnetEnv(n: Node): Map<string, string> {
  return subnetEnvValues(readFileSync(n.subnetFile, 'utf8'));
}

/** A pod: a namespace with a veth on the node's cni0 bridge, addressed from FLANNEL_SUBNET. */
export async function addPod(t: ExecutionContext, n: Node): Promise<void> {
  await waitFor(`subnet file of ${n.ns}`, async () => existsSync(n.subnetFile));
  const env = subnetEnv(n);
  const gw = env.get('FLANNEL_SUBNET')!; // e.g. 10.5.7.1/24
  const mtu = env.get('FLANNEL_MTU')!;
  const [gwIP, len] = gw.split('/') as [string, string];
  const octets = gwIP.split('.');
  const podIP = [...octets.slice(0, 3), String(Number(octets[3]) + 1)].join('.');
  const pod = await testNetns(t, 'knt-a');
  await ipBatch(n.ns, ['link add cni0 type bridge', `addr add ${gw} dev cni0`, 'link set cni0 up',
    `link add vpod type veth peer name eth0 netns ${pod}`, 'link set vpod master cni0 up']);
  await ipBatch(pod, [`addr add ${podIP}/${len} dev eth0`, `link set eth0 mtu ${mtu} up`, `route add default via ${gwIP}`]);
  n.pod = pod;
  n.podIP = podIP;
}

/** One ICMP echo from a namespace, answered within a second (the CNI harness's probe). */
export async function ping(fromNs: string, ip: string): Promise<boolean> {
  try {
    const { results } = await probe({ port: 0, attempts: 1, timeout: 1, servers: [], probes: [{ ns: fromNs, dst: ip, tcp: false }] });
    return results[0]?.icmp === true;
  } catch {
    return false; // the namespace is gone: nothing answers
  }
}

export async function tcpEcho(t: ExecutionContext, server: Node, client: Node): Promise<string> {
  const srv = spawn('ip', ['netns', 'exec', server.pod!, 'socat', 'TCP-LISTEN:8080,reuseaddr,fork', 'PIPE'], { stdio: 'ignore' });
  t.teardown(() => { srv.kill('SIGKILL'); });
  try {
    return await waitFor(`TCP ${client.podIP} -> ${server.podIP}`, async () => {
      const { stdout } = await run('ip', ['netns', 'exec', client.pod!, 'socat', '-T', '2', '-', `TCP:${server.podIP}:8080,connect-timeout=2`], { input: `hello from ${client.podIP}\n`, timeoutMs: 5000 });
      return stdout;
    }, 10_000);
  } finally {
    srv.kill('SIGKILL');
  }
}

export async function healthz(n: Node): Promise<string> {
  try {
    const { stdout } = await inNs(n.ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${HEALTHZ}/healthz`]);
    return stdout;
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

/** On failure, what each node's agent said and what its kernel holds. */
export async function dump(t: ExecutionContext, nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    t.log(`--- ${n.ip} agent log\n${n.agent?.logs().slice(-4000)}`);
    for (const args of [['route'], ['neigh'], ['-d', 'link', 'show', 'flannel.1']]) {
      t.log((await run('ip', ['-n', n.ns, ...args]).catch((e: Error) => ({ stdout: e.message }))).stdout);
    }
    t.log((await run('bridge', ['-n', n.ns, 'fdb', 'show', 'dev', 'flannel.1']).catch((e: Error) => ({ stdout: e.message }))).stdout);
  }
}

export async function allPairsPing(t: ExecutionContext, nodes: Node[]): Promise<void> {
  try {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        await waitFor(`ping ${a.podIP} -> ${b.podIP}`, () => ping(a.pod!, b.podIP!), 15_000);
      }
    }
  } catch (err) {
    await dump(t, nodes);
    throw err;
  }
  t.pass('every pod pair pings');
}

export const vtepMac = async (n: Node) => (await ipJson<{ address: string }>(n.ns, ['link', 'show', 'dev', 'flannel.1']))[0]!.address;


/**
 * Makes `api` (serving on a Unix socket) reachable as http://192.168.50.254:6443 from every
 * node namespace: socat in the underlay namespace relays each connection to the socket.
 * Returns the kubeconfig file the agents use.
 */
export async function serveApiOnUnderlay(t: ExecutionContext, underlay: string, socket: string, dir: string): Promise<string> {
  const relay = spawn('ip', ['netns', 'exec', underlay, 'socat', 'TCP-LISTEN:6443,bind=192.168.50.254,reuseaddr,fork', `UNIX-CONNECT:${socket}`], { stdio: 'ignore' });
  t.teardown(() => { relay.kill('SIGKILL'); });
  await waitFor('the API relay', async () => {
    const { stdout } = await inNs(underlay, 'ss', ['-Hltn', 'sport = :6443']);
    return stdout.includes('6443');
  }, 10_000);
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: lab',
    'clusters:', '- name: lab', '  cluster:', '    server: http://192.168.50.254:6443', '    insecure-skip-tls-verify: true',
    'users:', '- name: agent', '  user:', '    token: test-token',
    'contexts:', '- name: lab', '  context:', '    cluster: lab', '    user: agent', '',
  ].join('\n'));
  return kubeconfig;
}

/** Pings a's pod -> b's pod and back every 3 s until `untilMs` (Date.now()); counts losses. */
export async function pingBothWaysUntil(a: Node, b: Node, untilMs: number): Promise<{ lost: number; sent: number }> {
  let lost = 0;
  let sent = 0;
  while (Date.now() < untilMs) {
    sent += 2;
    if (!(await ping(a.pod!, b.podIP!))) lost++;
    if (!(await ping(b.pod!, a.podIP!))) lost++;
    await new Promise((r) => setTimeout(r, 3000));
  }
  return { lost, sent };
}
