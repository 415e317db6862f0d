// knet-userspace-forwarder: the userspace mode's data path, a process of its own compiled with
// Bun (`bun build --compile`, see scripts/build.mjs) and started by the proxy
// (src/proxy/userspace/forwarders.ts). It serves the TCP and UDP listeners the proxy asks for
// (protocol.ts, JSON lines on stdin; replies on stdout) from one epoll loop over raw system
// calls (libc.ts): no runtime sockets, so no per-connection objects beyond its own, splice(2)
// for bulk TCP and recvmmsg(2)/sendmmsg(2) for UDP. Balancing decisions are the proxy's own
// code (balancer.ts), run here. Logs are pino-style JSON lines on stderr. It exits when its
// stdin closes (the proxy is gone, however it went) or on SIGTERM.
import { EAGAIN, EPOLLIN, errno, libc, prepareProcess } from './libc.ts';
import { Loop } from './loop.ts';
import { invalidSpec, invalidUpdate, type FromForwarder, type ToForwarder } from './protocol.ts';
import { TcpService } from './tcp.ts';
import { UdpService } from './udp.ts';

type Service = TcpService | UdpService;

const encoder = new TextEncoder();
/** Writes a line to fd 1 or 2 with write(2) itself: the runtime's own streams would wait for an event loop that never runs. */
function writeLine(fd: number, line: string): void {
  const bytes = encoder.encode(`${line}\n`);
  let at = 0;
  while (at < bytes.length) {
    const n = libc.write(fd, bytes.subarray(at), bytes.length - at);
    if (n < 0) {
      if (errno() === EAGAIN || errno() === 4) continue;
      process.exit(0); // the proxy stopped reading: it is gone
    }
    at += n;
  }
}

function log(level: 'info' | 'warn' | 'error', msg: string, extra: Record<string, unknown> = {}): void {
  const levels = { info: 30, warn: 40, error: 50 };
  writeLine(2, JSON.stringify({ level: levels[level], time: Date.now(), pid: process.pid, name: 'knet-userspace-forwarder', ...extra, msg }));
}

const reply = (m: FromForwarder) => writeLine(1, JSON.stringify(m));

const services = new Map<string, Service>();
const loop = new Loop();

function handle(m: ToForwarder): void {
  switch (m.t) {
    case 'listen': {
      services.get(m.key)?.close();
      services.delete(m.key);
      const bad = invalidSpec(m.spec);
      if (bad) { reply({ t: 'failed', id: m.id, key: m.key, error: `invalid ${bad}` }); return; }
      try {
        const svc = m.spec.protocol === 'tcp' ? new TcpService(loop, m.spec) : new UdpService(loop, m.spec);
        services.set(m.key, svc);
        reply({ t: 'listening', id: m.id, key: m.key, port: svc.port });
      } catch (e) {
        reply({ t: 'failed', id: m.id, key: m.key, error: String((e as Error).message ?? e) });
      }
      return;
    }
    case 'update': {
      // No reply channel for updates: a bad one is logged and the port keeps its endpoints.
      const bad = invalidUpdate(m);
      if (bad) { log('error', 'bad update refused', { key: String(m.key), field: bad }); return; }
      services.get(m.key)?.update(m.endpoints, m.stickySeconds);
      return;
    }
    case 'close':
      services.get(m.key)?.close();
      services.delete(m.key);
      return;
    case 'report': {
      const ports = [...services].map(([key, s]) => {
        const counts = s.counts;
        s.counts = { accepted: 0, dialFailures: 0, noEndpoint: 0, up: 0, down: 0, upPackets: 0, downPackets: 0, evicted: 0 };
        return { key, counts, active: s instanceof TcpService ? s.active : 0, flows: s instanceof UdpService ? s.flowCount : 0 };
      });
      reply({ t: 'report', id: m.id, ports });
      return;
    }
  }
}

/** The control channel: stdin, read whole lines at a time. */
const control = new Uint8Array(65536);
const decoder = new TextDecoder();
let pending = '';
loop.add(0, EPOLLIN, {
  onEvent() {
    const n = libc.read(0, control, control.length);
    if (n === 0) process.exit(0);
    if (n < 0) { if (errno() === EAGAIN || errno() === 4) return; process.exit(0); }
    pending += decoder.decode(control.subarray(0, n), { stream: true });
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (!line) continue;
      try {
        handle(JSON.parse(line) as ToForwarder);
      } catch (e) {
        log('error', 'bad control message', { err: String(e) });
      }
    }
  },
});

prepareProcess();
log('info', 'forwarder started');
loop.run();
