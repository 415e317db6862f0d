// What the plugin asks of the machine, as one small seam: rtnetlink in the node's namespace,
// the pod's namespace (checked, opened, and an rtnetlink socket inside it) and the node's
// masquerade rules. The plugin executable wires the real ones (bun-kernel.ts); unit tests an
// in-memory kernel (test/helpers/fake-cni-kernel.ts).
import { statfsSync } from 'node:fs';
import type { Rtnl } from '../kernel/netlink/rtnl.ts';
import type { MasqSpec } from '../kernel/masq.ts';

export type NetnsState = 'ok' | 'missing' | 'not-netns';

/** A pod's network namespace, open for the length of one command. */
export interface PodNetns {
  /** An fd of the namespace, for IFLA_NET_NS_FD. */
  readonly fd: number;
  /** rtnetlink inside the namespace (the caller stays in its own). */
  rtnl(): Rtnl;
  close(): void;
}

export interface CniKernel {
  /** rtnetlink in the plugin's own namespace: the node's. */
  hostRtnl(): Rtnl;
  netnsState(path: string): NetnsState;
  /** Opens a path netnsState called 'ok'. */
  openNetns(path: string): PodNetns;
  /** Installs the node's masquerade chain for the network once (see kernel/masq.ts). */
  ensureMasq(spec: MasqSpec, backend: 'nft' | 'legacy' | undefined, markerDir: string): Promise<void>;
}

const NSFS_MAGIC = 0x6e736673;

/** Whether a path is a network namespace file (nsfs), missing, or something else. */
export function netnsStateOf(path: string): NetnsState {
  try {
    return statfsSync(path).type === NSFS_MAGIC ? 'ok' : 'not-netns';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw e;
  }
}
