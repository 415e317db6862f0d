// `lab check` as pure functions: from what the lab API holds, the probes to send (pod to pod
// across every node pair, every Service port from a pod with the spread per endpoint, NodePorts
// from the outside host, ClientIP affinity, UDP), how to judge each probe's answers, and the
// pass/fail table. The runner (check-run.ts) only sends traffic.
import type { EndpointSlice, Service } from '../model/k8s.ts';
import { SERVICE_NAME_LABEL } from '../model/k8s.ts';
import { NETNS_ANNOTATION, OUTSIDE_NAME, podIP, podPorts, type LabPod } from './workload.ts';

export interface CheckInput {
  nodes: Array<{ name: string; ip: string }>;
  pods: LabPod[];
  services: Service[];
  slices: EndpointSlice[];
  outside: { ns: string; ip: string };
}

export type Expect =
  | { kind: 'one'; name: string }
  | { kind: 'spread'; names: string[] }
  | { kind: 'sticky'; names: string[] }
  | { kind: 'any'; names: string[] };

export interface Probe {
  id: string;
  check: string;
  from: string;
  fromNs: string;
  to: string;
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  count: number;
  expect: Expect;
}

export interface Verdict { pass: boolean; detail: string }

function nsOf(p: LabPod): string | undefined {
  return p.metadata.annotations?.[NETNS_ANNOTATION];
}

const byName = (a: LabPod, b: LabPod) => a.metadata.name.localeCompare(b.metadata.name, 'en', { numeric: true });

/** Ready endpoint addresses of a Service port, by the answering name (pod name, or "outside"). */
export function endpointNames(s: Service, portName: string, protocol: string, input: CheckInput): string[] {
  const ns = s.metadata.namespace ?? 'default';
  const byIp = new Map<string, string>(input.pods.filter((p) => p.metadata.namespace === ns && podIP(p)).map((p) => [podIP(p)!, p.metadata.name]));
  byIp.set(input.outside.ip, OUTSIDE_NAME);
  const names = new Set<string>();
  for (const sl of input.slices) {
    if ((sl.metadata.namespace ?? 'default') !== ns || sl.metadata.labels?.[SERVICE_NAME_LABEL] !== s.metadata.name) continue;
    if (!(sl.ports ?? []).some((p) => (p.name ?? '') === portName && (p.protocol ?? 'TCP') === protocol && p.port)) continue;
    for (const e of sl.endpoints ?? []) {
      if (e.conditions?.ready === false) continue;
      for (const a of e.addresses) names.add(byIp.get(a) ?? a);
    }
  }
  return [...names].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

/** The probes `lab check` sends, in table order. */
export function planChecks(input: CheckInput): Probe[] {
  const out: Probe[] = [];
  const pods = input.pods.filter((p) => podIP(p) && nsOf(p)).sort(byName);
  const firstOn = (node: string) => pods.find((p) => p.spec.nodeName === node && p.metadata.labels?.app === 'client') ?? pods.find((p) => p.spec.nodeName === node);
  // Pod to pod, every ordered pair of nodes.
  for (const a of input.nodes) {
    for (const b of input.nodes) {
      if (a === b) continue;
      const src = firstOn(a.name);
      const dst = firstOn(b.name);
      if (!src || !dst) continue;
      out.push({
        id: `pod:${a.name}:${b.name}`, check: 'pod to pod', from: `${src.metadata.name} (${a.name})`, fromNs: nsOf(src)!,
        to: `${dst.metadata.name} (${b.name}) ${podIP(dst)}:${podPorts(dst)[0]}`, proto: 'tcp', host: podIP(dst)!, port: podPorts(dst)[0]!, count: 1,
        expect: { kind: 'one', name: dst.metadata.name },
      });
    }
  }
  const services = [...input.services].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  for (const s of services) {
    const vip = s.spec?.clusterIP;
    const ns = s.metadata.namespace ?? 'default';
    const svcName = ns === 'default' ? s.metadata.name! : `${ns}/${s.metadata.name}`;
    for (const sp of s.spec?.ports ?? []) {
      const protocol = sp.protocol ?? 'TCP';
      if (protocol !== 'TCP' && protocol !== 'UDP') continue;
      const proto = protocol === 'UDP' ? 'udp' : 'tcp';
      const names = endpointNames(s, sp.name ?? '', protocol, input);
      const portLabel = `${sp.port}/${protocol}`;
      // A client that is not an endpoint itself, preferably a client pod.
      const src = pods.find((p) => p.metadata.labels?.app === 'client' && !names.includes(p.metadata.name))
        ?? pods.find((p) => !names.includes(p.metadata.name)) ?? pods[0];
      if (!src) continue;
      const affinity = s.spec?.sessionAffinity === 'ClientIP';
      const base = { fromNs: nsOf(src)!, from: src.metadata.name, proto, port: sp.port! } as const;
      if (vip && vip !== 'None' && sp.port) {
        const check = affinity ? 'ClientIP affinity' : proto === 'udp' ? 'ClusterIP UDP' : 'ClusterIP';
        out.push({
          ...base, id: `svc:${ns}/${s.metadata.name}:${portLabel}`, check, to: `${svcName} ${vip}:${portLabel}`, host: vip,
          count: affinity ? 10 : Math.max(10, 10 * names.length),
          expect: affinity ? { kind: 'sticky', names } : { kind: 'spread', names },
        });
      }
      if ((s.spec?.type === 'NodePort' || s.spec?.type === 'LoadBalancer') && sp.nodePort) {
        for (const n of input.nodes) {
          out.push({
            id: `nodeport:${ns}/${s.metadata.name}:${portLabel}:${n.name}`, check: 'NodePort from outside', from: OUTSIDE_NAME, fromNs: input.outside.ns,
            to: `${svcName} ${n.ip}:${sp.nodePort}/${protocol}`, proto, host: n.ip, port: sp.nodePort, count: 3,
            expect: { kind: 'any', names },
          });
        }
      }
    }
  }
  return out;
}

function tally(replies: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of replies) m.set(r, (m.get(r) ?? 0) + 1);
  return m;
}

