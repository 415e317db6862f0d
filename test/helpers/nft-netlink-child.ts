// Run inside a namespace (ip netns exec NS node --import tsx this FILE FAMILY): applies the
// transactions in FILE (JSON: { transactions: line lists, trims: NftPlan's trims }) through
// kernelNft in this process's own namespace, where partial syncs go as netlink batches, then
// deletes the trimmed chains' old rules by handle (then afterTrims), as the proxy does, while watching the table for
// foreign commits; prints how many went which way and how many commits it took for someone else's.
import { readFileSync } from 'node:fs';
import { kernelNft } from '../../src/kernel/nft.ts';
import { trimLines } from '../../src/proxy/nft-plan.ts';

const [file, family] = process.argv.slice(2) as [string, 'ip' | 'ip6'];
const { transactions, trims, afterTrims } = JSON.parse(readFileSync(file, 'utf8')) as { transactions: string[][]; trims: Array<{ chain: string; keep: number; after: number }>; afterTrims: string[] };
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
try {
  const lines: string[] = [];
  for (const { chain, keep } of trims) for (const line of trimLines(family, chain, await nft.ruleHandles!(family, 'kube-proxy', chain), keep)) lines.push(`${line}\n`);
  if (trims.length) for (const line of afterTrims) lines.push(`${line}\n`);
  if (lines.length) await nft.apply(lines);
} catch (e) {
  failures.push(`trim: ${String((e as Error).message).slice(0, 300)}`);
}
await new Promise((r) => setTimeout(r, 500));
watch.stop();
console.log(JSON.stringify({ sent: nft.sent, foreign, failures }));
process.exit(0);
