// Masquerade and forward rules for the pod network, in flannel's rule order, in knet's own chains.
// Packets kube-proxy (or knet's proxy) already marked 0x4000/0x4000 are skipped, so they are
// not NATed twice. Rendering is pure; applying is one iptables-restore --noflush plus the jumps.
import { type Cidr, formatCidr } from '../subnet/cidr.ts';
import { type Iptables, type IptablesTarget, kernelIptables } from '../kernel/iptables.ts';
import { ensureJumps } from '../kernel/jumps.ts';
import type { JumpRule } from '../rules/types.ts';

export const MASQ_CHAIN = 'KNET-POSTRTG';
export const FWD_CHAIN = 'KNET-FWD';
export const KUBE_PROXY_MARK = '0x4000/0x4000';
const MASQ_COMMENT = 'knet masq';
const FWD_COMMENT = 'knet forward';

export function renderMasqRules(network: Cidr, podSubnet: Cidr, randomFully = true): string {
  const net = formatCidr(network);
  const pod = formatCidr(podSubnet);
  const c = `-m comment --comment "${MASQ_COMMENT}"`;
  const masq = `-j MASQUERADE${randomFully ? ' --random-fully' : ''}`;
  const f = `-m comment --comment "${FWD_COMMENT}"`;
  return [
    '*nat',
    `:${MASQ_CHAIN} - [0:0]`,
    `-A ${MASQ_CHAIN} ${c} -m mark --mark ${KUBE_PROXY_MARK} -j RETURN`,
    `-A ${MASQ_CHAIN} -s ${pod} -d ${net} ${c} -j RETURN`,
    `-A ${MASQ_CHAIN} -s ${net} -d ${pod} ${c} -j RETURN`,
    `-A ${MASQ_CHAIN} ! -s ${net} -d ${pod} ${c} -j RETURN`,
    `-A ${MASQ_CHAIN} -s ${net} ! -d 224.0.0.0/4 ${c} ${masq}`,
    `-A ${MASQ_CHAIN} ! -s ${net} -d ${net} ${c} ${masq}`,
    'COMMIT',
    '*filter',
    `:${FWD_CHAIN} - [0:0]`,
    `-A ${FWD_CHAIN} -s ${net} ${f} -j ACCEPT`,
    `-A ${FWD_CHAIN} -d ${net} ${f} -j ACCEPT`,
    'COMMIT',
    '',
  ].join('\n');
}

/** The jumps into the two chains, appended after whatever the node already has. */
export const MASQ_JUMPS: JumpRule[] = [
  { table: 'nat', from: 'POSTROUTING', to: MASQ_CHAIN, comment: MASQ_COMMENT, extra: [], position: 'append' },
  { table: 'filter', from: 'FORWARD', to: FWD_CHAIN, comment: FWD_COMMENT, extra: [], position: 'append' },
];

/** Declaring the chains in a --noflush restore flushes just them, so re-applying is idempotent. */
export async function applyMasqRules(t: IptablesTarget | Iptables, network: Cidr, podSubnet: Cidr): Promise<void> {
  const ipt = 'restore' in t ? t : kernelIptables(t);
  await ipt.restore(renderMasqRules(network, podSubnet), { noflush: true });
  await ensureJumps(ipt, MASQ_JUMPS);
}
