// Leases from the Kubernetes API, as flannel's kube subnet manager keeps them (`knet agent
// --kube-subnet-mgr`): the network config from a file (net-conf.json), this node's subnet from
// its Node's spec.podCIDR(s), assigned by kube-controller-manager, and what peers need to
// reach it published as flannel's annotations on its Node, with a strategic merge patch of the
// nodes/status subresource (RBAC: nodes get/list/watch, nodes/status patch, pods get when the
// node name comes from the pod). Peers are every Node marked kube-subnet-manager "true",
// learnt through a client-node ListWatch informer over /api/v1/nodes; any watch trouble
// restarts it after a backoff (1 s doubling to 10 s), resuming or relisting as the API allows.
import { readFile } from 'node:fs/promises';
import { ApiException, CoreV1Api, type KubeConfig, ListWatch, PatchStrategy, Watch, setHeaderOptions, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../util/log.ts';
import { getJson, listRaw } from '../k8s/informer.ts';
import { isRecord, prop } from '../model/json.ts';
import { type Clock, delay, realClock, whenAborted } from '../util/clock.ts';
import { contains, formatCidr } from '../subnet/cidr.ts';
import { type NetworkConfig, parseNetworkConfig, ConfigError } from '../subnet/config.ts';
import type { Lease, LeaseAttrs } from '../subnet/lease.ts';
import type { Node } from '../model/k8s.ts';
import { assertNodeName } from '../subnet/kube-annotations.ts';
import {
  type AnnotationNames, annotationNames, annotationPatch, creationMs, leaseFromNode, nodePodSubnet, podCidrOutsideNetwork, publishedPublicIP,
} from '../subnet/kube-annotations.ts';
import { type AcquireRequest, type Acquired, type InvalidLease, type LeaseSource, type LeaseStreamEvent, LeaseNotYetError } from './lease-source.ts';

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  /** This node's name; else $NODE_NAME, else the node of the pod $POD_NAMESPACE/$POD_NAME. */
  nodeName?: string;
  env?: Record<string, string | undefined>;
  netConfPath: string;
  annotationPrefix?: string;
  /** Set the NetworkUnavailable condition to False once the lease is in place (flannel's default). */
  setNodeNetworkUnavailable: boolean;
  clock?: Clock;
  log: Logger;
  maxBackoffMs?: number;
}


const statusOf = (err: unknown): number | undefined => (err instanceof ApiException ? (err.code as number) : (err as { statusCode?: number })?.statusCode);

/** The API's own message of a failed call, not client-node's dump of headers. */
function apiMessage(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: unknown } | string | undefined;
    const text = typeof body === 'string' ? (() => { try { return (JSON.parse(body) as { message?: unknown }).message; } catch { return body; } })() : body?.message;
    return `HTTP ${err.code}${text ? `: ${String(text).slice(0, 500)}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

export class KubeLeaseSource implements LeaseSource {
  readonly storeName = 'the Kubernetes API';
  readonly names: AnnotationNames;
  private readonly core: CoreV1Api;
  private readonly clock: Clock;
  private nodeName: string | null = null;

  constructor(private readonly o: KubeSourceOptions) {
    this.names = annotationNames(o.annotationPrefix);
    if (o.nodeName !== undefined) assertNodeName(o.nodeName);
    this.core = o.kubeConfig.makeApiClient(CoreV1Api);
    this.clock = o.clock ?? realClock;
  }

  /** This node's name, resolved once (from the pod's spec when only the pod is known). */
  async node(): Promise<string> {
    if (this.nodeName) return this.nodeName;
    const env = this.o.env ?? process.env;
    let name = this.o.nodeName ?? env.NODE_NAME;
    if (!name) {
      const pod = env.POD_NAME;
      const namespace = env.POD_NAMESPACE;
      if (!pod || !namespace) throw new ConfigError('the node name is unknown: give --node-name, or set NODE_NAME, or POD_NAME and POD_NAMESPACE (the downward API)');
      let got: unknown;
      try {
        got = await getJson(this.o.kubeConfig, `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}`);
      } catch (err) {
        throw new Error(`error retrieving pod spec for '${namespace}/${pod}': ${apiMessage(err)}`);
      }
      const fromPod = prop(prop(got, 'spec'), 'nodeName');
      if (typeof fromPod !== 'string' || !fromPod) throw new Error(`node name not present in pod spec '${namespace}/${pod}'`);
      name = fromPod;
    }
    assertNodeName(name);
    this.nodeName = name;
    return name;
  }

