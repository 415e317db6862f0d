// The forwarder's UDP side of one service port: one socket on a node-local port; per client
// address a flow with its own socket connected to the chosen endpoint (the kernel then hands it
// only that endpoint's datagrams, and an ICMP unreachable ends the flow). Datagrams move in
// batches: recvmmsg(2) takes up to BATCH from a socket in one call and sendmmsg(2) sends each
// run of them that belongs to one flow in one call, from the same buffers (no copy in this
// process). Replies go back from the service socket (the portal's NAT then rewrites them to
// come from the service address). Flows expire when idle; the table is bounded (flows.ts).
import { FlowTable } from '../flows.ts';
import { Endpoints, serviceSocket } from './endpoints.ts';
import type { Loop, Watcher } from './loop.ts';
import {
  AF_INET, EAGAIN, EPOLLET, EPOLLIN, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET, SO_RCVBUF, SO_SNDBUF,
  errno, libc, ptr, setInt, sockaddrIP, sockaddrKey,
} from './libc.ts';
import { noCounts, type PortCounts, type PortSpec } from './protocol.ts';

const BATCH = 64;
const SLOT = 65536;
const MMSG = 64; // sizeof(struct mmsghdr) on x86_64
const IOVEC = 16;

/**
 * The batch buffers, shared by every UDP port (one loop, one batch at a time): BATCH datagram
 * slots with their source addresses, a receive vector (iovecs the size of a slot) and a send
 * vector (iovecs the size of each datagram received).
 */
class Batch {
  readonly slots = new Uint8Array(BATCH * SLOT);
  readonly names = new Uint8Array(BATCH * 16);
  readonly recvIov = new Uint32Array(BATCH * IOVEC / 4);
  readonly sendIov = new Uint32Array(BATCH * IOVEC / 4);
  readonly recvVec = new Uint32Array(BATCH * MMSG / 4);
  readonly sendVec = new Uint32Array(BATCH * MMSG / 4);
  readonly recvVecPtr: number;
  readonly sendVecPtr: number;

  constructor() {
    const slots = ptr(this.slots);
    const names = ptr(this.names);
    const recvIov = ptr(this.recvIov);
    const sendIov = ptr(this.sendIov);
    for (let i = 0; i < BATCH; i++) {
      setPtr(this.recvIov, i * 4, slots + i * SLOT);
      this.recvIov[i * 4 + 2] = SLOT;
      setPtr(this.sendIov, i * 4, slots + i * SLOT);
      const m = i * MMSG / 4;
      setPtr(this.recvVec, m, names + i * 16);
      this.recvVec[m + 2] = 16;
      setPtr(this.recvVec, m + 4, recvIov + i * IOVEC);
      this.recvVec[m + 6] = 1;
      setPtr(this.sendVec, m + 4, sendIov + i * IOVEC);
      this.sendVec[m + 6] = 1;
    }
    this.recvVecPtr = ptr(this.recvVec);
    this.sendVecPtr = ptr(this.sendVec);
  }

  /** Receives up to BATCH datagrams; -1 with errno on failure. */
  receive(fd: number): number {
    for (let i = 0; i < BATCH; i++) this.recvVec[i * MMSG / 4 + 2] = 16; // msg_namelen, in and out
    const n = libc.recvmmsg(fd, this.recvVecPtr, BATCH, MSG_DONTWAIT, null);
    for (let i = 0; i < n; i++) this.sendIov[i * 4 + 2] = this.recvVec[i * MMSG / 4 + 14]!; // msg_len -> iov_len
    return n;
  }

  /** Sends datagrams [from, to) of the last receive, to `name` (a sockaddr pointer) or to the connected peer (0). */
  send(fd: number, from: number, to: number, name: number): number {
    for (let i = from; i < to; i++) {
      const m = i * MMSG / 4;
      setPtr(this.sendVec, m, name);
      this.sendVec[m + 2] = name ? 16 : 0;
    }
    return libc.sendmmsg(fd, this.sendVecPtr + from * MMSG, to - from, MSG_DONTWAIT);
  }

  length(i: number): number {
    return this.sendIov[i * 4 + 2]!;
  }
}

function setPtr(a: Uint32Array, at: number, p: number): void {
  a[at] = p % 4294967296;
  a[at + 1] = Math.floor(p / 4294967296);
}

let batch: Batch | null = null;

interface Flow extends Watcher {
  key: number;
  fd: number;
  /** The client's sockaddr_in, and its address for sendmmsg. */
  client: Uint8Array;
  clientPtr: number;
}

