import test from 'ava';
import { SyncRunner, validateSyncPeriods, type Clock } from '../../src/proxy/runner.ts';
import { MAX_TIMER_MS, realClock } from '../../src/util/clock.ts';

/** A manual clock: timers fire only when the test advances time. */
class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  now() { return this.t; }
  setTimer(fn: () => void, ms: number) { const id = this.next++; this.timers.push({ at: this.t + ms, fn, id }); return id; }
  clearTimer(h: unknown) { this.timers = this.timers.filter((x) => x.id !== h); }
  async advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      this.timers.sort((a, b) => a.at - b.at);
      const due = this.timers[0];
      if (!due || due.at > end) break;
      this.timers.shift();
      this.t = due.at;
      due.fn();
    }
    this.t = end;
    await flush();
  }
}
const flush = async () => { for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r)); };

function setup(min: number, max: number, burst = 2) {
  const clock = new FakeClock();
  const runs: number[] = [];
  const r = new SyncRunner(async () => { runs.push(clock.now()); }, { minIntervalMs: min, maxIntervalMs: max, burst, clock });
  return { clock, runs, r };
}

test('runs at once on start, then at least every maxInterval', async (t) => {
  const { clock, runs, r } = setup(1000, 30_000);
  r.start();
  await clock.advance(0);
  t.deepEqual(runs, [0]);
  await clock.advance(65_000);
  t.deepEqual(runs, [0, 30_000, 60_000]);
  r.stop();
});

test('bursts of requests: two immediately, then one per minInterval', async (t) => {
  const { clock, runs, r } = setup(1000, 30_000);
  r.start();
  await clock.advance(0);
  r.run();
  await clock.advance(0);
  t.deepEqual(runs, [0, 0]);
  for (let i = 0; i < 5; i++) { r.run(); await clock.advance(10); }
  // Coalesced into one run once a token is back (1 s after the bucket emptied).
  await clock.advance(2000);
  t.deepEqual(runs, [0, 0, 1000]);
  r.stop();
});

test('minSyncPeriod 0 syncs on every change; retryAfter schedules a retry', async (t) => {
  const { clock, runs, r } = setup(0, 30_000);
  r.start();
  await clock.advance(0);
  r.run(); await clock.advance(0);
  r.run(); await clock.advance(0);
  r.run(); await clock.advance(0);
  t.is(runs.length, 4);
  r.retryAfter(5000);
  await clock.advance(6000);
  t.deepEqual(runs.slice(4), [5000]);
  r.stop();
});

test('syncs never overlap: a request during a sync runs after it', async (t) => {
  const clock = new FakeClock();
  let active = 0;
  let maxActive = 0;
  let release: (() => void) | null = null;
  let count = 0;
  const r = new SyncRunner(async () => {
    active++; maxActive = Math.max(maxActive, active); count++;
    if (count === 1) await new Promise<void>((res) => { release = res; });
    active--;
  }, { minIntervalMs: 0, maxIntervalMs: 30_000, clock });
  r.start();
  await clock.advance(0);
  r.run(); r.run();
  await clock.advance(0);
  t.is(count, 1);
  release!();
  await clock.advance(0);
  t.is(count, 2);
  t.is(maxActive, 1);
  r.stop();
});

test('whenIdle resolves after stop even with a request pending', async (t) => {
  const { clock, r } = setup(1000, 30_000, 1);
  r.start();
  await clock.advance(0);
  r.run();
  r.stop();
  await r.whenIdle();
  t.pass();
});

test('a sync period longer than Node\'s longest timer (720h) neither spins nor warns, and still fires at the right time', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarning);
  t.teardown(() => { process.off('warning', onWarning); });
  let runs = 0;
  const runner = new SyncRunner(async () => { runs++; }, { minIntervalMs: 1000, maxIntervalMs: 720 * 3_600_000 });
  runner.start();
  await new Promise((r) => setTimeout(r, 300));
  runner.stop();
  t.is(runs, 1);
  t.deepEqual(warnings, []);
  // Past the limit the clock waits in steps: one step of MAX_TIMER_MS is armed, and clearing works.
  const handle = realClock.setTimer(() => t.fail('cleared timer fired'), MAX_TIMER_MS * 3 + 5) as { timer: NodeJS.Timeout };
  t.true(handle.timer.hasRef());
  realClock.clearTimer(handle);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(warnings, []);
});

test('sync periods are validated as kube-proxy does: no upper bound, syncPeriod > 0 and >= minSyncPeriod', (t) => {
  t.notThrows(() => validateSyncPeriods(720 * 3_600_000, 1000));
  t.throws(() => validateSyncPeriods(0, 0), { message: 'iptables.syncPeriod must be greater than 0' });
  t.throws(() => validateSyncPeriods(1000, -1), { message: 'iptables.minSyncPeriod must be greater than or equal to 0' });
  t.throws(() => validateSyncPeriods(1000, 2000), { message: 'iptables.syncPeriod must be greater than or equal to iptables.minSyncPeriod' });
  t.throws(() => validateSyncPeriods(Number.NaN, 0));
});
