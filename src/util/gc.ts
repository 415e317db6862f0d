// A full garbage collection on request. A full proxy sync of 10k services leaves tens of MB of
// garbage in V8's old generation (models, rule texts, restore pieces), and V8 may let the heap
// grow for many more syncs before it collects; collecting once, right after such a sync, keeps
// the resident size close to what is live. Node hides `gc` unless started with --expose-gc;
// the flag can still be set at run time and the function taken from a fresh context.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null | undefined;

/** Runs a full collection; false when this runtime offers none. */
export function collectGarbage(): boolean {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      const f: unknown = runInNewContext('typeof gc === "function" ? gc : null');
      gc = typeof f === 'function' ? (f as () => void) : null;
    } catch {
      gc = null;
    }
  }
  if (!gc) return false;
  gc();
  return true;
}
