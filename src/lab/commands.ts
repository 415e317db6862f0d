// `lab status`, `apply`, `delete`, `exec` and `check` against a running lab: they read the
// lab's state file, talk to the lab API over its socket, and do kernel work (pods, probes)
// through the adapters.
import { spawn } from 'node:child_process';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../kernel/exec.ts';
import { listNetns } from '../kernel/netns.ts';
import type { EndpointSlice, Service } from '../model/k8s.ts';
import { parseManifestText } from '../k8s/manifests.ts';
import { isRecord } from '../model/json.ts';
import { formatCheckTable, judge, planChecks, type Probe, type Row } from './check.ts';
import { LabApiClient } from './client.ts';
import { createPod, deletePod, pool } from './pods.ts';
import { labDir, paths, requireState, type LabState } from './state.ts';
import { childEnv, sleep } from './shell.ts';
import { pidAlive } from '../util/process.ts';
import { formatStatus } from './status.ts';
import { subnetManagerOf } from './topology.ts';
import { assertName, NETNS_ANNOTATION, normalizePod, podPorts, type LabPod } from './workload.ts';

export function openLab(dir: string): { s: LabState; api: LabApiClient } {
  const s = requireState(dir);
  return { s, api: new LabApiClient(paths(dir).socket) };
}

export async function labStatus(dir: string): Promise<string> {
  const { s, api } = openLab(dir);
  const alive = (what: string) => s.processes.some((p) => p.what === what && pidAlive(p.pid));
  const manager = subnetManagerOf(s.plan);
  if (!(await api.healthy())) throw new Error(`the lab API of ${dir} does not answer (log: ${paths(dir).log('lab-api')}); knet lab down, then up`);
  const [apiNodes, leases, pods, services, slices] = await Promise.all([api.nodes(), api.leases(), api.pods(), api.services(), api.slices()]);
  return formatStatus({
    labId: s.plan.labId, dir,
    summary: `${s.plan.nodes.length} nodes, ${s.plan.backend} overlay, ${s.plan.proxyMode} proxies, ${manager === 'kube' ? 'kube subnet manager (Node podCIDRs)' : `etcd subnet manager (${s.plan.etcdEndpoint})`}, lab API ${s.plan.apiServer} (a kube-apiserver stand-in)`,
    subnetManager: manager,
    nodes: s.plan.nodes.map((n) => ({ name: n.name, ns: n.ns, ip: n.ip, agent: alive(`agent-${n.name}`), proxy: alive(`proxy-${n.name}`) })),
    apiNodes, leases, pods, services, slices,
  });
}

// ---- apply / delete ----

export interface Manifest { kind: string; obj: Record<string, unknown> }

/** Multi-document YAML or JSON, `kind: List` flattened; only the kinds the lab serves (pure). */
export function parseLabManifests(text: string, source: string): Manifest[] {
  const out: Manifest[] = [];
  const add = (o: unknown, where: string) => {
    if (o === null || o === undefined) return;
    if (typeof o !== 'object' || Array.isArray(o)) throw new Error(`${where}: not an object`);
    const r = o as Record<string, unknown>;
    if (typeof r.kind === 'string' && r.kind.endsWith('List')) {
      if (r.items !== undefined && r.items !== null && !Array.isArray(r.items)) throw new Error(`${where}: items is not a list`);
      ((r.items ?? []) as unknown[]).forEach((x, i) => add(x, `${where} items[${i}]`));
      return;
    }
    if (r.kind !== 'Service' && r.kind !== 'EndpointSlice' && r.kind !== 'Pod' && r.kind !== 'Namespace') throw new Error(`${where}: kind ${JSON.stringify(r.kind)} is not applied by knet lab apply (Namespace, Service, EndpointSlice, Pod; kubectl against the lab API serves Nodes and Endpoints too)`);
    if (r.metadata !== undefined && !isRecord(r.metadata)) throw new Error(`${where}: metadata is not an object`);
    const md = (r.metadata ?? {}) as Record<string, unknown>;
    assertName(`${where} metadata.name`, md.name);
    if (md.namespace !== undefined) assertName(`${where} metadata.namespace`, md.namespace);
    out.push({ kind: r.kind, obj: r });
  };
  // The reader of `knet rules`: the same syntax errors, with file:line:column.
  parseManifestText(text, source).forEach((d, i) => add(d, `${source} document ${i + 1}`));
  return out;
}

const nsOf = (o: Record<string, unknown>) => ((o.metadata as { namespace?: string }).namespace ?? 'default');
const nameOf = (o: Record<string, unknown>) => (o.metadata as { name: string }).name;

