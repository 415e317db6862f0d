// The file store needs no root: it works in a temp dir. Concurrency is exercised with real
// processes in test/integration/cni-concurrency.test.ts.
import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpamStore, PoolExhaustedError } from '../../src/ipam/store.ts';
import { parseCidr4, parseIPv4 } from '../../src/ipam/ipv4.ts';
import type { Pool } from '../../src/ipam/allocator.ts';

function dir(t: any): string {
  const d = mkdtempSync(join(tmpdir(), 'knt-c-ipam-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
const pool: Pool = { subnet: parseCidr4('10.9.0.0/29'), gateway: parseIPv4('10.9.0.1'), reserved: new Set([parseIPv4('10.9.0.3')]) };

test('records use host-local\'s layout: one file per address holding id and ifname', (t) => {
  const d = dir(t);
  const s = new IpamStore(d);
  const ip = s.allocate(pool, 'c1', 'eth0');
  t.is(ip, '10.9.0.2');
  t.is(readFileSync(join(d, ip), 'utf8'), 'c1\r\neth0');
  t.is(readFileSync(join(d, 'last_reserved_ip.0'), 'utf8'), ip);
  t.deepEqual(s.list(), [{ ip, containerId: 'c1', ifname: 'eth0' }]);
});

test('allocates round robin, skips reserved, reports exhaustion, releases by owner', (t) => {
  const s = new IpamStore(dir(t));
  const got = ['a', 'b', 'c', 'd'].map((c) => s.allocate(pool, c, 'eth0'));
  t.deepEqual(got, ['10.9.0.2', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
  t.throws(() => s.allocate(pool, 'e', 'eth0'), { instanceOf: PoolExhaustedError });
  t.false(s.releaseIp('10.9.0.4', 'a', 'eth0'), 'only the owner releases');
  t.deepEqual(s.release('b', 'eth0'), ['10.9.0.4']);
  t.deepEqual(s.release('b', 'eth0'), [], 'release is idempotent');
  t.is(s.allocate(pool, 'e', 'eth0'), '10.9.0.4');
});

test('temp files of dead plugins are swept; live ones are kept', (t) => {
  const d = dir(t);
  writeFileSync(join(d, '.knet-tmp-999999999-abc'), 'dead\r\neth0');
  writeFileSync(join(d, `.knet-tmp-${process.pid}-live`), 'me\r\neth0');
  const s = new IpamStore(d);
  s.list();
  t.deepEqual(readdirSync(d).filter((n) => n.startsWith('.knet-tmp')), [`.knet-tmp-${process.pid}-live`]);
});

test('a missing data dir lists nothing and releases nothing', (t) => {
  const s = new IpamStore(join(dir(t), 'nope'));
  t.deepEqual(s.list(), []);
  t.deepEqual(s.release('x', 'eth0'), []);
});
