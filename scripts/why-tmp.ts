import { services } from '../test/helpers/proxy-clusters.ts';
import { nftSettings } from '../test/helpers/nft.ts';
import { planFull, planPartial, type NftApplied, type NftPlan } from '../src/proxy/nft-plan.ts';
import { NftablesRenderer } from '../src/rules/nftables.ts';
import { compileNftBatch } from '../src/kernel/nft-batch.ts';
import type { ClusterState } from '../src/model/k8s.ts';
const withEndpoints = (base: ClusterState, i: number, n: number) => { const c = { ...base, endpointSlices: [...base.endpointSlices] }; c.endpointSlices[i] = services(8, n).endpointSlices[i]!; return c; };
const c0 = services(6, 2);
const c1 = withEndpoints(withEndpoints(c0, 1, 3), 2, 1);
const c2 = { services: c1.services.filter((s) => s.metadata.name !== 's4'), endpointSlices: withEndpoints(c1, 2, 0).endpointSlices.filter((s) => !s.metadata.name?.startsWith('s4')) };
const eight = services(8, 2);
const c3 = { services: [...c2.services, eight.services[7]!], endpointSlices: [...withEndpoints(c2, 1, 2).endpointSlices, eight.endpointSlices[7]!] };
const renderer = new NftablesRenderer(); let applied: NftApplied | null = null;
for (const [c, now] of [[c0, 0], [c1, 100], [c2, 200], [c3, 1500], [c3, 3000]] as const) {
  const r = renderer.render({ cluster: c, settings: nftSettings() });
  const plan: NftPlan = applied ? planPartial(r, applied, { now }) : planFull(r, null, null, { now });
  applied = plan.next;
  for (const tx of plan.transactions) {
    const lines = [...tx()];
    if (compileNftBatch(lines, 1)) { console.log(now, 'netlink', lines.length); continue; }
    const bad = lines.find((l) => !compileNftBatch([l], 1));
    console.log(now, 'nft', lines.length, bad);
  }
}
