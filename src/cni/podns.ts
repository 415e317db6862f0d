// The pod's network namespace, given as a path (CNI_NETNS). Node cannot enter a namespace, so
// the pod side is configured by one `nsenter --net=PATH ip -batch -` exec: nsenter works for
// /run/netns/NAME and /proc/PID/ns/net alike, where `ip -n` only takes names.
import { openSync, statfsSync } from 'node:fs';
import { run } from '../kernel/exec.ts';
import { CniError, ErrCode, invalidEnv } from './errors.ts';

const NSFS_MAGIC = 0x6e736673;

export type NetnsState = 'ok' | 'missing' | 'not-netns';

export function netnsState(path: string): NetnsState {
  try {
    return statfsSync(path).type === NSFS_MAGIC ? 'ok' : 'not-netns';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw e;
  }
}

/** Opens CNI_NETNS for IFLA_NET_NS_FD after checking it is a namespace file. */
export function openNetns(path: string): number {
  const st = netnsState(path);
  if (st === 'missing') throw new CniError(ErrCode.UnknownContainer, 'container network namespace does not exist', `CNI_NETNS ${path} does not exist`);
  if (st === 'not-netns') throw invalidEnv(`CNI_NETNS ${path} is not a network namespace`);
  return openSync(path, 'r');
}

function checkLine(l: string): void {
  if (/[\n\r\0]/.test(l)) throw new Error(`refusing batch line with control characters: ${JSON.stringify(l)}`);
}

export async function podIpBatch(netnsPath: string, lines: readonly string[]): Promise<void> {
  lines.forEach(checkLine);
  await run('nsenter', [`--net=${netnsPath}`, 'ip', '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 30_000 });
}

export async function podIpJson<T>(netnsPath: string, args: readonly string[]): Promise<T[]> {
  const { stdout } = await run('nsenter', [`--net=${netnsPath}`, 'ip', '-j', ...args], { timeoutMs: 30_000 });
  return stdout.trim() ? (JSON.parse(stdout) as T[]) : [];
}
