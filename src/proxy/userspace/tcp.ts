// The TCP side of one service port: a listener on a node-local port, and per accepted
// connection a dial to an endpoint (bounded tries, each on the next endpoint) and a full-duplex
// splice. The splice gives back-pressure (a side that stops reading pauses the other side, so
// memory stays bounded by the socket buffers) and allowHalfOpen lets a FIN travel on while the
// other direction keeps flowing. TCP keepalive and an idle sweep reset dead or stalled peers.
import net from 'node:net';
import { dialPlan, type ServicePortBalancer } from './balancer.ts';
import { ListenerBase, type ListenerBaseOptions } from './bind.ts';

export interface TcpPortOptions extends ListenerBaseOptions {
  balancer: ServicePortBalancer;
  /** No byte moving either way for this long resets both sides (checked every idleMs/4, at most every minute or keepAliveMs/4). */
  idleMs: number;
  /** Per-try dial timeouts (length bounds the tries). */
  dialTimeoutsMs?: readonly number[];
  /**
   * TCP keepalive delay on both sides, so vanished peers are noticed while idle. Armed by the
   * sweep (every keepAliveMs/4 at most), so short connections skip its 8 setsockopt calls.
   */
  keepAliveMs?: number;
}

/** What a listener counted since it was last asked (a worker's report to the primary). */
export interface TcpCounts { accepted: number; dialFailures: number; noEndpoint: number; up: number; down: number }
const noCounts = (): TcpCounts => ({ accepted: 0, dialFailures: 0, noEndpoint: 0, up: 0, down: 0 });

interface Conn {
  client: net.Socket;
  upstream: net.Socket | null;
  countedUp: number;
  countedDown: number;
  /** Bytes read from both sides at the last sweep, and when that last changed. */
  seen: number;
  lastMs: number;
  keepAlive: boolean;
  /** The upstream's own read buffer (readInto), or null: Node allocates one per read. */
  buf: Buffer | null;
  /** Part of buf is still queued towards the client: the upstream reads no more until it is written. */
  held: boolean;
  /** Write callback of readInto's writes. */
  release?: () => void;
}

// Endpoint -> client bytes are read into one buffer per connection, reused (net.connect's
// onread), instead of a fresh 64 KiB allocation per read: in a single stream that takes about
// a quarter less CPU per byte (scripts/bench/userspace, endpoint -> client). The buffers are bounded per process; connections beyond run as
// before. (Node 20 offers no such option for accepted sockets: client -> endpoint stays as is.)
const READ_BUFFER = 65536;
const MAX_READ_BUFFERS = 256;
let readBuffers = 0;

const clientIP = (s: net.Socket) => {
  const a = s.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
};

function splitHostPort(ep: string): [string, number] {
  const i = ep.lastIndexOf(':');
  const host = ep.slice(0, i);
  return [host.startsWith('[') ? host.slice(1, -1) : host, Number(ep.slice(i + 1))];
}

export class TcpPortProxy extends ListenerBase {
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private sweeper: NodeJS.Timeout | null = null;
  private pending = noCounts();
  /** Open connections in each worker process sharing this listener, as last reported. */
  private readonly remoteActive = new Map<number, number>();

