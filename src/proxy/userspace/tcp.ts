// The TCP side of one service port: a listener on a node-local port, and per accepted
// connection a dial to an endpoint (bounded tries, each on the next endpoint) and a full-duplex
// splice. pipe() gives back-pressure (a side that stops reading pauses the other side, so
// memory stays bounded by the socket buffers) and allowHalfOpen lets a FIN travel on while the
// other direction keeps flowing. TCP keepalive and an idle sweep reset dead or stalled peers.
import net from 'node:net';
import { dialPlan } from './balancer.ts';
import { ListenerBase, type ListenerBaseOptions } from './bind.ts';

export interface TcpPortOptions extends ListenerBaseOptions {
  /** No byte moving either way for this long resets both sides (checked every idleMs/4, at most every minute). */
  idleMs: number;
  /** Per-try dial timeouts (length bounds the tries). */
  dialTimeoutsMs?: readonly number[];
  /** TCP keepalive delay on both sides, so vanished peers are noticed while idle. */
  keepAliveMs?: number;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket | null;
  countedUp: number;
  countedDown: number;
  /** Bytes read from both sides at the last sweep, and when that last changed. */
  seen: number;
  lastMs: number;
}

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
  private pending = { accepted: 0, dialFailures: 0, noEndpoint: 0, up: 0, down: 0 };

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
    const service = this.o.name;
    for (const c of this.conns) this.countBytes(c);
    const p = this.pending;
    if (p.accepted) m.connections.inc({ service }, p.accepted);
    if (p.dialFailures) m.dialFailures.inc({ service }, p.dialFailures);
    if (p.noEndpoint) m.noEndpoint.inc({ service }, p.noEndpoint);
    if (p.up) m.bytes.inc({ service, direction: 'to_endpoint' }, p.up);
    if (p.down) m.bytes.inc({ service, direction: 'to_client' }, p.down);
    m.activeConnections.set({ service }, this.conns.size);
    this.pending = { accepted: 0, dialFailures: 0, noEndpoint: 0, up: 0, down: 0 };
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
    const c: Conn = { client, upstream: null, countedUp: 0, countedDown: 0, seen: 0, lastMs: 0 };
    this.conns.add(c);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      this.countBytes(c);
      this.conns.delete(c);
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
    const up = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
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
    this.sweeper = setInterval(() => this.sweep(), Math.max(100, Math.min(this.o.idleMs / 4, 60_000)));
    this.sweeper.unref();
  }

  /** Resets pairs that moved no byte for idleMs (dead peers, a client that stopped reading). */
  private sweep(): void {
    const now = Date.now();
    for (const c of this.conns) {
      if (!c.upstream) continue;
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
    if (this.o.keepAliveMs) { client.setKeepAlive(true, this.o.keepAliveMs); up.setKeepAlive(true, this.o.keepAliveMs); }
    c.lastMs = Date.now();
    this.ensureSweeper();
    up.on('error', () => { client.destroy(); });
    up.on('close', () => {
      if (!client.destroyed && !client.writableEnded) client.destroy();
      if (client.destroyed) finish();
    });
    client.on('close', () => { if (up.destroyed) finish(); });
    // Half-close: pipe() ends the destination when the source ends; with allowHalfOpen the
    // destination's other direction stays open until its own peer ends it.
    client.pipe(up);
    up.pipe(client);
    client.resume();
  }
}
