// Run inside a namespace (ip netns exec NS node --import tsx this FILE): applies the
// transactions in FILE (JSON: a list of line lists) through kernelNft in this process's own
// namespace, where partial syncs go as netlink batches, while watching the table for foreign
// commits; prints how many went which way and how many commits it took for someone else's.
import { readFileSync } from 'node:fs';
import { kernelNft } from '../../src/kernel/nft.ts';

const [file, family] = process.argv.slice(2) as [string, 'ip' | 'ip6'];
const transactions = JSON.parse(readFileSync(file, 'utf8')) as string[][];
const nft = kernelNft({ netlink: true });
let foreign = 0;
const watch = nft.watchForeign(family, 'kube-proxy', () => { foreign++; }, () => {});
// The monitor needs a moment before it reports anything.
await new Promise((r) => setTimeout(r, 300));
const failures: string[] = [];
for (const tx of transactions) {
  try {
    await nft.apply(tx.join('\n') + '\n');
  } catch (e) {
    failures.push(String((e as Error).message).slice(0, 300));
  }
}
await new Promise((r) => setTimeout(r, 500));
watch.stop();
console.log(JSON.stringify({ sent: nft.sent, foreign, failures }));
process.exit(0);
