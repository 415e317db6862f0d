// Time as a seam: daemons take a Clock so their timers (lease renewal, retries, sync periods)
// run under a manual clock in unit tests.

export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(h: unknown): void;
}

/** Node's longest timer (~24.8 days): a longer one fires after 1 ms, with a warning, each time. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Timers of any length: past MAX_TIMER_MS one waits in steps (a `syncPeriod: 720h` re-armed a
 * 1 ms timer and logged ~1300 warnings a second).
 */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => {
    const handle: { timer?: NodeJS.Timeout } = {};
    const arm = (left: number) => {
      handle.timer = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left || 0));
    };
    arm(ms);
    return handle;
  },
  clearTimer: (h) => clearTimeout((h as { timer?: NodeJS.Timeout } | null)?.timer),
};

/** Resolves after `ms` on `clock`, or at once (without throwing) when `signal` aborts. */
export function delay(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clock.clearTimer(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = clock.setTimer(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Resolves when `signal` aborts (at once if it already has). */
export function whenAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
