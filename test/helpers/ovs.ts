// One Open vSwitch per node namespace, without the kernel module: an ovsdb-server and an
// ovs-vswitchd started inside the namespace with their own run directory (database, sockets,
// pidfiles, logs), so nothing ever talks to a system OVS. Stopped and removed in teardown;
// usable without ava (pass null) by benchmarks and the lab, which then call stop() themselves.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, assertNetnsName, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { type OvsTarget, attachUnderlayToBridge, vsctl } from '../../src/kernel/ovs.ts';

const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export interface OvsInstance {
  readonly target: OvsTarget;
  readonly runDir: string;
  /** ovs-appctl against this instance's ovs-vswitchd (e.g. ["dpif/show"]). */
  appctl(args: readonly string[]): Promise<string>;
  /** The tail of both daemons' logs, for failure messages. */
  logs(): string;
  /** Kills ovs-vswitchd only (its bridges' state stays in the database). */
  stopVswitchd(): Promise<void>;
  startVswitchd(): Promise<void>;
  /** Stops both daemons and removes the run directory. Never throws. */
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, fn: () => Promise<boolean> | boolean, timeoutMs: number, logs: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await fn()) return;
    } catch { /* not yet */ }
    if (Date.now() > until) throw new Error(`OVS: timed out waiting for ${what}\n${logs()}`);
    await sleep(50);
  }
}

async function stopChild(p: ChildProcess | null): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => p.kill('SIGKILL'), 3000);
    p.once('exit', () => { clearTimeout(timer); resolve(); });
    p.kill('SIGTERM');
  });
}

export interface StartOvsOptions {
  /** Run directory to use (created if missing); default a fresh temp dir. Removed by stop(). */
  runDir?: string;
  /**
   * Daemonise (--detach) so the pair outlives this process, as the lab needs; stop() and
   * stopOvsAt(runDir) end them by the pids in their pidfiles.
   */
  detach?: boolean;
}

