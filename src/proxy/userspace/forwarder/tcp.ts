// The forwarder's TCP side of one service port: a listening socket; per accepted connection a
// non-blocking dial (bounded tries, each on the next endpoint, kube-proxy's growing timeouts),
// then both directions moved by the kernel:
// - small transfers through one shared buffer (recv, then send at once: two system calls per
//   chunk, and a short read proves the socket drained, so no third call to see EAGAIN);
// - a direction that fills the whole buffer in one read is bulk: from then on it is spliced
//   socket -> pipe -> socket, so its bytes never enter this process (pipes are pooled).
// Back-pressure: a direction whose destination is full holds what it read (in its pipe, or a
// copy of the unsent rest) and reads no more until that is written, so memory stays bounded by
// one pipe or buffer per direction. Half-close: a source's end becomes shutdown(SHUT_WR) of
// the destination once everything before it is written; the other direction runs on. A sweep
// arms TCP keepalive on connections that lived through one sweep period and resets pairs that
// moved no byte for the idle timeout.
import { dialPlan } from '../balancer.ts';
import { Endpoints, serviceSocket } from './endpoints.ts';
import type { Loop, Watcher } from './loop.ts';
import {
  AF_INET, EAGAIN, EINPROGRESS, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, F_SETPIPE_SZ, IPPROTO_TCP, MSG_DONTWAIT, MSG_NOSIGNAL,
  O_CLOEXEC, O_NONBLOCK, SHUT_WR, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET, SO_KEEPALIVE, SO_REUSEPORT, SPLICE_F_MOVE,
  SPLICE_F_NONBLOCK, TCP_KEEPIDLE, TCP_NODELAY, errno, failure, libc, ptr, resetClose, setInt, sockaddrIP,
} from './libc.ts';
import { noCounts, type PortCounts, type PortSpec } from './protocol.ts';

const WATCH = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
const READABLE = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
const WRITABLE = EPOLLOUT | EPOLLHUP | EPOLLERR;
const HUP = EPOLLRDHUP | EPOLLHUP | EPOLLERR;
const SPLICE = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// One buffer for every small transfer (the loop is single-threaded: a chunk is sent before the
// next is read).
const SCRATCH = 65536;
const scratch = new Uint8Array(SCRATCH);
const scratchPtr = ptr(scratch);

// Bulk directions splice through a pipe of this size (fewer calls per byte than the default
// 64 KiB). Pipes that end empty go back to the pool.
const PIPE_BYTES = 1 << 20;
const pipePool: Array<[number, number]> = [];
const MAX_POOLED_PIPES = 256;
const pipeFds = new Int32Array(2);

function takePipe(): [number, number] | null {
  const pooled = pipePool.pop();
  if (pooled) return pooled;
  if (libc.pipe2(pipeFds, O_NONBLOCK | O_CLOEXEC) < 0) return null;
  libc.fcntl(pipeFds[1]!, F_SETPIPE_SZ, PIPE_BYTES);
  return [pipeFds[0]!, pipeFds[1]!];
}

function releasePipe(p: [number, number], empty: boolean): void {
  if (empty && pipePool.length < MAX_POOLED_PIPES) { pipePool.push(p); return; }
  libc.close(p[0]);
  libc.close(p[1]);
}

/** One direction of a connection: src -> dst. */
class Direction {
  /** Bulk mode: the pipe, and how many bytes sit in it. */
  pipe: [number, number] | null = null;
  inPipe = 0;
  /** Bytes read but not yet written (buffer mode), as a copy. */
  held: Uint8Array | null = null;
  heldOffset = 0;
  /** The source ended; shut: the destination was told (SHUT_WR). */
  ended = false;
  shut = false;
  moved = 0;
}

const enum State { Dialing, Open, Closed }

