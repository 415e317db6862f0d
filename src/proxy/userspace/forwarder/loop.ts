// The forwarder's event loop: one epoll set, each fd's watcher in an array by fd number, and a
// few periodic tasks. Sockets are watched edge-triggered (registered once, never modified: a
// watcher keeps its own readable/writable flags and clears them on EAGAIN). Each registration
// carries a generation beside the fd, so an event queued for a closed fd is never delivered to
// a new socket that got the same number within one batch.
import { EPOLL_CTL_ADD, failure, libc } from './libc.ts';

export interface Watcher {
  onEvent(fd: number, events: number): void;
}

interface Task { next: number; every: number; run(now: number): boolean }

const MAX_EVENTS = 256;

export class Loop {
  private readonly ep: number;
  private readonly watchers: Array<Watcher | undefined> = [];
  private readonly generations: number[] = [];
  private readonly events = new Uint32Array(MAX_EVENTS * 3);
  private readonly registration = new Uint32Array(3);
  private tasks: Task[] = [];
  /** The time at the last wake-up (ms, monotonic): what the watchers use as "now". */
  now = performance.now();

  constructor() {
    this.ep = libc.epoll_create1(0o2000000);
    if (this.ep < 0) throw new Error(failure('epoll_create1'));
  }

  /** Watches fd for `events`; the fd leaves the set when it is closed (forget it then). */
  add(fd: number, events: number, w: Watcher): void {
    const gen = ((this.generations[fd] ?? 0) + 1) >>> 0;
    this.generations[fd] = gen;
    this.watchers[fd] = w;
    // struct epoll_event is packed on x86_64: u32 events, then the u64 data (fd, generation).
    this.registration[0] = events >>> 0;
    this.registration[1] = fd;
    this.registration[2] = gen;
    if (libc.epoll_ctl(this.ep, EPOLL_CTL_ADD, fd, this.registration) < 0) {
      this.watchers[fd] = undefined;
      throw new Error(failure(`epoll_ctl add ${fd}`));
    }
  }

  /** Drops fd's watcher (call when closing it). */
  forget(fd: number): void {
    this.watchers[fd] = undefined;
    this.generations[fd] = ((this.generations[fd] ?? 0) + 1) >>> 0;
  }

  /** Runs `run` every `everyMs` until it returns false. */
  every(everyMs: number, run: (now: number) => boolean): void {
    this.tasks.push({ next: this.now + everyMs, every: everyMs, run });
  }

  /** Waits for events and runs watchers and tasks, forever. */
  run(): never {
    const ev = this.events;
    for (;;) {
      let timeout = -1;
      if (this.tasks.length) {
        let first = Infinity;
        for (const t of this.tasks) if (t.next < first) first = t.next;
        timeout = Math.max(0, Math.ceil(first - performance.now()));
      }
      const n = libc.epoll_wait(this.ep, ev, MAX_EVENTS, timeout);
      this.now = performance.now();
      for (let i = 0; i < n; i++) {
        const fd = ev[i * 3 + 1]!;
        if (this.generations[fd] !== ev[i * 3 + 2]) continue;
        this.watchers[fd]?.onEvent(fd, ev[i * 3]!);
      }
      if (this.tasks.length) this.runTasks();
    }
  }

  private runTasks(): void {
    const now = this.now;
    let ended = false;
    for (const t of this.tasks) {
      if (t.next > now) continue;
      t.next = now + t.every;
      if (!t.run(now)) { t.every = -1; ended = true; }
    }
    if (ended) this.tasks = this.tasks.filter((t) => t.every >= 0);
  }
}
