// A worker process of the userspace mode (see workers.ts): accepts on TCP listeners the primary
// shares with it and splices like the primary does (tcp.ts), with its own round robin over the
// endpoint lists the primary sends. Its counts go to the primary on request. It exits when the
// primary goes away (the IPC channel closes) or on SIGTERM.
import { ServicePortBalancer } from './balancer.ts';
import { TcpPortProxy } from './tcp.ts';
import type { FromWorker, ToWorker } from './workers.ts';
import { makeLogger } from '../../util/log.ts';

if (!process.send) throw new Error('knet userspace worker: start it through the proxy (no IPC channel)');
const log = makeLogger('knet-proxy-userspace-worker');
const ports = new Map<string, { proxy: TcpPortProxy; balancer: ServicePortBalancer }>();

const reply = (m: FromWorker) => { if (process.connected) process.send!(m); };

function close(key: string): void {
  const p = ports.get(key);
  if (!p) return;
  ports.delete(key);
  // Its open connections run on, like the primary's after a port closes.
  p.proxy.close();
}

process.on('message', (m: ToWorker, handle?: object) => {
  switch (m.t) {
    case 'listen': {
      close(m.key);
      const balancer = new ServicePortBalancer({ stickySeconds: 0 });
      balancer.update(m.endpoints);
      const proxy = new TcpPortProxy({
        name: m.spec.name, balancer, metrics: null, log, bindHost: '', idleMs: m.spec.idleMs,
        ...(m.spec.keepAliveMs ? { keepAliveMs: m.spec.keepAliveMs } : {}), ...(m.spec.dialTimeoutsMs ? { dialTimeoutsMs: m.spec.dialTimeoutsMs } : {}),
      });
      ports.set(m.key, { proxy, balancer });
      if (!handle) { reply({ t: 'error', key: m.key, err: 'no listening handle' }); return; }
      proxy.listenOn(handle).catch((err: unknown) => reply({ t: 'error', key: m.key, err: String(err) }));
      return;
    }
    case 'endpoints':
      ports.get(m.key)?.balancer.update(m.endpoints);
      return;
    case 'close':
      close(m.key);
      return;
    case 'report': {
      const out: Array<{ key: string; counts: ReturnType<TcpPortProxy['takeCounts']>; active: number }> = [];
      for (const [key, p] of ports) out.push({ key, counts: p.proxy.takeCounts(), active: p.proxy.active });
      reply({ t: 'report', id: m.id, ports: out });
      return;
    }
  }
});

// No orphans: the primary's death closes the channel.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  for (const p of ports.values()) p.proxy.destroy();
  process.exit(0);
});