  async networkConfig(): Promise<NetworkConfig> {
    let text: string;
    try {
      text = await readFile(this.o.netConfPath, 'utf8');
    } catch (err) {
      throw new ConfigError(`failed to read net conf ${this.o.netConfPath}: ${(err as Error).message}`);
    }
    try {
      return parseNetworkConfig(text);
    } catch (err) {
      throw new ConfigError(`${this.o.netConfPath}: ${(err as Error).message}`);
    }
  }

  private async readNode(): Promise<Node> {
    const name = await this.node();
    try {
      const node = await getJson(this.o.kubeConfig, `/api/v1/nodes/${encodeURIComponent(name)}`);
      if (!isRecord(node)) throw new Error('the answer is not an object');
      return node as unknown as Node;
    } catch (err) {
      if (statusOf(err) === 404) throw new LeaseNotYetError(`node ${JSON.stringify(name)} is not in the Kubernetes API (yet)`);
      throw new Error(`reading node ${JSON.stringify(name)}: ${apiMessage(err)}`);
    }
  }

  private async patchStatus(body: object): Promise<void> {
    const name = await this.node();
    try {
      await this.core.patchNodeStatus({ name, body }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    } catch (err) {
      throw new Error(`patching node ${JSON.stringify(name)} status: ${apiMessage(err)}`);
    }
  }

  async previousBackendData(): Promise<unknown> {
    let node: Node;
    try {
      node = await this.readNode();
    } catch (err) {
      if (err instanceof LeaseNotYetError) return undefined;
      throw err;
    }
    const text = node.metadata.annotations?.[this.names.backendData];
    if (typeof text !== 'string' || text === '') return undefined;
    try {
      return JSON.parse(text);
    } catch {
      return undefined;
    }
  }

  /** Publishes `attrs` on the node when it does not carry them; returns the lease as published. */
  private async publish(node: Node, attrs: LeaseAttrs): Promise<{ lease: Lease; patched: string[] }> {
    const name = await this.node();
    const subnet = nodePodSubnet(node);
    if (!subnet) {
      throw new LeaseNotYetError(`node ${JSON.stringify(name)} has no podCIDR yet (spec.podCIDR is empty): waiting for kube-controller-manager (--allocate-node-cidrs) or an operator to assign one`);
    }
    const published: LeaseAttrs = { ...attrs, PublicIP: publishedPublicIP(node, this.names, attrs.PublicIP) };
    const patch = annotationPatch(node, this.names, published);
    if (patch) await this.patchStatus({ metadata: { annotations: patch } });
    const created = creationMs(node);
    const lease: Lease = { key: name, subnet, ipv6Subnet: null, attrs: published, etcdLease: '0', expiresAt: null, ...(Number.isFinite(created) ? { since: created } : {}) };
    return { lease, patched: patch ? Object.keys(patch) : [] };
  }

  async acquire(req: AcquireRequest): Promise<Acquired> {
    const node = await this.readNode();
    const subnet = nodePodSubnet(node);
    if (subnet && !contains(req.range.network, subnet)) throw new ConfigError(podCidrOutsideNetwork(req.range.network, subnet, await this.node()));
    const { lease, patched } = await this.publish(node, req.attrs);
    const notes: string[] = [];
    if (lease.attrs.PublicIP !== req.attrs.PublicIP) notes.push(`publishing public IP ${lease.attrs.PublicIP} from the node annotation ${this.names.publicIPOverwrite}`);
    if (this.o.setNodeNetworkUnavailable) await this.markNetworkAvailable();
    this.o.log.info({ node: lease.key, podCIDR: formatCidr(lease.subnet), annotationsPatched: patched }, 'this node\'s lease is its podCIDR');
    return { lease, how: 'podCIDR', notes };
  }

  /** The NetworkUnavailable condition set to False, as flannel does once it runs. */
  private async markNetworkAvailable(): Promise<void> {
    const now = new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    await this.patchStatus({
      status: {
        conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'KnetIsUp', message: 'knet agent is running on this node', lastTransitionTime: now, lastHeartbeatTime: now }],
      },
    });
  }

  async renew(own: Lease, attrs: LeaseAttrs): Promise<Lease> {
    const node = await this.readNode().catch((err: unknown) => {
      throw err instanceof LeaseNotYetError ? new Error(err.message) : err;
    });
    const { lease, patched } = await this.publish(node, attrs);
    if (!lease.subnet || formatCidr(lease.subnet) !== formatCidr(own.subnet)) {
      // spec.podCIDR is immutable once set; a different one means the Node was re-created.
      throw new Error(`node ${JSON.stringify(lease.key)} now has podCIDR ${formatCidr(lease.subnet)}, not ${formatCidr(own.subnet)}: restart the agent to move to it`);
    }
    if (patched.length) this.o.log.info({ annotations: patched }, 'put this node\'s annotations back');
    return lease;
  }

  async stream(emit: (e: LeaseStreamEvent) => void, signal: AbortSignal): Promise<void> {
    const names = this.names;
    const leases = new Set<string>();
    // While (re)listing, the informer replays every Node; the 'synced' snapshot after the list
    // says the same at once, so nobody acts on half a list.
    let listing = false;
    const onNode = (node: Node) => {
      if (listing) return;
      const r = leaseFromNode(node, names);
      const name = node.metadata?.name ?? '';
      if (r.kind === 'lease') { leases.add(name); emit({ type: 'put', lease: r.lease }); }
      else if (r.kind === 'invalid') { leases.delete(name); emit({ type: 'invalid', key: name, error: r.error }); }
      else if (leases.delete(name)) emit({ type: 'delete', key: name });
    };
    const lw = new ListWatch<KubernetesObject>('/api/v1/nodes', new Watch(this.o.kubeConfig),
      () => listRaw(this.o.kubeConfig, '/api/v1/nodes', (object, reason) => this.o.log.warn({ object }, reason)) as Promise<KubernetesListObject<KubernetesObject>>, false);
    let failure: ((reason: string) => void) | null = null;
    let failed: string | null = null;
    lw.on('add', (n) => onNode(n as unknown as Node));
    lw.on('update', (n) => onNode(n as unknown as Node));
    lw.on('delete', (n) => {
      if (listing) return;
      const name = n.metadata?.name ?? '';
      leases.delete(name);
      emit({ type: 'delete', key: name });
    });
    lw.on('error', (err) => {
      failed = `${this.storeName} unreachable: ${apiMessage(err)}`;
      emit({ type: 'down', reason: failed });
      failure?.(failed);
    });
    const max = this.o.maxBackoffMs ?? 10_000;
    let backoff = 1000;
    try {
      while (!signal.aborted) {
        failed = null;
        const ended = new Promise<string>((resolve) => { failure = resolve; });
        listing = true;
        try {
          await lw.start();
        } finally {
          listing = false;
        }
        if (signal.aborted) break;
        if (failed === null && lw.latestResourceVersion() !== '') {
          const snapshot: Lease[] = [];
          const invalid: InvalidLease[] = [];
          leases.clear();
          for (const node of lw.list()) {
            const r = leaseFromNode(node as unknown as Node, names);
            if (r.kind === 'lease') { snapshot.push(r.lease); leases.add(r.lease.key); }
            else if (r.kind === 'invalid') invalid.push({ key: node.metadata?.name ?? '', error: r.error });
          }
          emit({ type: 'synced', leases: snapshot, invalid });
          backoff = 1000;
          await Promise.race([ended, whenAborted(signal)]);
          if (signal.aborted) break;
        }
        await lw.stop();
        await delay(this.clock, backoff, signal);
        backoff = Math.min(backoff * 2, max);
      }
    } finally {
      failure = null;
      await lw.stop();
    }
  }

  close(): void {
    // Requests are per call; the watch ends with its stream's signal.
  }
}