export async function labApply(dir: string, file: string, say: (l: string) => void): Promise<void> {
  const { s, api } = openLab(dir);
  const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  const items = parseLabManifests(text, file);
  const nodeNames = s.plan.nodes.map((n) => n.name);
  const pods = items.filter((m) => m.kind === 'Pod').map((m) => normalizePod(m.obj, nodeNames));
  // Namespaces first (named ones, and the ones the other objects are in), as kubectl needs them.
  const namespaces = new Set([...items.filter((m) => m.kind === 'Namespace').map((m) => nameOf(m.obj)), ...items.filter((m) => m.kind !== 'Namespace').map((m) => nsOf(m.obj))]);
  for (const ns of namespaces) if (await api.ensureNamespace(ns)) say(`namespace/${ns} created`);
  // Services and slices first: proxies program the rules while pods come up.
  for (const m of items.filter((x) => x.kind === 'Service')) {
    const r = await api.putService(m.obj as unknown as Service);
    say(`service/${nameOf(m.obj)} applied (${r.spec?.clusterIP})`);
  }
  for (const m of items.filter((x) => x.kind === 'EndpointSlice')) {
    await api.putSlice(m.obj as unknown as EndpointSlice);
    say(`endpointslice/${nameOf(m.obj)} applied`);
  }
  const existing = await api.pods();
  await pool(pods, 6, async (p) => {
    const old = existing.find((e) => e.metadata.namespace === p.metadata.namespace && e.metadata.name === p.metadata.name);
    if (old && old.spec.nodeName === p.spec.nodeName && podPorts(old).join() === podPorts(p).join()) {
      // Same sandbox: only the labels (and so the Services it belongs to) change.
      await api.putPod({ ...old, metadata: { ...old.metadata, labels: p.metadata.labels ?? {} } });
      say(`pod/${p.metadata.name} configured`);
      return;
    }
    if (old) await deletePod(s, api, old);
    const made = await createPod(s, api, p);
    say(`pod/${p.metadata.name} created on ${p.spec.nodeName} (${made.status?.podIP})`);
  });
}

type Kind = 'pods' | 'services' | 'endpointslices';
export function kindOf(word: string): Kind {
  const w = word.toLowerCase();
  if (['pod', 'pods', 'po'].includes(w)) return 'pods';
  if (['service', 'services', 'svc'].includes(w)) return 'services';
  if (['endpointslice', 'endpointslices'].includes(w)) return 'endpointslices';
  throw new Error(`cannot delete ${JSON.stringify(word)}: the lab has pods, services and endpointslices`);
}

export async function labDelete(dir: string, targets: Array<{ kind: Kind; namespace: string; name: string }>, say: (l: string) => void): Promise<number> {
  const { s, api } = openLab(dir);
  let missing = 0;
  const pods = await api.pods();
  for (const t of targets) {
    assertName('name', t.name);
    if (t.kind === 'pods') {
      const p = pods.find((x) => x.metadata.namespace === t.namespace && x.metadata.name === t.name);
      if (!p) { say(`pod/${t.name} not found`); missing++; continue; }
      await deletePod(s, api, p);
    } else {
      try { await api.delete(t.kind, t.namespace, t.name); } catch (err) { say(`${t.kind}/${t.name}: ${(err as Error).message}`); missing++; continue; }
    }
    say(`${t.kind.replace(/s$/, '')}/${t.name} deleted`);
  }
  return missing;
}

export function deleteTargetsFromFile(file: string): Array<{ kind: Kind; namespace: string; name: string }> {
  const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  return parseLabManifests(text, file).filter((m) => m.kind !== 'Namespace').map((m) => ({ kind: kindOf(m.kind), namespace: nsOf(m.obj), name: nameOf(m.obj) }));
}

// ---- kubectl ----

/**
 * Runs the machine's kubectl against the lab API: inside the lab's underlay namespace (where the
 * API listens), with the lab's administrator kubeconfig and a discovery cache in the lab dir.
 */
export async function labKubectl(dir: string, args: string[]): Promise<number> {
  const s = requireState(dir);
  const P = paths(dir);
  const kubectl = findProgram('kubectl');
  if (!kubectl) throw new Error('kubectl is not installed (Debian: apt install kubernetes-client; scripts/setup.sh installs it)');
  const child = spawn('ip', ['netns', 'exec', s.plan.underlay.ns, kubectl, '--kubeconfig', P.kubeconfig, '--cache-dir', P.kubectlCache, ...args], { stdio: 'inherit', env: childEnv() });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, sig) => resolve(code ?? (sig ? 128 + 9 : 1)));
  });
}

