// Lab pods, made exactly as a container runtime makes them: a network namespace, then the CNI
// plugin exec'd inside the node's namespace with CNI_* in the environment and the node's
// conflist plugin config on stdin; then the pod's echo server. Removal runs CNI DEL first.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, ExecError } from '../kernel/exec.ts';
import { addNetns, deleteNetns, listNetns } from '../kernel/netns.ts';
import type { LabApiClient } from './client.ts';
import { paths, type LabState } from './state.ts';
import { childEnv, startInNetns } from './shell.ts';
import { pluginConfFromList, podNetnsName } from './topology.ts';
import { NETNS_ANNOTATION, podPorts, type LabPod } from './workload.ts';

export function conflistPath(dir: string, node: string): string {
  return join(paths(dir).node(node), 'net.d', '10-knet.conflist');
}

function containerId(p: LabPod): string {
  return `${p.metadata.namespace}_${p.metadata.name}`;
}

async function execCni(s: LabState, command: 'ADD' | 'DEL', p: LabPod, podNs: string): Promise<unknown> {
  const node = s.plan.nodes.find((n) => n.name === p.spec.nodeName);
  if (!node) throw new Error(`pod ${p.metadata.name}: no node ${p.spec.nodeName} in this lab`);
  const conf = pluginConfFromList(readFileSync(conflistPath(s.dir, node.name), 'utf8'));
  const bin = join(paths(s.dir).cniBin, 'knet');
  const env = childEnv({
    CNI_COMMAND: command, CNI_CONTAINERID: containerId(p), CNI_NETNS: `/run/netns/${podNs}`, CNI_IFNAME: 'eth0',
    CNI_PATH: paths(s.dir).cniBin, CNI_ARGS: `K8S_POD_NAMESPACE=${p.metadata.namespace};K8S_POD_NAME=${p.metadata.name}`,
  });
  try {
    const { stdout } = await run('ip', ['netns', 'exec', node.ns, bin], { input: JSON.stringify(conf), env, timeoutMs: 60_000 });
    return stdout.trim() ? JSON.parse(stdout) : undefined;
  } catch (err) {
    if (err instanceof ExecError) throw new Error(`CNI ${command} for pod ${p.metadata.name} on ${node.name} failed: ${err.stdout.trim() || err.stderr.trim()}`);
    throw err;
  }
}

/** Creates the pod (namespace, CNI ADD, echo server) and records it in the lab API. */
export async function createPod(s: LabState, api: LabApiClient, pod: LabPod): Promise<LabPod> {
  const ns = podNetnsName(s.plan.nsPrefix, pod.metadata.namespace, pod.metadata.name);
  const node = s.plan.nodes.find((n) => n.name === pod.spec.nodeName)!;
  await deleteNetns(ns);
  await addNetns(ns);
  try {
    const result = await execCni(s, 'ADD', pod, ns) as { ips?: Array<{ address: string }> };
    const ip = result?.ips?.[0]?.address?.split('/')[0];
    if (!ip) throw new Error(`CNI ADD for pod ${pod.metadata.name} returned no address`);
    const ports = podPorts(pod).map(String);
    await startInNetns(ns, process.execPath, [paths(s.dir).echo, pod.metadata.name, ...ports], paths(s.dir).log(`pod-${pod.metadata.namespace}-${pod.metadata.name}`),
      { readyLine: 'ready', env: childEnv() });
    const out: LabPod = JSON.parse(JSON.stringify(pod));
    out.metadata.annotations = { ...(out.metadata.annotations ?? {}), [NETNS_ANNOTATION]: ns };
    const created = await api.putPod(out);
    return await api.putPodStatus({ ...created, status: runningStatus(pod, ip, node.ip) });
  } catch (err) {
    await execCni(s, 'DEL', pod, ns).catch(() => undefined);
    await deleteNetns(ns);
    throw err;
  }
}

/** What a kubelet reports for a started pod: Running, its address, every container ready. */
export function runningStatus(pod: LabPod, ip: string, hostIP: string): NonNullable<LabPod['status']> {
  const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const condition = (type: string) => ({ type, status: 'True', lastTransitionTime: at });
  return {
    phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP, hostIPs: [{ ip: hostIP }], startTime: at, qosClass: 'BestEffort',
    conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map(condition),
    containerStatuses: pod.spec.containers.map((c) => ({
      name: c.name, ready: true, started: true, restartCount: 0, image: c.image ?? '', imageID: '', state: { running: { startedAt: at } },
    })),
  };
}

/** CNI DEL, then the namespace (and the echo server in it), then the API object. */
export async function deletePod(s: LabState, api: LabApiClient | null, pod: LabPod): Promise<void> {
  const ns = pod.metadata.annotations?.[NETNS_ANNOTATION] ?? podNetnsName(s.plan.nsPrefix, pod.metadata.namespace, pod.metadata.name);
  if ((await listNetns()).includes(ns)) await execCni(s, 'DEL', pod, ns).catch(() => undefined);
  await deleteNetns(ns);
  if (api) await api.delete('pods', pod.metadata.namespace, pod.metadata.name).catch(() => undefined);
}

/** Runs `fn` over items with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
