// The two paths a network config names, checked before use: the IPAM directory (dataDir) and
// flannel's subnet file. A config pointing into a kernel file system (/proc, /sys, /dev), at a
// FIFO or a device, or at a directory the plugin cannot write gets the spec's error with a
// reason, never a hang, a spin or a misleading errno, and never the content of a file it read.
import { accessSync, constants as fsConstants, mkdirSync } from 'node:fs';
import { CniError, ErrCode, invalidConfig } from './errors.ts';
import { readSubnetFile as readSubnetFileText } from '../subnet/subnet-env.ts';
import { SubnetFileError } from '../subnet/subnet-env-text.ts';
import { ERRNO_WORDS, errnoOf, existingAncestor, kernelFsReason } from '../util/kernel-fs.ts';

/** An I/O error on dataDir as the spec's error 5, saying what is wrong with the directory. */
export function dataDirError(dir: string, e: unknown): CniError {
  const code = errnoOf(e);
  return new CniError(ErrCode.IoFailure, 'I/O failure', `dataDir ${dir} is not usable: ${ERRNO_WORDS[code] ?? (e instanceof Error ? e.message : String(e))}${ERRNO_WORDS[code] ? ` (${code})` : ''}`);
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
 * The subnet file's text, or null when it does not exist yet (src/subnet/subnet-env.ts reads it:
 * a regular file of bounded size outside the kernel's file systems). Error 7 when it cannot be
 * a subnet file, 5 when it cannot be read; no message quotes the file.
 */
export function readSubnetFile(path: string): string | null {
  try {
    return readSubnetFileText(path);
  } catch (e) {
    if (e instanceof SubnetFileError && e.kind === 'unreadable') throw new CniError(ErrCode.IoFailure, 'I/O failure', e.message);
    if (e instanceof SubnetFileError) throw invalidConfig(e.message);
    throw e;
  }
}
