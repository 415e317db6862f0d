// The plugin's kernel when it runs as the Bun executable: rtnetlink through libc (bun:ffi),
// the pod's namespace by path, masquerade through iptables-restore.
import { closeSync, openSync } from 'node:fs';
import { openFfiRtnl, openFfiRtnlIn } from '../kernel/netlink/ffi.ts';
import { detectIptablesBackend, ensureMasq } from '../kernel/masq.ts';
import { netnsStateOf, type CniKernel } from './kernel.ts';

export function bunKernel(): CniKernel {
  return {
    hostRtnl: openFfiRtnl,
    netnsState: netnsStateOf,
    openNetns(path) {
      const fd = openSync(path, 'r');
      return { fd, rtnl: () => openFfiRtnlIn(fd), close: () => closeSync(fd) };
    },
    async ensureMasq(spec, backend, markerDir) {
      await ensureMasq(spec, backend ?? detectIptablesBackend(), markerDir);
    },
  };
}
