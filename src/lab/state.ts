// The lab directory: state.json records what `lab up` made (written before each thing is made,
// so a failed or interrupted `up` and `lab down` can remove exactly that), plus logs, the
// per-node CNI config and subnet files, the kubeconfig and the API socket.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LabPlan } from './topology.ts';

export const DEFAULT_LAB_DIR = '/run/knet-lab';

export interface LabState {
  version: 1;
  dir: string;
  plan: LabPlan;
  /** Namespaces this lab created (pods' namespaces all start with plan.nsPrefix too). */
  namespaces: string[];
  /** Long-running processes: what, pid, log file. */
  processes: Array<{ what: string; pid: number; log: string }>;
  phase: 'starting' | 'up' | 'failed';
  startedAt: string;
  /** Seconds per step of the last `up`. */
  steps?: Array<{ step: string; seconds: number }>;
  /** Whether node proxies masquerade all service traffic (no br_netfilter on this machine). */
  masqueradeAll?: boolean;
}

export function labDir(dir?: string): string {
  return resolve(dir ?? process.env.KNET_LAB_DIR ?? DEFAULT_LAB_DIR);
}

export const paths = (dir: string) => ({
  state: join(dir, 'state.json'),
  logs: join(dir, 'logs'),
  socket: join(dir, 'api.sock'),
  /** The administrator's kubeconfig (kubectl, `knet lab kubectl`). */
  kubeconfig: join(dir, 'kubeconfig'),
  /** The lab API's bearer tokens (kube-apiserver's static token file format), mode 0600. */
  tokens: join(dir, 'api-tokens.csv'),
  kubectlCache: join(dir, 'kubectl-cache'),
  /** kube mode: flannel's network config (net-conf.json) every node agent reads. */
  netConf: join(dir, 'net-conf.json'),
  /** The flannel etcd's data (node subnet leases). */
  etcdData: join(dir, 'etcd'),
  /** The lab API's etcd data (/registry/). */
  registryEtcdData: join(dir, 'etcd-registry'),
  cniBin: join(dir, 'cni', 'bin'),
  echo: join(dir, 'echo.mjs'),
  probe: join(dir, 'probe.mjs'),
  node: (name: string) => join(dir, 'nodes', name),
  /** A node's kubeconfig (its proxy and agent: group system:nodes, user system:node:NAME). */
  nodeKubeconfig: (name: string) => join(dir, 'nodes', name, 'kubeconfig'),
  /** ovs-gre: the node's OVS run directory (database, sockets, pidfiles, logs). */
  ovs: (name: string) => join(dir, 'nodes', name, 'ovs'),
  log: (what: string) => join(dir, 'logs', `${what}.log`),
});

export function readState(dir: string): LabState | null {
  const p = paths(dir).state;
  if (!existsSync(p)) return null;
  return JSON.parse(readFileSync(p, 'utf8')) as LabState;
}

export function writeState(s: LabState): void {
  mkdirSync(s.dir, { recursive: true });
  const p = paths(s.dir).state;
  writeFileSync(`${p}.tmp`, JSON.stringify(s, null, 2) + '\n');
  renameSync(`${p}.tmp`, p);
}

export function requireState(dir: string): LabState {
  const s = readState(dir);
  if (!s) throw new Error(`no lab in ${dir} (start one with: knet lab up${dir === labDir() ? '' : ` --dir ${dir}`})`);
  return s;
}
