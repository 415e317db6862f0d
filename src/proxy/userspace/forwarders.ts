// The userspace mode's forwarder processes (proxy side). The proxy keeps the control plane
// (sources, tracker, runner, endpoint policy, portal rules: dataplane.ts) and hands each
// service port's listener to knet-userspace-forwarder processes (forwarder/main.ts, compiled
// with Bun), which carry the traffic from an epoll loop over raw system calls. With several
// forwarders, TCP ports without ClientIP affinity are opened in each of them on one port
// (SO_REUSEPORT: the kernel spreads new connections over them); ports with affinity and UDP
// ports are served by the first forwarder alone, so a client's affinity and flows live in one
// table. A forwarder that dies alone is started again and given its ports back on the same
// port numbers; forwarders exit when the proxy goes (their stdin closes).
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ListenerBase, type ListenerBaseOptions } from './bind.ts';
import type { UserspaceMetrics } from './metrics.ts';
import { noCounts, type FromForwarder, type PortCounts, type PortSpec, type ToForwarder } from './forwarder/protocol.ts';

export const FORWARDER_NAME = 'knet-userspace-forwarder';

/** The forwarder executable: beside the bundled CLI (dist/), or dist/ of this checkout when run from source. */
export function forwarderExecutable(): string | null {
  for (const rel of [`./${FORWARDER_NAME}`, `../${FORWARDER_NAME}`, `../../../dist/${FORWARDER_NAME}`]) {
    const f = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(f)) return f;
  }
  return null;
}

interface Forwarder {
  index: number;
  child: ChildProcess;
  /** Requests waiting for their reply, by id. */
  waiting: Map<number, (m: FromForwarder | null) => void>;
  /** Keys this forwarder serves. */
  keys: Set<string>;
}

/** A service port served by the forwarders: its port, and its counts for the metrics. */
export class ForwardedPort extends ListenerBase {
  private pending: PortCounts = noCounts();
  private active = 0;
  private flows = 0;
  private endpoints: readonly string[];
  private stickySeconds: number;
  private closed = false;
  private readonly pool: ForwarderPool;
  private readonly events: EventEmitter;
  private readonly metrics: UserspaceMetrics | null;
  readonly key: string;
  readonly spec: PortSpec;

  constructor(pool: ForwarderPool, key: string, spec: PortSpec, base: ListenerBaseOptions) {
    const events = new EventEmitter();
    super(base, `${spec.protocol} forwarder port`, events);
    this.events = events;
    this.pool = pool;
    this.key = key;
    this.spec = { ...spec };
    this.metrics = base.metrics;
    this.endpoints = spec.endpoints;
    this.stickySeconds = spec.stickySeconds;
  }

  /** Opens the port in the forwarders; resolves to its port number. */
  listen(): Promise<number> {
    return this.bound(this.events, (done) => {
      this.pool.open(this).then((port) => { this.spec.port = port; done(); }, (e: unknown) => this.events.emit('error', e));
    }, () => this.spec.port);
  }

  update(endpoints: readonly string[], stickySeconds: number): void {
    const same = endpoints.length === this.endpoints.length && endpoints.every((e, i) => e === this.endpoints[i]) && stickySeconds === this.stickySeconds;
    if (same || this.closed) return;
    this.endpoints = [...endpoints];
    this.stickySeconds = stickySeconds;
    this.spec.endpoints = this.endpoints;
    this.spec.stickySeconds = stickySeconds;
    this.pool.send(this.key, { t: 'update', key: this.key, endpoints: this.endpoints, stickySeconds });
  }

  /** Stops accepting; the forwarders' open connections run on (UDP flows end with the port). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.closePort(this);
    this.detach();
  }

  destroy(): void {
    this.close();
  }

  /** A forwarder's report for this port. */
  add(counts: PortCounts, active: number, flows: number): void {
    const p = this.pending;
    for (const k of Object.keys(p) as Array<keyof PortCounts>) p[k] += counts[k];
    this.active += active;
    this.flows += flows;
  }

  /** Before the reports of a poll come in. */
  resetGauges(): void {
    this.active = 0;
    this.flows = 0;
  }

  protected flush(): void {
    const m = this.metrics;
    if (!m) return;
    const service = this.spec.name;
    const p = this.pending;
    this.pending = noCounts();
    if (p.accepted) m.connections.inc({ service }, p.accepted);
    if (p.dialFailures) m.dialFailures.inc({ service }, p.dialFailures);
    if (p.noEndpoint) m.noEndpoint.inc({ service }, p.noEndpoint);
    if (p.up) m.bytes.inc({ service, direction: 'to_endpoint' }, p.up);
    if (p.down) m.bytes.inc({ service, direction: 'to_client' }, p.down);
    if (this.spec.protocol === 'tcp') {
      m.activeConnections.set({ service }, this.active);
    } else {
      if (p.upPackets) m.udpPackets.inc({ service, direction: 'to_endpoint' }, p.upPackets);
      if (p.downPackets) m.udpPackets.inc({ service, direction: 'to_client' }, p.downPackets);
      if (p.evicted) m.udpFlowEvictions.inc({ service }, p.evicted);
      m.udpFlows.set({ service }, this.flows);
    }
  }
}

export interface ForwarderPoolOptions {
  count: number;
  log: Logger;
  /** The forwarder executable (default: forwarderExecutable()). */
  executable?: string;
  /** Delay before a forwarder that died is started again (default 1 s). */
  restartMs?: number;
  /** How long a forwarder may take to answer (default 10 s). */
  replyTimeoutMs?: number;
}

export class ForwarderPool {
  private readonly forwarders: Array<Forwarder | null> = [];
  private readonly ports = new Map<string, ForwardedPort>();
  private readonly executable: string;
  private nextId = 0;
  private closed = false;
  private polling: Promise<void> | null = null;

