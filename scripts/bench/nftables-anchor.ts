// The anchor for the nftables column of scripts/bench/proxy (issue 16, section 3): the table
// knet's nftables mode holds, written kube-proxy's way: the whole table as ONE `nft -f`
// transaction, then one EndpointSlice change as one small transaction (what a partial sync
// writes). Timed as bare nft processes (wall, user, sys) in a throwaway knt-b namespace.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, deleteNetns, randomNetnsName } from '../../src/kernel/netns.ts';
import { NFT } from '../../src/kernel/nft.ts';
import type { ClusterState } from '../../src/model/k8s.ts';
import { planFull, planPartial } from '../../src/proxy/nft-plan.ts';
import { NftablesRenderer, nftablesText } from '../../src/rules/nftables.ts';
import type { ProxySettings } from '../../src/rules/types.ts';

export interface NftTime { wall: number; user: number; sys: number }

export const fmtTime = (t: NftTime) => `${t.wall.toFixed(2)} s (user ${t.user.toFixed(2)}, sys ${t.sys.toFixed(2)})`;

export interface AnchorResult {
  lines: number;
  whole: NftTime;
  /** One change's transaction(s), wall ms, in order. */
  changeMs: number[];
  changeTimes: NftTime[];
}

/**
 * `changed(c)` gives the cluster after the c-th change (c = 1..changes) and the service keys it
 * touched. Changes are spaced over a second apart so stale chains get deleted as in the proxy.
 */
export async function nftablesAnchor(cluster: ClusterState, settings: ProxySettings, changes: number,
  changed: (c: number) => { cluster: ClusterState; services: Set<string> }): Promise<AnchorResult> {
  const dir = mkdtempSync(join(tmpdir(), 'knt-b-anchor-'));
  const ns = randomNetnsName('knt-b');
  await addNetns(ns);
  try {
    const nft = (text: string): NftTime => {
      const f = join(dir, 'tx.nft');
      writeFileSync(f, text);
      const t0 = performance.now();
      const p = spawnSync('/usr/bin/time', ['-f', 'TIME %e %U %S', 'ip', 'netns', 'exec', ns, NFT, '-f', f], { encoding: 'utf8' });
      const m = /TIME (\S+) (\S+) (\S+)/.exec(p.stderr);
      if (p.status !== 0 || !m) throw new Error(`nft failed: ${p.stderr.slice(0, 400)}`);
      // Wall from here (ms precision; time(1) gives hundredths), user and sys from time(1).
      return { wall: (performance.now() - t0) / 1000, user: Number(m[2]), sys: Number(m[3]) };
    };
    const renderer = new NftablesRenderer();
    const r = renderer.render({ cluster, settings });
    const text = nftablesText(r);
    const whole = nft(text);
    let applied = planFull(r, null, null, { now: Date.now() }).next;
    const changeMs: number[] = [];
    const changeTimes: NftTime[] = [];
    for (let c = 1; c <= changes; c++) {
      await new Promise((res) => setTimeout(res, 1100));
      const next = changed(c);
      const plan = planPartial(renderer.render({ cluster: next.cluster, settings, recompute: next.services }), applied, { now: Date.now() });
      applied = plan.next;
      const times = plan.transactions.map((tx) => nft(tx().join('\n') + '\n'));
      const sum = (k: keyof NftTime) => times.reduce((a, t) => a + t[k], 0);
      changeTimes.push({ wall: sum('wall'), user: sum('user'), sys: sum('sys') });
      changeMs.push(Math.round(sum('wall') * 1000));
    }
    return { lines: text.split('\n').filter(Boolean).length, whole, changeMs, changeTimes };
  } finally {
    await deleteNetns(ns);
    rmSync(dir, { recursive: true, force: true });
  }
}
