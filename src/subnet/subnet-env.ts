// /run/flannel/subnet.env (facts A.9): read at start to recover the previous subnet, written
// atomically (temp file + rename) so the CNI plugin never reads half a file.
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, basename } from 'node:path';
import { type Cidr, formatCidr, formatIP, parseCidr } from './cidr.ts';

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

/** KEY=VALUE lines; blank lines and # comments ignored. */
export function parseEnvFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return out;
}

/** The previous IPv4 subnet recorded in a subnet file (network address form), or null. */
export function previousSubnetFromEnv(text: string): Cidr | null {
  const v = parseEnvFile(text).get('FLANNEL_SUBNET');
  if (!v) return null;
  try {
    const c = parseCidr(v, true);
    return c.family === 4 ? c : null;
  } catch {
    return null;
  }
}

export async function readPreviousSubnet(path: string): Promise<Cidr | null> {
  assertSubnetFilePath(path);
  try {
    return previousSubnetFromEnv(await readFile(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
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
