// nftables transactions sent as netlink batches (nft-batch.ts) from this process's own
// NETLINK_NETFILTER socket, in this process's network namespace: no `nft` process and no read of
// nft's cache of the whole table. A transaction the compiler does not know is not sent (the
// caller runs `nft -f`). The kernel commits a batch whole or not at all, as with `nft -f`.
import { compileNftBatch, ruleDumpRequest, ruleHandleOf, type NftBatch } from './nft-batch.ts';
import { decodeMessages, errnoName, errorCode, NLM_F, NLMSG } from './netlink/codec.ts';
import type { NetlinkTransport } from './netlink/transport.ts';

/** The largest batch sent where the socket does not say what it takes. */
const DEFAULT_MAX_BATCH_BYTES = 128 * 1024;
/** No line compiles to fewer bytes: longer transactions are not even compiled. */
const MIN_LINE_BYTES = 40;

export class NftBatchError extends Error {
  constructor(readonly line: string, readonly code: string) {
    super(`nftables batch refused at ${JSON.stringify(line)}: ${code}`);
  }
}

export class NftNetlink {
  private transport: NetlinkTransport | null = null;
  // Sequence numbers only need to grow from batch to batch on this socket (late answers to an
  // earlier batch are told apart by them); from 1, they would take billions of commands to wrap.
  private seq = 1;
  // One request at a time on the socket: answers are read in turn, by one reader.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly open: () => NetlinkTransport, private readonly timeoutMs = 10_000) {}

  /**
   * Commits the lines as one batch; false (nothing sent) when a line is not one the compiler
   * knows, or the batch is larger than the socket takes in one datagram (its send buffer: the
   * kernel's default, ~208 KiB, takes a partial sync of a few hundred services; raised up to
   * net.core.wmem_max, a full sync's transactions; `nft` sizes its own socket past that).
   */
  apply(lines: readonly string[]): Promise<boolean> {
    return this.serially(() => this.applyNow(lines));
  }

  /**
   * Commits a batch compiled beforehand (its sequence numbers above any this socket has used):
   * what `apply` does after compiling, for a caller that times the kernel's part alone.
   */
  commit(batch: NftBatch): Promise<void> {
    return this.serially(() => this.send((this.transport ??= this.open()), batch));
  }

  /** The handles of one kube-proxy table chain's rules, in order (a dump of that chain). */
  ruleHandles(family: 'ip' | 'ip6', chain: string): Promise<string[]> {
    return this.serially(() => this.dumpHandles(family, chain));
  }

  private serially<T>(run: () => Promise<T>): Promise<T> {
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => {});
    return next;
  }

  private async applyNow(lines: readonly string[]): Promise<boolean> {
    const t = (this.transport ??= this.open());
    const max = t.maxDatagram?.() || DEFAULT_MAX_BATCH_BYTES;
    if (lines.length * MIN_LINE_BYTES > max) return false;
    const batch = compileNftBatch(lines, this.seq);
    if (!batch || batch.datagram.length > max) return false;
    await this.send(t, batch);
    return true;
  }

  /** Sends a batch and waits for the kernel's answer: every failure is reported; success is the last command's acknowledgement. */
  private async send(t: NetlinkTransport, batch: NftBatch): Promise<void> {
    this.seq = (batch.last + 2) >>> 0;
    await t.send(batch.datagram);
    for (;;) {
      for (const msg of decodeMessages(await this.receive(t))) {
        if (msg.type !== NLMSG.ERROR || msg.seq < batch.first || msg.seq > batch.last) continue;
        const code = errorCode(msg);
        if (code !== 0) throw new NftBatchError(batch.lineOf(msg.seq), errnoName(code));
        if (msg.seq === batch.last) return;
      }
    }
  }

  private async dumpHandles(family: 'ip' | 'ip6', chain: string): Promise<string[]> {
    const seq = this.seq;
    const request = ruleDumpRequest(family, chain, seq);
    if (!request) throw new Error(`not a chain name: ${JSON.stringify(chain)}`);
    this.seq = (seq + 1) >>> 0;
    const t = (this.transport ??= this.open());
    await t.send(request);
    const handles: string[] = [];
    for (;;) {
      for (const msg of decodeMessages(await this.receive(t))) {
        if (msg.seq !== seq) continue;
        // A dump the kernel had to restart (the table changed meanwhile) is not to be trusted.
        if (msg.flags & NLM_F.DUMP_INTR) throw new Error(`listing the rules of ${chain}: interrupted by a change`);
        if (msg.type === NLMSG.DONE || msg.type === NLMSG.ERROR) {
          const code = errorCode(msg);
          if (code !== 0) throw new Error(`listing the rules of ${chain}: ${errnoName(code)}`);
          if (msg.type === NLMSG.DONE) return handles;
          continue;
        }
        const handle = ruleHandleOf(msg.type, msg.data);
        // Every rule has a handle: a message without one would shift which rules are old.
        if (handle === null) throw new Error(`listing the rules of ${chain}: a rule without a handle`);
        handles.push(handle);
      }
    }
  }

  private async receive(t: NetlinkTransport): Promise<Uint8Array> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        t.receive(),
        new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer from the kernel to an nftables request in ${this.timeoutMs} ms`)), this.timeoutMs); }),
      ]);
    } catch (err) {
      // A socket in an unknown state is not used again.
      this.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.transport?.close();
    this.transport = null;
  }
}
