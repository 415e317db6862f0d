// The lab API daemon's entry (`knet lab _api --dir DIR`, run by `lab up` inside the lab's
// underlay namespace): serves until SIGTERM.
import { makeLogger } from '../util/log.ts';
import { LabApi } from './api.ts';
import { paths, requireState } from './state.ts';
import { ETCD_PORT, API_PORT, FLANNEL_PREFIX } from './topology.ts';

export async function runLabApi(dir: string): Promise<void> {
  const s = requireState(dir);
  const log = makeLogger('knet-lab-api');
  const api = new LabApi({
    etcdEndpoint: `http://127.0.0.1:${ETCD_PORT}`,
    host: s.plan.underlay.ip,
    port: API_PORT,
    socketPath: paths(dir).socket,
    serviceCIDR: s.plan.serviceCIDR,
    nodePortRange: s.plan.nodePortRange,
    flannelPrefix: FLANNEL_PREFIX,
    networkConfig: s.plan.networkConfig,
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
