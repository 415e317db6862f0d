// Which services changed between two cluster states: those whose rendered view (ports,
// addresses, policies, endpoints) differs. This is what a partial sync rewrites.
import type { ClusterState } from '../model/k8s.ts';
import { buildServiceModel } from './model.ts';
import type { ProxySettings } from './types.ts';

export function changedServicesFromFingerprints(prev: Map<string, string>, cur: Map<string, string>): Set<string> {
  const out = new Set<string>();
  for (const [k, v] of cur) if (prev.get(k) !== v) out.add(k);
  for (const k of prev.keys()) if (!cur.has(k)) out.add(k);
  return out;
}

/** Settings matter: which endpoints are local, and which family, change a service's rules. */
export function changedServices(prev: ClusterState, cur: ClusterState, settings: ProxySettings): Set<string> {
  return changedServicesFromFingerprints(buildServiceModel(prev, settings).fingerprints, buildServiceModel(cur, settings).fingerprints);
}
