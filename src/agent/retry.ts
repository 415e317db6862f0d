// Retrying a start-up step until it works or the agent stops: 1 s doubling to 30 s, or the
// step's own delay for errors that have one (out of subnets, no podCIDR yet).
import { type Clock, delay } from '../util/clock.ts';
import type { Logger } from '../util/log.ts';

export class StoppedError extends Error {
  constructor() {
    super('agent stopped');
  }
}

export interface RetryOptions {
  clock: Clock;
  signal: AbortSignal;
  log: Logger;
  /** Called on every failure (readiness reasons, metrics). */
  onError?: (what: string, err: unknown) => void;
  /** A fixed delay and log level for errors that are waits rather than faults. */
  waitFor?: (err: unknown) => { ms: number; level: 'info' | 'warn' } | undefined;
}

export async function retry<T>(what: string, fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  let backoff = 1000;
  for (;;) {
    if (o.signal.aborted) throw new StoppedError();
    try {
      return await fn();
    } catch (err) {
      if (o.signal.aborted) throw new StoppedError();
      o.onError?.(what, err);
      const msg = err instanceof Error ? err.message : String(err);
      const wait = o.waitFor?.(err);
      if (wait) {
        o.log[wait.level]({ reason: msg, retryInMs: wait.ms }, `${what}: waiting`);
      } else {
        o.log.error({ err: msg, retryInMs: backoff }, `${what} failed; retrying`);
      }
      await delay(o.clock, wait?.ms ?? backoff, o.signal);
      if (!wait) backoff = Math.min(backoff * 2, 30_000);
    }
  }
}
