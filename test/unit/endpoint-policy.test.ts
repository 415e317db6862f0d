// One endpoint policy for every data plane: the same table of cases runs through the pure
// selection (src/rules/endpoints.ts) and through each mode's output (iptables rules, the
// nftables table), which must send internal (cluster IP) and external (node port) traffic to
// exactly the endpoints the policy chose.
import test from 'ava';
import { loadManifestText } from '../../src/k8s/manifests.ts';
import { buildServiceModel } from '../../src/rules/model.ts';
import { selectEndpoints } from '../../src/rules/endpoints.ts';
import { listenersFor } from '../../src/proxy/userspace/dataplane.ts';
import { render, rulesOf, settings, slice, svc } from '../helpers/rules.ts';
import { nftablesText, renderNftables } from '../../src/rules/nftables.ts';
import { traceFlow } from '../helpers/nft-trace.ts';

interface PolicyCase {
  name: string;
  spec: string;
  endpoints: string[];
  internal: string[];
  /** Where traffic from outside to the node port goes (null: the port has no node port). */
  external: string[] | null;
}

const ep = (ip: string, node: string, conditions = '') => `- {addresses: [${ip}], nodeName: ${node}${conditions ? `, conditions: {${conditions}}` : ''}}`;
const local = (ip: string, c = '') => ep(ip, 'node-a', c);
const remote = (ip: string, c = '') => ep(ip, 'node-b', c);
const TERMINATING = 'ready: false, serving: true, terminating: true';
const GONE = 'ready: false, serving: false, terminating: true';
const clusterIP = 'clusterIP: 172.30.0.10\nports:\n- {name: p80, port: 80, protocol: TCP}';
const nodePort = (extra: string) => `type: NodePort\nclusterIP: 172.30.0.10\n${extra}\nports:\n- {name: p80, port: 80, nodePort: 30080, protocol: TCP}`;

export const POLICY_CASES: PolicyCase[] = [
  { name: 'Cluster policy: every ready endpoint', spec: clusterIP, endpoints: [local('10.1.0.1'), remote('10.2.0.1')], internal: ['10.1.0.1:80', '10.2.0.1:80'], external: null },
  { name: 'internalTrafficPolicy Local: only this node', spec: `${clusterIP}\ninternalTrafficPolicy: Local`, endpoints: [local('10.1.0.1'), remote('10.2.0.1')], internal: ['10.1.0.1:80'], external: null },
  { name: 'internalTrafficPolicy Local, no local endpoint: nowhere', spec: `${clusterIP}\ninternalTrafficPolicy: Local`, endpoints: [remote('10.2.0.1')], internal: [], external: null },
  { name: 'externalTrafficPolicy Local: outside traffic stays on this node, internal does not', spec: nodePort('externalTrafficPolicy: Local'), endpoints: [local('10.1.0.1'), remote('10.2.0.1')], internal: ['10.1.0.1:80', '10.2.0.1:80'], external: ['10.1.0.1:80'] },
  { name: 'externalTrafficPolicy Local, no local endpoint: outside traffic nowhere', spec: nodePort('externalTrafficPolicy: Local'), endpoints: [remote('10.2.0.1')], internal: ['10.2.0.1:80'], external: [] },
  { name: 'both policies Local', spec: nodePort('externalTrafficPolicy: Local\ninternalTrafficPolicy: Local'), endpoints: [local('10.1.0.1'), remote('10.2.0.1')], internal: ['10.1.0.1:80'], external: ['10.1.0.1:80'] },
  { name: 'no ready endpoint: serving terminating ones, never non-serving ones', spec: nodePort(''), endpoints: [remote('10.2.0.1', TERMINATING), remote('10.2.0.2', GONE)], internal: ['10.2.0.1:80'], external: ['10.2.0.1:80'] },
  { name: 'ready endpoints win over terminating ones', spec: clusterIP, endpoints: [remote('10.2.0.1', TERMINATING), remote('10.2.0.3')], internal: ['10.2.0.3:80'], external: null },
  { name: 'Local fallback: the local terminating endpoint, though a remote one is ready', spec: nodePort('externalTrafficPolicy: Local'), endpoints: [local('10.1.0.1', TERMINATING), remote('10.2.0.1')], internal: ['10.2.0.1:80'], external: ['10.1.0.1:80'] },
  { name: 'an address listed twice: the copy that is not terminating wins, wherever it comes', spec: clusterIP, endpoints: [remote('10.2.0.1'), local('10.2.0.1', GONE)], internal: ['10.2.0.1:80'], external: null },
  { name: 'an address listed twice: a later copy that is not terminating replaces a terminating one', spec: nodePort('externalTrafficPolicy: Local'), endpoints: [remote('10.2.0.1', GONE), local('10.2.0.1')], internal: ['10.2.0.1:80'], external: ['10.2.0.1:80'] },
  { name: 'no endpoints', spec: nodePort(''), endpoints: [], internal: [], external: [] },
];

