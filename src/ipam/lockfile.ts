// Small file-system coordination helpers shared by IPAM and the node-wide masquerade set-up.
import { readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pidAlive } from '../util/process.ts';

/**
 * Exclusive lock file holding the owner's pid; a lock whose owner died is taken over. Every
 * round that does not get the lock checks the deadline and sleeps, whatever went wrong (a lock
 * path that cannot be read or removed, such as a directory, must not spin).
 */
export async function lockFile(path: string, timeoutMs = 10_000): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      return () => { try { unlinkSync(path); } catch { /* already gone */ } };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (lockIsStale(path)) {
      try { unlinkSync(path); } catch { /* someone else took it over, or it cannot go: the deadline decides */ }
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${path}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An owner that died, or an empty lock older than a second (owner killed before writing its pid). */
function lockIsStale(path: string): boolean {
  try {
    const owner = Number(readFileSync(path, 'utf8'));
    return owner > 0 ? !pidAlive(owner) : Date.now() - statSync(path).mtimeMs > 1000;
  } catch {
    return false;
  }
}


/** Removes `*.lock` files in dir whose owner died (for GC after a killed plugin). */
export function sweepStaleLocks(dir: string): string[] {
  const removed: string[] = [];
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return removed; }
  for (const n of names.filter((x) => x.endsWith('.lock'))) {
    const path = join(dir, n);
    try {
      if (lockIsStale(path)) { unlinkSync(path); removed.push(n); }
    } catch { /* gone meanwhile */ }
  }
  return removed;
}
