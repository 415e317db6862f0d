// One Open vSwitch per node namespace (the daemons are managed by src/lab/ovs.ts, shared with
// the lab): stopped and removed in teardown; usable without ava (pass null) by benchmarks,
// which then call stop() themselves. Plus node/pod builders and probes for the OVS tests.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { run } from '../../src/kernel/exec.ts';
import { attachUnderlayToBridge, type UnderlayPortKind } from '../../src/kernel/ovs.ts';
import { primeTunnelNeighbours as primeNeighbours, startOvsDaemons, type OvsInstance, type StartOvsOptions } from '../../src/lab/ovs.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export { alive, stopOvsAt, type OvsInstance, type StartOvsOptions } from '../../src/lab/ovs.ts';

/** Starts the pair (src/lab/ovs.ts); with `t`, stopped and removed in its teardown. */
export async function startOvs(t: ExecutionContext | null, netns: string, opts: StartOvsOptions = {}): Promise<OvsInstance> {
  const ovs = await startOvsDaemons(netns, opts);
  if (t) t.teardown(ovs.stop);
  return ovs;
}

/** Where clean-up steps go: ava's teardown in tests, a list the caller runs in scripts. */
export interface Scope { defer(fn: () => unknown): void }

export const avaScope = (t: ExecutionContext): Scope => ({ defer: (fn) => t.teardown(async () => { await fn(); }) });

export class ManualScope implements Scope {
  private fns: (() => unknown)[] = [];
  defer(fn: () => unknown): void { this.fns.push(fn); }
  /** Runs every step, last registered first; never throws. */
  async close(): Promise<void> {
    for (const fn of this.fns.splice(0).reverse()) {
      try { await fn(); } catch { /* keep cleaning */ }
    }
  }
}

export async function scopedNetns(scope: Scope, prefix: string): Promise<string> {
  const name = randomNetnsName(prefix);
  scope.defer(() => deleteNetns(name));
  await addNetns(name);
  return name;
}

export interface OvsNode {
  ns: string;
  /** Underlay (public) IP, on the OVS bridge brphy as the userspace datapath needs. */
  ip: string;
  ovs: OvsInstance;
}

/**
 * Node namespaces on an underlay namespace's Linux bridge (192.168.50.0/24), each with its own
 * OVS daemons, the underlay port on OVS bridge `brphy` holding the node's address, and forwarding on.
 * `underlayKind`: how OVS reads the underlay port (attachUnderlayToBridge; default AF_XDP when available).
 */
export async function ovsNodes(scope: Scope, count: number, prefix = 'knt-o', underlayKind?: UnderlayPortKind): Promise<{ underlay: string; nodes: OvsNode[] }> {
  const underlay = await scopedNetns(scope, prefix);
  await ipBatch(underlay, ['link add br0 type bridge', 'link set br0 up']);
  const nodes: OvsNode[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = await scopedNetns(scope, prefix);
    const ip = `192.168.50.${i}`;
    // Created inside the underlay namespace, so no link ever appears in the root namespace.
    await ipBatch(underlay, [`link add n${i} type veth peer name eth0 netns ${ns}`, `link set n${i} master br0 up`]);
    // Frames reach OVS's socket on eth0 (AF_XDP or AF_PACKET) as the underlay sent them; with TX checksum
    // offload the underlay side (etcd on br0) would hand over TCP segments with no checksum yet.
    await run('ip', ['netns', 'exec', underlay, 'ethtool', '-K', `n${i}`, 'tx', 'off']);
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const ovs = await startOvs(null, ns);
    scope.defer(() => ovs.stop());
    await attachUnderlayToBridge(ovs.target, 'brphy', 'eth0', `${ip}/24`, underlayKind ? { kind: underlayKind } : {});
    nodes.push({ ns, ip, ovs });
  }
  return { underlay, nodes };
}

/** See src/lab/ovs.ts: every node's OVS learns its peers' underlay MACs (after the tunnel ports exist). */
export async function primeTunnelNeighbours(nodes: OvsNode[]): Promise<void> {
  await primeNeighbours(nodes);
}

export interface Pod { ns: string; ip: string }

/** A pod: a namespace with a veth on the node's pod bridge, .2 (or `host`) of the node's subnet. */
export async function addPod(scope: Scope, node: OvsNode, o: { podBridge: string; gateway: string; prefixLen: number; mtu: number; host?: number }, prefix = 'knt-o'): Promise<Pod> {
  const ns = await scopedNetns(scope, prefix);
  const parts = o.gateway.split('.');
  const ip = [...parts.slice(0, 3), String(o.host ?? 2)].join('.');
  const host = `vp${ns.slice(-8)}`;
  await ipBatch(node.ns, [`link add ${host} mtu ${o.mtu} type veth peer name eth0 netns ${ns}`, `link set ${host} master ${o.podBridge} up`]);
  await ipBatch(ns, [`addr add ${ip}/${o.prefixLen} dev eth0`, `link set eth0 mtu ${o.mtu} up`, `route add default via ${o.gateway}`]);
  return { ns, ip };
}

/** Polls `fn` until true; on timeout the error carries the last failure and `context()`. */
export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 10_000, context: () => Promise<string> | string = () => ''): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}\n${await context()}`);
    await sleep(200);
  }
}

/** Starts socat echo servers in a pod: TCP 8080 and UDP 8081 (killed by the scope). */
export function startEchoServers(scope: Scope, pod: Pod): void {
  // -t: socat's default 0.5 s wait after one side's EOF is too short for a bulk echo here.
  for (const args of [['TCP-LISTEN:8080,reuseaddr,fork', 'PIPE'], ['UDP-RECVFROM:8081,fork', 'PIPE']]) {
    const p = spawn('ip', ['netns', 'exec', pod.ns, 'socat', '-t', '15', ...args], { stdio: 'ignore' });
    scope.defer(() => { p.kill('SIGKILL'); });
  }
}

/** One line over TCP to the pod's echo server and back. */
export async function tcpEcho(from: Pod, to: Pod, timeoutS = 3): Promise<boolean> {
  const msg = `tcp ${from.ip} -> ${to.ip}\n`;
  try {
    const { stdout } = await run('ip', ['netns', 'exec', from.ns, 'socat', '-T', String(timeoutS), '-', `TCP:${to.ip}:8080,connect-timeout=${timeoutS}`], { input: msg, timeoutMs: (timeoutS + 2) * 1000 });
    return stdout === msg;
  } catch {
    return false;
  }
}
