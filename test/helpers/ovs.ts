// One Open vSwitch per node namespace, without the kernel module: an ovsdb-server and an
// ovs-vswitchd started inside the namespace with their own run directory (database, sockets,
// pidfiles, logs), so nothing ever talks to a system OVS. Stopped and removed in teardown;
// usable without ava (pass null) by benchmarks and the lab, which then call stop() themselves.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertNetnsName } from '../../src/kernel/netns.ts';
import { run } from '../../src/kernel/exec.ts';
import { type OvsTarget, vsctl } from '../../src/kernel/ovs.ts';

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

export async function startOvs(t: ExecutionContext | null, netns: string): Promise<OvsInstance> {
  assertNetnsName(netns);
  const runDir = mkdtempSync(join(tmpdir(), 'knet-ovs-'));
  const target: OvsTarget = { netns, runDir };
  const db = join(runDir, 'conf.db');
  const env = { ...process.env, OVS_RUNDIR: runDir, OVS_DBDIR: runDir, OVS_LOGDIR: runDir, OVS_SYSCONFDIR: runDir, OVS_PKGDATADIR: '/usr/share/openvswitch' };
  let dbServer: ChildProcess | null = null;
  let vswitchd: ChildProcess | null = null;
  let stopped = false;
  const tail = (f: string) => (existsSync(join(runDir, f)) ? readFileSync(join(runDir, f), 'utf8').split('\n').slice(-15).join('\n') : '');
  const logs = () => `--- ovsdb-server.log\n${tail('ovsdb-server.log')}\n--- ovs-vswitchd.log\n${tail('ovs-vswitchd.log')}`;
  const daemon = (file: string, args: string[]) =>
    spawn('ip', ['netns', 'exec', netns, file, ...args, '--no-chdir', `--log-file=${join(runDir, `${file}.log`)}`, `--pidfile=${join(runDir, `${file}.pid`)}`,
      `--unixctl=${join(runDir, `${file}.ctl`)}`, '-vconsole:off'], { env, stdio: 'ignore' });

  const appctl = async (args: readonly string[]) =>
    (await run('ip', ['netns', 'exec', netns, 'ovs-appctl', '-t', join(runDir, 'ovs-vswitchd.ctl'), ...args], { env, timeoutMs: 20_000 })).stdout;

  const startVswitchd = async () => {
    if (vswitchd) return;
    vswitchd = daemon('ovs-vswitchd', [`unix:${join(runDir, 'db.sock')}`]);
    const p = vswitchd;
    p.once('exit', () => { if (vswitchd === p) vswitchd = null; });
    await waitUntil('ovs-vswitchd', async () => { await appctl(['version']); return true; }, 15_000, logs);
  };

  const stopVswitchd = async () => {
    const p = vswitchd;
    vswitchd = null;
    await stopChild(p);
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stopVswitchd().catch(() => undefined);
    await stopChild(dbServer).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
  };
  if (t) t.teardown(stop);

  try {
    await run('ovsdb-tool', ['create', db, SCHEMA]);
    dbServer = daemon('ovsdb-server', [db, `--remote=punix:${join(runDir, 'db.sock')}`]);
    await waitUntil('ovsdb-server', () => existsSync(join(runDir, 'db.sock')), 10_000, logs);
    await vsctl(target, ['--no-wait', 'init']);
    await startVswitchd();
  } catch (err) {
    await stop();
    throw err;
  }
  return { target, runDir, appctl, logs, stopVswitchd, startVswitchd, stop };
}
