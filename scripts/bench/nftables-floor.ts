// The kernel's part of a knet nftables first full sync (issue 16's 5 s goal): the same
// transactions the proxy writes into an empty table (the fixed part through nft, every service
// transaction as a netlink batch), but each batch compiled before the clock starts, so what is
// timed is the sends and the kernel committing them: the floor of this table written this way,
// with no rendering, planning or compiling in between. Prints one JSON line.
// Run inside a fresh namespace: ip netns exec NS node --import tsx this CLUSTER.json SETTINGS.json
import { readFileSync } from 'node:fs';
import { compileNftBatch, type NftBatch } from '../../src/kernel/nft-batch.ts';
import { kernelNft, netfilterBatches } from '../../src/kernel/nft.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import { planFull } from '../../src/proxy/nft-plan.ts';
import { NftablesRenderer } from '../../src/rules/nftables.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

const [clusterFile, settingsFile] = process.argv.slice(2) as [string, string];
const cluster = JSON.parse(readFileSync(clusterFile, 'utf8')) as ClusterState;
const settings = JSON.parse(readFileSync(settingsFile, 'utf8')) as ProxySettings;

// As the proxy plans a first full sync with batches on (nftables-applier.ts).
const r = new NftablesRenderer().render({ cluster, settings });
const plan = planFull(r, null, null, { now: 0, maxChainsPerTransaction: 2000, insertThenTrim: true, fixedApart: true });
const [fixed, ...services] = plan.transactions;
const t0 = performance.now();
await kernelNft().apply(`${fixed!().join('\n')}\n`);
const fixedSeconds = (performance.now() - t0) / 1000;

let seq = 1;
const batches: NftBatch[] = services.map((tx, i) => {
  const batch = compileNftBatch([...tx()], seq);
  if (!batch) throw new Error(`transaction ${i + 1} does not compile`);
  seq = batch.last + 2;
  return batch;
});
// The proxy's own socket, sending and acknowledging as it does.
const socket = netfilterBatches();
if (!socket) throw new Error('the netlink addon does not load here');
const cpu0 = process.cpuUsage();
const t1 = performance.now();
for (const batch of batches) await socket.commit(batch);
const seconds = (performance.now() - t1) / 1000;
const cpu = process.cpuUsage(cpu0);
socket.close();
console.log(JSON.stringify({
  fixedSeconds, seconds, batches: batches.length, bytes: batches.reduce((n, b) => n + b.datagram.length, 0),
  user: cpu.user / 1e6, system: cpu.system / 1e6,
}));
process.exit(0);
