// The lab API's memory under watch clients that never read (figures printed, nothing asserted).
// The API runs in its own process on a real etcd; STALLED clients open a watch on Services and
// never read it, one client reads its watch; OBJECTS Services with a 10 kB annotation are
// written. Printed: the API's resident memory before, at its peak and after; how many stalled
// watches the API closed; whether the reading watch saw every event.
// Anchor (issue 15.6): 100 watches that never read grew the API from 69 MB to 1.3 GB.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import pino from 'pino';
import { startEtcd } from '../../test/helpers/etcd.ts';

const STALLED = Number(process.env.STALLED ?? 100);
const OBJECTS = Number(process.env.OBJECTS ?? 1000);
const PAD = 'x'.repeat(10_000);

async function serve(endpoint: string): Promise<void> {
  const { LabApi } = await import('../../src/lab/api/server.ts');
  const api = new LabApi({ etcdEndpoint: endpoint, host: '127.0.0.1', port: 0, anonymousAdmin: true, serviceCIDR: '10.96.0.0/12', nodePortRange: [30000, 32767], log: pino({ level: 'silent' }) });
  await api.start();
  process.stdout.write(`port ${api.port}\n`);
  setInterval(() => process.stdout.write(`stats ${JSON.stringify(api.watchStats())}\n`), 200);
}

const rssMB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

function post(port: number, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/api/v1/namespaces/default/services', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); });
    req.on('error', reject);
    req.end(data);
  });
}

/** A watch that is never read, from its own loopback address (the API bounds watches per address). */
function stalledWatch(port: number, i: number): Promise<Socket> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: `127.1.${i >> 8}.${(i & 255) + 1}` }, () => {
      s.write('GET /api/v1/services?watch=true HTTP/1.1\r\nHost: lab\r\n\r\n');
      s.pause();
      resolve(s);
    });
    s.on('error', () => undefined);
  });
}

async function main(): Promise<void> {
  delete process.env.NODE_EXTRA_CA_CERTS;
  const etcd = await startEtcd(null, { extraArgs: ['--quota-backend-bytes', String(4 * 1024 ** 3)] });
  const child = spawn(process.execPath, ['--import', 'tsx', import.meta.filename, '--serve', etcd.endpoint], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
  const cleanup = async () => { child.kill(); await etcd.dispose(); };
  let stats = { open: 0, closedSlow: 0 };
  const port = await new Promise<number>((resolve) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('port ')) resolve(Number(line.slice(5)));
        if (line.startsWith('stats ')) stats = JSON.parse(line.slice(6));
      }
    });
  });
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const before = rssMB(child.pid!);
    const stalled = await Promise.all(Array.from({ length: STALLED }, (_, i) => stalledWatch(port, i)));
    let seen = 0;
    const reader = request({ host: '127.0.0.1', port, path: '/api/v1/services?watch=true', localAddress: '127.2.0.1' }, (res) => {
      res.on('data', (d: Buffer) => { for (const c of d) if (c === 10) seen++; });
    });
    reader.on('error', () => undefined);
    reader.end();
    let peak = before;
    const sampler = setInterval(() => { peak = Math.max(peak, rssMB(child.pid!)); }, 100);
    const t0 = Date.now();
    for (let i = 0; i < OBJECTS; i += 8) {
      await Promise.all(Array.from({ length: Math.min(8, OBJECTS - i) }, (_, k) => post(port, { metadata: { name: `svc-${i + k}`, annotations: { pad: PAD } }, spec: { ports: [{ port: 80 }] } })));
    }
    while (seen < OBJECTS && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1000));
    clearInterval(sampler);
    const after = rssMB(child.pid!);
    console.log(`lab API memory with ${STALLED} watches that never read, ${OBJECTS} Services of 10 kB written (${((Date.now() - t0) / 1000).toFixed(1)} s):`);
    console.log(`  resident memory: ${before.toFixed(0)} MB before, ${peak.toFixed(0)} MB peak, ${after.toFixed(0)} MB after`);
    console.log(`  stalled watches closed by the API: ${stats.closedSlow} of ${STALLED}; still open: ${stats.open - 1}`);
    console.log(`  the reading watch saw ${seen} of ${OBJECTS} events`);
    console.log('  anchor (issue 15.6, before the bounds): 100 watches that never read grew the API from 69 MB to 1.3 GB');
    for (const s of stalled) s.destroy();
    reader.destroy();
  } finally {
    await cleanup();
  }
}

if (process.argv[2] === '--serve') await serve(process.argv[3]!);
else await main();