class Conn implements Watcher {
  state = State.Dialing;
  upstream = -1;
  readonly up = new Direction();
  readonly down = new Direction();
  clientReadable = false;
  clientWritable = false;
  upstreamReadable = false;
  upstreamWritable = false;
  /** The peer's FIN (or an error) was seen: a short read does not mean "wait for an edge". */
  clientHup = false;
  upstreamHup = false;
  attempt = 0;
  endpoint = '';
  failed: Set<string> | null = null;
  deadline = 0;
  keepAlive = false;
  seen = 0;
  lastMs = 0;

  constructor(readonly svc: TcpService, readonly client: number, readonly clientIP: string) {}

  onEvent(fd: number, ev: number): void {
    if (this.state === State.Dialing) { if (fd === this.upstream) this.connected(ev); return; }
    if (this.state !== State.Open) return;
    if (fd === this.client) {
      if (ev & READABLE) this.clientReadable = true;
      if (ev & WRITABLE) this.clientWritable = true;
      if (ev & HUP) this.clientHup = true;
    } else {
      if (ev & READABLE) this.upstreamReadable = true;
      if (ev & WRITABLE) this.upstreamWritable = true;
      if (ev & HUP) this.upstreamHup = true;
    }
    this.pump();
  }

  private connected(ev: number): void {
    // A refused or reset connect shows as an error/hang-up (and never as writable: the socket
    // is shut both ways), so the event alone tells, without a getsockopt(SO_ERROR) per dial.
    if (ev & (EPOLLERR | EPOLLHUP)) { this.svc.dialFailed(this); return; }
    if (!(ev & EPOLLOUT)) return;
    this.svc.dialed(this);
    this.state = State.Open;
    this.upstreamWritable = true;
    this.upstreamReadable = (ev & READABLE) !== 0;
    this.upstreamHup = (ev & HUP) !== 0;
    this.svc.loop.add(this.client, WATCH, this);
  }

  pump(): void {
    this.move(this.up, this.client, this.upstream, true);
    if (this.state === State.Open) this.move(this.down, this.upstream, this.client, false);
    if (this.state === State.Open && this.up.shut && this.down.shut) this.close(false);
  }

  /** Moves what it can of one direction; `up`: client -> upstream. */
  private move(d: Direction, src: number, dst: number, up: boolean): void {
    for (;;) {
      if (d.inPipe > 0) {
        if (!(up ? this.upstreamWritable : this.clientWritable)) return;
        const n = libc.splice(d.pipe![0], null, dst, null, d.inPipe, SPLICE);
        if (n < 0) { if (errno() === EAGAIN) { this.blocked(up); return; } this.close(true); return; }
        d.inPipe -= n;
        this.count(d, up, n);
        continue;
      }
      if (d.held) {
        if (!(up ? this.upstreamWritable : this.clientWritable)) return;
        const rest = d.held.length - d.heldOffset;
        const n = libc.send(dst, ptr(d.held, d.heldOffset), rest, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) { if (errno() === EAGAIN) { this.blocked(up); return; } this.close(true); return; }
        this.count(d, up, n);
        if (n < rest) { d.heldOffset += n; continue; }
        d.held = null;
        continue;
      }
      if (d.ended) {
        if (!d.shut) { d.shut = true; libc.shutdown(dst, SHUT_WR); }
        return;
      }
      if (!(up ? this.clientReadable : this.upstreamReadable)) return;
      if (d.pipe) {
        const n = libc.splice(src, null, d.pipe[1], null, PIPE_BYTES, SPLICE);
        if (n > 0) { d.inPipe = n; continue; }
        if (n === 0) { d.ended = true; continue; }
        if (errno() === EAGAIN) { this.drained(up); return; }
        this.close(true);
        return;
      }
      const n = libc.recv(src, scratchPtr, SCRATCH, MSG_DONTWAIT);
      if (n === 0) { d.ended = true; continue; }
      if (n < 0) { if (errno() === EAGAIN) { this.drained(up); return; } this.close(true); return; }
      let sent = 0;
      if (up ? this.upstreamWritable : this.clientWritable) {
        sent = libc.send(dst, scratchPtr, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
          if (errno() !== EAGAIN) { this.close(true); return; }
          sent = 0;
        }
        this.count(d, up, sent);
      }
      if (sent < n) { d.held = scratch.slice(sent, n); d.heldOffset = 0; this.blocked(up); }
      if (n === SCRATCH) {
        // A full buffer: bulk. Splice from now on (when a pipe can be had).
        d.pipe = takePipe();
        continue;
      }
      // A short read emptied the socket: the next arrival is a new edge (unless the FIN is
      // already in: no edge follows it, so read on to the end).
      if (sent === n && !(up ? this.clientHup : this.upstreamHup)) { this.drained(up); return; }
    }
  }

