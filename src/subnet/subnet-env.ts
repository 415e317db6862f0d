// /run/flannel/subnet.env, the file's one reader and writer (its text is subnet-env-text.ts):
// the agent writes it atomically (temp file + rename) so the CNI plugin never reads half a file;
// the plugin reads it for its pod subnet, the agent to recover its previous subnet, the lab to
// learn each node's. The path may come from a config and name any file on the node, so reading
// checks the file first and no error quotes it.
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, basename } from 'node:path';
import type { Cidr } from './cidr.ts';
import { SubnetFileError, subnetFromEnv, formatSubnetEnv, type SubnetEnv } from './subnet-env-text.ts';
import { ERRNO_WORDS, errnoOf, kernelFsReason } from '../util/kernel-fs.ts';

export function assertSubnetFilePath(path: string): void {
  if (typeof path !== 'string' || !isAbsolute(path) || /[\0\n]/.test(path) || path.endsWith('/')) {
    throw new Error(`invalid subnet file path ${JSON.stringify(path)}: must be an absolute file path`);
  }
}

/** The most a subnet.env may be (flannel writes four short lines). */
export const SUBNET_FILE_MAX = 64 * 1024;

/**
 * The subnet file's text, or null when it does not exist yet. It must be a regular file of at
 * most SUBNET_FILE_MAX bytes outside the kernel's file systems (a FIFO would block, /dev/zero
 * never end).
 */
export function readSubnetFile(path: string): string | null {
  const invalid = (why: string) => new SubnetFileError(`subnetFile ${path} ${why}`, 'invalid');
  const why = kernelFsReason(path);
  if (why) throw invalid(`cannot be a subnet file: ${why}`);
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return null;
    throw new SubnetFileError(`subnetFile ${path} cannot be read: ${ERRNO_WORDS[errnoOf(e)] ?? errnoOf(e)}`, 'unreadable');
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw invalid('is not a regular file');
    if (st.size > SUBNET_FILE_MAX) throw invalid(`is ${st.size} bytes: a subnet file is at most ${SUBNET_FILE_MAX}`);
    const buf = Buffer.alloc(SUBNET_FILE_MAX + 1);
    let n = 0;
    for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, null)) > 0;) n += got;
    if (n > SUBNET_FILE_MAX) throw invalid(`is larger than ${SUBNET_FILE_MAX} bytes`);
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * The subnet the previous run recorded, or null when there is no file or it records none (a
 * damaged file is no reason not to start). A path that cannot be a subnet file is an error.
 */
export function readPreviousSubnet(path: string): Cidr | null {
  assertSubnetFilePath(path);
  const text = readSubnetFile(path);
  return text === null ? null : subnetFromEnv(text);
}

export async function writeSubnetEnv(path: string, e: SubnetEnv): Promise<void> {
  assertSubnetFilePath(path);
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(formatSubnetEnv(e));
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
