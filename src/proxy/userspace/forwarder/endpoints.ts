// A forwarder port's endpoints: the proxy's own balancer (round robin, ClientIP affinity) and
// each endpoint's sockaddr_in, built once per update instead of per connection or flow.
import { ServicePortBalancer } from '../balancer.ts';
import { AF_INET, EPOLLET, EPOLLIN, SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET, SO_REUSEADDR, boundPort, failure, libc, setInt, sockaddrIn } from './libc.ts';
import type { Loop, Watcher } from './loop.ts';

export class Endpoints {
  readonly balancer: ServicePortBalancer;
  private addresses = new Map<string, Uint8Array>();

  constructor(endpoints: readonly string[], stickySeconds: number) {
    this.balancer = new ServicePortBalancer({ stickySeconds });
    this.update(endpoints, stickySeconds);
  }

  /**
   * New endpoints ("ip:port") and affinity timeout; expired affinity goes too. The addresses are
   * built first: an endpoint that is not one throws before anything changed.
   */
  update(endpoints: readonly string[], stickySeconds: number): void {
    const addresses = new Map<string, Uint8Array>();
    for (const ep of endpoints) {
      const i = ep.lastIndexOf(':');
      const a = new Uint8Array(16);
      sockaddrIn(a, ep.slice(0, i), Number(ep.slice(i + 1)));
      addresses.set(ep, a);
    }
    this.balancer.setStickySeconds(stickySeconds);
    this.balancer.update(endpoints);
    this.balancer.sweep(Date.now());
    this.addresses = addresses;
  }

  /** The sockaddr_in of an endpoint the balancer picked. */
  address(endpoint: string): Uint8Array {
    return this.addresses.get(endpoint)!;
  }
}

/**
 * A service port's socket: non-blocking IPv4 of `type`, SO_REUSEADDR and what `before` sets,
 * bound to host:port, then `after` (listen), watched edge-triggered for input by `w`; closed
 * again if any step fails. Returns the fd and the bound port (the kernel's pick for port 0).
 */
export function serviceSocket(loop: Loop, w: Watcher, type: number, bindHost: string, port: number, before: (fd: number) => void, after?: (fd: number) => void): { fd: number; port: number } {
  const fd = libc.socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(failure('socket'));
  try {
    setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    before(fd);
    const addr = new Uint8Array(16);
    sockaddrIn(addr, bindHost || '0.0.0.0', port);
    if (libc.bind(fd, addr, 16) < 0) throw new Error(failure(`bind ${bindHost || '0.0.0.0'}:${port}`));
    after?.(fd);
    const bound = boundPort(fd);
    loop.add(fd, EPOLLIN | EPOLLET, w);
    return { fd, port: bound };
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}
