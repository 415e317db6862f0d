// The UDP side of one service port: one socket on a node-local port; per client "ip:port" a
// flow with its own socket towards the chosen endpoint, so replies can be told apart and are
// sent back from the service's socket (the portal's NAT then rewrites them to come from the
// service address). Flows expire when idle and the table is bounded (flows.ts).
import dgram from 'node:dgram';
import type { ServicePortBalancer } from './balancer.ts';
import { FlowTable } from './flows.ts';
import { ListenerBase, type ListenerBaseOptions } from './bind.ts';

export interface UdpPortOptions extends ListenerBaseOptions {
  balancer: ServicePortBalancer;
  idleMs: number;
  maxFlows: number;
  /** Socket buffer size for the service socket (bursts of small datagrams). */
  bufferBytes?: number;
}

// Every address sent to is an IP literal (a client's from recvfrom, an endpoint's validated by
// the model), so the per-datagram dns.lookup (and its extra tick) is skipped.
const literal = ((address: string, _family: unknown, cb: (err: null, address: string, family: number) => void) => cb(null, address, 4)) as unknown as dgram.SocketOptions['lookup'];

interface Flow {
  key: string;
  clientAddr: string;
  clientPort: number;
  epHost: string;
  epPort: number;
  sock: dgram.Socket;
  /** Datagrams that arrived before the flow socket was connected (null once it is). */
  early: Buffer[] | null;
}

export class UdpPortProxy extends ListenerBase {
  private readonly sock: dgram.Socket;
  private readonly flows: FlowTable<Flow>;
  private sweeper: NodeJS.Timeout | null = null;
  private pending = { up: 0, down: 0, upPkts: 0, downPkts: 0, noEndpoint: 0, evicted: 0 };
  private closed = false;

  constructor(private readonly o: UdpPortOptions) {
    const sock = dgram.createSocket({ type: 'udp4', lookup: literal, ...(o.bufferBytes ? { recvBufferSize: o.bufferBytes, sendBufferSize: o.bufferBytes } : {}) });
    super(o, 'udp socket', sock);
    this.sock = sock;
    this.flows = new FlowTable<Flow>({ idleMs: o.idleMs, maxFlows: o.maxFlows });
    sock.on('message', (m, r) => this.fromClient(m, r));
  }

  get flowCount(): number {
    return this.flows.size;
  }

  listen(): Promise<number> {
    const opts = { address: this.o.bindHost, port: this.o.port ?? 0 };
    return this.bound(this.sock, (cb) => this.sock.bind(opts, cb), () => this.sock.address().port);
  }

  /** Closes the service socket and every flow (a UDP service port without its socket is gone). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const f of this.flows.clear()) f.sock.close();
    this.sock.close();
    this.detach();
  }

  protected flush(): void {
    const m = this.o.metrics;
    if (!m) return;
    const service = this.o.name;
    const p = this.pending;
    if (p.up) m.bytes.inc({ service, direction: 'to_endpoint' }, p.up);
    if (p.down) m.bytes.inc({ service, direction: 'to_client' }, p.down);
    if (p.upPkts) m.udpPackets.inc({ service, direction: 'to_endpoint' }, p.upPkts);
    if (p.downPkts) m.udpPackets.inc({ service, direction: 'to_client' }, p.downPkts);
    if (p.noEndpoint) m.noEndpoint.inc({ service }, p.noEndpoint);
    if (p.evicted) m.udpFlowEvictions.inc({ service }, p.evicted);
    m.udpFlows.set({ service }, this.flows.size);
    this.pending = { up: 0, down: 0, upPkts: 0, downPkts: 0, noEndpoint: 0, evicted: 0 };
  }

  private fromClient(msg: Buffer, r: dgram.RemoteInfo): void {
    const key = `${r.address}:${r.port}`;
    const now = performance.now();
    const f = this.flows.get(key, now) ?? this.open(key, r, now);
    if (!f) return;
    this.pending.up += msg.length;
    this.pending.upPkts++;
    if (f.early === null) f.sock.send(msg);
    else if (f.early.length < 64) f.early.push(msg);
  }

  private open(key: string, r: dgram.RemoteInfo, now: number): Flow | null {
    const ep = this.o.balancer.pick(r.address, Date.now());
    if (ep === null) { this.pending.noEndpoint++; return null; }
    const i = ep.lastIndexOf(':');
    const sock = dgram.createSocket({ type: 'udp4', lookup: literal });
    const f: Flow = { key, clientAddr: r.address, clientPort: r.port, epHost: ep.slice(0, i), epPort: Number(ep.slice(i + 1)), sock, early: [] };
    // A connected socket: the kernel delivers only the endpoint's datagrams to it, sends skip
    // the address handling and route lookup per datagram, and an endpoint's ICMP unreachable
    // surfaces as an error that drops the flow (the next datagram picks anew).
    sock.connect(f.epPort, f.epHost, () => {
      const early = f.early!;
      f.early = null;
      for (const m of early) sock.send(m);
    });
    sock.on('message', (m) => {
      this.flows.touch(key, performance.now());
      this.pending.down += m.length;
      this.pending.downPkts++;
      this.sock.send(m, f.clientPort, f.clientAddr);
    });
    sock.on('error', () => this.drop(f));
    for (const old of this.flows.add(key, f, now)) {
      if (old.key !== key) this.pending.evicted++;
      old.sock.close();
    }
    if (!this.sweeper) {
      // Sweeps only while flows exist; unref'd so an idle proxy can exit.
      this.sweeper = setInterval(() => this.sweep(), Math.max(50, this.o.idleMs / 2));
      this.sweeper.unref();
    }
    return f;
  }

  private drop(f: Flow): void {
    if (this.flows.delete(f.key, f)) f.sock.close();
  }

  private sweep(): void {
    for (const f of this.flows.expire(performance.now())) f.sock.close();
    if (this.flows.size === 0 && this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
  }
}
