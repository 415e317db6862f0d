// The one thing that differs between runtimes: how datagrams reach the kernel's NETLINK_ROUTE
// socket (node-netlink's addon under Node, libc through bun:ffi in the CNI plugin, an in-memory
// kernel in unit tests). Everything above it (encoding, request/acknowledge) is shared.

/** A NETLINK_ROUTE socket bound in one network namespace. */
export interface NetlinkTransport {
  /** Sends one datagram (one or more messages) to the kernel. */
  send(datagram: Uint8Array): void | Promise<void>;
  /** The next datagram the kernel sent to this socket. */
  receive(): Promise<Uint8Array>;
  close(): void;
  /** The largest datagram this socket sends (its send buffer less 32 bytes), where that is known. */
  maxDatagram?(): number;
}
