// A manual clock for daemon logic: timers fire only when the test advances time, and every
// advance lets pending promise work settle between timers.
import type { Clock } from '../../src/util/clock.ts';

export const flush = async (rounds = 10): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
};

export class FakeClock implements Clock {
  t: number;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimer(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }

  get pending(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing due timers in order and settling work after each. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const due = this.timers[0];
      if (!due || due.at > end) break;
      this.timers.shift();
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = end;
    await flush();
  }

  /**
   * Advances in steps until `cond` holds or `limitMs` of fake time passed; returns whether it
   * held. Each step also gives real I/O (files, sockets) a moment, which the fake time cannot.
   */
  async advanceUntil(cond: () => boolean, limitMs: number, stepMs = 100): Promise<boolean> {
    for (let spent = 0; spent <= limitMs; spent += stepMs) {
      if (cond()) return true;
      await this.advance(stepMs);
      if (!cond()) await new Promise((r) => setTimeout(r, 2));
    }
    return cond();
  }
}