/** Running and not a zombie (a detached daemon's exit is reaped by whoever adopted it, maybe late). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/s.test(stat);
  } catch {
    return false;
  }
}

/** The pid in RUNDIR/NAME.pid if that process is still this run directory's daemon. */
function daemonPid(runDir: string, name: string): number | null {
  try {
    const pid = Number(readFileSync(join(runDir, `${name}.pid`), 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return null;
    // Guard against pid reuse: the command line must name this run directory.
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(runDir) ? pid : null;
  } catch {
    return null;
  }
}

async function stopPid(pid: number | null): Promise<void> {
  if (pid === null) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  for (let i = 0; i < 60 && alive(pid); i++) await sleep(50);
  if (alive(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
}

/** Stops a detached pair started with this run directory (e.g. by an earlier lab command) and removes the directory. */
export async function stopOvsAt(runDir: string): Promise<void> {
  await stopPid(daemonPid(runDir, 'ovs-vswitchd'));
  await stopPid(daemonPid(runDir, 'ovsdb-server'));
  rmSync(runDir, { recursive: true, force: true });
}

export async function startOvs(t: ExecutionContext | null, netns: string, opts: StartOvsOptions = {}): Promise<OvsInstance> {
  assertNetnsName(netns);
  const runDir = opts.runDir ?? mkdtempSync(join(tmpdir(), 'knet-ovs-'));
  if (opts.runDir) mkdirSync(runDir, { recursive: true });
  const target: OvsTarget = { netns, runDir };
  const db = join(runDir, 'conf.db');
  const env = { ...process.env, OVS_RUNDIR: runDir, OVS_DBDIR: runDir, OVS_LOGDIR: runDir, OVS_SYSCONFDIR: runDir, OVS_PKGDATADIR: '/usr/share/openvswitch' };
  let dbServer: ChildProcess | null = null;
  let vswitchd: ChildProcess | null = null;
  let stopped = false;
  const tail = (f: string) => (existsSync(join(runDir, f)) ? readFileSync(join(runDir, f), 'utf8').split('\n').slice(-15).join('\n') : '');
  const logs = () => `--- ovsdb-server.log\n${tail('ovsdb-server.log')}\n--- ovs-vswitchd.log\n${tail('ovs-vswitchd.log')}`;
  const argv = (file: string, args: string[]) => ['netns', 'exec', netns, file, ...args, '--no-chdir', `--log-file=${join(runDir, `${file}.log`)}`,
    `--pidfile=${join(runDir, `${file}.pid`)}`, `--unixctl=${join(runDir, `${file}.ctl`)}`, '-vconsole:off', ...(opts.detach ? ['--detach'] : [])];
  /** Attached: a child process. Detached: returns once the daemon is up (--detach waits for that). */
  const daemon = async (file: string, args: string[]): Promise<ChildProcess | null> => {
    if (opts.detach) {
      await run('ip', argv(file, args), { env, timeoutMs: 30_000 });
      return null;
    }
    return spawn('ip', argv(file, args), { env, stdio: 'ignore' });
  };

  const appctl = async (args: readonly string[]) =>
    (await run('ip', ['netns', 'exec', netns, 'ovs-appctl', '-t', join(runDir, 'ovs-vswitchd.ctl'), ...args], { env, timeoutMs: 20_000 })).stdout;

  const startVswitchd = async () => {
    if (vswitchd || daemonPid(runDir, 'ovs-vswitchd') !== null) return;
    const p = await daemon('ovs-vswitchd', [`unix:${join(runDir, 'db.sock')}`]);
    vswitchd = p;
    p?.once('exit', () => { if (vswitchd === p) vswitchd = null; });
    await waitUntil('ovs-vswitchd', async () => { await appctl(['version']); return true; }, 15_000, logs);
  };

  const stopVswitchd = async () => {
    const p = vswitchd;
    vswitchd = null;
    if (p) await stopChild(p);
    else await stopPid(daemonPid(runDir, 'ovs-vswitchd'));
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stopVswitchd().catch(() => undefined);
    if (dbServer) await stopChild(dbServer).catch(() => undefined);
    else await stopPid(daemonPid(runDir, 'ovsdb-server'));
    rmSync(runDir, { recursive: true, force: true });
  };
  if (t) t.teardown(stop);

  try {
    await run('ovsdb-tool', ['create', db, SCHEMA]);
    dbServer = await daemon('ovsdb-server', [db, `--remote=punix:${join(runDir, 'db.sock')}`]);
    await waitUntil('ovsdb-server', () => existsSync(join(runDir, 'db.sock')), 10_000, logs);
    await vsctl(target, ['--no-wait', 'init']);
    await startVswitchd();
  } catch (err) {
    await stop();
    throw err;
  }
  return { target, runDir, appctl, logs, stopVswitchd, startVswitchd, stop };
}

/** Where clean-up steps go: ava's teardown in tests, a list the caller runs in scripts. */
export interface Scope { defer(fn: () => unknown): void }

export const avaScope = (t: ExecutionContext): Scope => ({ defer: (fn) => t.teardown(async () => { await fn(); }) });

export class ManualScope implements Scope {
  private fns: (() => unknown)[] = [];
  defer(fn: () => unknown): void { this.fns.push(fn); }
  /** Runs every step, last registered first; never throws. */
  async close(): Promise<void> {
    for (const fn of this.fns.splice(0).reverse()) {
      try { await fn(); } catch { /* keep cleaning */ }
    }
  }
}

export async function scopedNetns(scope: Scope, prefix: string): Promise<string> {
  const name = randomNetnsName(prefix);
  scope.defer(() => deleteNetns(name));
  await addNetns(name);
  return name;
}

export interface OvsNode {
  ns: string;
  /** Underlay (public) IP, on the OVS bridge brphy as the userspace datapath needs. */
  ip: string;
  ovs: OvsInstance;
}

/**
 * Node namespaces on an underlay namespace's Linux bridge (192.168.50.0/24), each with its own
 * OVS daemons, the underlay port on OVS bridge `brphy` holding the node's address, and forwarding on.
 */
export async function ovsNodes(scope: Scope, count: number, prefix = 'knt-o'): Promise<{ underlay: string; nodes: OvsNode[] }> {
  const underlay = await scopedNetns(scope, prefix);
  await ipBatch(underlay, ['link add br0 type bridge', 'link set br0 up']);
  const nodes: OvsNode[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = await scopedNetns(scope, prefix);
    const ip = `192.168.50.${i}`;
    // Created inside the underlay namespace, so no link ever appears in the root namespace.
    await ipBatch(underlay, [`link add n${i} type veth peer name eth0 netns ${ns}`, `link set n${i} master br0 up`]);
    // Frames reach OVS's AF_PACKET socket on eth0 as the underlay sent them; with TX checksum
    // offload the underlay side (etcd on br0) would hand over TCP segments with no checksum yet.
    await run('ip', ['netns', 'exec', underlay, 'ethtool', '-K', `n${i}`, 'tx', 'off']);
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const ovs = await startOvs(null, ns);
    scope.defer(() => ovs.stop());
    await attachUnderlayToBridge(ovs.target, 'brphy', 'eth0', `${ip}/24`);
    nodes.push({ ns, ip, ovs });
  }
  return { underlay, nodes };
}

/**
 * The userspace datapath learns a tunnel's next-hop MAC only by snooping ARP replies on the
 * underlay bridge, and asks for it only while translating a packet; a datapath flow that cached
 * "drop" for a missing neighbour keeps being hit by retries and is never translated again. If that
 * single ARP exchange is lost (a loaded machine), a node stays cut off from a peer. Real nodes
 * talk to each other (kubelet, etcd) anyway; here each node's kernel sends one datagram to every
 * peer until every OVS has every peer's MAC. OVS snoops only once a tunnel port exists, so call
 * this after the backends have created theirs.
 */
export async function primeTunnelNeighbours(nodes: OvsNode[]): Promise<void> {
  const send = 'import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor ip in sys.argv[1:]: s.sendto(b"x",(ip,9))';
  for (const n of nodes) {
    const peers = nodes.filter((p) => p !== n).map((p) => p.ip);
    await waitFor(`${n.ip}'s OVS to learn the underlay MACs of ${peers.join(', ')}`, async () => {
      const known = await n.ovs.appctl(['tnl/arp/show']);
      const missing = peers.filter((ip) => !new RegExp(`^${ip.replace(/\./g, '\\.')}\\s`, 'm').test(known));
      if (missing.length === 0) return true;
      // Forget the kernel's entries so it ARPs again (the reply is what OVS snoops).
      await ipBatch(n.ns, missing.map((ip) => `neigh del ${ip} dev brphy`), true).catch(() => undefined);
      await run('ip', ['netns', 'exec', n.ns, 'python3', '-c', send, ...missing]);
      return false;
    }, 20_000);
  }
}

export interface Pod { ns: string; ip: string }

/** A pod: a namespace with a veth on the node's pod bridge, .2 (or `host`) of the node's subnet. */
export async function addPod(scope: Scope, node: OvsNode, o: { podBridge: string; gateway: string; prefixLen: number; mtu: number; host?: number }, prefix = 'knt-o'): Promise<Pod> {
  const ns = await scopedNetns(scope, prefix);
  const parts = o.gateway.split('.');
  const ip = [...parts.slice(0, 3), String(o.host ?? 2)].join('.');
  const host = `vp${ns.slice(-8)}`;
  await ipBatch(node.ns, [`link add ${host} mtu ${o.mtu} type veth peer name eth0 netns ${ns}`, `link set ${host} master ${o.podBridge} up`]);
  await ipBatch(ns, [`addr add ${ip}/${o.prefixLen} dev eth0`, `link set eth0 mtu ${o.mtu} up`, `route add default via ${o.gateway}`]);
  return { ns, ip };
}

/** Polls `fn` until true; on timeout the error carries the last failure and `context()`. */
export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 10_000, context: () => Promise<string> | string = () => ''): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}\n${await context()}`);
    await sleep(200);
  }
}

/** Starts socat echo servers in a pod: TCP 8080 and UDP 8081 (killed by the scope). */
export function startEchoServers(scope: Scope, pod: Pod): void {
  // -t: socat's default 0.5 s wait after one side's EOF is too short for a bulk echo here.
  for (const args of [['TCP-LISTEN:8080,reuseaddr,fork', 'PIPE'], ['UDP-RECVFROM:8081,fork', 'PIPE']]) {
    const p = spawn('ip', ['netns', 'exec', pod.ns, 'socat', '-t', '15', ...args], { stdio: 'ignore' });
    scope.defer(() => { p.kill('SIGKILL'); });
  }
}

/** One line over TCP to the pod's echo server and back. */
export async function tcpEcho(from: Pod, to: Pod, timeoutS = 3): Promise<boolean> {
  const msg = `tcp ${from.ip} -> ${to.ip}\n`;
  try {
    const { stdout } = await run('ip', ['netns', 'exec', from.ns, 'socat', '-T', String(timeoutS), '-', `TCP:${to.ip}:8080,connect-timeout=${timeoutS}`], { input: msg, timeoutMs: (timeoutS + 2) * 1000 });
    return stdout === msg;
  } catch {
    return false;
  }
}
