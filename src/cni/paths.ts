// The two paths a network config names, checked before use: the IPAM directory (dataDir) and
// flannel's subnet file. A config pointing into a kernel file system (/proc, /sys, /dev), at a
// FIFO or a device, or at a directory the plugin cannot write gets the spec's error with a
// reason, never a hang, a spin or a misleading errno, and never the content of a file it read.
import { accessSync, closeSync, constants as fsConstants, fstatSync, mkdirSync, openSync, readSync, realpathSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { CniError, ErrCode, invalidConfig } from './errors.ts';

// statfs(2) magic numbers of file systems that hold kernel objects, not files.
const KERNEL_FS = new Map<number, string>([
  [0x9fa0, 'procfs'], [0x62656572, 'sysfs'], [0x1cd1, 'devpts'], [0x6e736673, 'nsfs'], [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'], [0x73636673, 'securityfs'], [0xcafe4a11, 'bpf'], [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'], [0x42494e4d, 'binfmt_misc'], [0x19800202, 'mqueue'], [0x67596969, 'rpc_pipefs'],
]);
// /dev is devtmpfs, which statfs cannot tell from /run's tmpfs: known by where it is mounted.
const KERNEL_DIRS = ['/proc', '/sys', '/dev'];
/** The most a subnet.env may be (flannel writes four short lines). */
export const SUBNET_FILE_MAX = 64 * 1024;

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? '';
}

/** The nearest existing ancestor of a path (itself if it exists), symlinks resolved. */
function existingAncestor(path: string): string {
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
function kernelFsReason(path: string): string | null {
  const real = existingAncestor(path);
  const dir = KERNEL_DIRS.find((k) => real === k || real.startsWith(k + '/'));
  if (dir) return `it is under ${dir}, a kernel file system`;
  const fs = KERNEL_FS.get(statfsSync(real).type);
  return fs ? `it is on ${fs}, a kernel file system` : null;
}

const WHY: Record<string, string> = {
  EROFS: 'read-only file system', EACCES: 'permission denied', EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', ENOTDIR: 'a part of the path is not a directory',
  EEXIST: 'a file of that name is in the way', ELOOP: 'too many symbolic links',
};

/** An I/O error on dataDir as the spec's error 5, saying what is wrong with the directory. */
export function dataDirError(dir: string, e: unknown): CniError {
  const code = errnoOf(e);
  return new CniError(ErrCode.IoFailure, 'I/O failure', `dataDir ${dir} is not usable: ${WHY[code] ?? (e instanceof Error ? e.message : String(e))}${WHY[code] ? ` (${code})` : ''}`);
}

/** Config validation of dataDir (every command): not in a kernel file system. Error 7. */
export function checkDataDir(dir: string): void {
  const why = kernelFsReason(dir);
  if (why) throw invalidConfig(`dataDir ${dir} cannot hold IPAM records: ${why}`);
}

/** Creates dataDir if needed and checks it is a writable directory (ADD). Error 5 with the reason. */
export function ensureDataDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    // mkdir -p reports ENOENT for a parent it could not create; the reason is the ancestor's.
    const ancestor = existingAncestor(dir);
    try { accessSync(ancestor, fsConstants.W_OK); } catch (why) { throw dataDirError(dir, why); }
    throw dataDirError(dir, e);
  }
  try {
    accessSync(dir, fsConstants.W_OK);
  } catch (e) {
    throw dataDirError(dir, e);
  }
}

/**
 * The subnet file's text, or null when it does not exist yet. It must be a regular file of at
 * most SUBNET_FILE_MAX bytes outside the kernel's file systems (a FIFO would block, /dev/zero
 * never end). Error 7 otherwise; no message quotes the file.
 */
export function readSubnetFile(path: string): string | null {
  const why = kernelFsReason(path);
  if (why) throw invalidConfig(`subnetFile ${path} cannot be a subnet file: ${why}`);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return null;
    throw new CniError(ErrCode.IoFailure, 'I/O failure', `subnetFile ${path} cannot be read: ${WHY[errnoOf(e)] ?? errnoOf(e)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw invalidConfig(`subnetFile ${path} is not a regular file`);
    if (st.size > SUBNET_FILE_MAX) throw invalidConfig(`subnetFile ${path} is ${st.size} bytes: a subnet file is at most ${SUBNET_FILE_MAX}`);
    const buf = Buffer.alloc(SUBNET_FILE_MAX + 1);
    let n = 0;
    for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, null)) > 0;) n += got;
    if (n > SUBNET_FILE_MAX) throw invalidConfig(`subnetFile ${path} is larger than ${SUBNET_FILE_MAX} bytes`);
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}
