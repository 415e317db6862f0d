// The built forwarder (dist/knet-userspace-forwarder, Bun) on its own, driven over its control
// channel as the proxy drives it (src/proxy/userspace/forwarder/protocol.ts): bad requests get
// a reply that says what is wrong and the forwarder serves on; a port in use is refused by
// name; a TCP port balances and reports its counts; the forwarder exits when its stdin closes.
// Runs in its own knt-u* namespace.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, testNetns } from '../helpers/netns.ts';
import { run } from '../../src/kernel/exec.ts';
import type { FromForwarder, PortSpec, ToForwarder } from '../../src/proxy/userspace/forwarder/protocol.ts';

const exe = join(process.cwd(), 'dist/knet-userspace-forwarder');
const rootTest = isRoot && existsSync(exe) ? test : test.skip;

const spec = (over: Partial<PortSpec>): PortSpec => ({
  protocol: 'tcp', name: 'default/web:http', bindHost: '127.0.0.1', port: 0, shared: false, stickySeconds: 0, endpoints: [],
  idleMs: 60_000, keepAliveMs: 60_000, dialTimeoutsMs: [250, 500], udpIdleMs: 250, maxFlows: 16, bufferBytes: 0, ...over,
});

rootTest('the forwarder answers bad requests with the reason, refuses a port in use by name, balances, counts, and exits when its stdin closes', async (t) => {
  const ns = await testNetns(t, 'knt-u');
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  // Two endpoints that answer who they are, started in the namespace.
  const servers = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `
    const net = require('node:net');
    for (const port of [9001, 9002]) net.createServer((s) => s.end('ep' + port)).listen(port, '127.0.0.1');
    setTimeout(() => process.stdout.write('ready\\n'), 100);`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { servers.kill('SIGKILL'); });
  await new Promise((r) => servers.stdout.once('data', r));

  const fw = spawn('ip', ['netns', 'exec', ns, exe], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => { fw.kill('SIGKILL'); });
  let stderr = '';
  fw.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const replies: FromForwarder[] = [];
  const waiting: Array<() => void> = [];
  let out = '';
  fw.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    let i;
    while ((i = out.indexOf('\n')) >= 0) { replies.push(JSON.parse(out.slice(0, i)) as FromForwarder); out = out.slice(i + 1); waiting.shift()?.(); }
  });
  const ask = async (m: ToForwarder | string): Promise<FromForwarder> => {
    const got = new Promise<void>((r) => waiting.push(r));
    fw.stdin.write(`${typeof m === 'string' ? m : JSON.stringify(m)}\n`);
    await got;
    return replies.at(-1)!;
  };

  // Garbage is logged and skipped; the next request is served.
  fw.stdin.write('{not json\n');
  t.like(await ask({ t: 'listen', id: 1, key: 'bad', spec: spec({ endpoints: ['web:80'] }) }), { t: 'failed', id: 1, error: 'invalid endpoints' });
  t.like(await ask({ t: 'listen', id: 2, key: 'bad', spec: spec({ port: 70_000 }) }), { t: 'failed', id: 2, error: 'invalid port' });
  t.like(await ask({ t: 'listen', id: 3, key: 'bad', spec: spec({ bindHost: 'localhost' }) }), { t: 'failed', id: 3 });
  const ok = await ask({ t: 'listen', id: 4, key: 'web', spec: spec({ endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'] }) });
  if (ok.t !== 'listening') throw new Error(JSON.stringify(ok));
  t.true(ok.port > 0);
  // The same port again, unshared: refused, by name.
  t.like(await ask({ t: 'listen', id: 5, key: 'again', spec: spec({ port: ok.port }) }), { t: 'failed', id: 5, error: `bind 127.0.0.1:${ok.port}: EADDRINUSE (98)` });
  t.regex(stderr, /bad control message/);

  // Round robin over the two endpoints, through the forwarder.
  const who = async () => (await run('ip', ['netns', 'exec', ns, process.execPath, '-e',
    `require('node:net').connect(${ok.port}, '127.0.0.1').on('data', (d) => process.stdout.write(d)).on('error', (e) => process.stdout.write(e.code))`])).stdout;
  const seen = [];
  for (let i = 0; i < 4; i++) seen.push(await who());
  t.deepEqual(seen.sort(), ['ep9001', 'ep9001', 'ep9002', 'ep9002']);
  // A bad update is refused whole (logged): the port keeps both endpoints.
  fw.stdin.write(`${JSON.stringify({ t: 'update', key: 'web', endpoints: ['127.0.0.1:9002', 'web:80'], stickySeconds: 0 })}\n`);
  fw.stdin.write(`${JSON.stringify({ t: 'update', key: 'web', endpoints: ['127.0.0.1:9002'], stickySeconds: -1 })}\n`);
  const after = [await who(), await who()];
  t.deepEqual(after.sort(), ['ep9001', 'ep9002']);
  t.regex(stderr, /"field":"endpoints","msg":"bad update refused"/);
  t.regex(stderr, /"field":"stickySeconds","msg":"bad update refused"/);
  // An endpoint update reaches new connections; the counts come back on request.
  fw.stdin.write(`${JSON.stringify({ t: 'update', key: 'web', endpoints: ['127.0.0.1:9002'], stickySeconds: 0 })}\n`);
  t.is(await who(), 'ep9002');
  const report = await ask({ t: 'report', id: 6 });
  if (report.t !== 'report') throw new Error(JSON.stringify(report));
  t.like(report.ports.find((p) => p.key === 'web'), { active: 0, counts: { accepted: 7, down: 42, dialFailures: 0 } });

  const exited = new Promise<number | null>((r) => fw.once('exit', r));
  fw.stdin.end();
  t.is(await exited, 0);
});
