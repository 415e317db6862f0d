// What kube-apiserver does to an object between decoding and validation, per resource, pure:
// defaults (protocol TCP, targetPort = port, session affinity None, traffic policies Cluster),
// and which parts a write may change (the status subresource changes only status, the main
// resource never changes status; Nodes may be created with their status, Pods and Services
// start with a fresh one).
import { randomBytes, randomUUID } from 'node:crypto';
import type { ResourceDef } from './resources.ts';
import type { Obj } from './store.ts';

function defaultService(s: Obj): void {
  const spec = s.spec ??= {};
  spec.type ||= 'ClusterIP';
  spec.sessionAffinity ||= 'None';
  if (spec.sessionAffinity === 'None') delete spec.sessionAffinityConfig;
  if (spec.sessionAffinity === 'ClientIP') {
    spec.sessionAffinityConfig ??= {};
    spec.sessionAffinityConfig.clientIP ??= {};
    spec.sessionAffinityConfig.clientIP.timeoutSeconds ??= 10800;
  }
  for (const p of spec.ports ?? []) {
    p.protocol ||= 'TCP';
    if (p.targetPort === undefined || p.targetPort === 0 || p.targetPort === '') p.targetPort = p.port;
  }
  if (spec.type !== 'ExternalName') spec.internalTrafficPolicy ||= 'Cluster';
  if ((spec.type === 'NodePort' || spec.type === 'LoadBalancer') && !spec.externalTrafficPolicy) spec.externalTrafficPolicy = 'Cluster';
  if (spec.type === 'LoadBalancer') spec.allocateLoadBalancerNodePorts ??= true;
}

function defaultPod(p: Obj): void {
  const spec = p.spec ??= {};
  spec.restartPolicy ||= 'Always';
  spec.dnsPolicy ||= 'ClusterFirst';
  spec.terminationGracePeriodSeconds ??= 30;
  spec.schedulerName ||= 'default-scheduler';
  for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
    for (const port of c.ports ?? []) port.protocol ||= 'TCP';
    c.terminationMessagePath ||= '/dev/termination-log';
    c.terminationMessagePolicy ||= 'File';
    c.imagePullPolicy ||= typeof c.image === 'string' && (!/:[^/]+$/.test(c.image) || c.image.endsWith(':latest')) ? 'Always' : 'IfNotPresent';
  }
}

/** Kubernetes' defaulting for the served kinds (in place). */
export function applyDefaults(def: ResourceDef, obj: Obj): void {
  switch (def.name) {
    case 'services': defaultService(obj); break;
    case 'pods': defaultPod(obj); break;
    case 'endpointslices': for (const p of obj.ports ?? []) p.protocol ||= 'TCP'; break;
    case 'endpoints': for (const ss of obj.subsets ?? []) for (const p of ss.ports ?? []) p.protocol ||= 'TCP'; break;
    case 'nodes': {
      // podCIDRs is authoritative; podCIDR mirrors its first entry (Kubernetes' own conversion).
      const spec = obj.spec ??= {};
      if (!spec.podCIDRs?.length && spec.podCIDR) spec.podCIDRs = [spec.podCIDR];
      if (spec.podCIDRs?.length) spec.podCIDR = spec.podCIDRs[0];
      break;
    }
    case 'namespaces':
      obj.spec ??= {};
      obj.spec.finalizers ??= ['kubernetes'];
      break;
  }
}

const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/** A name from `metadata.generateName` (five random characters appended, as kube-apiserver does). */
export function generateName(prefix: string): string {
  const bytes = randomBytes(5);
  return prefix + [...bytes].map((b) => GENERATE_ALPHABET[b % GENERATE_ALPHABET.length]).join('');
}

export function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

/** Sets what the server owns on a new object and the status it starts with. */
export function prepareForCreate(def: ResourceDef, obj: Obj): void {
  const md = obj.metadata;
  md.uid = randomUUID();
  md.creationTimestamp = now();
  for (const k of ['resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink', 'managedFields', 'generation']) delete md[k];
  switch (def.name) {
    case 'services': obj.status = { loadBalancer: {} }; break;
    case 'pods': obj.status = { phase: 'Pending', qosClass: 'BestEffort' }; break;
    case 'namespaces': obj.status = { phase: 'Active' }; break;
    default: break; // Nodes keep the status they are created with; the others have none.
  }
}

/**
 * Keeps what an update may not change: the server-owned metadata, and either the status (main
 * resource) or everything but status and metadata (status subresource).
 */
export function prepareForUpdate(def: ResourceDef, obj: Obj, old: Obj, subresource: 'status' | undefined): void {
  const md = obj.metadata;
  for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generateName']) {
    if (old.metadata[k] === undefined) delete md[k];
    else md[k] = old.metadata[k];
  }
  for (const k of ['selfLink', 'managedFields', 'generation']) delete md[k];
  if (subresource === 'status') {
    for (const k of Object.keys(obj)) if (k !== 'metadata' && k !== 'status' && k !== 'apiVersion' && k !== 'kind') delete obj[k];
    for (const k of Object.keys(old)) if (k !== 'metadata' && k !== 'status' && k !== 'apiVersion' && k !== 'kind') obj[k] = old[k];
  } else if (def.status) {
    if (old.status === undefined) delete obj.status;
    else obj.status = old.status;
  }
  if (def.name === 'namespaces' && old.status?.phase === 'Terminating') obj.status = old.status;
}
