// What the proxy needs from its Node object, read from a Node of any shape: node IPs, pod CIDRs,
// and whether the node is being removed. A malformed entry is skipped with a warning; a
// malformed object never throws (it would stop every sync on this node).
import { describe, InvalidField, optList, optObject, optString, prop, stringList } from '../model/json.ts';
import { parseCIDR, parseIP } from '../util/ip.ts';

export interface NodeFacts {
  /** InternalIP addresses, then ExternalIP ones (kube-proxy's order), canonical text. */
  ips: string[];
  /** spec.podCIDRs, else spec.podCIDR, canonical. */
  podCIDRs: string[];
  /** False while the node is being deleted or drained by the cluster autoscaler (/healthz says 503). */
  eligible: boolean;
  warnings: string[];
}

const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** A field read that may fail: its InvalidField becomes a warning and the fallback is used. */
function orWarn<T>(read: () => T, fallback: T, warnings: string[]): T {
  try {
    return read();
  } catch (e) {
    if (!(e instanceof InvalidField)) throw e;
    warnings.push(`${e.field} ${e.message}; ignored`);
    return fallback;
  }
}

function nodeIPs(status: unknown, warnings: string[]): string[] {
  const addresses = orWarn(() => optList(prop(status, 'addresses'), 'status.addresses'), [], warnings);
  const byType: Record<'InternalIP' | 'ExternalIP', string[]> = { InternalIP: [], ExternalIP: [] };
  addresses.forEach((a, i) => {
    const type = prop(a, 'type');
    if (type !== 'InternalIP' && type !== 'ExternalIP') return;
    const address = prop(a, 'address');
    const ip = typeof address === 'string' ? parseIP(address) : null;
    if (!ip) { warnings.push(`status.addresses[${i}].address is not an IP, got ${describe(address)}; ignored`); return; }
    byType[type].push(ip.text);
  });
  return [...byType.InternalIP, ...byType.ExternalIP];
}

function podCIDRs(spec: unknown, warnings: string[]): string[] {
  const list = orWarn(() => stringList(prop(spec, 'podCIDRs'), 'spec.podCIDRs'), [], warnings);
  const single = orWarn(() => optString(prop(spec, 'podCIDR'), 'spec.podCIDR'), undefined, warnings);
  const field = list.length ? 'spec.podCIDRs' : 'spec.podCIDR';
  const out: string[] = [];
  (list.length ? list : single ? [single] : []).forEach((c, i) => {
    const cidr = parseCIDR(c);
    if (cidr) out.push(cidr.text);
    else warnings.push(`${list.length ? `${field}[${i}]` : field} is not a CIDR, got ${describe(c)}; ignored`);
  });
  return out;
}

export function readNodeFacts(node: unknown): NodeFacts {
  const warnings: string[] = [];
  const meta = orWarn(() => optObject(prop(node, 'metadata'), 'metadata'), undefined, warnings);
  const spec = orWarn(() => optObject(prop(node, 'spec'), 'spec'), undefined, warnings);
  const status = orWarn(() => optObject(prop(node, 'status'), 'status'), undefined, warnings);
  const deleting = !!prop(meta, 'deletionTimestamp');
  const taints = orWarn(() => optList(prop(spec, 'taints'), 'spec.taints'), [], warnings);
  const drained = taints.some((t) => prop(t, 'key') === TO_BE_DELETED_TAINT);
  return { ips: nodeIPs(status, warnings), podCIDRs: podCIDRs(spec, warnings), eligible: !deleting && !drained, warnings };
}
