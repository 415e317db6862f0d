// A real etcd (Debian's etcd-server) for tests: free ports, a temp data dir, optionally inside a
// network namespace listening on a given address. Stopped and removed in teardown. The server
// can be stopped and started again on the same ports and data (for "etcd went away" tests).
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertNetnsName } from '../../src/kernel/netns.ts';
import { run } from '../../src/kernel/exec.ts';

export interface EtcdOptions {
  /** Run etcd inside this named network namespace (it must already exist). */
  netns?: string;
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Fixed client port; default: a free one. */
  clientPort?: number;
  /** etcd's own --auto-compaction-retention etc. can be added here. */
  extraArgs?: string[];
  /** How long to wait for "ready to serve client requests". */
  readyTimeoutMs?: number;
}

export interface EtcdServer {
  /** http://HOST:PORT, for etcd3's `hosts` and knet's --etcd-endpoints. */
  readonly endpoint: string;
  readonly host: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  /** Stops the process, keeping the data dir. */
  stop(): Promise<void>;
  /** Starts it again (same ports, same data). */
  start(): Promise<void>;
  /** Stops and removes the data dir (also run by teardown). */
  dispose(): Promise<void>;
  /**
   * Calls etcd's v3 JSON gateway (e.g. "kv/put"), from inside the namespace when etcd runs in
   * one (the test process cannot reach a namespace's addresses directly).
   */
  v3(path: string, body: object): Promise<Record<string, unknown>>;
  put(key: string, value: string): Promise<void>;
  get(key: string): Promise<string | null>;
  /** Keys under a prefix with their values and etcd lease ids ("0": no lease). */
  list(prefix: string): Promise<{ key: string; value: string; lease: string }[]>;
  del(key: string): Promise<void>;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: unknown) => Buffer.from(String(s ?? ''), 'base64').toString();

/** The end of a prefix range, as etcd defines it: the prefix with its last byte incremented. */
function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix);
  b[b.length - 1] = b[b.length - 1]! + 1;
  return b.toString('base64');
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function randomPort(): number {
  // Inside a fresh namespace nothing listens, so any port in this range is free.
  return 20000 + Math.floor(Math.random() * 20000);
}

export async function startEtcd(t: ExecutionContext | null, opts: EtcdOptions = {}): Promise<EtcdServer> {
  const host = opts.host ?? '127.0.0.1';
  if (opts.netns) assertNetnsName(opts.netns);
  const clientPort = opts.clientPort ?? (opts.netns ? randomPort() : await freeLoopbackPort());
  let peerPort = opts.netns ? randomPort() : await freeLoopbackPort();
  if (peerPort === clientPort) peerPort = clientPort + 1;
  const dataDir = mkdtempSync(join(tmpdir(), 'knet-etcd-'));
  const peerUrl = `http://${host}:${peerPort}`;
  const clientUrl = `http://${host}:${clientPort}`;
  const args = [
    '--name', 'knet-test',
    '--data-dir', dataDir,
    '--listen-client-urls', clientUrl,
    '--advertise-client-urls', clientUrl,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `knet-test=${peerUrl}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    ...(opts.extraArgs ?? []),
  ];
  let child: ChildProcess | null = null;
  let disposed = false;

  const start = async (): Promise<void> => {
    if (child) return;
    const [file, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'etcd', ...args]] : ['etcd', args];
    const proc = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`etcd did not become ready in time:\n${log.slice(-2000)}`));
      }, opts.readyTimeoutMs ?? 20_000);
      proc.stderr!.on('data', (chunk: Buffer) => {
        if (log.length < 200_000) log += chunk.toString();
        // zap logs "serving client traffic (in)securely" once the client listener is up.
        if (/serving client traffic|ready to serve client requests/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        if (child === proc) child = null;
        reject(new Error(`etcd exited (${code}) before it was ready:\n${log.slice(-2000)}`));
      });
    });
    // Keep draining stderr so etcd never blocks on a full pipe.
    proc.stderr!.removeAllListeners('data');
    proc.stderr!.resume();
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    if (!proc) return;
    child = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => { clearTimeout(timer); resolve(); });
      proc.kill('SIGTERM');
    });
  };

  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    await stop();
    rmSync(dataDir, { recursive: true, force: true });
  };

  const v3 = async (path: string, body: object): Promise<Record<string, unknown>> => {
    if (!/^[a-z]+\/[a-z]+$/.test(path)) throw new Error(`invalid etcd v3 path ${path}`);
    const url = `${clientUrl}/v3/${path}`;
    const text = JSON.stringify(body);
    if (!opts.netns) {
      const res = await fetch(url, { method: 'POST', body: text });
      if (!res.ok) throw new Error(`etcd ${path}: HTTP ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, unknown>;
    }
    const { stdout } = await run('ip', ['netns', 'exec', opts.netns, 'curl', '-sS', '--fail-with-body', '-X', 'POST', '--data-binary', '@-', url], { input: text });
    return JSON.parse(stdout) as Record<string, unknown>;
  };
  const put = async (key: string, value: string) => { await v3('kv/put', { key: b64(key), value: b64(value) }); };
  const list = async (prefix: string) => {
    const res = await v3('kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) });
    const kvs = (res.kvs ?? []) as { key: string; value?: string; lease?: string }[];
    return kvs.map((kv) => ({ key: unb64(kv.key), value: unb64(kv.value), lease: String(kv.lease ?? '0') }));
  };
  const get = async (key: string) => {
    const res = await v3('kv/range', { key: b64(key) });
    const kvs = (res.kvs ?? []) as { value?: string }[];
    return kvs.length ? unb64(kvs[0]!.value) : null;
  };
  const del = async (key: string) => { await v3('kv/deleterange', { key: b64(key) }); };

  if (t) t.teardown(dispose);
  try {
    await start();
  } catch (err) {
    await dispose();
    throw err;
  }
  return { endpoint: clientUrl, host, clientPort, peerPort, dataDir, stop, start, dispose, v3, put, get, list, del };
}
