// The node's ipMasq chain: pod traffic that leaves the cluster network is masqueraded, pod to
// pod traffic is not. One knet-owned chain per network in the nat table, jumped to from
// POSTROUTING for the node's pod subnet. Applied once per node: a marker file records the boot,
// the network namespace and the rule text it was applied for, so later ADDs cost no exec.
import { fnv1aHex } from '../ipam/hash.ts';
import { readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lockFile } from '../ipam/lockfile.ts';
import type { IptablesBackend } from './iptables.ts';
import { ensureJumps, jumpRuleText } from './jumps.ts';
import type { JumpRule } from '../rules/types.ts';

export interface MasqSpec {
  /** Network name (CNI config name): one chain per network. */
  network: string;
  podSubnet: string;
  clusterNetwork: string;
}

export function masqChainName(network: string): string {
  return 'KNET-MASQ-' + fnv1aHex(network).toUpperCase();
}

/** iptables-restore input for the chain (declaring it flushes it, so re-applying is idempotent). */
export function renderMasqChain(s: MasqSpec): string {
  const c = masqChainName(s.network);
  return [
    '*nat',
    `:${c} - [0:0]`,
    `-A ${c} -d ${s.clusterNetwork} -m comment --comment "knet ${s.network}: pod to pod" -j RETURN`,
    `-A ${c} -d 224.0.0.0/4 -m comment --comment "knet ${s.network}: multicast" -j RETURN`,
    `-A ${c} -m comment --comment "knet ${s.network}: leaving the cluster" -j MASQUERADE`,
    'COMMIT',
    '',
  ].join('\n');
}

/** The pod subnet's jump into the chain, appended to POSTROUTING. */
export function masqJump(s: MasqSpec): JumpRule {
  return { table: 'nat', from: 'POSTROUTING', to: masqChainName(s.network), comment: `knet ${s.network}: masquerade`, extra: ['-s', s.podSubnet], position: 'append' };
}

/** The backend the distribution's `iptables` points to (Debian alternatives), nft by default. */
export function detectIptablesBackend(): IptablesBackend {
  for (const p of ['/usr/sbin/iptables', '/sbin/iptables', '/usr/bin/iptables']) {
    try {
      return realpathSync(p).includes('legacy') ? 'legacy' : 'nft';
    } catch { /* try the next place */ }
  }
  return 'nft';
}

function markerContent(s: MasqSpec, backend: IptablesBackend): string {
  let boot = '';
  try { boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { /* no procfs: marker still works per rules */ }
  const ns = statSync('/proc/self/ns/net').ino;
  return `${boot} ${ns} ${backend}\n${renderMasqChain(s)}${jumpRuleText(masqJump(s))}\n`;
}

/** Installs the chain and its jump unless the marker says this namespace already has them. */
export async function ensureMasq(s: MasqSpec, backend: IptablesBackend, markerDir: string): Promise<boolean> {
  const marker = join(markerDir, `masq-${masqChainName(s.network)}`);
  const want = markerContent(s, backend);
  try {
    if (readFileSync(marker, 'utf8') === want) return false;
  } catch { /* not applied yet */ }
  // Serialised so that two first ADDs cannot both find the jump missing and add it twice.
  const release = await lockFile(`${marker}.lock`);
  try {
    try {
      if (readFileSync(marker, 'utf8') === want) return false;
    } catch { /* still not applied */ }
    // Loaded only now: the iptables adapter brings in child_process, which a CNI call whose
    // marker is current never needs.
    const { kernelIptables } = await import('./iptables.ts');
    const ipt = kernelIptables({ backend, waitSeconds: 5 });
    await ipt.restore(renderMasqChain(s), { noflush: true });
    await ensureJumps(ipt, [masqJump(s)]);
    const tmp = `${marker}.${process.pid}.tmp`;
    writeFileSync(tmp, want);
    renameSync(tmp, marker);
    return true;
  } finally {
    release();
  }
}
