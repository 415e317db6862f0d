// One Open vSwitch per node namespace, without the kernel module: an ovsdb-server and an
// ovs-vswitchd started inside the namespace with their own run directory (database, sockets,
// pidfiles, logs), so nothing ever talks to a system OVS. The lab starts them detached (they
// outlive `lab up`; `stopOvsAt(runDir)` ends them by pidfile); the tests (test/helpers/ovs.ts)
// use the same code attached.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertNetnsName } from '../kernel/netns.ts';
import { ipBatch } from '../kernel/iproute.ts';
import { run } from '../kernel/exec.ts';
import { type OvsTarget, vsctl } from '../kernel/ovs.ts';
import { sleep } from '../util/wait.ts';

const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

export interface OvsInstance {
  readonly target: OvsTarget;
  readonly runDir: string;
  /** ovs-appctl against this instance's ovs-vswitchd (e.g. ["dpif/show"]). */
  appctl(args: readonly string[]): Promise<string>;
  /** The tail of both daemons' logs, for failure messages. */
  logs(): string;
  /** The daemons' pids (from their pidfiles; null when not running). */
  pids(): { ovsdbServer: number | null; vswitchd: number | null };
  /** Kills ovs-vswitchd only (its bridges' state stays in the database). */
  stopVswitchd(): Promise<void>;
  startVswitchd(): Promise<void>;
  /** Stops both daemons and removes the run directory. Never throws. */
  stop(): Promise<void>;
}


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
export function daemonPid(runDir: string, name: 'ovsdb-server' | 'ovs-vswitchd'): number | null {
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

/**
 * Starts ovsdb-server (fresh database) and ovs-vswitchd inside `netns`. On failure both are
 * stopped and the run directory removed before the error is thrown.
 */
export async function startOvsDaemons(netns: string, opts: StartOvsOptions = {}): Promise<OvsInstance> {
  assertNetnsName(netns);
  const runDir = opts.runDir ?? mkdtempSync(join(tmpdir(), 'knet-ovs-'));
  if (opts.runDir) mkdirSync(runDir, { recursive: true });
  // Unix socket paths (db.sock, *.ctl, BRIDGE.mgmt) are limited to 107 bytes.
  if (join(runDir, 'ovs-vswitchd.ctl').length > 100) throw new Error(`OVS run directory path too long for its sockets: ${runDir}`);
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
  const pids = () => ({ ovsdbServer: daemonPid(runDir, 'ovsdb-server'), vswitchd: daemonPid(runDir, 'ovs-vswitchd') });

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
  return { target, runDir, appctl, logs, pids, stopVswitchd, startVswitchd, stop };
}

/** A node for primeTunnelNeighbours: its namespace, underlay IP (on `brphy`) and OVS. */
export interface TunnelNode {
  ns: string;
  ip: string;
  ovs: Pick<OvsInstance, 'appctl'>;
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
export async function primeTunnelNeighbours(nodes: readonly TunnelNode[], timeoutMs = 20_000): Promise<void> {
  const send = 'import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor ip in sys.argv[1:]: s.sendto(b"x",(ip,9))';
  for (const n of nodes) {
    const peers = nodes.filter((p) => p !== n).map((p) => p.ip);
    const until = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const known = await n.ovs.appctl(['tnl/arp/show']);
        const missing = peers.filter((ip) => !new RegExp(`^${ip.replace(/\./g, '\\.')}\\s`, 'm').test(known));
        if (missing.length === 0) break;
        // Forget the kernel's entries so it ARPs again (the reply is what OVS snoops).
        await ipBatch(n.ns, missing.map((ip) => `neigh del ${ip} dev brphy`), true).catch(() => undefined);
        await run('ip', ['netns', 'exec', n.ns, 'python3', '-c', send, ...missing]);
        last = new Error(`missing ${missing.join(', ')}`);
      } catch (err) {
        last = err;
      }
      if (Date.now() > until) throw new Error(`timed out waiting for ${n.ip}'s OVS to learn the underlay MACs of ${peers.join(', ')}${last ? `: ${(last as Error).message}` : ''}`);
      await sleep(200);
    }
  }
}
