// The plugin's kernel seam over the in-memory rtnetlink kernel: namespaces are
// /run/netns/<name> of the fake kernel (any other path is "not a namespace"), the node is the
// fake namespace `node`, masquerade set-ups are recorded (or fail on request).
import { ExecError } from '../../src/kernel/exec.ts';
import type { MasqSpec } from '../../src/kernel/masq.ts';
import { Rtnl } from '../../src/kernel/netlink/rtnl.ts';
import type { CniKernel } from '../../src/cni/kernel.ts';
import { FakeKernel } from './fake-netlink.ts';

export interface FakeCniKernel extends CniKernel {
  readonly kernel: FakeKernel;
  readonly masq: MasqSpec[];
  /** Sockets opened and not closed yet. */
  openSockets(): number;
  /** The next masquerade set-up fails as iptables-restore would. */
  failMasq: boolean;
}

export function fakeCniKernel(kernel = new FakeKernel()): FakeCniKernel {
  kernel.netns('node');
  let sockets = 0;
  const rtnlIn = (ns: string) => {
    const transport = kernel.transport(ns);
    sockets++;
    return new Rtnl({ ...transport, close: () => { sockets--; transport.close(); } });
  };
  const k: FakeCniKernel = {
    kernel,
    masq: [],
    failMasq: false,
    openSockets: () => sockets,
    hostRtnl: () => rtnlIn('node'),
    netnsState(path) {
      const m = /^\/run\/netns\/([^/]+)$/.exec(path);
      if (!m) return 'not-netns';
      return kernel.namespaces.has(m[1]!) ? 'ok' : 'missing';
    },
    openNetns(path) {
      const name = path.slice('/run/netns/'.length);
      const fd = kernel.fdOf(name);
      return { fd, rtnl: () => rtnlIn(name), close: () => kernel.closeFd(fd) };
    },
    async ensureMasq(spec) {
      if (k.failMasq) throw new ExecError('iptables-restore', ['--noflush'], 1, '', 'iptables-restore: line 2 failed');
      k.masq.push(spec);
    },
  };
  return k;
}
