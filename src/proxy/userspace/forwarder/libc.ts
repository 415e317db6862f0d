// The forwarder's system calls, straight to libc through bun:ffi (x86_64 Linux). Every call
// returns what libc returns; errno() must be read right after a call that failed (bun:ffi does
// not keep it). ssize_t results are declared as i32: every length asked for fits, and -1 stays
// -1, so no call hands back a BigInt.
import { dlopen, FFIType, ptr, read, type Pointer } from 'bun:ffi';
import { mustParseIP } from '../../../util/ip.ts';

type Mem = ArrayBufferView | Pointer | null;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Mem, length: number): number;
  getsockname(fd: number, addr: Mem, length: Mem): number;
  bind(fd: number, addr: Mem, length: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: Mem, length: Mem, flags: number): number;
  connect(fd: number, addr: Mem, length: number): number;
  shutdown(fd: number, how: number): number;
  close(fd: number): number;
  read(fd: number, buf: Mem, count: number): number;
  write(fd: number, buf: Mem, count: number): number;
  send(fd: number, buf: Mem, count: number, flags: number): number;
  recv(fd: number, buf: Mem, count: number, flags: number): number;
  pipe2(fds: Mem, flags: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  splice(fdIn: number, offIn: Mem, fdOut: number, offOut: Mem, length: number, flags: number): number;
  recvmmsg(fd: number, vec: Mem, count: number, flags: number, timeout: Mem): number;
  sendmmsg(fd: number, vec: Mem, count: number, flags: number): number;
  epoll_create1(flags: number): number;
  epoll_ctl(ep: number, op: number, fd: number, event: Mem): number;
  epoll_wait(ep: number, events: Mem, max: number, timeoutMs: number): number;
  getrlimit(resource: number, limit: Mem): number;
  setrlimit(resource: number, limit: Mem): number;
  signal(sig: number, handler: Mem): number;
  __errno_location(): Pointer;
}

const { i32, ptr: p, u64 } = FFIType;
const size = u64;
export const libc = dlopen<Libc>('libc.so.6', {
  socket: { args: [i32, i32, i32], returns: i32 },
  setsockopt: { args: [i32, i32, i32, p, i32], returns: i32 },
  getsockname: { args: [i32, p, p], returns: i32 },
  bind: { args: [i32, p, i32], returns: i32 },
  listen: { args: [i32, i32], returns: i32 },
  accept4: { args: [i32, p, p, i32], returns: i32 },
  connect: { args: [i32, p, i32], returns: i32 },
  shutdown: { args: [i32, i32], returns: i32 },
  close: { args: [i32], returns: i32 },
  read: { args: [i32, p, size], returns: i32 },
  write: { args: [i32, p, size], returns: i32 },
  send: { args: [i32, p, size, i32], returns: i32 },
  recv: { args: [i32, p, size, i32], returns: i32 },
  pipe2: { args: [p, i32], returns: i32 },
  fcntl: { args: [i32, i32, i32], returns: i32 },
  splice: { args: [i32, p, i32, p, size, FFIType.u32], returns: i32 },
  recvmmsg: { args: [i32, p, FFIType.u32, i32, p], returns: i32 },
  sendmmsg: { args: [i32, p, FFIType.u32, i32], returns: i32 },
  epoll_create1: { args: [i32], returns: i32 },
  epoll_ctl: { args: [i32, i32, i32, p], returns: i32 },
  epoll_wait: { args: [i32, p, i32, i32], returns: i32 },
  getrlimit: { args: [i32, p], returns: i32 },
  setrlimit: { args: [i32, p], returns: i32 },
  signal: { args: [i32, p], returns: p },
  __errno_location: { args: [], returns: p },
}).symbols;

