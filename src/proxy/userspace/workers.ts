// Worker processes of the userspace mode (primary side). Node runs JavaScript on one core; with
// workers, each TCP service port's listening socket is also handed (child_process send) to N
// worker processes, and the kernel spreads new connections over every process accepting on it.
// The primary keeps the rules, UDP, and every port with ClientIP affinity (its table must be
// one). A worker only splices TCP: it gets each shared listener with its settings and endpoint
// list, and reports its counts when the primary's metrics are scraped. Workers die with the
// primary (they exit when the IPC channel closes: crash, SIGKILL) and are restarted if they
// die alone. Round robin is per process: the spread stays even, not a strict global rotation.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { TcpCounts, TcpPortProxy } from './tcp.ts';

/** What a worker needs to serve a shared listener (beside its handle). */
export interface ListenSpec {
  name: string;
  idleMs: number;
  keepAliveMs?: number;
  dialTimeoutsMs?: readonly number[];
}

/** Messages primary -> worker. */
export type ToWorker =
  | { t: 'listen'; key: string; spec: ListenSpec; endpoints: readonly string[] }
  | { t: 'endpoints'; key: string; endpoints: readonly string[] }
  | { t: 'close'; key: string }
  | { t: 'report'; id: number };

/** Messages worker -> primary. */
export type FromWorker =
  | { t: 'report'; id: number; ports: Array<{ key: string; counts: TcpCounts; active: number }> }
  | { t: 'error'; key: string; err: string };

interface Shared { proxy: TcpPortProxy; spec: ListenSpec; endpoints: readonly string[] }

interface Worker { id: number; child: ChildProcess; waiting: Map<number, () => void> }

/** The worker entry beside this module: source under tsx, or the bundle next to a bundled CLI. */
export function workerEntry(): string | null {
  for (const rel of ['./worker.ts', './knet-userspace-worker.js', './knet-userspace-worker.mjs', '../knet-userspace-worker.js']) {
    const f = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(f)) return f;
  }
  return null;
}

export interface WorkerPoolOptions {
  count: number;
  log: Logger;
  /** Worker script (default: workerEntry()). */
  entry?: string;
  /** Delay before a worker that died is started again (default 1 s). */
  restartMs?: number;
}

export class WorkerPool {
  private readonly workers = new Map<number, Worker>();
  private readonly shared = new Map<string, Shared>();
  private readonly entry: string;
  private nextId = 0;
  private nextReport = 0;
  private closed = false;
  private polling: Promise<void> | null = null;

  constructor(private readonly o: WorkerPoolOptions) {
    const entry = o.entry ?? workerEntry();
    if (!entry) throw new Error('userspace workers: the worker script (worker.ts or knet-userspace-worker.js) is missing');
    this.entry = entry;
    for (let i = 0; i < o.count; i++) this.start();
  }

  get pids(): number[] {
    return [...this.workers.values()].map((w) => w.child.pid!).filter(Boolean);
  }

  private start(): void {
    const id = this.nextId++;
    // The primary's flags (--import tsx under tests) carry over; the IPC channel is how the
    // worker notices the primary's death.
    const child = fork(this.entry, [], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const w: Worker = { id, child, waiting: new Map() };
    this.workers.set(id, w);
    child.on('message', (m: FromWorker) => this.onMessage(w, m));
    child.on('error', (err) => this.o.log.error({ worker: id, err: String(err) }, 'userspace worker error'));
    child.once('exit', (code, signal) => {
      this.workers.delete(id);
      for (const done of w.waiting.values()) done();
      for (const s of this.shared.values()) s.proxy.dropRemote(id);
      if (this.closed) return;
      this.o.log.error({ worker: id, pid: child.pid, code, signal }, 'userspace worker exited; starting another');
      setTimeout(() => { if (!this.closed) this.start(); }, this.o.restartMs ?? 1000).unref();
    });
    for (const [key, s] of this.shared) this.send(w, { t: 'listen', key, spec: s.spec, endpoints: s.endpoints }, s.proxy.handle);
  }

  private send(w: Worker, m: ToWorker, handle?: object): void {
    if (!w.child.connected) return;
    // A worker that died between the check and the write: its exit handler restarts it.
    w.child.send(m, handle as never, (err) => { if (err) this.o.log.warn({ worker: w.id, err: String(err) }, 'userspace worker unreachable'); });
  }

  private onMessage(w: Worker, m: FromWorker): void {
    if (m.t === 'error') { this.o.log.error({ worker: w.id, key: m.key, err: m.err }, 'userspace worker listener error'); return; }
    for (const p of m.ports) this.shared.get(p.key)?.proxy.addRemote(w.id, p.counts, p.active);
    w.waiting.get(m.id)?.();
  }

  /** Serves a TCP port in the workers too, with these endpoints (idempotent; sends only changes). */
  share(key: string, proxy: TcpPortProxy, spec: ListenSpec, endpoints: readonly string[]): void {
    const s = this.shared.get(key);
    if (s && s.proxy === proxy) {
      if (s.endpoints.length === endpoints.length && s.endpoints.every((e, i) => e === endpoints[i])) return;
      s.endpoints = [...endpoints];
      for (const w of this.workers.values()) this.send(w, { t: 'endpoints', key, endpoints: s.endpoints });
      return;
    }
    const next = { proxy, spec, endpoints: [...endpoints] };
    this.shared.set(key, next);
    for (const w of this.workers.values()) this.send(w, { t: 'listen', key, spec, endpoints: next.endpoints }, proxy.handle);
  }

  /** Stops serving a port in the workers (their open connections run on). */
  unshare(key: string): void {
    if (!this.shared.delete(key)) return;
    for (const w of this.workers.values()) this.send(w, { t: 'close', key });
  }

  /** Asks every worker for its counts (folded into the shared ports' metrics); at most timeoutMs. */
  poll(timeoutMs = 1000): Promise<void> {
    // Every metric's collect asks at once during a scrape: one round for all of them.
    this.polling ??= Promise.all([...this.workers.values()].map((w) => new Promise<void>((resolve) => {
      const id = this.nextReport++;
      const timer = setTimeout(done, timeoutMs);
      function done() { clearTimeout(timer); w.waiting.delete(id); resolve(); }
      w.waiting.set(id, done);
      this.send(w, { t: 'report', id });
    }))).then(() => { this.polling = null; });
    return this.polling;
  }

  /** Stops every worker (their connections end with them). */
  close(): void {
    this.closed = true;
    for (const w of this.workers.values()) w.child.kill('SIGTERM');
  }
}
