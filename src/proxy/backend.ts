// Which iptables backend holds the node's rules, decided the way kubernetes-sigs'
// iptables-wrappers does: a kubelet hint chain (KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY) wins;
// otherwise the backend with more rules; nft on a tie (Debian's default). Writing to the
// backend nobody else uses would leave knet's rules next to, not in, the node's firewall.
import { iptablesSave, type IptablesBackend, type IptablesTarget } from '../kernel/iptables.ts';

export interface BackendDecision {
  backend: IptablesBackend;
  reason: string;
  /** Set when both backends hold KUBE-* chains (a half-done migration). */
  warning?: string;
}

const HINT = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) /m;
const KUBE_CHAIN = /^:KUBE-/m;
const countRules = (s: string) => s.split('\n').filter((l) => l.startsWith('-')).length;

export function decideBackend(saved: { legacy: string; nft: string }): BackendDecision {
  const both = KUBE_CHAIN.test(saved.legacy) && KUBE_CHAIN.test(saved.nft);
  const warning = both ? 'both iptables-legacy and iptables-nft hold KUBE-* chains; run knet proxy --cleanup with the other backend' : undefined;
  const w = warning ? { warning } : {};
  if (HINT.test(saved.nft)) return { backend: 'nft', reason: 'kubelet hint chain in iptables-nft', ...w };
  if (HINT.test(saved.legacy)) return { backend: 'legacy', reason: 'kubelet hint chain in iptables-legacy', ...w };
  const l = countRules(saved.legacy);
  const n = countRules(saved.nft);
  if (l > n) return { backend: 'legacy', reason: `iptables-legacy holds more rules (${l} > ${n})`, ...w };
  return { backend: 'nft', reason: `iptables-nft holds at least as many rules (${n} >= ${l})`, ...w };
}

async function saveOrEmpty(t: IptablesTarget): Promise<string> {
  try { return await iptablesSave(t); } catch { return ''; }
}

export async function detectBackend(base: Omit<IptablesTarget, 'backend'>): Promise<BackendDecision> {
  const [legacy, nft] = await Promise.all([saveOrEmpty({ ...base, backend: 'legacy' }), saveOrEmpty({ ...base, backend: 'nft' })]);
  return decideBackend({ legacy, nft });
}
