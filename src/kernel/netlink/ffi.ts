// NETLINK_ROUTE in the Bun-built CNI plugin: libc's socket/send/recv through bun:ffi, and a
// socket inside another network namespace by setns(2). Loaded only under Bun (node-netlink's
// addon does not load there; Node uses node-addon.ts).
//
// setns(2) moves only the calling thread, and a thread the runtime starts while the JS thread is
// in the pod's namespace would stay there for good. So the JS thread spends only the
// setns -> socket() -> setns-back window there (a socket keeps the namespace it was made in) and
// configures the pod through that socket from the node's namespace. (A prototype that did all
// the pod-side work inside the window left a runtime thread behind in 46-62 % of runs; this way
// none in 400.)
import { FFIType, dlopen, read, type Pointer } from 'bun:ffi';
import { closeSync, openSync } from 'node:fs';
import { NetlinkError } from './codec.ts';
import { Rtnl } from './rtnl.ts';
import type { NetlinkTransport } from './transport.ts';

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const CLONE_NEWNET = 0x40000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const MSG_TRUNC = 0x20;
const EINTR = 4;
// The kernel answers rtnetlink requests while handling send(); the timeout only guards against
// a reply that never comes.
const RECEIVE_TIMEOUT_S = 30;
// Large enough for one datagram of a link dump (the kernel fills at most ~32 KB per datagram).
const RECEIVE_BUFFER = 65536;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Uint8Array, length: number): number;
  send(fd: number, buffer: Uint8Array, length: number, flags: number): number;
  recv(fd: number, buffer: Uint8Array, length: number, flags: number): number;
  setns(fd: number, nstype: number): number;
  close(fd: number): number;
  __errno_location(): Pointer;
}

function openLibc(): Libc {
  const { i32, u32, u64, i64_fast: ssize, ptr } = FFIType;
  return dlopen<Libc>('libc.so.6', {
    socket: { args: [i32, i32, i32], returns: i32 },
    setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
    send: { args: [i32, ptr, u64, i32], returns: ssize },
    recv: { args: [i32, ptr, u64, i32], returns: ssize },
    setns: { args: [i32, i32], returns: i32 },
    close: { args: [i32], returns: i32 },
    __errno_location: { args: [], returns: ptr },
  }).symbols;
}

let loaded: Libc | undefined;
function libc(): Libc {
  return (loaded ??= openLibc());
}

// bun:ffi does not report errno: read it right after the call that failed.
function errno(): number {
  return read.i32(libc().__errno_location(), 0);
}

/** A NETLINK_ROUTE socket in the calling thread's current namespace. */
function openRouteSocket(): number {
  const fd = libc().socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) throw new NetlinkError('open a netlink socket', errno());
  return fd;
}

export class FfiTransport implements NetlinkTransport {
  private readonly buffer = Buffer.alloc(RECEIVE_BUFFER);
  private open = true;

  constructor(private readonly fd: number) {
    const timeout = Buffer.alloc(16);
    timeout.writeBigInt64LE(BigInt(RECEIVE_TIMEOUT_S), 0);
    if (libc().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, timeout.length) !== 0) {
      const e = errno();
      libc().close(fd);
      throw new NetlinkError('set the netlink receive timeout', e);
    }
  }

  send(datagram: Uint8Array): void {
    if (!this.open) throw new Error('netlink socket is closed');
    for (;;) {
      const n = libc().send(this.fd, datagram, datagram.byteLength, 0);
      if (n >= 0) return;
      const e = errno();
      if (e !== EINTR) throw new NetlinkError('send', e);
    }
  }

  receive(): Promise<Uint8Array> {
    if (!this.open) return Promise.reject(new Error('netlink socket is closed'));
    for (;;) {
      // MSG_TRUNC: the datagram's real length, so a truncated one is an error, not half a dump.
      const n = libc().recv(this.fd, this.buffer, this.buffer.length, MSG_TRUNC);
      if (n < 0) {
        const e = errno();
        if (e === EINTR) continue;
        return Promise.reject(new NetlinkError('receive', e));
      }
      if (n > this.buffer.length) return Promise.reject(new Error(`netlink datagram of ${n} bytes exceeds the ${this.buffer.length}-byte buffer`));
      // A copy: the buffer is reused by the next receive, and replies are parsed after the acknowledgement.
      return Promise.resolve(new Uint8Array(this.buffer.subarray(0, n)));
    }
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    libc().close(this.fd);
  }
}

/** rtnetlink in this thread's namespace. */
export function openFfiRtnl(): Rtnl {
  return new Rtnl(new FfiTransport(openRouteSocket()));
}

/** rtnetlink inside the namespace of an open namespace fd, used from the caller's own namespace. */
export function openFfiRtnlIn(netnsFd: number): Rtnl {
  const own = openSync('/proc/thread-self/ns/net', 'r');
  try {
    if (libc().setns(netnsFd, CLONE_NEWNET) !== 0) throw new NetlinkError('enter the network namespace', errno());
    let fd = -1;
    let socketErrno = 0;
    try {
      fd = libc().socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
      if (fd < 0) socketErrno = errno();
    } finally {
      if (libc().setns(own, CLONE_NEWNET) !== 0) {
        // Nothing more may run here: later work (iptables) would act on the pod's namespace.
        const e = errno();
        throw new NetlinkError('return to the node\'s network namespace', e);
      }
    }
    if (fd < 0) throw new NetlinkError('open a netlink socket in the pod', socketErrno);
    return new Rtnl(new FfiTransport(fd));
  } finally {
    closeSync(own);
  }
}
