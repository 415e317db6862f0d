// Child processes of a test's process, from procfs.
import { readFileSync } from 'node:fs';

/** The direct children of `pid` (empty once it is gone). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
}

export { pidRunning } from '../../src/lab/shell.ts';
