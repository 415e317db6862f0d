// Netlink under Node (NETLINK_ROUTE, and NETLINK_NETFILTER for the proxy's nftables batches):
// node-netlink's native socket addon, loaded by knet itself because
// node-netlink's own loader looks for the addon next to the package, which a bundled program
// far from node_modules is not. The addon does not load under Bun (the CNI plugin uses ffi.ts).
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { arch } from 'node:os';
import { Rtnl } from './rtnl.ts';
import type { NetlinkTransport } from './transport.ts';

interface NativeSocket {
  bind(port: number, groups: number): void;
  send(port: number, groups: number, data: Buffer[], cb: (err?: Error) => void): void;
  close(): void;
  ref(): void;
  unref(): void;
  /** SO_SNDBUF (the kernel caps it at net.core.wmem_max and doubles it). */
  setSendBufferSize?(bytes: number): void;
  getSendBufferSize?(): number;
}
interface NativeAddon {
  NativeNetlink: new (protocol: number, msgBuffer: number,
    onMessage: (msg: Buffer, rinfo: unknown) => void, onError: (err: Error) => void) => NativeSocket;
}

/** Where the netlink addon may be: $KNET_NETLINK_ADDON, beside the program, or in node_modules above it. */
export function netlinkAddonCandidates(startDirs: readonly string[], env = process.env): string[] {
  const out: string[] = [];
  if (env.KNET_NETLINK_ADDON) out.push(env.KNET_NETLINK_ADDON);
  const rel = join('prebuilds', `linux-${arch()}`, 'node.napi.node');
  for (const start of startDirs) {
    out.push(join(start, 'knet-netlink.node'));
    for (let d = start; ; d = dirname(d)) {
      out.push(join(d, 'node_modules', 'netlink', rel));
      if (dirname(d) === d) break;
    }
  }
  return out;
}

let addon: NativeAddon | undefined;
function loadAddon(): NativeAddon {
  if (addon) return addon;
  const starts: string[] = [];
  for (const p of [process.argv[1], process.cwd() + '/x']) {
    if (!p) continue;
    try { starts.push(dirname(realpathSync(p))); } catch { starts.push(dirname(p)); }
  }
  for (const file of netlinkAddonCandidates(starts)) {
    if (!existsSync(file)) continue;
    const m = { exports: {} as NativeAddon };
    process.dlopen(m, file);
    return (addon = m.exports);
  }
  throw new Error('netlink native addon not found (set KNET_NETLINK_ADDON or install knet-netlink.node beside the program)');
}

/** A netlink socket (NETLINK_ROUTE unless told) in this process's namespace through the addon. */
export class AddonTransport implements NetlinkTransport {
  private readonly sock: NativeSocket;
  private readonly queue: Uint8Array[] = [];
  private waiter: { resolve: (d: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  private error: Error | undefined;

  /** sendBufferBytes: asks for a send buffer this large (the kernel may give less). */
  constructor(protocol = 0 /* NETLINK_ROUTE */, o: { sendBufferBytes?: number } = {}) {
    const native = loadAddon();
    this.sock = new native.NativeNetlink(protocol, 0, (buf) => this.arrived(buf), (err) => this.failed(err));
    if (o.sendBufferBytes !== undefined) this.sock.setSendBufferSize?.(o.sendBufferBytes);
    // Port 0 lets the kernel pick a unique port id.
    this.sock.bind(0, 0);
    // Keeps the event loop alive only while a receive waits.
    this.sock.unref();
  }

  private arrived(buf: Buffer): void {
    // The addon may reuse its buffer: keep a copy.
    const copy = Uint8Array.prototype.slice.call(buf);
    const w = this.waiter;
    if (!w) { this.queue.push(copy); return; }
    this.waiter = undefined;
    this.sock.unref();
    w.resolve(copy);
  }

  private failed(err: Error): void {
    const w = this.waiter;
    if (!w) { this.error = err; return; }
    this.waiter = undefined;
    this.sock.unref();
    w.reject(err);
  }

  send(datagram: Uint8Array): void {
    // The addon sends at once and reports only failures later (from a timer); the answer may
    // arrive before that report, so the request waits for its answer, not for the report.
    this.sock.send(0, 0, [Buffer.from(datagram.buffer, datagram.byteOffset, datagram.byteLength)], (err) => {
      if (err) this.failed(err);
    });
  }

  receive(): Promise<Uint8Array> {
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    const err = this.error;
    if (err) { this.error = undefined; return Promise.reject(err); }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.sock.ref();
    });
  }

  close(): void {
    this.sock.close();
  }

  maxDatagram(): number {
    // The kernel refuses a datagram longer than the send buffer less 32 bytes.
    const size = this.sock.getSendBufferSize?.();
    return size === undefined ? 0 : size - 32;
  }
}

/** rtnetlink in this process's namespace, under Node. */
export function openNodeRtnl(): Rtnl {
  return new Rtnl(new AddonTransport());
}
