// The EndpointSlice mirroring controller's conversion, written once for `knet rules` (Endpoints in
// manifests) and the lab's API server (hand-kept Endpoints of selector-less Services).
import type { EndpointSlice, EndpointSliceEndpoint, EndpointSlicePort } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { describe, InvalidField, objectList, optObject, optString, prop } from '../model/json.ts';
import { familyOf } from '../util/ip.ts';

export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MIRROR_MANAGED_BY = 'endpointslicemirroring-controller.k8s.io';

/**
 * Mirrors a v1 Endpoints object of any shape into EndpointSlices: one per subset and address
 * family. Throws InvalidField (naming the Endpoints' field) when its shape is wrong; the values
 * (IPs, ports, names) are checked where every slice is, in the service model.
 */
export function endpointsToSlices(ep: unknown): EndpointSlice[] {
  const meta = optObject(prop(ep, 'metadata'), 'metadata');
  const name = optString(prop(meta, 'name'), 'metadata.name') ?? '';
  const namespace = optString(prop(meta, 'namespace'), 'metadata.namespace') ?? 'default';
  const labels = optObject(prop(meta, 'labels'), 'metadata.labels');
  const out: EndpointSlice[] = [];
  objectList(prop(ep, 'subsets'), 'subsets').forEach((subset, i) => {
    const field = `subsets[${i}]`;
    const ports: EndpointSlicePort[] = objectList(prop(subset, 'ports'), `${field}.ports`).map((p, j) => {
      const port = prop(p, 'port') ?? null;
      if (port !== null && typeof port !== 'number') throw new InvalidField(`${field}.ports[${j}].port`, `must be a number, got ${describe(port)}`);
      return {
        name: optString(prop(p, 'name'), `${field}.ports[${j}].name`) ?? '', port,
        protocol: optString(prop(p, 'protocol'), `${field}.ports[${j}].protocol`) ?? 'TCP',
      };
    });
    const byFamily = new Map<string, EndpointSliceEndpoint[]>();
    const add = (list: string, ready: boolean) => objectList(prop(subset, list), `${field}.${list}`).forEach((a, j) => {
      const ip = optString(prop(a, 'ip'), `${field}.${list}[${j}].ip`) ?? '';
      const nodeName = optString(prop(a, 'nodeName'), `${field}.${list}[${j}].nodeName`);
      const hostname = optString(prop(a, 'hostname'), `${field}.${list}[${j}].hostname`);
      const type = familyOf(ip) === 6 ? 'IPv6' : 'IPv4';
      let group = byFamily.get(type);
      if (!group) byFamily.set(type, (group = []));
      const e: EndpointSliceEndpoint = { addresses: [ip], conditions: { ready } };
      if (nodeName) e.nodeName = nodeName;
      if (hostname) e.hostname = hostname;
      group.push(e);
    });
    add('addresses', true);
    add('notReadyAddresses', false);
    for (const [addressType, endpoints] of byFamily) {
      out.push({
        apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
        metadata: {
          name: `${name}-mirror-${i}${addressType === 'IPv6' ? '-v6' : ''}`, namespace,
          labels: { ...(labels as Record<string, string> | undefined), [SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: MIRROR_MANAGED_BY },
        },
        addressType, endpoints, ports,
      });
    }
  });
  return out;
}