  private count(d: Direction, up: boolean, n: number): void {
    d.moved += n;
    if (up) this.svc.counts.up += n; else this.svc.counts.down += n;
  }

  /** The destination is full: wait for its next writable edge. */
  private blocked(up: boolean): void {
    if (up) this.upstreamWritable = false; else this.clientWritable = false;
  }

  /** The source is empty: wait for its next readable edge. */
  private drained(up: boolean): void {
    if (up) this.clientReadable = false; else this.upstreamReadable = false;
  }

  /** Closes both sides (`reset`: with RST, for errors and idle cuts) and returns the pipes. */
  close(reset: boolean): void {
    if (this.state === State.Closed) return;
    const wasOpen = this.state === State.Open;
    this.state = State.Closed;
    const loop = this.svc.loop;
    for (const fd of [this.client, this.upstream]) {
      if (fd < 0) continue;
      loop.forget(fd);
      if (reset) resetClose(fd); else libc.close(fd);
    }
    for (const d of [this.up, this.down]) if (d.pipe) releasePipe(d.pipe, d.inPipe === 0);
    this.svc.closed(this, wasOpen);
  }
}

export class TcpService implements Watcher {
  readonly fd: number;
  readonly port: number;
  readonly endpoints: Endpoints;
  counts: PortCounts = noCounts();
  private readonly conns = new Set<Conn>();
  private readonly dialing = new Set<Conn>();
  private readonly sweepMs: number;
  private sweeping = false;
  private watchingDials = false;
  private listening = true;
  private readonly peer = new Uint8Array(16);
  private readonly peerLength = new Uint32Array(1);

  constructor(readonly loop: Loop, readonly spec: PortSpec) {
    this.endpoints = new Endpoints(spec.endpoints, spec.stickySeconds);
    this.sweepMs = Math.max(100, Math.min(spec.idleMs / 4, 60_000, spec.keepAliveMs ? spec.keepAliveMs / 4 : Infinity));
    const { fd, port } = serviceSocket(loop, this, SOCK_STREAM, spec.bindHost, spec.port, (s) => {
      if (spec.shared) setInt(s, SOL_SOCKET, SO_REUSEPORT, 1);
      // Accepted sockets inherit TCP_NODELAY from the listener: no call per connection.
      setInt(s, IPPROTO_TCP, TCP_NODELAY, 1);
    }, (s) => {
      // A deep backlog: bursts of new connections queue in the kernel instead of being refused.
      if (libc.listen(s, 4096) < 0) throw new Error(failure('listen'));
    });
    this.fd = fd;
    this.port = port;
  }

  get active(): number {
    return this.conns.size;
  }

  update(endpoints: readonly string[], stickySeconds: number): void {
    this.endpoints.update(endpoints, stickySeconds);
  }

  /** Stops accepting; open connections run on. */
  close(): void {
    if (!this.listening) return;
    this.listening = false;
    this.loop.forget(this.fd);
    libc.close(this.fd);
  }