/** The first executable named `name` on the PATH, or null. */
export function findProgram(name: string, pathEnv = process.env.PATH ?? ''): string | null {
  for (const dir of pathEnv.split(':').filter(Boolean)) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      if (statSync(file).isFile()) return file;
    } catch { /* not here */ }
  }
  return null;
}

/** How to run kubectl against a lab (printed by `lab up`). */
export function kubectlHint(s: LabState): string {
  const P = paths(s.dir);
  return `kubectl: knet lab kubectl${s.dir === labDir() ? '' : ` --dir ${s.dir}`} get pods -A -o wide   (the same: ip netns exec ${s.plan.underlay.ns} kubectl --kubeconfig ${P.kubeconfig} ...)`;
}

// ---- exec ----

/** The namespace of a pod (by name), a node (node-N) or the outside host ("outside"). */
export async function resolveTarget(s: LabState, api: LabApiClient, name: string, namespace = 'default'): Promise<string> {
  const node = s.plan.nodes.find((n) => n.name === name);
  if (node) return node.ns;
  if (name === 'outside') return s.plan.outside.ns;
  if (name === 'underlay') return s.plan.underlay.ns;
  const pod = (await api.pods()).find((p) => p.metadata.namespace === namespace && p.metadata.name === name);
  const ns = pod?.metadata.annotations?.[NETNS_ANNOTATION];
  if (!ns) throw new Error(`no pod ${namespace}/${name} (nor node or "outside") in this lab`);
  return ns;
}

export async function labExec(dir: string, target: string, namespace: string, cmd: string[]): Promise<number> {
  if (cmd.length === 0) throw new Error('nothing to run: knet lab exec POD -- CMD [ARGS...]');
  const { s, api } = openLab(dir);
  const ns = await resolveTarget(s, api, target, namespace);
  const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: 'inherit', env: childEnv() });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, sig) => resolve(code ?? (sig ? 128 + 9 : 1)));
  });
}

// ---- check ----

export interface CheckResult { rows: Row[]; passed: boolean; seconds: number }

async function sendProbes(s: LabState, probes: Probe[]): Promise<Map<string, string[]>> {
  const groups = new Map<string, Probe[]>();
  for (const p of probes) groups.set(p.fromNs, [...(groups.get(p.fromNs) ?? []), p]);
  const out = new Map<string, string[]>();
  await pool([...groups], 8, async ([ns, list]) => {
    const spec = list.map((p) => ({ id: p.id, proto: p.proto, host: p.host, port: p.port, count: p.count, timeoutMs: 1500 }));
    try {
      const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, paths(s.dir).probe], { input: JSON.stringify(spec), env: childEnv(), timeoutMs: 120_000 });
      const r = JSON.parse(stdout) as Record<string, string[]>;
      for (const p of list) out.set(p.id, r[p.id] ?? []);
    } catch (err) {
      for (const p of list) out.set(p.id, [`ERR probe-failed ${(err as Error).message.slice(0, 80)}`]);
    }
  });
  return out;
}

/** Real traffic for every planned probe; failures are retried until `waitMs` has passed. */
export async function labCheck(dir: string, o: { waitMs?: number } = {}): Promise<CheckResult> {
  const t0 = Date.now();
  const { s, api } = openLab(dir);
  const [pods, services, slices] = await Promise.all([api.pods(), api.services(), api.slices()]);
  const known = new Set(await listNetns());
  const input = {
    nodes: s.plan.nodes.map((n) => ({ name: n.name, ip: n.ip })),
    pods: pods.filter((p: LabPod) => known.has(p.metadata.annotations?.[NETNS_ANNOTATION] ?? '')),
    services, slices, outside: { ns: s.plan.outside.ns, ip: s.plan.outside.ip },
  };
  const probes = planChecks(input);
  const verdicts = new Map<string, Row>();
  const until = Date.now() + (o.waitMs ?? 20_000);
  let pending = probes;
  for (;;) {
    const replies = await sendProbes(s, pending);
    for (const p of pending) verdicts.set(p.id, { probe: p, verdict: judge(p, replies.get(p.id) ?? []) });
    pending = pending.filter((p) => !verdicts.get(p.id)!.verdict.pass);
    if (pending.length === 0 || Date.now() > until) break;
    await sleep(1000);
  }
  const rows = probes.map((p) => verdicts.get(p.id)!);
  return { rows, passed: rows.every((r) => r.verdict.pass), seconds: (Date.now() - t0) / 1000 };
}

export { formatCheckTable };
