// Which endpoints a service port's traffic may go to: the one endpoint policy of every data
// plane (iptables, nftables, userspace). Pure. It applies the traffic policies (Cluster or
// Local, for internal and for external traffic) and the graceful-termination fallback (no ready
// endpoint: serving terminating ones), the way kube-proxy categorises endpoints for all its
// backends. A data plane only decides how to send a packet to the endpoints chosen here.
import type { EndpointInfo, ServicePortInfo } from './model.ts';

/** Reachable from outside the cluster network: a node port, an external IP or a load balancer VIP. */
export function externallyAccessible(s: ServicePortInfo): boolean {
  return s.nodePort !== 0 || s.loadBalancerVIPs.length > 0 || s.externalIPs.length > 0;
}

/**
 * Cluster-policy endpoints are used by internal traffic with Cluster policy, and by any
 * externally reachable port: even with externalTrafficPolicy Local, pods and the node itself
 * reach external addresses through the Cluster-policy endpoints (kube-proxy's short-circuit).
 */
export function usesClusterEndpoints(s: ServicePortInfo): boolean {
  return !s.internalPolicyLocal || externallyAccessible(s);
}

export function usesLocalEndpoints(s: ServicePortInfo): boolean {
  return s.internalPolicyLocal || (s.externalPolicyLocal && externallyAccessible(s));
}

export interface EndpointSelection {
  /** Endpoints of Cluster-policy traffic (empty when no traffic of this port uses that policy). */
  cluster: EndpointInfo[];
  /** Endpoints on this node for Local-policy traffic (empty when no traffic uses that policy). */
  local: EndpointInfo[];
  /** Every endpoint some traffic of this port may reach (cluster and local, each once). */
  allReachable: EndpointInfo[];
  /** Some endpoint is usable (ready, or serving and terminating) for a policy the port uses. */
  hasAny: boolean;
  /** Where traffic to the cluster IP goes: the Local or Cluster endpoints, by internalTrafficPolicy. */
  internal: EndpointInfo[];
  /** Where traffic from outside to node ports, external IPs and LB VIPs goes, by externalTrafficPolicy. */
  external: EndpointInfo[];
  /** Cluster IP traffic has somewhere to go. */
  hasInternal: boolean;
  /** Node port, external IP and load balancer traffic from outside has somewhere to go. */
  hasExternal: boolean;
}

/**
 * The endpoints each traffic policy uses: ready ones, else serving-and-terminating ones,
 * separately for Cluster policy (any node) and Local policy (this node only).
 */
export function selectEndpoints(s: ServicePortInfo): EndpointSelection {
  const eps = s.endpoints;
  let cluster: EndpointInfo[] = [];
  let local: EndpointInfo[] = [];
  let hasAny = false;
  if (usesClusterEndpoints(s)) {
    cluster = eps.filter((e) => e.ready);
    if (cluster.length === 0) cluster = eps.filter((e) => e.serving && e.terminating);
    if (cluster.length > 0) hasAny = true;
  }
  let allReachable = cluster;
  if (usesLocalEndpoints(s)) {
    let localReady = false;
    let localServingTerminating = false;
    for (const e of eps) {
      if (e.ready) {
        hasAny = true;
        if (e.isLocal) localReady = true;
      } else if (e.serving && e.terminating) {
        hasAny = true;
        if (e.isLocal) localServingTerminating = true;
      }
    }
    if (localReady) local = eps.filter((e) => e.isLocal && e.ready);
    else if (localServingTerminating) local = eps.filter((e) => e.isLocal && e.serving && e.terminating);
    if (!usesClusterEndpoints(s)) allReachable = local;
    else if (local.length > 0) {
      const union = new Map<string, EndpointInfo>();
      for (const e of cluster) union.set(e.addr, e);
      for (const e of local) union.set(e.addr, e);
      allReachable = [...union.values()];
    }
  }
  const internal = s.internalPolicyLocal ? local : cluster;
  const external = s.externalPolicyLocal ? local : cluster;
  return {
    cluster, local, allReachable, hasAny, internal, external,
    hasInternal: s.internalPolicyLocal ? local.length > 0 : hasAny,
    hasExternal: s.externalPolicyLocal ? local.length > 0 : hasAny,
  };
}