  constructor(private readonly o: TcpPortOptions) {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => this.accept(s));
    super(o, 'tcp listener', server);
    this.server = server;
  }

  get active(): number {
    return this.conns.size;
  }

  listen(): Promise<number> {
    // A deep backlog: bursts of new connections should queue in the kernel, not be refused.
    const opts = { host: this.o.bindHost, port: this.o.port ?? 0, backlog: 4096 };
    return this.bound(this.server, (cb) => this.server.listen(opts, cb), () => (this.server.address() as net.AddressInfo).port);
  }

  /** The listening socket's handle, to share with a worker process (child_process send). */
  get handle(): object {
    return (this.server as unknown as { _handle: object })._handle;
  }

  /** Accepts on a listening handle received from the primary (a worker process). */
  listenOn(handle: object): Promise<number> {
    return this.bound(this.server, (cb) => this.server.listen(handle, cb), () => (this.server.address() as net.AddressInfo).port);
  }

  /** This process's counts since the last call (live connections' bytes included); resets them. */
  takeCounts(): TcpCounts {
    for (const c of this.conns) this.countBytes(c);
    const p = this.pending;
    this.pending = noCounts();
    return p;
  }

  /** Counts and open connections reported by worker process `worker` for this listener. */
  addRemote(worker: number, counts: TcpCounts, active: number): void {
    const p = this.pending;
    p.accepted += counts.accepted; p.dialFailures += counts.dialFailures; p.noEndpoint += counts.noEndpoint; p.up += counts.up; p.down += counts.down;
    if (active > 0) this.remoteActive.set(worker, active); else this.remoteActive.delete(worker);
  }

  /** A worker went away: its connections went with it. */
  dropRemote(worker: number): void {
    this.remoteActive.delete(worker);
  }

  /** Stops accepting; established connections run on until their peers close them. */
  close(): void {
    this.server.close();
    this.detach();
  }

  /** Closes the listener and every connection (shutdown, tests). */
  destroy(): void {
    this.close();
    for (const c of this.conns) { c.client.destroy(); c.upstream?.destroy(); }
  }

  protected flush(): void {
    const m = this.o.metrics;
    if (!m) return;
    const service = this.o.name;
    const p = this.takeCounts();
    if (p.accepted) m.connections.inc({ service }, p.accepted);
    if (p.dialFailures) m.dialFailures.inc({ service }, p.dialFailures);
    if (p.noEndpoint) m.noEndpoint.inc({ service }, p.noEndpoint);
    if (p.up) m.bytes.inc({ service, direction: 'to_endpoint' }, p.up);
    if (p.down) m.bytes.inc({ service, direction: 'to_client' }, p.down);
    let active = this.conns.size;
    for (const n of this.remoteActive.values()) active += n;
    m.activeConnections.set({ service }, active);
  }

  private countBytes(c: Conn): void {
    if (!c.upstream) return;
    const up = c.upstream.bytesWritten;
    const down = c.client.bytesWritten;
    this.pending.up += up - c.countedUp;
    this.pending.down += down - c.countedDown;
    c.countedUp = up;
    c.countedDown = down;
  }

  private accept(client: net.Socket): void {
    this.pending.accepted++;
    const c: Conn = { client, upstream: null, countedUp: 0, countedDown: 0, seen: 0, lastMs: 0, keepAlive: false, buf: null, held: false };
    this.conns.add(c);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.countBytes(c);
      this.conns.delete(c);
      if (c.buf) { c.buf = null; readBuffers--; }
    };
    client.on('error', () => { c.upstream?.destroy(); });
    client.on('close', () => {
      // The client is gone; an upstream still sending has nobody to send to.
      if (c.upstream && !c.upstream.destroyed && !c.upstream.writableEnded) c.upstream.destroy();
      if (!c.upstream || c.upstream.destroyed) finish();
    });
    // getpeername is a syscall per connection: only affinity needs the address.
    this.dial(c, this.o.balancer.sticky ? clientIP(client) : '', undefined, 0, finish);
  }

  private dial(c: Conn, ip: string, failed: Set<string> | undefined, attempt: number, finish: () => void): void {
    const { client } = c;
    if (client.destroyed) { finish(); return; }
    const plan = dialPlan(this.o.balancer.size, this.o.dialTimeoutsMs);
    // Out of tries: no pick, so a give-up does not move the rotation.
    const ep = attempt < plan.tries ? this.o.balancer.pick(ip, Date.now(), failed) : null;
    if (ep === null) {
      this.pending.noEndpoint++;
      // A reset, so the client fails fast instead of waiting on a connection nobody serves.
      client.resetAndDestroy();
      finish();
      return;
    }
    const [host, port] = splitHostPort(ep);
    if (!c.buf && readBuffers < MAX_READ_BUFFERS) { c.buf = Buffer.allocUnsafe(READ_BUFFER); readBuffers++; }
    const up = net.connect({ host, port, allowHalfOpen: true, noDelay: true, ...(c.buf ? { onread: { buffer: c.buf, callback: (n: number, b: Buffer) => readInto(c, n, b) } } : {}) });
    const timer = setTimeout(() => up.destroy(new Error('dial timeout')), plan.timeoutsMs[attempt]);
    const onDialError = () => {
      clearTimeout(timer);
      this.pending.dialFailures++;
      this.dial(c, ip, (failed ?? new Set()).add(ep), attempt + 1, finish);
    };
    up.once('error', onDialError);
    up.once('connect', () => {
      clearTimeout(timer);
      up.off('error', onDialError);
      if (client.destroyed) { up.destroy(); finish(); return; }
      c.upstream = up;
      this.splice(c, finish);
    });
  }

  private ensureSweeper(): void {
    if (this.sweeper) return;
    // One coarse sweep instead of a timer per socket: socket timeouts are re-armed on every
    // chunk read or written, a cost paid per chunk on the hot path.
    const every = Math.min(this.o.idleMs / 4, 60_000, this.o.keepAliveMs ? this.o.keepAliveMs / 4 : Infinity);
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, every));
    this.sweeper.unref();
  }

  /** Resets pairs that moved no byte for idleMs (dead peers, a client that stopped reading). */
  private sweep(): void {
    const now = Date.now();
    const ka = this.o.keepAliveMs;
    for (const c of this.conns) {
      if (!c.upstream) continue;
      // Keepalive probes start keepAliveMs after the last packet: a connection younger than a
      // sweep period would not have sent one yet, so arming it here loses (almost) nothing.
      if (ka && !c.keepAlive) { c.keepAlive = true; c.client.setKeepAlive(true, ka); c.upstream.setKeepAlive(true, ka); }
      const seen = c.client.bytesRead + c.upstream.bytesRead;
      if (seen !== c.seen) { c.seen = seen; c.lastMs = now; continue; }
      // Reset, not close: a peer that stopped reading would keep a closed socket's unsent
      // data (and its FIN) queued in the kernel indefinitely.
      if (now - c.lastMs >= this.o.idleMs) { c.client.resetAndDestroy(); c.upstream.resetAndDestroy(); }
    }
    if (this.conns.size === 0 && this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
  }

  private splice(c: Conn, finish: () => void): void {
    const { client } = c;
    const up = c.upstream!;
    c.lastMs = Date.now();
    this.ensureSweeper();
    up.on('error', () => { client.destroy(); });
    up.on('close', () => {
      if (!client.destroyed && !client.writableEnded) client.destroy();
      if (client.destroyed) finish();
    });
    // (The client's close handler, set on accept, finishes once both are gone.)
    forward(client, up);
    if (c.buf) {
      // readInto's back-pressure: a held buffer is released once the client took all of it.
      c.release = () => { if (c.held && client.writableLength === 0) { c.held = false; up.resume(); } };
      up.on('end', () => client.end());
    } else {
      forward(up, client);
    }
    client.resume();
  }
}

/** An upstream read into c.buf: on to the client; false stops reading while libuv still holds part of buf. */
function readInto(c: Conn, n: number, b: Buffer): boolean {
  // Written through (the usual case) unless something is queued: then buf is free again at once.
  c.client.write(b.subarray(0, n), c.release);
  if (c.client.writableLength === 0) return true;
  c.held = true;
  return false;
}

/**
 * One direction of a splice: what pipe() does for sockets, with three listeners instead of
 * pipe's dozen (they cost per connection). Half-close: the source's end ends the destination;
 * with allowHalfOpen the destination's other direction stays open until its own peer ends it.
 */
function forward(src: net.Socket, dst: net.Socket): void {
  src.on('data', (d: Buffer) => { if (!dst.write(d)) src.pause(); });
  dst.on('drain', () => src.resume());
  src.on('end', () => dst.end());
}
