// /run/flannel/subnet.env, the one reader and writer: the agent writes it atomically (temp file +
// rename) so the CNI plugin never reads half a file; the plugin reads it for its pod subnet, the
// agent to recover its previous subnet, the lab to learn each node's. The path may come from a
// config and name any file on the node, so reading checks the file first and no error quotes it.
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, basename } from 'node:path';
import { type Cidr, formatCidr, formatIP, parseCidr } from './cidr.ts';
import { mustParseCIDR } from '../util/ip.ts';
import { ERRNO_WORDS, errnoOf, kernelFsReason } from '../util/kernel-fs.ts';

export interface SubnetEnv {
  network: Cidr;
  /** The lease subnet; written as its first address with the prefix (10.5.52.1/24). */
  subnet: Cidr;
  ipv6Network?: Cidr;
  ipv6Subnet?: Cidr;
  mtu: number;
  ipMasq: boolean;
}

export function assertSubnetFilePath(path: string): void {
  if (typeof path !== 'string' || !isAbsolute(path) || /[\0\n]/.test(path) || path.endsWith('/')) {
    throw new Error(`invalid subnet file path ${JSON.stringify(path)}: must be an absolute file path`);
  }
}

export function formatSubnetEnv(e: SubnetEnv): string {
  const firstIP = (c: Cidr) => `${formatIP(c.family, c.base + 1n)}/${c.len}`;
  const lines = [`FLANNEL_NETWORK=${formatCidr(e.network)}`, `FLANNEL_SUBNET=${firstIP(e.subnet)}`];
  if (e.ipv6Network && e.ipv6Subnet) {
    lines.push(`FLANNEL_IPV6_NETWORK=${formatCidr(e.ipv6Network)}`, `FLANNEL_IPV6_SUBNET=${firstIP(e.ipv6Subnet)}`);
  }
  lines.push(`FLANNEL_MTU=${e.mtu}`, `FLANNEL_IPMASQ=${e.ipMasq}`);
  return lines.join('\n') + '\n';
}

/** The most a subnet.env may be (flannel writes four short lines). */
export const SUBNET_FILE_MAX = 64 * 1024;

/** 'invalid': the path cannot be a subnet file, or its text is not one; 'unreadable': an I/O error. */
export class SubnetFileError extends Error {
  constructor(message: string, readonly kind: 'invalid' | 'unreadable') {
    super(message);
    this.name = 'SubnetFileError';
  }
}

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

/** What the plugin takes from a subnet file, as written there. */
export interface SubnetEnvValues {
  network?: string;
  /** The pod subnet as its first address with the prefix (10.5.52.1/24). */
  subnet: string;
  mtu?: number;
  ipMasq?: boolean;
}

/**
 * The KEY=VALUE lines of subnet.env, as flanneld and knet's agent write them (blank lines and
 * # comments ignored, one pair of double quotes taken off), with their line numbers.
 */
export function subnetEnvEntries(text: string, file = 'the subnet file'): Map<string, { value: string; line: number }> {
  const kv = new Map<string, { value: string; line: number }>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 1) throw new SubnetFileError(`${file}: line ${i + 1} is not KEY=VALUE (is it a subnet file?)`, 'invalid');
    kv.set(line.slice(0, eq), { value: line.slice(eq + 1).replace(/^"(.*)"$/, '$1'), line: i + 1 });
  }
  return kv;
}

/** Parses and checks subnet.env. Errors name the file, the line and the key, never the text. */
export function parseSubnetEnv(text: string, file = 'the subnet file'): SubnetEnvValues {
  const kv = subnetEnvEntries(text, file);
  const bad = (key: string, what: string) => new SubnetFileError(`${file}: ${key} (line ${kv.get(key)!.line}) is not ${what}`, 'invalid');
  const subnet = kv.get('FLANNEL_SUBNET')?.value;
  if (!subnet) throw new SubnetFileError(`${file} has no FLANNEL_SUBNET (is it a subnet file?)`, 'invalid');
  const out: SubnetEnvValues = { subnet };
  // A /31 or /32 leaves no address for a pod beside the gateway.
  try { if (mustParseCIDR(subnet, { syntax: 'strict', family: 4, hostBits: 'clear' }).prefix >= 31) throw new Error(); } catch { throw bad('FLANNEL_SUBNET', 'an IPv4 CIDR with room for pods'); }
  const network = kv.get('FLANNEL_NETWORK')?.value;
  if (network) {
    try { mustParseCIDR(network, { syntax: 'strict', family: 4, hostBits: 'clear' }); } catch { throw bad('FLANNEL_NETWORK', 'an IPv4 CIDR'); }
    out.network = network;
  }
  const mtu = kv.get('FLANNEL_MTU')?.value;
  if (mtu !== undefined) {
    const n = Number(mtu);
    if (!Number.isInteger(n) || n < 576 || n > 65535) throw bad('FLANNEL_MTU', 'an MTU from 576 to 65535');
    out.mtu = n;
  }
  // flannel reads it as a Go boolean: 1/t/T/TRUE/true/True or 0/f/F/FALSE/false/False; anything
  // else ("yes", a typo) is refused rather than taken as false (which would masquerade twice).
  const masq = kv.get('FLANNEL_IPMASQ')?.value;
  if (masq !== undefined) {
    if (/^(?:1|t|T|TRUE|true|True)$/.test(masq)) out.ipMasq = true;
    else if (/^(?:0|f|F|FALSE|false|False)$/.test(masq)) out.ipMasq = false;
    else throw bad('FLANNEL_IPMASQ', 'true or false');
  }
  return out;
}

/** The IPv4 pod subnet a subnet file records (network address form), or null when it records none. */
export function subnetFromEnv(text: string): Cidr | null {
  try {
    return parseCidr(parseSubnetEnv(text).subnet, true);
  } catch {
    return null;
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
