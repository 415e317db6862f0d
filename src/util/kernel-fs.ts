// Whether a path lies in a kernel file system (procfs, sysfs, /dev ...), where a file knet
// reads or writes could block forever, never end, or change the kernel: the CNI's dataDir and
// subnet file, and the agent's subnet file, are checked here before use.
import { realpathSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';

// statfs(2) magic numbers of file systems that hold kernel objects, not files.
const KERNEL_FS = new Map<number, string>([
  [0x9fa0, 'procfs'], [0x62656572, 'sysfs'], [0x1cd1, 'devpts'], [0x6e736673, 'nsfs'], [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'], [0x73636673, 'securityfs'], [0xcafe4a11, 'bpf'], [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'], [0x42494e4d, 'binfmt_misc'], [0x19800202, 'mqueue'], [0x67596969, 'rpc_pipefs'],
]);
// /dev is devtmpfs, which statfs cannot tell from /run's tmpfs: known by where it is mounted.
const KERNEL_DIRS = ['/proc', '/sys', '/dev'];

export function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? '';
}

/** The nearest existing ancestor of a path (itself if it exists), symlinks resolved. */
export function existingAncestor(path: string): string {
  for (let p = path; ; p = dirname(p)) {
    try {
      return realpathSync(p);
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT' && errnoOf(e) !== 'ENOTDIR') throw e;
    }
    if (dirname(p) === p) return '/';
  }
}

/** Why a path may not hold knet's files, or null when it may. */
export function kernelFsReason(path: string): string | null {
  const real = existingAncestor(path);
  const dir = KERNEL_DIRS.find((k) => real === k || real.startsWith(k + '/'));
  if (dir) return `it is under ${dir}, a kernel file system`;
  const fs = KERNEL_FS.get(statfsSync(real).type);
  return fs ? `it is on ${fs}, a kernel file system` : null;
}

export const ERRNO_WORDS: Record<string, string> = {
  EROFS: 'read-only file system', EACCES: 'permission denied', EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', ENOTDIR: 'a part of the path is not a directory',
  EEXIST: 'a file of that name is in the way', ELOOP: 'too many symbolic links',
};