  constructor(private readonly o: ForwarderPoolOptions) {
    if (!(Number.isInteger(o.count) && o.count >= 1)) throw new Error('userspace forwarders: count must be 1 or more');
    const exe = o.executable ?? forwarderExecutable();
    if (!exe) throw new Error(`userspace forwarders: ${FORWARDER_NAME} is missing (npm run build makes it; or run the data path in the proxy process with --userspace-workers 0)`);
    this.executable = exe;
    for (let i = 0; i < o.count; i++) this.start(i);
  }

  get pids(): number[] {
    return this.forwarders.flatMap((f) => (f?.child.pid ? [f.child.pid] : []));
  }

  private start(index: number): void {
    // stdin: the control channel, and the forwarder's way to notice the proxy's death.
    const child = spawn(this.executable, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    const f: Forwarder = { index, child, waiting: new Map(), keys: new Set() };
    this.forwarders[index] = f;
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: FromForwarder;
        try { m = JSON.parse(line) as FromForwarder; } catch { this.o.log.warn({ forwarder: index, line }, 'unreadable forwarder message'); continue; }
        const done = f.waiting.get(m.id);
        f.waiting.delete(m.id);
        done?.(m);
      }
    });
    child.stdin!.on('error', () => { /* the exit handler deals with a dead forwarder */ });
    child.on('error', (err) => this.o.log.error({ forwarder: index, err: String(err) }, 'userspace forwarder error'));
    child.once('exit', (code, signal) => {
      if (this.forwarders[index] === f) this.forwarders[index] = null;
      for (const done of f.waiting.values()) done(null);
      f.waiting.clear();
      if (this.closed) return;
      this.o.log.error({ forwarder: index, pid: child.pid, code, signal }, 'userspace forwarder exited; starting another');
      setTimeout(() => { if (!this.closed) this.restart(index); }, this.o.restartMs ?? 1000).unref();
    });
  }

  /** A new forwarder in a dead one's place, serving its ports on the same port numbers. */
  private restart(index: number): void {
    this.start(index);
    for (const port of this.ports.values()) {
      if (!this.serves(index, port.spec)) continue;
      void this.listenIn(index, port, port.spec.port).catch((e: unknown) => {
        this.o.log.error({ forwarder: index, service: port.spec.name, port: port.spec.port, err: String(e) }, 'a restarted forwarder could not listen again');
      });
    }
  }

  /** The first forwarder serves every port; the others only shared (TCP, no affinity) ones. */
  private serves(index: number, spec: PortSpec): boolean {
    return index === 0 || spec.shared;
  }

  private request(f: Forwarder, m: ToForwarder & { id: number }): Promise<FromForwarder | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { f.waiting.delete(m.id); resolve(null); }, this.o.replyTimeoutMs ?? 10_000);
      f.waiting.set(m.id, (r) => { clearTimeout(timer); resolve(r); });
      this.write(f, m);
    });
  }

  private write(f: Forwarder, m: ToForwarder): void {
    if (f.child.stdin!.writable) f.child.stdin!.write(`${JSON.stringify(m)}\n`);
  }

  private async listenIn(index: number, port: ForwardedPort, at: number): Promise<number> {
    const f = this.forwarders[index];
    if (!f) throw new Error(`forwarder ${index} is not running`);
    const r = await this.request(f, { t: 'listen', id: this.nextId++, key: port.key, spec: { ...port.spec, port: at } });
    if (!r) throw new Error(`forwarder ${index} did not answer`);
    if (r.t === 'failed') throw new Error(r.error);
    if (r.t !== 'listening') throw new Error(`forwarder ${index}: unexpected reply ${r.t}`);
    f.keys.add(port.key);
    return r.port;
  }

  /** Opens a port in the forwarders that serve it; resolves to its port number. */
  async open(port: ForwardedPort): Promise<number> {
    this.ports.set(port.key, port);
    const first = await this.listenIn(0, port, port.spec.port);
    if (port.spec.shared) {
      // The others join the first one's port (on failure the first still serves it alone).
      await Promise.all(this.forwarders.slice(1).map((f, i) => f && this.listenIn(i + 1, port, first).catch((e: unknown) => {
        this.o.log.warn({ forwarder: i + 1, service: port.spec.name, err: String(e) }, 'forwarder could not share a port');
      })));
    }
    return first;
  }

  send(key: string, m: ToForwarder): void {
    for (const f of this.forwarders) if (f?.keys.has(key)) this.write(f, m);
  }

  closePort(port: ForwardedPort): void {
    if (this.ports.get(port.key) !== port) return;
    this.ports.delete(port.key);
    this.send(port.key, { t: 'close', key: port.key });
    for (const f of this.forwarders) f?.keys.delete(port.key);
  }

  /** Asks every forwarder for its counts and hands them to the ports (a metrics scrape). */
  poll(): Promise<void> {
    // Every metric's collect asks at once during a scrape: one round for all of them.
    this.polling ??= (async () => {
      const replies = await Promise.all(this.forwarders.map((f) => (f ? this.request(f, { t: 'report', id: this.nextId++ }) : null)));
      for (const p of this.ports.values()) p.resetGauges();
      for (const r of replies) {
        if (r?.t !== 'report') continue;
        for (const x of r.ports) this.ports.get(x.key)?.add(x.counts, x.active, x.flows);
      }
    })().finally(() => { this.polling = null; });
    return this.polling;
  }

  /** Stops every forwarder (their connections end with them). */
  close(): void {
    this.closed = true;
    for (const f of this.forwarders) {
      if (!f) continue;
      f.child.stdin!.end();
      f.child.kill('SIGTERM');
    }
  }
}
