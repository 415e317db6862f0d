// A directory of manifests as a proxy source (offline use, the lab, the Vagrant VMs): every
// *.yaml, *.yml and *.json file is loaded with the shared loader; the directory is watched
// (fs.watch, plus a slow poll because inotify misses some editors' and network filesystems'
// changes) and each change hands the complete set to the tracker, which finds what really
// changed. What the source refuses to act on:
// - a file that is still being written: a changed file is read only once it has not changed
//   for `settleMs`, and again if it changed while being read (a `tee` into the directory was
//   read half-written: 304 services became 29, and an address was cut to a shorter one).
//   Writing a new file and renaming it into place is the way to update (nothing waits then
//   but the settle time);
// - a file that does not parse: skipped with a warning, its previous objects are kept;
// - anything but a regular file (a FIFO would block the reader forever, /dev/zero would never
//   end), and files over `maxFileBytes`: skipped with a warning, never opened;
// - a directory that is missing: nothing is reported synced until it has been read once, so
//   the proxy never programs (and so deletes) an empty world it did not observe; it is polled
//   for and watched once it appears.
import { open, readdir, stat } from 'node:fs/promises';
import { constants, watch, type FSWatcher, type Stats } from 'node:fs';
import { join } from 'node:path';
import { loadManifestText, type LoadedManifests } from './manifests.ts';
import type { ProxySource, SourceHandler } from '../proxy/source.ts';
import type { Node } from '../model/k8s.ts';

export interface ManifestDirOptions {
  dir: string;
  /** This node's name: its Node object (if present in the directory) is handed to the handler. */
  nodeName?: string;
  debounceMs?: number;
  pollMs?: number;
  /** A changed file is read once it has been unchanged this long (default 500 ms). */
  settleMs?: number;
  /** Larger files are skipped (default 64 MiB; 10k services with their slices are ~6 MB of YAML). */
  maxFileBytes?: number;
  /** Wall clock (tests). */
  now?: () => number;
}

const MANIFEST = /\.(ya?ml|json)$/;

/** What identifies one version of a file: a rename gives a new inode, a write a new mtime or size. */
const signature = (st: Stats) => `${st.ino}:${st.mtimeMs}:${st.size}`;

type FileRead = { text: string; sig: string } | { unsettled: number } | { skip: string };

export class ManifestDirSource implements ProxySource {
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private settleTimer: NodeJS.Timeout | null = null;
  private h: SourceHandler | null = null;
  private loading: Promise<void> | null = null;
  private again = false;
  private reported = false;
  private missing = false;
  /** Per file: the signature and the last good parse. */
  private readonly cache = new Map<string, { sig: string; loaded: LoadedManifests }>();
  /** Per changed file: the version first seen and when (it is read once unchanged for settleMs). */
  private readonly pending = new Map<string, { sig: string; at: number }>();
  /** Per file: the signature of the last problem warned about (one warning per version). */
  private readonly warnedSig = new Map<string, string>();

  constructor(private readonly o: ManifestDirOptions) {}

  private get now(): number {
    return (this.o.now ?? Date.now)();
  }

  async start(h: SourceHandler): Promise<void> {
    this.h = h;
    this.poll = setInterval(() => this.schedule(), this.o.pollMs ?? 5000);
    this.poll.unref();
    await this.reloadSerial();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    for (const t of [this.debounce, this.settleTimer]) if (t) clearTimeout(t);
    if (this.poll) clearInterval(this.poll);
    this.watcher = null;
    this.h = null;
    await this.loading;
  }

