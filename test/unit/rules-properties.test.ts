// Property tests over random clusters: rendering is deterministic, every jump target and every
// filled chain is declared, and the random rules of a service spread traffic evenly.
import test from 'ava';
import fc from 'fast-check';
import { renderIptables } from '../../src/rules/iptables.ts';
import type { ClusterState, EndpointSlice, Service } from '../../src/model/k8s.ts';
import { settings } from '../helpers/rules.ts';

const BUILTIN = new Set(['ACCEPT', 'REJECT', 'DROP', 'MARK', 'RETURN', 'DNAT', 'SNAT', 'MASQUERADE']);

const arbService = fc.record({
  type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer'),
  ports: fc.uniqueArray(fc.record({ name: fc.constantFrom('a', 'b', 'c'), protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }), { minLength: 1, maxLength: 3, selector: (p) => p.name }),
  etpLocal: fc.boolean(),
  itpLocal: fc.boolean(),
  affinity: fc.boolean(),
  externalIP: fc.boolean(),
  sourceRanges: fc.boolean(),
  endpoints: fc.array(fc.record({ host: fc.integer({ min: 1, max: 40 }), local: fc.boolean(), ready: fc.boolean(), terminating: fc.boolean() }), { maxLength: 6 }),
});

type ServiceSpec = typeof arbService extends fc.Arbitrary<infer T> ? T : never;

function cluster(specs: ServiceSpec[]): ClusterState {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  specs.forEach((s, i) => {
    const name = `s${i}`;
    services.push({
      metadata: { namespace: 'ns', name },
      spec: {
        type: s.type, clusterIP: `172.30.1.${i + 1}`,
        ports: s.ports.map((p, j) => ({ name: p.name, protocol: p.protocol, port: 80 + j, ...(s.type !== 'ClusterIP' ? { nodePort: 30000 + i * 10 + j } : {}) })),
        ...(s.etpLocal ? { externalTrafficPolicy: 'Local', healthCheckNodePort: 31000 + i } : {}),
        ...(s.itpLocal ? { internalTrafficPolicy: 'Local' } : {}),
        ...(s.affinity ? { sessionAffinity: 'ClientIP' } : {}),
        ...(s.externalIP ? { externalIPs: [`192.168.99.${i + 1}`] } : {}),
        ...(s.sourceRanges ? { loadBalancerSourceRanges: ['203.0.113.0/24'] } : {}),
      },
      ...(s.type === 'LoadBalancer' ? { status: { loadBalancer: { ingress: [{ ip: `198.51.100.${i + 1}` }] } } } : {}),
    });
    endpointSlices.push({
      metadata: { namespace: 'ns', name: `${name}-x`, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      endpoints: s.endpoints.map((e) => ({ addresses: [`10.1.${i}.${e.host}`], nodeName: e.local ? 'node-a' : 'node-b', conditions: { ready: e.ready, serving: e.ready || e.terminating, terminating: e.terminating } })),
      ports: s.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: 8080 })),
    });
  });
  return { services, endpointSlices };
}

function tables(text: string) {
  const out = new Map<string, { declared: Set<string>; filled: Set<string>; jumped: Set<string> }>();
  let cur: { declared: Set<string>; filled: Set<string>; jumped: Set<string> } | undefined;
  for (const l of text.split('\n')) {
    if (l.startsWith('*')) out.set(l.slice(1), (cur = { declared: new Set(), filled: new Set(), jumped: new Set() }));
    else if (l.startsWith(':')) cur!.declared.add(l.slice(1).split(' ')[0]!);
    else if (l.startsWith('-A ')) {
      cur!.filled.add(l.split(' ')[1]!);
      const j = / -j (\S+)/.exec(l);
      if (j && !BUILTIN.has(j[1]!)) cur!.jumped.add(j[1]!);
    }
  }
  return out;
}

test('rendering is deterministic and every jump target and filled chain is declared', (t) => {
  fc.assert(fc.property(fc.array(arbService, { maxLength: 8 }), (specs) => {
    const c = cluster(specs);
    const a = renderIptables({ cluster: c, settings: settings() });
    const b = renderIptables({ cluster: structuredClone(c), settings: settings() });
    if (a.text !== b.text) return false;
    for (const [, tbl] of tables(a.text)) {
      for (const j of tbl.jumped) if (!tbl.declared.has(j)) return false;
      for (const f of tbl.filled) if (!tbl.declared.has(f)) return false;
      // every jumped-to service chain has rules (an empty chain would just fall through)
      for (const j of tbl.jumped) if (j !== 'KUBE-NODEPORTS' && !tbl.filled.has(j)) return false;
    }
    return true;
  }), { numRuns: 150 });
  t.pass();
});

test('the random rules of a service chain give every endpoint an equal share', (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 60 }), (n) => {
    const c = cluster([{ type: 'ClusterIP', ports: [{ name: 'a', protocol: 'TCP' }], etpLocal: false, itpLocal: false, affinity: false, externalIP: false, sourceRanges: false,
      endpoints: Array.from({ length: n }, (_, i) => ({ host: i + 1, local: false, ready: true, terminating: false })) }]);
    const r = renderIptables({ cluster: c, settings: settings() });
    const rules = r.text.split('\n').filter((l) => l.startsWith('-A KUBE-SVC-') && l.includes('-j KUBE-SEP-'));
    if (rules.length !== n) return false;
    // P(endpoint i) = p_i * prod_{j<i} (1 - p_j); the last rule takes whatever is left.
    let remaining = 1;
    for (const l of rules) {
      const m = / --probability (\S+) /.exec(l);
      const p = m ? Number(m[1]) : 1;
      const share = remaining * p;
      if (Math.abs(share - 1 / n) > 1e-6) return false;
      remaining -= share;
    }
    return Math.abs(remaining) < 1e-6;
  }));
  t.pass();
});
