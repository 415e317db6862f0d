// Masquerade and forward rules for the pod network (facts A.10, F.3), in knet's own chains.
// Packets kube-proxy (or knet's proxy) already marked 0x4000/0x4000 are skipped, so they are
// not NATed twice. Rendering is pure; applying is one iptables-restore --noflush plus jump checks.
import { type Cidr, formatCidr } from '../subnet/cidr.ts';
import { type IptablesTarget, iptables, iptablesRestore } from '../kernel/iptables.ts';
import { ExecError } from '../kernel/exec.ts';

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

async function ensureJump(t: IptablesTarget, table: string, chain: string, rule: string[]): Promise<void> {
  try {
    await iptables(t, ['-t', table, '-C', chain, ...rule]);
  } catch (err) {
    if (!(err instanceof ExecError) || err.code !== 1) throw err;
    await iptables(t, ['-t', table, '-A', chain, ...rule]);
  }
}

/** Declaring the chains in a --noflush restore flushes just them, so re-applying is idempotent. */
export async function applyMasqRules(t: IptablesTarget, network: Cidr, podSubnet: Cidr): Promise<void> {
  await iptablesRestore(t, renderMasqRules(network, podSubnet), { noflush: true });
  await ensureJump(t, 'nat', 'POSTROUTING', ['-m', 'comment', '--comment', MASQ_COMMENT, '-j', MASQ_CHAIN]);
  await ensureJump(t, 'filter', 'FORWARD', ['-m', 'comment', '--comment', FWD_COMMENT, '-j', FWD_CHAIN]);
}
