// The manifest directory source (`knet proxy --manifests`) under hostile and careless writers:
// a file written in place is not read half-written, a missing directory is waited for (no
// empty world is ever reported), FIFOs, devices and oversized files are skipped without
// blocking, and the watch survives the directory appearing late.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, renameSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestDirSource } from '../../src/k8s/manifest-dir.ts';
import type { SourceHandler } from '../../src/proxy/source.ts';
import type { EndpointSlice, Service } from '../../src/model/k8s.ts';

/** Records what the source reports. */
class Recorder implements SourceHandler {
  sets: Array<{ services: string[]; endpoints: string[] }> = [];
  warnings: string[] = [];
  syncedAt = -1;
  upsertService(): void {}
  deleteService(): void {}
  upsertSlice(): void {}
  deleteSlice(): void {}
  replaceAll(services: Service[], slices: EndpointSlice[]): void {
    this.sets.push({
      services: services.map((s) => s.metadata.name!).sort(),
      endpoints: slices.flatMap((s) => (s.endpoints ?? []).flatMap((e) => e.addresses)).sort(),
    });
  }
  synced(): void { this.syncedAt = this.sets.length; }
  warn(object: string, reason: string): void { this.warnings.push(`${object}: ${reason}`); }
  get last() { return this.sets[this.sets.length - 1]; }
}

function manifest(services: number, ip = '10.0.7.12'): string {
  const docs: string[] = [];
  for (let i = 0; i < services; i++) {
    docs.push(`apiVersion: v1\nkind: Service\nmetadata: {name: s${i}, namespace: default}\nspec:\n  clusterIP: 172.30.0.${i + 1}\n  ports: [{port: 80, protocol: TCP}]\n`);
    docs.push(`apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s${i}-1, namespace: default, labels: {kubernetes.io/service-name: s${i}}}\naddressType: IPv4\nports: [{port: 80, protocol: TCP}]\nendpoints:\n- conditions: {ready: true}\n  addresses:\n  - ${ip}\n`);
  }
  return docs.join('---\n');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: () => boolean, ms = 5000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(10)) if (what()) return true;
  return what();
}

function tempDir(t: { teardown(f: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'knt-manifests-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const old = (path: string) => utimesSync(path, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));

test('a file written in place is read only once it is complete and quiet, never half-written', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'cluster.yaml');
  writeFileSync(path, manifest(30));
  old(path);
  const h = new Recorder();
  const src = new ManifestDirSource({ dir, settleMs: 400, pollMs: 50, debounceMs: 1 });
  t.teardown(() => src.stop());
  await src.start(h);
  t.is(h.syncedAt, 1);
  t.is(h.last!.services.length, 30);

  // `tee` rewrites the file in place: truncate, then the text in pieces, each of which parses:
  // the first ends after 10 services, the second inside the last address (10.0.7.12 cut to
  // 10.0.7.1).
  const next = manifest(40, '10.0.7.12');
  const cuts = [next.indexOf('---\napiVersion: v1\nkind: Service\nmetadata: {name: s10,'), next.length - 2];
  const fd = openSync(path, 'w');
  writeSync(fd, next.slice(0, cuts[0]));
  await sleep(200);
  writeSync(fd, next.slice(cuts[0], cuts[1]));
  await sleep(200);
  writeSync(fd, next.slice(cuts[1]));
  closeSync(fd);
  t.true(await until(() => h.last!.services.length === 40));
  for (const set of h.sets) {
    t.true(set.services.length === 30 || set.services.length === 40, `a half-written file was read: ${set.services.length} services`);
    t.false(set.endpoints.includes('10.0.7.1'), 'a truncated address was read');
  }

  // A new file renamed into place is the documented way: read after the settle time.
  const tmp = join(dir, '.next.tmp');
  writeFileSync(tmp, manifest(5, '10.0.9.1'));
  renameSync(tmp, path);
  t.true(await until(() => h.last!.services.length === 5));
  t.deepEqual(h.last!.endpoints, Array(5).fill('10.0.9.1'));
});

test('a missing directory is waited for: nothing is reported until it was read, and it is watched once it appears', async (t) => {
  const parent = tempDir(t);
  const dir = join(parent, 'manifests');
  const h = new Recorder();
  const src = new ManifestDirSource({ dir, settleMs: 0, pollMs: 50, debounceMs: 1 });
  t.teardown(() => src.stop());
  await src.start(h);
  await sleep(200);
  t.is(h.syncedAt, -1);
  t.deepEqual(h.sets, []);
  t.is(h.warnings.filter((w) => w.includes('waiting for it')).length, 1, 'warned once, not on every poll');

  mkdirSync(dir);
  writeFileSync(join(dir, 'a.yaml'), manifest(3));
  t.true(await until(() => h.syncedAt === 1 && h.last!.services.length === 3));
  t.is(h.sets[0]!.services.length, 3, 'the first report is the directory as read, not an empty world');
  // The watch works in the directory that appeared (the poll is slow here).
  const later = new ManifestDirSource({ dir, settleMs: 0, pollMs: 60_000, debounceMs: 1 });
  const h2 = new Recorder();
  t.teardown(() => later.stop());
  await later.start(h2);
  writeFileSync(join(dir, 'b.yaml'), manifest(1).replaceAll('s0', 'extra'));
  t.true(await until(() => h2.last!.services.includes('extra')));

  // The directory goes away: the objects read before are kept.
  rmSync(dir, { recursive: true });
  await sleep(150);
  t.is(h.last!.services.length >= 3, true);
  t.true(h.warnings.some((w) => w.includes('keeping the objects read before')));
});

test('FIFOs, device symlinks and oversized files are skipped without blocking; symlinked regular files are read', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'good.yaml'), manifest(2));
  old(join(dir, 'good.yaml'));
  execFileSync('mkfifo', [join(dir, 'pipe.yaml')]);
  symlinkSync('/dev/zero', join(dir, 'zero.yaml'));
  const big = join(dir, 'big.json');
  writeFileSync(big, '');
  truncateSync(big, 4096);
  old(big);
  // A ConfigMap volume presents files as symlinks to regular files.
  mkdirSync(join(dir, '..data'));
  writeFileSync(join(dir, '..data', 'cm.yaml'), manifest(1).replaceAll('s0', 'cm'));
  old(join(dir, '..data', 'cm.yaml'));
  symlinkSync(join('..data', 'cm.yaml'), join(dir, 'cm.yaml'));
  const h = new Recorder();
  const src = new ManifestDirSource({ dir, settleMs: 0, pollMs: 50, debounceMs: 1, maxFileBytes: 1024 });
  const started = Date.now();
  await src.start(h);
  t.true(Date.now() - started < 2000);
  t.is(h.syncedAt, 1);
  t.deepEqual(h.last!.services, ['cm', 's0', 's1']);
  t.true(h.warnings.some((w) => w.includes('pipe.yaml: skipped: not a regular file')));
  t.true(h.warnings.some((w) => w.includes('zero.yaml: skipped: not a regular file')));
  t.true(h.warnings.some((w) => w.includes('big.json: skipped: larger than 1024 bytes')));
  await sleep(200);
  t.is(h.warnings.filter((w) => w.includes('pipe.yaml')).length, 1, 'warned once per file version');
  const stopping = Date.now();
  await src.stop();
  t.true(Date.now() - stopping < 1000);
});