export class UdpService implements Watcher {
  readonly fd: number;
  readonly port: number;
  readonly endpoints: Endpoints;
  counts: PortCounts = noCounts();
  private readonly flows: FlowTable<Flow, number>;
  private sweeping = false;
  private open = true;

  constructor(readonly loop: Loop, readonly spec: PortSpec) {
    batch ??= new Batch();
    this.endpoints = new Endpoints(spec.endpoints, spec.stickySeconds);
    this.flows = new FlowTable<Flow, number>({ idleMs: spec.udpIdleMs, maxFlows: spec.maxFlows });
    const { fd, port } = serviceSocket(loop, this, SOCK_DGRAM, spec.bindHost, spec.port, (s) => {
      if (spec.bufferBytes) { setInt(s, SOL_SOCKET, SO_RCVBUF, spec.bufferBytes); setInt(s, SOL_SOCKET, SO_SNDBUF, spec.bufferBytes); }
    });
    this.fd = fd;
    this.port = port;
  }

  get flowCount(): number {
    return this.flows.size;
  }

  update(endpoints: readonly string[], stickySeconds: number): void {
    this.endpoints.update(endpoints, stickySeconds);
  }

  /** Closes the service socket and every flow (a UDP service port without its socket is gone). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    for (const f of this.flows.clear()) this.closeFlow(f);
    this.loop.forget(this.fd);
    libc.close(this.fd);
  }

  /** Client datagrams: each to its flow's socket, runs of one flow in one sendmmsg. */
  onEvent(): void {
    const b = batch!;
    while (this.open) {
      const n = b.receive(this.fd);
      if (n <= 0) { if (n < 0 && errno() !== EAGAIN) { /* a transient error: the next edge retries */ } return; }
      const now = this.loop.now;
      // Runs of datagrams from one client go out in one call. A run is sent before the next
      // flow is looked up, since opening a flow may evict (and close) the run's.
      let run: Flow | null = null;
      let start = 0;
      for (let i = 0; i < n; i++) {
        const key = sockaddrKey(b.names, i * 16);
        if (run === null || run.key !== key) {
          if (run) b.send(run.fd, start, i, 0);
          run = this.flowFor(key, i, now);
          start = i;
          if (!run) continue;
        }
        this.counts.up += b.length(i);
        this.counts.upPackets++;
      }
      if (run) b.send(run.fd, start, n, 0);
      // Fewer than a batch: the socket is empty, the next datagram is a new edge.
      if (n < BATCH) return;
    }
  }

  private flowFor(key: number, i: number, now: number): Flow | null {
    const f = this.flows.get(key, now);
    if (f) return f;
    const b = batch!;
    const ep = this.endpoints.balancer.pick(sockaddrIP(b.names, i * 16), Date.now());
    if (ep === null) { this.counts.noEndpoint++; return null; }
    const fd = libc.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return null;
    // A connected socket: sends need no address and no route lookup per datagram.
    if (libc.connect(fd, this.endpoints.address(ep), 16) < 0) { libc.close(fd); this.counts.noEndpoint++; return null; }
    const client = b.names.slice(i * 16, i * 16 + 16);
    const flow: Flow = { key, fd, client, clientPtr: ptr(client), onEvent: () => this.fromEndpoint(flow) };
    this.loop.add(fd, EPOLLIN | EPOLLET, flow);
    for (const old of this.flows.add(key, flow, now)) {
      if (old.key !== key) this.counts.evicted++;
      this.closeFlow(old);
    }
    this.watchSweep();
    return flow;
  }

  /** Endpoint replies: back to the client from the service socket, a batch per call. */
  private fromEndpoint(f: Flow): void {
    const b = batch!;
    for (;;) {
      const n = b.receive(f.fd);
      if (n < 0) {
        // ECONNREFUSED (the endpoint's port is closed) and the like end the flow; the
        // client's next datagram picks anew.
        if (errno() !== EAGAIN && this.flows.delete(f.key, f)) this.closeFlow(f);
        return;
      }
      if (n === 0) return;
      this.flows.touch(f.key, this.loop.now);
      for (let i = 0; i < n; i++) this.counts.down += b.length(i);
      this.counts.downPackets += n;
      if (this.open) b.send(this.fd, 0, n, f.clientPtr);
      if (n < BATCH) return;
    }
  }

  private closeFlow(f: Flow): void {
    this.loop.forget(f.fd);
    libc.close(f.fd);
  }

  private watchSweep(): void {
    if (this.sweeping) return;
    this.sweeping = true;
    this.loop.every(Math.max(50, this.spec.udpIdleMs / 2), (now) => {
      for (const f of this.flows.expire(now)) this.closeFlow(f);
      if (this.flows.size === 0) this.sweeping = false;
      return this.sweeping;
    });
  }
}