const errnoAt = libc.__errno_location();
/** errno of the last failed call (read at once: the next call may change it). */
export const errno = (): number => read.i32(errnoAt);

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 4: 'EINTR', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM', 13: 'EACCES', 22: 'EINVAL', 23: 'ENFILE', 24: 'EMFILE', 32: 'EPIPE',
  98: 'EADDRINUSE', 99: 'EADDRNOTAVAIL', 101: 'ENETUNREACH', 104: 'ECONNRESET', 110: 'ETIMEDOUT', 111: 'ECONNREFUSED', 113: 'EHOSTUNREACH',
};
/** "what: ENAME (n)" for an error message. */
export const failure = (what: string, e = errno()): string => `${what}: ${ERRNO_NAMES[e] ?? 'errno'} (${e})`;

export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_KEEPALIVE = 9;
export const SO_LINGER = 13;
export const SO_REUSEPORT = 15;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const TCP_KEEPIDLE = 4;
export const EPOLL_CTL_ADD = 1;
export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
export const EPOLLRDHUP = 0x2000;
export const EPOLLET = 0x80000000;
export const EAGAIN = 11;
export const EINTR = 4;
export const EINPROGRESS = 115;
export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_SETPIPE_SZ = 1031;
export const SHUT_WR = 1;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
const RLIMIT_NOFILE = 7;
const SIGPIPE = 13;

/** Writes a sockaddr_in (16 bytes) for ip ("a.b.c.d") and port into out at offset. */
export function sockaddrIn(out: Uint8Array, ip: string, port: number, offset = 0): void {
  const address = Number(mustParseIP(ip, { syntax: 'strict', family: 4 }).value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`not a port: ${JSON.stringify(port)}`);
  out.fill(0, offset, offset + 16);
  out[offset] = AF_INET;
  out[offset + 2] = port >> 8;
  out[offset + 3] = port & 255;
  out.set([address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255], offset + 4);
}

/** The address of a sockaddr_in as one number: ip * 65536 + port (a map key). */
export function sockaddrKey(b: Uint8Array, offset = 0): number {
  return ((b[offset + 4]! * 16777216) + (b[offset + 5]! << 16 | b[offset + 6]! << 8 | b[offset + 7]!)) * 65536 + (b[offset + 2]! << 8 | b[offset + 3]!);
}

/** "a.b.c.d" of a sockaddr_in. */
export function sockaddrIP(b: Uint8Array, offset = 0): string {
  return `${b[offset + 4]}.${b[offset + 5]}.${b[offset + 6]}.${b[offset + 7]}`;
}

const intBuf = new Int32Array(2);
const lenBuf = new Uint32Array(1);

export function setInt(fd: number, level: number, name: number, value: number): number {
  intBuf[0] = value;
  return libc.setsockopt(fd, level, name, intBuf, 4);
}

/** The port a socket is bound to. */
export function boundPort(fd: number): number {
  const a = new Uint8Array(16);
  lenBuf[0] = 16;
  if (libc.getsockname(fd, a, lenBuf) < 0) throw new Error(failure('getsockname'));
  return a[2]! << 8 | a[3]!;
}

/** Closes with a reset instead of a FIN (SO_LINGER on, zero timeout). */
export function resetClose(fd: number): void {
  intBuf[0] = 1;
  intBuf[1] = 0;
  libc.setsockopt(fd, SOL_SOCKET, SO_LINGER, intBuf, 8);
  libc.close(fd);
}

/**
 * Process set-up: SIGPIPE ignored (a write to a reset peer returns EPIPE instead of killing
 * the process), and the open-file limit raised to its hard limit (each proxied connection holds
 * two sockets and up to two pipes).
 */
export function prepareProcess(): void {
  libc.signal(SIGPIPE, 1);
  const lim = new BigUint64Array(2);
  if (libc.getrlimit(RLIMIT_NOFILE, lim) === 0 && lim[0]! < lim[1]!) {
    lim[0] = lim[1]!;
    libc.setrlimit(RLIMIT_NOFILE, lim);
  }
}

export { ptr };
