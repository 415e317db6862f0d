// A lab API for tests: on an in-memory store (fast, no etcd) or a real etcd, listening on
// 127.0.0.1 with a token file (an administrator and node-1/node-2), stopped in teardown; plus
// a raw HTTP client and a watch-stream reader.
import type { ExecutionContext } from 'ava';
import { request, type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { LabApi, type LabApiOptions } from '../../src/lab/api/server.ts';
import { MemoryKv, type KvBackend } from '../../src/lab/api/kv.ts';
import { tokenLine } from '../../src/lab/api/auth.ts';
import { waitFor } from '../../src/util/wait.ts';

export const ADMIN_TOKEN = 'admin-token';
export const NODE_TOKENS: Record<string, string> = { 'node-1': 'node-1-token', 'node-2': 'node-2-token' };

export interface TestApi {
  api: LabApi;
  kv: KvBackend;
  port: number;
  dir: string;
  socketPath: string;
  tokenFile: string;
  options: LabApiOptions;
  /** Stops this API and starts a new one on the same store. */
  restart(): Promise<void>;
}

export async function startLabApi(t: ExecutionContext, o: Partial<LabApiOptions> & { kv?: KvBackend } = {}): Promise<TestApi> {
  const dir = mkdtempSync(join(tmpdir(), 'knt-k-api-'));
  const tokenFile = join(dir, 'tokens.csv');
  writeFileSync(tokenFile, [
    tokenLine(ADMIN_TOKEN, 'admin', ['system:masters']),
    ...Object.entries(NODE_TOKENS).map(([n, tok]) => tokenLine(tok, `system:node:${n}`, ['system:nodes'])),
  ].join('\n') + '\n');
  const kv = o.kv ?? (o.etcdEndpoint ? undefined : new MemoryKv());
  const options: LabApiOptions = {
    host: '127.0.0.1', port: 0, socketPath: join(dir, 'api.sock'), tokenFile,
    serviceCIDR: '10.254.0.0/16', nodePortRange: [30000, 32767], clusterCIDR: '10.244.0.0/16', nodeCidrMaskSize: 24,
    log: pino({ level: process.env.KNET_TEST_LOG ?? 'silent' }),
    ...o,
    ...(kv ? { kv } : {}),
  };
  const out: TestApi = {
    api: new LabApi(options), kv: kv!, port: 0, dir, socketPath: options.socketPath!, tokenFile, options,
    async restart() {
      await out.api.stop();
      // The same store (in-memory data, or the etcd) survives the restart.
      out.api = new LabApi({ ...options, port: out.port });
      await out.api.start();
    },
  };
  t.teardown(async () => {
    await out.api.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  await out.api.start();
  out.port = out.api.port;
  return out;
}

export interface Reply { status: number; headers: IncomingHttpHeaders; body: any; text: string }

export function call(port: number, method: string, path: string, body?: unknown, o: { token?: string | null; contentType?: string; accept?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const headers: Record<string, string | number> = {};
    const token = o.token === undefined ? ADMIN_TOKEN : o.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (data !== undefined) { headers['Content-Type'] = o.contentType ?? 'application/json'; headers['Content-Length'] = Buffer.byteLength(data); }
    if (o.accept) headers.Accept = o.accept;
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try { parsed = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed, text });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

export interface WatchEvent { type: string; object: any }

/** Opens a watch and collects its events; `until` resolves when a predicate over them holds. */
export function openWatch(port: number, path: string, token: string | null = ADMIN_TOKEN, accept?: string) {
  const events: WatchEvent[] = [];
  let status = 0;
  let ended = false;
  const waiters: Array<() => void> = [];
  const notify = () => { for (const w of waiters.splice(0)) w(); };
  const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  if (accept) headers.Accept = accept;
  const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
    status = res.statusCode ?? 0;
    let buf = '';
    res.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try { events.push(JSON.parse(line)); } catch { events.push({ type: 'UNPARSEABLE', object: line }); }
      }
      notify();
    });
    res.on('end', () => { ended = true; notify(); });
    res.on('error', () => { ended = true; notify(); });
  });
  req.on('error', () => { ended = true; notify(); });
  req.end();
  return {
    events,
    get status() { return status; },
    get ended() { return ended; },
    async until(pred: (e: WatchEvent[]) => boolean, timeoutMs = 10_000): Promise<WatchEvent[]> {
      const deadline = Date.now() + timeoutMs;
      while (!pred(events)) {
        if (ended) throw new Error(`watch ${path} ended with ${JSON.stringify(events.map((e) => e.type))}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`watch ${path}: timed out with ${JSON.stringify(events.map((e) => `${e.type} ${e.object?.metadata?.name ?? ''}`))}`);
        await new Promise<void>((r) => { waiters.push(r); setTimeout(r, Math.min(left, 200)); });
      }
      return events;
    },
    close() { req.destroy(); },
  };
}

/** The project's waitFor, polling every 50 ms, for conditions that may be plain values. */
export const eventually = <T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 10_000): Promise<T> =>
  waitFor(what, async () => fn(), timeoutMs, 50);