  private schedule(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => { void this.reloadSerial(); }, this.o.debounceMs ?? 5);
  }

  /** Watches the directory while it exists; a watch that fails waits for the poll to set up a new one. */
  private watchDir(): void {
    if (this.watcher || !this.h) return;
    try {
      const w = watch(this.o.dir, () => this.schedule());
      w.on('error', () => { w.close(); if (this.watcher === w) this.watcher = null; this.schedule(); });
      this.watcher = w;
    } catch {
      // Gone again: the poll retries.
    }
  }

  private async reloadSerial(): Promise<void> {
    if (this.loading) { this.again = true; return; }
    this.loading = this.reload().finally(() => { this.loading = null; });
    await this.loading;
    if (this.again) { this.again = false; await this.reloadSerial(); }
  }

  /** Reads one file if it is a settled regular file within the size bound; never blocks on it. */
  private async readFile(path: string): Promise<FileRead> {
    const max = this.o.maxFileBytes ?? 64 << 20;
    const settle = this.o.settleMs ?? 500;
    // stat follows symlinks (ConfigMap volumes are symlinks) and opens nothing: a FIFO or a
    // device is refused before any open could block or have effects.
    const st = await stat(path);
    if (!st.isFile()) return { skip: 'not a regular file' };
    if (st.size > max) return { skip: `larger than ${max} bytes` };
    const sig = signature(st);
    if (this.cache.get(path)?.sig === sig) return { text: '', sig };
    // Settled: last written settleMs ago by its mtime, or seen unchanged that long by our clock
    // (a file stamped in the future still settles).
    const now = this.now;
    let seen = this.pending.get(path);
    if (seen?.sig !== sig) this.pending.set(path, (seen = { sig, at: now }));
    const quiet = Math.max(now - st.mtimeMs, now - seen.at);
    if (quiet < settle) return { unsettled: settle - quiet };
    // O_NONBLOCK: should the file have become a FIFO since the stat, opening it cannot block.
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const again = await fh.stat();
      if (!again.isFile()) return { skip: 'not a regular file' };
      if (signature(again) !== sig) return { unsettled: settle };
      const buf = Buffer.alloc(Math.min(again.size, max) + 1);
      let n = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
        if (bytesRead === 0) break;
        n += bytesRead;
        if (n === buf.length) break;
      }
      // Written to while being read: read it again once it is quiet.
      if (n !== again.size || signature(await fh.stat()) !== sig) return { unsettled: settle };
      this.pending.delete(path);
      return { text: buf.toString('utf8', 0, n), sig };
    } finally {
      await fh.close();
    }
  }

  /** Reads the directory and hands the complete set to the handler (once every file is known). */
  async reload(): Promise<void> {
    const h = this.h;
    if (!h) return;
    let names: string[];
    try {
      names = (await readdir(this.o.dir)).filter((n) => MANIFEST.test(n) && !n.startsWith('.')).sort();
    } catch (err) {
      if (!this.missing) h.warn(`directory ${this.o.dir}`, `cannot read (${err instanceof Error ? err.message : String(err)}); ${this.reported ? 'keeping the objects read before' : 'waiting for it before the first sync'}`);
      this.missing = true;
      return;
    }
    if (this.missing) h.warn(`directory ${this.o.dir}`, 'readable again');
    this.missing = false;
    this.watchDir();
    const parts: LoadedManifests[] = [];
    const present = new Set(names.map((n) => join(this.o.dir, n)));
    for (const k of [...this.cache.keys()]) if (!present.has(k)) this.cache.delete(k);
    for (const m of [this.warnedSig, this.pending]) for (const k of [...m.keys()]) if (!present.has(k)) m.delete(k);
    let unknown = false;
    let settleIn = Infinity;
    const warnOnce = (path: string, sig: string, reason: string) => {
      if (this.warnedSig.get(path) === sig) return;
      this.warnedSig.set(path, sig);
      h.warn(path, reason);
    };
    for (const name of names) {
      const path = join(this.o.dir, name);
      const cached = this.cache.get(path);
      try {
        const r = await this.readFile(path);
        if ('unsettled' in r) {
          settleIn = Math.min(settleIn, r.unsettled);
          if (cached) parts.push(cached.loaded);
          else unknown = true;
          continue;
        }
        if ('skip' in r) {
          warnOnce(path, r.skip, `skipped: ${r.skip}${cached ? '; keeping its previous objects' : ''}`);
          if (cached) parts.push(cached.loaded);
          continue;
        }
        if (cached?.sig === r.sig) { parts.push(cached.loaded); continue; }
        const loaded = loadManifestText(r.text, path);
        for (const w of loaded.warnings) h.warn(path, w);
        this.cache.set(path, { sig: r.sig, loaded });
        this.warnedSig.delete(path);
        parts.push(loaded);
      } catch (err) {
        const st = await stat(path).catch(() => null);
        warnOnce(path, st ? signature(st) : 'gone', `not loaded, keeping its previous objects: ${err instanceof Error ? err.message : String(err)}`);
        if (cached) parts.push(cached.loaded);
      }
    }
    if (settleIn !== Infinity && !this.settleTimer) {
      this.settleTimer = setTimeout(() => { this.settleTimer = null; this.schedule(); }, Math.ceil(settleIn) + 5);
    }
    // Until every file was read once, the set is not the directory's: report nothing yet.
    if (unknown && !this.reported) return;
    h.replaceAll(parts.flatMap((p) => p.cluster.services), parts.flatMap((p) => p.cluster.endpointSlices));
    h.serviceCIDRs?.(parts.flatMap((p) => p.cluster.serviceCIDRs ?? []));
    if (this.o.nodeName && h.node) {
      const node: Node | undefined = parts.flatMap((p) => p.nodes).find((n) => n.metadata.name === this.o.nodeName);
      if (node) h.node(node);
    }
    if (!this.reported) {
      this.reported = true;
      h.synced();
    }
  }
}