const manifests = (c: PolicyCase) => svc('web', c.spec) + (c.endpoints.length ? slice('web', c.endpoints.join('\n')) : '');

function modelPort(c: PolicyCase) {
  const model = buildServiceModel(loadManifestText(manifests(c), 'test.yaml').cluster, settings());
  return model.ports[0]!;
}

const addrs = (eps: readonly { addr: string }[]) => eps.map((e) => e.addr).sort();

/** Follows iptables jumps from a rule to the DNAT targets it can end in. */
function iptablesDestinations(text: string, jumpRule: string | undefined, seen = new Set<string>()): string[] {
  const target = jumpRule?.match(/ -j (KUBE-[A-Z]+-[A-Z0-9]+)$/)?.[1];
  if (!target || seen.has(target)) return [];
  seen.add(target);
  const rules = rulesOf(text, target);
  const dnat = rules.map((r) => r.match(/--to-destination (\S+)/)?.[1]).filter((x): x is string => !!x);
  if (target.startsWith('KUBE-SEP-')) return dnat;
  if (target.startsWith('KUBE-EXT-')) {
    // Outside traffic takes the EXT chain's unconditional last rule; the others serve pods and the node.
    const last = rules.at(-1);
    return last && !/ -s | --src-type /.test(last) ? iptablesDestinations(text, last, seen) : [];
  }
  return [...new Set(rules.flatMap((r) => iptablesDestinations(text, r, seen)))].sort();
}

for (const c of POLICY_CASES) {
  test(`selection: ${c.name}`, (t) => {
    const s = selectEndpoints(modelPort(c));
    t.deepEqual(addrs(s.internal), c.internal);
    t.is(s.hasInternal, c.internal.length > 0);
    if (c.external) {
      t.deepEqual(addrs(s.external), c.external);
      t.is(s.hasExternal, c.external.length > 0);
    }
  });

  test(`iptables: ${c.name}`, (t) => {
    const text = render(manifests(c)).text;
    const internal = rulesOf(text, 'KUBE-SERVICES').find((r) => r.includes('-d 172.30.0.10 ') && r.includes('--dport 80'));
    t.deepEqual(iptablesDestinations(text, internal), c.internal);
    if (c.external) {
      const external = rulesOf(text, 'KUBE-NODEPORTS').find((r) => r.includes('--dport 30080'));
      t.deepEqual(iptablesDestinations(text, external), c.external);
    }
  });

  test(`userspace: ${c.name}`, (t) => {
    // The listener of each kind of traffic balances over exactly the chosen endpoints; outside
    // traffic uses the internal listener when no listener of its own is needed.
    const listeners = listenersFor(modelPort(c));
    const internal = listeners.find((l) => l.traffic === 'internal')!;
    t.deepEqual([...internal.endpoints].sort(), c.internal);
    if (c.external) t.deepEqual([...(listeners.find((l) => l.traffic === 'external') ?? internal).endpoints].sort(), c.external);
  });
}

/** Where the nftables table sends a packet: the DNAT targets, none when it drops or rejects. */
function nftDestinations(text: string, src: string, dst: string, port: number): string[] {
  const out = traceFlow(text, { src, dst, port }, ['192.168.0.2']).output;
  return out === 'DROP' || out === 'REJECT' || out === '' ? [] : out.split(', ').sort();
}

for (const c of POLICY_CASES) {
  test(`nftables: ${c.name}`, (t) => {
    const text = nftablesText(renderNftables({ cluster: loadManifestText(manifests(c), 'test.yaml').cluster, settings: settings() }));
    t.deepEqual(nftDestinations(text, '10.0.0.2', '172.30.0.10', 80), c.internal);
    if (c.external) t.deepEqual(nftDestinations(text, '203.0.113.2', '192.168.0.2', 30080), c.external);
  });
}
