// Allocation records under a data dir, one file per address named after it and holding
// "<containerID>\r\n<ifname>" (host-local's layout, so either plugin can read the other's dir).
//
// No lock file: a record is written in full to a private temp file and then hard-linked to its
// final name. link(2) is atomic and fails with EEXIST when another process won the address, so
// concurrent plugins never share an address and a plugin killed at any instant leaves either no
// record, a complete record, or a temp file that the next ADD, DEL or GC removes.
import { closeSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { candidates, type Pool } from './allocator.ts';
import { pidAlive } from '../util/process.ts';
import { formatIPv4, isIPv4, parseIPv4 } from './ipv4.ts';

export interface Allocation {
  ip: string;
  containerId: string;
  ifname: string;
}

export class PoolExhaustedError extends Error {}

const TMP_PREFIX = '.knet-tmp-';
const LAST_RESERVED = 'last_reserved_ip.0';

export class IpamStore {
  constructor(readonly dir: string) {}

  private names(): string[] {
    try {
      return readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /** Removes temp files left by plugins that died before finishing a record. */
  private sweepTemp(names: readonly string[]): void {
    for (const n of names) {
      if (!n.startsWith(TMP_PREFIX)) continue;
      const pid = Number(n.slice(TMP_PREFIX.length).split('-')[0]);
      if (pid === process.pid || (Number.isInteger(pid) && pid > 0 && pidAlive(pid))) continue;
      try { unlinkSync(join(this.dir, n)); } catch { /* raced with another sweeper */ }
    }
  }

  private read(ip: string): Allocation | null {
    try {
      const [containerId = '', ifname = ''] = readFileSync(join(this.dir, ip), 'utf8').split(/\r?\n/);
      return { ip, containerId: containerId.trim(), ifname: ifname.trim() };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /** Every allocation record (temp files of dead plugins are swept on the way). */
  list(): Allocation[] {
    const names = this.names();
    this.sweepTemp(names);
    return names.filter(isIPv4).map((ip) => this.read(ip)).filter((a): a is Allocation => a !== null);
  }

  /** Temp files still present (for tests and GC reports). */
  tempFiles(): string[] {
    return this.names().filter((n) => n.startsWith(TMP_PREFIX));
  }

  /** Reserves a free address of the pool for (containerId, ifname). */
  allocate(pool: Pool, containerId: string, ifname: string): string {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const names = this.names();
    this.sweepTemp(names);
    const used = new Set(names.filter(isIPv4).map(parseIPv4));
    let last: number | undefined;
    try { last = parseIPv4(readFileSync(join(this.dir, LAST_RESERVED), 'utf8').trim()); } catch { /* no hint yet */ }

    const tmp = join(this.dir, `${TMP_PREFIX}${process.pid}-${Math.random().toString(36).slice(2)}`);
    const fd = openSync(tmp, 'wx', 0o644);
    try {
      writeSync(fd, `${containerId}\r\n${ifname}`);
    } finally {
      closeSync(fd);
    }
    try {
      for (const n of candidates(pool, used, last)) {
        const ip = formatIPv4(n);
        try {
          linkSync(tmp, join(this.dir, ip));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
          throw e;
        }
        this.writeHint(ip);
        return ip;
      }
    } finally {
      unlinkSync(tmp);
    }
    throw new PoolExhaustedError(`no free address left in the pod subnet (${used.size} allocated)`);
  }

  private writeHint(ip: string): void {
    const tmp = join(this.dir, `${TMP_PREFIX}${process.pid}-hint`);
    try {
      const fd = openSync(tmp, 'w', 0o644);
      try { writeSync(fd, ip); } finally { closeSync(fd); }
      renameSync(tmp, join(this.dir, LAST_RESERVED));
    } catch { /* the hint only spreads allocations round robin; losing it is harmless */ }
  }

  /** Releases the record of one address if it belongs to (containerId, ifname). */
  releaseIp(ip: string, containerId: string, ifname: string): boolean {
    if (!isIPv4(ip)) return false;
    const a = this.read(ip);
    if (!a || a.containerId !== containerId || a.ifname !== ifname) return false;
    return this.remove(ip);
  }

  /** Releases every record of (containerId, ifname); returns the addresses released. */
  release(containerId: string, ifname: string): string[] {
    return this.releaseWhere((a) => a.containerId === containerId && a.ifname === ifname);
  }

  releaseWhere(pred: (a: Allocation) => boolean): string[] {
    const out: string[] = [];
    for (const a of this.list()) if (pred(a) && this.remove(a.ip)) out.push(a.ip);
    return out;
  }

  find(containerId: string, ifname: string): Allocation[] {
    return this.list().filter((a) => a.containerId === containerId && a.ifname === ifname);
  }

  private remove(ip: string): boolean {
    try {
      unlinkSync(join(this.dir, ip));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }
}