function describe(replies: readonly string[]): string {
  return [...tally(replies)].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })).map(([k, v]) => `${k}:${v}`).join(' ');
}

/** Judges one probe's answers (each the first word of a reply, or "ERR <code>"). */
export function judge(p: Probe, replies: readonly string[]): Verdict {
  const errors = replies.filter((r) => r.startsWith('ERR'));
  const detail = describe(replies);
  if (replies.length === 0) return { pass: false, detail: 'no answer' };
  const e = p.expect;
  if (e.kind === 'one') return { pass: errors.length === 0 && replies.every((r) => r === e.name), detail: e.name === replies[0] ? `answered by ${e.name}` : `${detail} (expected ${e.name})` };
  if (e.names.length === 0) return { pass: false, detail: `no endpoints; ${detail}` };
  const unexpected = replies.filter((r) => !r.startsWith('ERR') && !e.names.includes(r));
  if (errors.length || unexpected.length) return { pass: false, detail: `${detail} (expected ${e.names.join(', ')})` };
  const seen = new Set(replies);
  if (e.kind === 'spread') {
    const missing = e.names.filter((n) => !seen.has(n));
    return { pass: missing.length === 0, detail: missing.length ? `${detail}; never answered: ${missing.join(', ')}` : `spread ${detail}` };
  }
  if (e.kind === 'sticky') return { pass: seen.size === 1, detail: seen.size === 1 ? `all ${replies.length} to ${replies[0]}` : `not sticky: ${detail}` };
  return { pass: true, detail };
}

export interface Row { probe: Probe; verdict: Verdict }

/** The pass/fail table, plain text with aligned columns, and a summary line. */
export function formatCheckTable(rows: readonly Row[]): string {
  const head = ['CHECK', 'FROM', 'TO', 'RESULT', 'DETAIL'];
  const body = rows.map((r) => [r.probe.check, r.probe.from, r.probe.to, r.verdict.pass ? 'PASS' : 'FAIL', r.verdict.detail]);
  const failed = rows.filter((r) => !r.verdict.pass).length;
  return table([head, ...body]) + `\n${rows.length - failed} passed, ${failed} failed\n`;
}

export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}
