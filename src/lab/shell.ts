// The lab's process adapter: long-running programs started inside a namespace
// (`ip netns exec NS FILE ARGS`, argument arrays only), detached from the terminal so they
// outlive `lab up` and a Ctrl-C to it, logging to a file under the lab directory.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertNetnsName } from '../kernel/netns.ts';

import { sleep } from '../util/wait.ts';
import { pidAlive } from '../util/process.ts';
export { sleep, waitFor, FatalWaitError } from '../util/wait.ts';

/** The knet checkout or install this code runs from (where dist/ and node_modules/ are). */
export function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(d, 'package.json');
    if (existsSync(pj)) {
      try { if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'knet') return d; } catch { /* keep looking */ }
    }
    if (dirname(d) === d) throw new Error('cannot find the knet package root');
    d = dirname(d);
  }
}

export function knetBinaries(): { cli: string; cni: string } {
  const root = packageRoot();
  const cli = join(root, 'dist', 'knet.js');
  const cni = join(root, 'dist', 'cni', 'knet');
  for (const f of [cli, cni]) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run build first`);
  return { cli, cni };
}

/** How to run this same CLI again (node [--import tsx] ENTRY), for the lab's own daemons. */
export function selfCommand(): { file: string; args: string[] } {
  return { file: process.execPath, args: [...process.execArgv, process.argv[1]!] };
}

/** A child environment without settings that slow every Node start. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  env.PATH = `${dirname(process.execPath)}:${env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  return env;
}

export interface Started { pid: number; log: string }

/**
 * Starts FILE ARGS inside namespace NS, detached (its own session: a Ctrl-C to `lab up` does
 * not reach it), stdout and stderr appended to LOG. With `readyLine`, resolves once stdout
 * (then also logged) printed that line; otherwise right after spawning.
 */
export async function startInNetns(ns: string, file: string, args: readonly string[], log: string, o: { env?: NodeJS.ProcessEnv; readyLine?: string; readyTimeoutMs?: number } = {}): Promise<Started> {
  assertNetnsName(ns);
  const fd = openSync(log, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', ns, file, ...args], {
      detached: true, env: o.env ?? childEnv(), stdio: ['ignore', o.readyLine ? 'pipe' : fd, fd],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => resolve(child.pid!));
    });
    if (o.readyLine) {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`${file} in ${ns} did not get ready (log: ${log})`)), o.readyTimeoutMs ?? 15_000);
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes(o.readyLine!)) { clearTimeout(timer); resolve(); }
        });
        child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${file} in ${ns} exited (${code}) before it was ready (log: ${log})`)); });
      });
      child.stdout!.destroy();
    }
    child.unref();
    return { pid, log };
  } finally {
    closeSync(fd);
  }
}

/** Alive and not a zombie (a child that exited but was not reaped yet counts as gone). */
export function pidRunning(pid: number): boolean {
  return pidAlive(pid) && !isZombie(pid);
}

/** SIGTERM, then SIGKILL after a grace period; never throws. */
export async function stopPid(pid: number, graceMs = 3000): Promise<void> {
  if (!pidAlive(pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const until = Date.now() + graceMs;
  while (Date.now() < until) {
    if (!pidRunning(pid)) return;
    await sleep(50);
  }
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

function isZombie(pid: number): boolean {
  try { return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return true; }
}
