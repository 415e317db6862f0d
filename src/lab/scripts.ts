// Two tiny Node programs the lab writes into its directory and runs inside namespaces: the
// echo server every pod (and the outside host) runs, and the probe client `lab check` runs in
// a source namespace. Kept as text so the bundled CLI can write them anywhere.

/**
 * echo.mjs NAME PORT...: on every port, TCP and UDP, answers "NAME PEER_IP\n" and closes.
 * Prints "ready" on stdout once every socket listens.
 */
export const ECHO_SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const [name, ...ports] = process.argv.slice(2);
const peer = (a) => String(a).replace(/^::ffff:/, '');
let pending = ports.length * 2;
const done = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
for (const p of ports.map(Number)) {
  net.createServer((s) => { s.on('error', () => {}); s.end(name + ' ' + peer(s.remoteAddress) + '\\n'); })
    .on('error', (e) => { console.error(String(e)); process.exit(1); })
    .listen(p, '0.0.0.0', done);
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send(name + ' ' + r.address + '\\n', r.port, r.address));
  u.on('error', (e) => { console.error(String(e)); process.exit(1); });
  u.bind(p, '0.0.0.0', done);
}
process.on('SIGTERM', () => process.exit(0));
`;

/**
 * probe.mjs: reads [{id, proto, host, port, count, timeoutMs}] on stdin, makes \`count\` fresh
 * connections (TCP) or requests from fresh sockets (UDP) per probe, probes run concurrently,
 * and prints {id: [first word of each answer, or "ERR <code>"]}.
 */
export const PROBE_CLIENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const probes = JSON.parse(Buffer.concat(chunks).toString());
const first = (s) => String(s).trim().split(/\\s+/)[0] || 'ERR empty';
const tcp = (host, port, timeout) => new Promise((res) => {
  let data = ''; const s = net.connect({ host, port });
  const t = setTimeout(() => { s.destroy(); res('ERR ETIMEDOUT'); }, timeout);
  s.on('data', (d) => { data += d; });
  s.on('end', () => { clearTimeout(t); res(data ? first(data) : 'ERR empty'); });
  s.on('error', (e) => { clearTimeout(t); res('ERR ' + e.code); });
});
const udp = (host, port, timeout) => new Promise((res) => {
  const s = dgram.createSocket('udp4');
  const t = setTimeout(() => { s.close(); res('ERR ETIMEDOUT'); }, timeout);
  s.on('message', (m) => { clearTimeout(t); s.close(); res(first(m)); });
  s.on('error', (e) => { clearTimeout(t); try { s.close(); } catch {} res('ERR ' + e.code); });
  s.send('knet-lab', port, host);
});
const out = {};
await Promise.all(probes.map(async (p) => {
  const replies = [];
  let errors = 0;
  // Three failures are enough to know: a broken path fails fast instead of timing out N times.
  for (let i = 0; i < p.count && errors < 3; i++) {
    const r = await (p.proto === 'udp' ? udp : tcp)(p.host, p.port, p.timeoutMs ?? 1500);
    if (r.startsWith('ERR')) errors++;
    replies.push(r);
  }
  out[p.id] = replies;
}));
process.stdout.write(JSON.stringify(out));
`;