  onEvent(): void {
    const sticky = this.endpoints.balancer.sticky;
    while (this.listening) {
      this.peerLength[0] = 16;
      // The client's address is only needed for affinity (one less copy otherwise).
      const fd = libc.accept4(this.fd, sticky ? this.peer : null, sticky ? this.peerLength : null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const e = errno();
        if (e === EAGAIN) return;
        // Out of file descriptors and the like: the next connection's edge tries again.
        if (e !== 4 && e !== 103 && e !== 71) return;
        continue;
      }
      this.counts.accepted++;
      const c = new Conn(this, fd, sticky ? sockaddrIP(this.peer) : '');
      this.conns.add(c);
      this.dial(c);
    }
  }

  private dial(c: Conn): void {
    for (;;) {
      const { balancer } = this.endpoints;
      const plan = dialPlan(balancer.size, this.spec.dialTimeoutsMs);
      // Out of tries: no pick, so a give-up does not move the rotation.
      const ep = c.attempt < plan.tries ? balancer.pick(c.clientIP, Date.now(), c.failed ?? undefined) : null;
      if (ep === null) {
        this.counts.noEndpoint++;
        // A reset, so the client fails fast instead of waiting on a connection nobody serves.
        c.close(true);
        return;
      }
      c.endpoint = ep;
      const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) { c.close(true); return; }
      setInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
      c.upstream = fd;
      if (libc.connect(fd, this.endpoints.address(ep), 16) === 0 || errno() === EINPROGRESS) {
        c.deadline = this.loop.now + plan.timeoutsMs[c.attempt]!;
        this.dialing.add(c);
        this.watchDials();
        this.loop.add(fd, WATCH, c);
        return;
      }
      this.retry(c);
    }
  }

  private retry(c: Conn): void {
    libc.close(c.upstream);
    c.upstream = -1;
    this.counts.dialFailures++;
    (c.failed ??= new Set()).add(c.endpoint);
    c.attempt++;
  }

  /** A dial failed (refused, unreachable, timed out): the next try, on another endpoint. */
  dialFailed(c: Conn): void {
    this.dialing.delete(c);
    this.loop.forget(c.upstream);
    this.retry(c);
    this.dial(c);
  }

  dialed(c: Conn): void {
    this.dialing.delete(c);
    this.watchSweep();
    c.lastMs = this.loop.now;
  }

  closed(c: Conn, _wasOpen: boolean): void {
    this.conns.delete(c);
    this.dialing.delete(c);
  }

  private watchDials(): void {
    if (this.watchingDials) return;
    this.watchingDials = true;
    // Dial timeouts start at 250 ms: a 50 ms check is close enough.
    this.loop.every(50, (now) => {
      for (const c of this.dialing) if (now >= c.deadline) this.dialFailed(c);
      if (this.dialing.size === 0) this.watchingDials = false;
      return this.watchingDials;
    });
  }

  private watchSweep(): void {
    if (this.sweeping) return;
    this.sweeping = true;
    this.loop.every(this.sweepMs, (now) => {
      this.sweep(now);
      if (this.conns.size === 0) this.sweeping = false;
      return this.sweeping;
    });
  }

  /** Arms keepalive on connections that lived through a sweep; resets pairs idle for idleMs. */
  private sweep(now: number): void {
    const ka = this.spec.keepAliveMs;
    for (const c of this.conns) {
      if (c.state !== State.Open) continue;
      if (ka && !c.keepAlive) {
        c.keepAlive = true;
        for (const fd of [c.client, c.upstream]) {
          setInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
          setInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, Math.max(1, Math.round(ka / 1000)));
        }
      }
      const seen = c.up.moved + c.down.moved;
      if (seen !== c.seen) { c.seen = seen; c.lastMs = now; continue; }
      // Reset, not close: a peer that stopped reading would keep a closed socket's unsent
      // data (and its FIN) queued in the kernel indefinitely.
      if (now - c.lastMs >= this.spec.idleMs) c.close(true);
    }
  }
}
