// Test harness for the CNI plugin: installs the built plugin (the Bun executable) into a temp
// "CNI bin dir" (as a runtime would find it in /opt/cni/bin), runs plugins the
// way a runtime does (exec, env, config on stdin) inside a "node" namespace, and probes pod
// connectivity with real ICMP and TCP from inside the pod namespaces.
import type { ExecutionContext } from 'ava';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run, ExecError } from '../../src/kernel/exec.ts';

export const REF_CNI_DIR = '/usr/lib/cni';
const ROOT = resolve(import.meta.dirname, '../..');
export const BUILT_PLUGIN = join(ROOT, 'dist/cni/knet');

export function tempDir(t: ExecutionContext, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * Copies dist/cni/knet (built by `npm run build`) alone into a temp bin dir: the layout of an
 * install into /opt/cni/bin, far from node_modules.
 */
export function installPlugin(t: ExecutionContext): string {
  if (!existsSync(BUILT_PLUGIN)) throw new Error(`${BUILT_PLUGIN} is missing: run npm run build first`);
  const dir = tempDir(t, 'knt-c-bin-');
  copyFileSync(BUILT_PLUGIN, join(dir, 'knet'));
  return join(dir, 'knet');
}

export interface PluginCall {
  nodeNs: string;
  command: 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
  conf: unknown;
  containerId?: string;
  netns?: string;
  ifname?: string;
  /** Extra or overriding environment (undefined removes a variable). */
  env?: Record<string, string | undefined>;
}

export interface PluginOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  json: any;
}

function cniEnv(c: PluginCall): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: c.command, CNI_PATH: REF_CNI_DIR };
  if (c.containerId !== undefined) env.CNI_CONTAINERID = c.containerId;
  if (c.netns !== undefined) env.CNI_NETNS = c.netns;
  if (c.ifname !== undefined) env.CNI_IFNAME = c.ifname;
  for (const [k, v] of Object.entries(c.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Runs a plugin binary inside the node namespace; never throws for a plugin error. */
export async function execPlugin(bin: string, c: PluginCall): Promise<PluginOutcome> {
  const input = typeof c.conf === 'string' ? c.conf : JSON.stringify(c.conf);
  try {
    const { stdout, stderr } = await run('ip', ['netns', 'exec', c.nodeNs, bin], { input, env: cniEnv(c), timeoutMs: 60_000 });
    return { exitCode: 0, stdout, stderr, json: stdout.trim() ? JSON.parse(stdout) : undefined };
  } catch (e) {
    if (!(e instanceof ExecError)) throw e;
    let json: unknown;
    try { json = JSON.parse(e.stdout); } catch { /* not JSON */ }
    return { exitCode: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout, stderr: e.stderr, json };
  }
}

export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

/** A knet network config for tests (static subnet, data dir in a temp dir). */
export function knetConf(dataDir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cniVersion: '1.1.0', name: 'knt-c-net', type: 'knet', subnet: '10.77.1.0/24', network: '10.77.0.0/16',
    bridge: 'kbr0', mtu: 1400, dataDir, ...extra };
}

export async function ipJsonIn<T = any>(ns: string, args: readonly string[]): Promise<T[]> {
  const { stdout } = await run('ip', ['-n', ns, '-j', ...args]);
  return stdout.trim() ? JSON.parse(stdout) : [];
}

// One Python process enters each namespace with setns(2) (ctypes), so a few thousand probes
// cost one exec. Sockets keep the namespace they were created in.
const PROBE = String.raw`
import ctypes, json, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def enter(ns):
    fd = os.open('/run/netns/' + ns, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0: raise OSError(ctypes.get_errno(), 'setns ' + ns)
    os.close(fd)
spec = json.load(sys.stdin)
port = spec['port']
wait = spec.get('timeout', 1.0)
seen = {}
servers = []
for s in spec['servers']:
    enter(s['ns'])
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((s['ip'], port)); l.listen(512); servers.append((s, l))
def serve(s, l):
    while True:
        c, peer = l.accept()
        seen.setdefault(s['ip'], []).append(peer[0])
        c.sendall(s['ip'].encode()); c.close()
for s, l in servers: threading.Thread(target=serve, args=(s, l), daemon=True).start()
def csum(b):
    if len(b) % 2: b += b'\0'
    n = sum(struct.unpack('!%dH' % (len(b) // 2), b)); n = (n >> 16) + (n & 0xffff); n += n >> 16
    return ~n & 0xffff
def ping(dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(wait)
    ident = os.getpid() & 0xffff
    h = struct.pack('!BBHHH', 8, 0, 0, ident, 1) + b'knet'
    h = struct.pack('!BBHHH', 8, 0, csum(h), ident, 1) + b'knet'
    s.sendto(h, (dst, 0))
    end = time.time() + wait
    try:
        while time.time() < end:
            data, addr = s.recvfrom(1500)
            ihl = (data[0] & 15) * 4
            t, _, _, i, _ = struct.unpack('!BBHHH', data[ihl:ihl + 8])
            if t == 0 and i == ident and addr[0] == dst: return True
    except socket.timeout: pass
    finally: s.close()
    return False
def tcp(dst, dport=None, expect=None):
    try:
        c = socket.create_connection((dst, dport or port), timeout=wait); got = c.recv(64).decode(); c.close(); return got == (expect or dst)
    except OSError: return False
def attempt(f, *args):
    # A loaded test machine drops the odd packet; a missing path fails all three tries.
    return any(f(*args) for _ in range(spec.get('attempts', 3)))
results = []
current = None
for p in spec['probes']:
    # setns(2) is slow (an RCU grace period): enter each source namespace once.
    if p['ns'] != current: enter(p['ns']); current = p['ns']
    results.append({'ns': p['ns'], 'dst': p['dst'], 'icmp': attempt(ping, p['dst']) if p.get('icmp', True) else None, 'tcp': attempt(tcp, p['dst'], p.get('port'), p.get('expect')) if p.get('tcp', True) else None})
time.sleep(0.1)
print(json.dumps({'results': results, 'seen': seen}))
`;

export interface ProbeSpec {
  port: number;
  /** Tries per probe before it counts as failed (default 3), and seconds per try (default 1). */
  attempts?: number;
  timeout?: number;
  servers: { ns: string; ip: string }[];
  /** TCP probes connect to dst:(port ?? spec port) and expect the server to answer its own address (expect ?? dst). */
  probes: { ns: string; dst: string; icmp?: boolean; tcp?: boolean; port?: number; expect?: string }[];
}
export interface ProbeOutcome {
  results: { ns: string; dst: string; icmp: boolean | null; tcp: boolean | null }[];
  /** Per server address, the source addresses its connections came from. */
  seen: Record<string, string[]>;
}

export async function probe(spec: ProbeSpec): Promise<ProbeOutcome> {
  const { stdout } = await run('python3', ['-c', PROBE], { input: JSON.stringify(spec), timeoutMs: 240_000 });
  return JSON.parse(stdout) as ProbeOutcome;
}

/** Links in a namespace by name. */
export async function linkNames(ns: string): Promise<string[]> {
  return (await ipJsonIn<{ ifname: string }>(ns, ['link', 'show'])).map((l) => l.ifname);
}
