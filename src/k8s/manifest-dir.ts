// A directory of manifests as a proxy source (offline use, the lab): every *.yaml, *.yml and
// *.json file is loaded with the shared loader; the directory is watched (fs.watch, plus a slow
// poll because inotify misses some editors' and network filesystems' changes) and each change
// hands the complete set to the tracker, which finds what really changed. A file that does not
// parse is skipped with a warning and its previous objects are kept, so a half-written file
// never removes services.
import { readdir, readFile, stat } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
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
}

const MANIFEST = /\.(ya?ml|json)$/;

export class ManifestDirSource implements ProxySource {
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private h: SourceHandler | null = null;
  private loading: Promise<void> | null = null;
  private again = false;
  /** Per file: mtime+size and the last good parse. */
  private readonly cache = new Map<string, { sig: string; loaded: LoadedManifests }>();

  constructor(private readonly o: ManifestDirOptions) {}

  async start(h: SourceHandler): Promise<void> {
    this.h = h;
    await this.reload();
    h.synced();
    this.watcher = watch(this.o.dir, () => this.schedule());
    this.watcher.on('error', (err) => h.warn(`directory ${this.o.dir}`, `watch failed: ${String(err)}`));
    this.poll = setInterval(() => this.schedule(), this.o.pollMs ?? 5000);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
    this.watcher = null;
    this.h = null;
    await this.loading;
  }

  private schedule(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => { void this.reloadSerial(); }, this.o.debounceMs ?? 5);
  }

  private async reloadSerial(): Promise<void> {
    if (this.loading) { this.again = true; return; }
    this.loading = this.reload().finally(() => { this.loading = null; });
    await this.loading;
    if (this.again) { this.again = false; await this.reloadSerial(); }
  }

  /** Reads the directory and hands the complete set to the handler. */
  async reload(): Promise<void> {
    const h = this.h;
    if (!h) return;
    let names: string[];
    try {
      names = (await readdir(this.o.dir)).filter((n) => MANIFEST.test(n) && !n.startsWith('.')).sort();
    } catch (err) {
      h.warn(`directory ${this.o.dir}`, `cannot read: ${String(err)}`);
      return;
    }
    const parts: LoadedManifests[] = [];
    const present = new Set(names);
    for (const k of [...this.cache.keys()]) if (!present.has(k)) this.cache.delete(k);
    for (const name of names) {
      const path = join(this.o.dir, name);
      try {
        const st = await stat(path);
        const sig = `${st.mtimeMs}:${st.size}`;
        const c = this.cache.get(name);
        if (c && c.sig === sig) { parts.push(c.loaded); continue; }
        const loaded = loadManifestText(await readFile(path, 'utf8'), path);
        for (const w of loaded.warnings) h.warn(path, w);
        this.cache.set(name, { sig, loaded });
        parts.push(loaded);
      } catch (err) {
        h.warn(path, `not loaded, keeping its previous objects: ${err instanceof Error ? err.message : String(err)}`);
        const c = this.cache.get(name);
        if (c) parts.push(c.loaded);
      }
    }
    h.replaceAll(parts.flatMap((p) => p.cluster.services), parts.flatMap((p) => p.cluster.endpointSlices));
    if (this.o.nodeName && h.node) {
      const node: Node | undefined = parts.flatMap((p) => p.nodes).find((n) => n.metadata.name === this.o.nodeName);
      if (node) h.node(node);
    }
  }
}
