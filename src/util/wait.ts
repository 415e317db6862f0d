// Polling until something holds, for daemons and tests that wait on processes and the kernel.

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An error that ends a wait at once (a process died, the user pressed Ctrl-C). */
export class FatalWaitError extends Error {}

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      if (err instanceof FatalWaitError) throw err;
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)}s waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(everyMs);
  }
}
