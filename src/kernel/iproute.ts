// iproute2 adapter: read kernel state as JSON (`ip -j`) and apply many changes with one exec
// (`ip -batch -`), optionally inside a named namespace (`ip -n NS`). One exec per namespace
// keeps pod set-up and overlay reconciles cheap even though Node cannot enter a namespace.
import { run } from './exec.ts';
import { assertNetnsName } from './netns.ts';

function nsArgs(netns: string | null | undefined): string[] {
  if (!netns) return [];
  assertNetnsName(netns);
  return ['-n', netns];
}

/** `ip [-n NS] -j ARGS` parsed as JSON (empty output is an empty list). */
export async function ipJson<T = unknown>(netns: string | null | undefined, args: readonly string[]): Promise<T[]> {
  const { stdout } = await run('ip', [...nsArgs(netns), '-j', ...args]);
  const text = stdout.trim();
  return text ? (JSON.parse(text) as T[]) : [];
}

/** `bridge [-n NS] -j ARGS` parsed as JSON. */
export async function bridgeJson<T = unknown>(netns: string | null | undefined, args: readonly string[]): Promise<T[]> {
  const { stdout } = await run('bridge', [...nsArgs(netns), '-j', ...args]);
  const text = stdout.trim();
  return text ? (JSON.parse(text) as T[]) : [];
}

function checkBatchLine(line: string): void {
  // Batch lines are built by knet from validated values; a newline would smuggle a command.
  if (/[\n\r\0]/.test(line)) throw new Error(`refusing batch line with control characters: ${JSON.stringify(line)}`);
}

/**
 * Runs `ip [-n NS] -batch -` with one command per line. With `force` every line is attempted
 * and the first failure is reported afterwards; without it iproute2 stops at the first error.
 */
export async function ipBatch(netns: string | null | undefined, lines: readonly string[], force = false): Promise<void> {
  if (lines.length === 0) return;
  lines.forEach(checkBatchLine);
  await run('ip', [...nsArgs(netns), ...(force ? ['-force'] : []), '-batch', '-'], { input: lines.join('\n') + '\n' });
}

/** `bridge [-n NS] -batch -`, for FDB entries. */
export async function bridgeBatch(netns: string | null | undefined, lines: readonly string[], force = false): Promise<void> {
  if (lines.length === 0) return;
  lines.forEach(checkBatchLine);
  await run('bridge', [...nsArgs(netns), ...(force ? ['-force'] : []), '-batch', '-'], { input: lines.join('\n') + '\n' });
}
