// Named network namespaces (ip netns), the unit every knet test and the lab work in.
import { run } from './exec.ts';
import { randomBytes } from 'node:crypto';

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function assertNetnsName(name: string): void {
  if (!NETNS_NAME.test(name)) throw new Error(`invalid network namespace name ${JSON.stringify(name)}`);
}

export function randomNetnsName(prefix: string): string {
  return `${prefix}${randomBytes(4).toString('hex')}`;
}

export async function addNetns(name: string): Promise<void> {
  assertNetnsName(name);
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Kills every process left in the namespace, then removes it. Never throws. */
export async function deleteNetns(name: string): Promise<void> {
  assertNetnsName(name);
  try {
    const { stdout } = await run('ip', ['netns', 'pids', name]);
    for (const pid of stdout.split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
    }
  } catch { /* namespace may already be gone */ }
  try { await run('ip', ['netns', 'del', name]); } catch { /* already gone */ }
}

export async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** Runs a program inside a namespace (ip netns exec NS FILE ARGS). */
export function inNetns(name: string, file: string, args: readonly string[], input?: string) {
  assertNetnsName(name);
  return run('ip', ['netns', 'exec', name, file, ...args], input === undefined ? {} : { input });
}
