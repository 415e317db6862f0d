// The lab API daemon's entry (`knet lab _api --dir DIR`, run by `lab up` inside the lab's
// underlay namespace): serves until SIGTERM.
import { makeLogger } from '../util/log.ts';
import { LabApi } from './api/server.ts';
import { paths, requireState } from './state.ts';
import { API_PORT, ETCD_PORT, FLANNEL_PREFIX, NODE_CIDR_MASK_SIZE, REGISTRY_ETCD_PORT } from './topology.ts';

export async function runLabApi(dir: string): Promise<void> {
  const s = requireState(dir);
  const log = makeLogger('knet-lab-api');
  const kube = s.plan.subnetManager === 'kube';
  const api = new LabApi({
    etcdEndpoint: `http://127.0.0.1:${REGISTRY_ETCD_PORT}`,
    host: s.plan.underlay.ip,
    port: API_PORT,
    socketPath: paths(dir).socket,
    tokenFile: paths(dir).tokens,
    // kubectl (knet lab kubectl) runs in the underlay namespace and sends no token over HTTP.
    trustLocalConnections: true,
    serviceCIDR: s.plan.serviceCIDR,
    nodePortRange: s.plan.nodePortRange,
    // kube mode: the API gives Nodes their pod CIDRs, as kube-controller-manager does; etcd
    // mode: the agents lease subnets in the flannel etcd and the lab copies them to the Nodes.
    ...(kube
      ? { clusterCIDR: s.plan.podNetwork, nodeCidrMaskSize: NODE_CIDR_MASK_SIZE }
      : { flannel: { etcdEndpoint: `http://127.0.0.1:${ETCD_PORT}`, prefix: FLANNEL_PREFIX, networkConfig: s.plan.networkConfig } }),
    log,
  });
  await api.start();
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await api.stop();
  process.exit(0);
}
