// Benchmarks for `knet agent` (figures printed, nothing asserted):
//  1. lease acquisition latency (list + grant + Version==0 txn) against a real etcd on loopback;
//  2. time to program 1000 peer leases on one node from an empty start;
//  3. time to converge after 100 of those peers change at once (new VTEP MAC and public IP).
// Kernel work happens only inside a knt-a* namespace that is removed afterwards.
import { performance } from 'node:perf_hooks';
import { startEtcd } from '../../test/helpers/etcd.ts';
import { SubnetRegistry } from '../../src/subnet/etcd-registry.ts';
import { acquireLease } from '../../src/subnet/acquire.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { parseCidr } from '../../src/subnet/cidr.ts';
import { makeSubnetKey, type Lease } from '../../src/subnet/lease.ts';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { ipBatch } from '../../src/kernel/iproute.ts';
import { findUnderlay } from '../../src/kernel/vxlan.ts';
import { VxlanBackend } from '../../src/overlay/vxlan/backend.ts';

const ACQUIRES = Number(process.env.ACQUIRES ?? 200);
const PEERS = Number(process.env.PEERS ?? 1000);
const CHANGED = Number(process.env.CHANGED ?? 100);

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const fmt = (ms: number) => `${ms.toFixed(2)} ms`;

async function benchAcquire(): Promise<void> {
  const etcd = await startEtcd(null);
  const stopEtcd = () => { etcd.dispose().finally(() => process.exit(1)); };
  process.once('SIGINT', stopEtcd);
  process.once('SIGTERM', stopEtcd);
  process.stdout.once('error', stopEtcd);
  const reg = SubnetRegistry.connect({ endpoints: [etcd.endpoint] });
  try {
    const range = parseNetworkConfig('{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}').ipv4!;
    const times: number[] = [];
    for (let i = 0; i < ACQUIRES + 10; i++) {
      const attrs = { PublicIP: `192.168.${i >> 8}.${i & 255}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' } };
      const t0 = performance.now();
      await acquireLease(reg, { range, attrs, previous: null });
      if (i >= 10) times.push(performance.now() - t0); // the first few warm up the gRPC channel
    }
    // Reference on this machine right now: the bare etcd operations one acquisition needs.
    const raw: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      const id = await reg.grant(60);
      await reg.kv.putIf(`/bench/${i}`, 'x', id, { absent: true });
      raw.push(performance.now() - t0);
    }
    console.log(`reference: bare etcd grant + Version==0 put txn: p50 ${fmt(pct(raw, 50))}`);
    console.log(`lease acquisition (${ACQUIRES} nodes, growing to ${ACQUIRES + 10} leases): p50 ${fmt(pct(times, 50))}, p95 ${fmt(pct(times, 95))}, max ${fmt(Math.max(...times))}`);
  } finally {
    reg.close();
    await etcd.dispose();
    process.removeListener('SIGINT', stopEtcd);
    process.removeListener('SIGTERM', stopEtcd);
    process.stdout.removeListener('error', stopEtcd);
  }
}

function peerLease(i: number, gen = 0): Lease {
  const subnet = parseCidr(`10.${(i >> 8) + 1}.${i & 255}.0/24`);
  const mac = `0a:${gen.toString(16).padStart(2, '0')}:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
  return {
    key: makeSubnetKey(subnet), subnet, ipv6Subnet: null, etcdLease: '1', expiresAt: null,
    attrs: { PublicIP: `172.16.${(i >> 8) + gen * 10}.${(i & 255) || 1}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } },
  };
}

async function benchProgram(): Promise<void> {
  const ns = randomNetnsName('knt-a');
  // Remove the namespace even when interrupted or when stdout goes away (| head).
  const cleanup = () => { deleteNetns(ns).finally(() => process.exit(1)); };
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
  process.stdout.on('error', cleanup);
  await addNetns(ns);
  try {
    await ipBatch(ns, ['link add eth0 type veth peer name peer0', 'addr add 172.16.200.1/16 dev eth0', 'link set eth0 up', 'link set peer0 up']);
    const underlay = await findUnderlay(ns, { iface: 'eth0' });
    const backend = new VxlanBackend({
      netns: ns, device: 'flannel.1', underlay, network: parseCidr('10.0.0.0/8'),
      config: { vni: 1, port: 8472, mtu: null, gbp: false, learning: false, directRouting: false },
    });
    const mac = ((await backend.prepare(undefined)).backendData as { VtepMAC: string }).VtepMAC;
    const own: Lease = { ...peerLease(5000), attrs: { PublicIP: '172.16.200.1', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } } };
    const peers = Array.from({ length: PEERS }, (_, i) => peerLease(i));
    let t0 = performance.now();
    const first = await backend.reconcile(own, peers);
    const programMs = performance.now() - t0;
    console.log(`program ${PEERS} peers from empty: ${fmt(programMs)} (${first.changes} kernel entries, ${first.errors.length} errors)`);
    t0 = performance.now();
    const idle = await backend.reconcile(own, peers);
    console.log(`steady-state reconcile with ${PEERS} peers, nothing to change: ${fmt(performance.now() - t0)} (${idle.changes} changes)`);
    const changed = peers.map((p, i) => (i < CHANGED ? peerLease(i, 1) : p));
    t0 = performance.now();
    const conv = await backend.reconcile(own, changed);
    console.log(`converge after ${CHANGED} peers change VTEP MAC and public IP at once: ${fmt(performance.now() - t0)} (${conv.changes} kernel entries, ${conv.errors.length} errors)`);
    const gone = changed.slice(CHANGED);
    t0 = performance.now();
    const rem = await backend.reconcile(own, gone);
    console.log(`converge after ${CHANGED} peers vanish: ${fmt(performance.now() - t0)} (${rem.changes} kernel entries)`);
  } finally {
    await deleteNetns(ns);
  }
}

await benchAcquire();
await benchProgram();
process.exit(0);
