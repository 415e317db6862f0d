// Pod-to-pod iperf3 throughput (one TCP stream) over knet's ovs-gre backend, and in the same run
// over the same backend with an OVS VXLAN port in place of the GRE port, both on the userspace
// datapath; plus node to node over the same OVS underlay bridges as the reference. Runs are
// interleaved (GRE, VXLAN, underlay, GRE, ...) so machine noise hits all of them alike; medians.
// A fourth setup is GRE with the node's underlay port read through an AF_PACKET socket, as before
// issue #8 (see attachUnderlayToBridge), for a same-run comparison on a noisy machine. Besides
// Gbit/s: CPU seconds both ovs-vswitchd used per GB received, less sensitive to others' load.
// Usage: scripts/bench/ovs [seconds-per-run=5] [rounds=3]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { run } from '../../src/kernel/exec.ts';
import { type UnderlayPortKind, vsctl } from '../../src/kernel/ovs.ts';
import { OvsGreBackend } from '../../src/overlay/ovs-gre/backend.ts';
import { parseOvsGreConfig } from '../../src/overlay/ovs-gre/config.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { formatIP, parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';
import { ManualScope, addPod, ovsNodes, primeTunnelNeighbours, type OvsNode, type Pod } from '../../test/helpers/ovs.ts';

const seconds = Number(process.argv[2] ?? 5);
const rounds = Number(process.argv[3] ?? 3);
if (process.getuid?.() !== 0) {
  console.error('needs root (network namespaces and OVS daemons)');
  process.exit(1);
}

const cfg = parseNetworkConfig('{"Network":"10.246.0.0/16","Backend":{"Type":"ovs-gre","DatapathType":"netdev"}}');

const lease = (i: number, ip: string): Lease => {
  const subnet = parseCidr(`10.246.${i}.0/24`);
  return { key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, attrs: { PublicIP: ip, PublicIPv6: null, BackendType: 'ovs-gre' }, etcdLease: '0', expiresAt: null };
};

interface Setup { name: string; client: Pod; server: Pod; mtu: number; nodes: OvsNode[] }

async function overlay(scope: ManualScope, tunnelType: 'gre' | 'vxlan', underlayKind?: UnderlayPortKind): Promise<Setup & { underlay: Setup }> {
  const config = { ...parseOvsGreConfig(cfg.backend), tunnelPort: tunnelType === 'gre' ? 'gre0' : 'vxlan0' };
  const { nodes } = await ovsNodes(scope, 2, 'knt-o', underlayKind);
  const leases = nodes.map((n, i) => lease(i + 1, n.ip));
  const pods: Pod[] = [];
  let mtu = 0;
  for (const [i, n] of nodes.entries()) {
    const b = new OvsGreBackend({ ovs: n.ovs.target, config, underlay: { publicIP: n.ip, mtu: 1500 }, network: cfg.ipv4!.network, tunnelType });
    mtu = (await b.prepare(null)).mtu;
    const r = await b.reconcile(leases[i]!, leases);
    if (r.errors.length) throw new Error(r.errors.join('; '));
    pods.push(await addPod(scope, n, { podBridge: config.podBridge, gateway: formatIP(4, leases[i]!.subnet.base + 1n), prefixLen: 24, mtu }));
  }
  await primeTunnelNeighbours(nodes);
  // The port type the underlay port really got (attachUnderlayToBridge falls back to AF_PACKET).
  const port = (await vsctl(nodes[1]!.ovs.target, ['get', 'Interface', 'eth0', 'type'])).trim().replace(/^"|"$/g, '') || 'system';
  const underlay = { name: `node to node over the OVS underlay bridge (eth0 ${port})`, client: { ns: nodes[0]!.ns, ip: nodes[0]!.ip }, server: { ns: nodes[1]!.ns, ip: nodes[1]!.ip }, mtu: 1500, nodes };
  return { name: `pod to pod, OVS ${tunnelType.toUpperCase()} (eth0 ${port})`, client: pods[0]!, server: pods[1]!, mtu, underlay, nodes };
}

/** CPU seconds (user + system) the setup's ovs-vswitchd processes have used so far. */
const vswitchdCpu = (s: Setup): number => s.nodes.reduce((sum, n) => {
  const pid = n.ovs.pids().vswitchd;
  if (pid === null) return sum;
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return sum + (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ (100)
}, 0);

async function iperf(s: Setup): Promise<{ bps: number; retransmits: number; cpuPerGB: number }> {
  const srv = spawn('ip', ['netns', 'exec', s.server.ns, 'iperf3', '-s', '-1', '-p', '5201'], { stdio: 'ignore' });
  const cpu0 = vswitchdCpu(s);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        const { stdout } = await run('ip', ['netns', 'exec', s.client.ns, 'iperf3', '-c', s.server.ip, '-p', '5201', '-t', String(seconds), '-J'], { timeoutMs: (seconds + 20) * 1000 });
        const j = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } } };
        const bps = j.end.sum_received.bits_per_second;
        return { bps, retransmits: j.end.sum_sent.retransmits ?? 0, cpuPerGB: (vswitchdCpu(s) - cpu0) / ((bps * seconds) / 8e9) };
      } catch (err) {
        // The first attempt can race the server's listen and ARP over the tunnel.
        if (attempt >= 5) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  } finally {
    srv.kill('SIGKILL');
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const gbit = (bps: number) => (bps / 1e9).toFixed(3);

const scope = new ManualScope();
const stop = () => { scope.close().finally(() => process.exit(130)); };
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
try {
  const gre = await overlay(scope, 'gre');
  const vxlan = await overlay(scope, 'vxlan');
  const grePacket = await overlay(scope, 'gre', 'packet');
  const setups: Setup[] = [gre, vxlan, gre.underlay, grePacket];
  const results = new Map<Setup, { bps: number[]; retr: number[]; cpu: number[] }>(setups.map((s) => [s, { bps: [], retr: [], cpu: [] }]));
  for (let r = 0; r < rounds; r++) {
    for (const s of setups) {
      const x = await iperf(s);
      results.get(s)!.bps.push(x.bps);
      results.get(s)!.retr.push(x.retransmits);
      results.get(s)!.cpu.push(x.cpuPerGB);
    }
  }
  const ref = median(results.get(gre.underlay)!.bps);
  console.log(`iperf3, one TCP stream, ${seconds} s x ${rounds} rounds, userspace datapath (datapath_type=netdev), medians`);
  console.log('| path | pod MTU | Gbit/s | runs (Gbit/s) | retransmits (median) | vswitchd CPU s/GB | vs node to node |');
  console.log('|---|---|---|---|---|---|---|');
  for (const s of setups) {
    const x = results.get(s)!;
    console.log(`| ${s.name} | ${s.mtu} | ${gbit(median(x.bps))} | ${x.bps.map(gbit).join(', ')} | ${median(x.retr)} | ${median(x.cpu).toFixed(1)} | ${(median(x.bps) / ref).toFixed(2)} |`);
  }
  console.log(`GRE / VXLAN: ${(median(results.get(gre)!.bps) / median(results.get(vxlan)!.bps)).toFixed(2)}`);
} finally {
  await scope.close();
}
