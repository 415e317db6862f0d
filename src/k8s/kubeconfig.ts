// Loading a kubeconfig for knet's API clients: a file, else the in-cluster config, else the
// default kubeconfig. A file may name its token file as kubeadm's kube-proxy kubeconfig does
// (`tokenFile`, the service account's projected token); the token is then read from that file
// and re-read as the kubelet rotates it, as the in-cluster config does.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { isRecord } from '../model/json.ts';

export interface KubeConfigOptions {
  /** Path of a kubeconfig file. */
  kubeconfig?: string;
  /** API server URL overriding the kubeconfig's (flannel's --kube-api-url). */
  apiUrl?: string;
}

export function loadKubeConfig(o: KubeConfigOptions | string = {}): KubeConfig {
  const opts = typeof o === 'string' ? { kubeconfig: o } : o;
  const kc = new KubeConfig();
  if (opts.kubeconfig) {
    kc.loadFromFile(opts.kubeconfig);
    useTokenFiles(kc, opts.kubeconfig);
  } else if (process.env.KUBERNETES_SERVICE_HOST) {
    kc.loadFromCluster();
  } else {
    kc.loadFromDefault();
  }
  if (opts.apiUrl) {
    let url: URL;
    try {
      url = new URL(opts.apiUrl);
    } catch {
      throw new Error(`invalid API server URL ${JSON.stringify(opts.apiUrl)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`invalid API server URL ${JSON.stringify(opts.apiUrl)}: scheme must be http or https`);
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster to point at the API server URL');
    kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server: opts.apiUrl! } : c));
  }
  return kc;
}

/**
 * Users with `tokenFile` (client-go's field) get client-node's refreshing token-file auth. A
 * relative path is relative to the kubeconfig's directory, as client-go resolves it.
 */
export function useTokenFiles(kc: KubeConfig, path: string): void {
  const doc: unknown = parseYaml(readFileSync(path, 'utf8'));
  const users = isRecord(doc) && Array.isArray(doc.users) ? doc.users : [];
  for (const u of users) {
    const file = isRecord(u) && isRecord(u.user) ? u.user.tokenFile : undefined;
    if (typeof file !== 'string' || file === '') continue;
    const tokenFile = resolve(dirname(path), file);
    kc.users = kc.users.map((x) => (x.name === u.name && !x.token ? { ...x, authProvider: { name: 'tokenFile', config: { tokenFile } } } : x));
  }
}
