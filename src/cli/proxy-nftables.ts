// `knet proxy --proxy-mode nftables`: builds the nftables data path for runProxy (src/cli/proxy-run.ts),
// which keeps sources, daemon, health and metrics as in the other modes; and removing
// kube-proxy's nftables tables when another mode starts or on --cleanup.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { IpFamily, ProxySettings } from '../rules/types.ts';
import type { NftablesApplier } from '../proxy/nftables-applier.ts';
import { parseIP } from '../util/ip.ts';

/** The IP families to program: those of the node's IPs (IPv4 when it has none yet). */
export function familiesOf(nodeIPs: readonly string[]): IpFamily[] {
  const fams = new Set(nodeIPs.map((ip) => (parseIP(ip)?.family === 6 ? 'IPv6' : 'IPv4') as IpFamily));
  return fams.size ? (['IPv4', 'IPv6'] as IpFamily[]).filter((f) => fams.has(f)) : ['IPv4'];
}

export interface NftablesCliInput {
  /** Settings for one family (nodeIPs decide which families there are). */
  settingsFor: (family: IpFamily) => ProxySettings;
  nodeIPs: () => readonly string[];
  log: Logger;
  registry: Registry;
  onForeignChange: () => void;
  /** Partial syncs as netlink batches from the proxy itself (default; --no-nftables-netlink turns them off). */
  netlink?: boolean;
}

export async function createNftablesDataPlane(i: NftablesCliInput): Promise<NftablesApplier & { setSettings(s: ProxySettings): void }> {
  const { NftablesApplier } = await import('../proxy/nftables-applier.ts');
  const { kernelNft } = await import('../kernel/nft.ts');
  const list = () => familiesOf(i.nodeIPs()).map(i.settingsFor);
  const applier = new NftablesApplier({ nft: kernelNft({ netlink: i.netlink !== false }), settings: list(), log: i.log, registry: i.registry, onForeignChange: i.onForeignChange });
  // The daemon hands over one family's settings when node facts change; every family is rebuilt.
  const setFamilies = applier.setSettings.bind(applier);
  return Object.assign(applier, { setSettings: (_s: ProxySettings | ProxySettings[]) => setFamilies(list()) });
}

/** Removes kube-proxy's nftables tables (both families); how many there were. */
export async function cleanupNftables(log: Logger): Promise<number> {
  const { kernelNft } = await import('../kernel/nft.ts');
  const nft = kernelNft();
  let n = 0;
  for (const family of ['ip', 'ip6'] as const) {
    try {
      if (await nft.deleteTable(family, 'kube-proxy')) n++;
    } catch (err) {
      log.warn({ family, err: String(err) }, 'could not delete the nftables table (nft missing?)');
    }
  }
  return n;
}
