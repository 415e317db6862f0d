// `knet rules --proxy-mode nftables`: the mode from the flag or the config, --since, --explain,
// and clear errors for a mode knet rules cannot print.
import test from 'ava';
import { parseKnetArgs } from '../helpers/cli-args.ts';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRules } from '../../src/cli/rules.ts';

function run(args: Partial<Parameters<typeof runRules>[0]>) {
  let out = '';
  let err = '';
  const code = runRules({ file: [], nodeIp: ['192.168.0.2'], ipFamily: 'IPv4', interfaceAddress: ['eth0=192.168.0.2/24'], nodeName: 'test-node', ...args }, (s) => { out += typeof s === 'string' ? s : Buffer.from(s).toString('utf8'); }, (s) => { err += s; });
  return { code, out, err };
}

function files(t: import('ava').ExecutionContext, texts: Record<string, string>): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'knet-nft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return Object.fromEntries(Object.entries(texts).map(([name, text]) => { writeFileSync(join(dir, name), text); return [name, join(dir, name)]; }));
}

const SVC = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec:
  type: NodePort
  clusterIP: 172.30.0.10
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]
---
`;
const EPS = (ip: string) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: ns1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [${ip}], nodeName: other}]
ports: [{name: http, port: 8080, protocol: TCP}]
`;

test('the mode comes from --proxy-mode or from the config; the table is printed whole', (t) => {
  const f = files(t, { 'c.yaml': SVC + EPS('10.1.0.5'), 'nft.yaml': 'mode: nftables\nclusterCIDR: 10.0.0.0/8\n', 'ipt.yaml': 'clusterCIDR: 10.0.0.0/8\n' });
  const byFlag = run({ file: [f['c.yaml']!], config: f['ipt.yaml']!, proxyMode: 'nftables' });
  const byConfig = run({ file: [f['c.yaml']!], config: f['nft.yaml']! });
  t.is(byFlag.code, 0, byFlag.err);
  t.is(byFlag.out, byConfig.out);
  t.true(byFlag.out.startsWith('add table ip kube-proxy { comment "rules for kube-proxy" ; }\n'));
  t.regex(byFlag.out, /^add element ip kube-proxy nodeport-ips \{ 192\.168\.0\.2 \}$/m);
  t.regex(byFlag.out, /^add element ip kube-proxy no-endpoint-nodeports \{ tcp \. 30080 comment "ns1\/web:http" : drop \}$/m);
  t.regex(run({ file: [f['c.yaml']!], config: f['nft.yaml']!, proxyMode: 'iptables' }).out, /^\*filter$/m);
});

test('--since prints the table after the next sync, the chains it stopped using flushed', (t) => {
  const f = files(t, { 'now.yaml': SVC + EPS('10.1.0.6'), 'before.yaml': SVC + EPS('10.1.0.5') });
  const r = run({ file: [f['now.yaml']!], since: f['before.yaml']!, proxyMode: 'nftables' });
  t.is(r.code, 0, r.err);
  const old = r.out.split('\n').filter((l) => l.includes('__10.1.0.5/8080'));
  t.is(old.length, 1);
  t.regex(old[0]!, /^add chain ip kube-proxy endpoint-[A-Z2-7]{8}-ns1\/web\/tcp\/http__10\.1\.0\.5\/8080$/);
  t.regex(r.out, /dnat to 10\.1\.0\.6:8080/);
});

test('--explain says where packets go in nftables terms', (t) => {
  const f = files(t, { 'c.yaml': SVC + EPS('10.1.0.5'), 'k.yaml': 'clusterCIDR: 10.0.0.0/8\n' });
  const r = run({ file: [f['c.yaml']!], config: f['k.yaml']!, proxyMode: 'nftables', explain: true });
  t.is(r.code, 0, r.err);
  t.regex(r.out, /table ip kube-proxy: \d+ chains, \d+ rules, \d+ map and set elements/);
  t.regex(r.out, /@service-ips "172\.30\.0\.10 \. tcp \. 80" -> goto service-[A-Z2-7]{8}-ns1\/web\/tcp\/http -> endpoint-[A-Z2-7]{8}-ns1\/web\/tcp\/http__10\.1\.0\.5\/8080 \(dnat to 10\.1\.0\.5:8080\)/);
  t.regex(r.out, /outside\s+@no-endpoint-nodeports "tcp \. 30080" -> drop: no local endpoints \(externalTrafficPolicy Local\)/);
  t.regex(r.out, /from outside 10\.0\.0\.0\/8\s+the same, after jump mark-for-masquerade \(masqueraded on the way out\)/);
  t.regex(r.out, /from pods \(10\.0\.0\.0\/8\)\s+@service-nodeports "tcp \. 30080" -> goto external-[^:]+: goto service-[^ ]+ \(short-circuit\)/);
});

test('a mode knet rules cannot print is exit 2 with the choices', (t) => {
  const f = files(t, { 'c.yaml': SVC });
  const r = run({ file: [f['c.yaml']!], proxyMode: 'ipvs' });
  t.is(r.code, 2);
  t.regex(r.err, /--proxy-mode must be iptables or nftables, got "ipvs"/);
  const bad = files(t, { 'k.yaml': 'mode: nftables\nnftables: {masqueradeBit: 99}\n' });
  const r2 = run({ file: [f['c.yaml']!], config: bad['k.yaml']! });
  t.is(r2.code, 2);
  t.regex(r2.err, /k\.yaml:2:\d+: nftables\.masqueradeBit: must be within the range \[0, 31\], got 99/);
});

test('knet proxy: netlink batches on by default; --no-nftables-netlink turns them off; the old opt-in flag is still accepted', (t) => {
  const netlink = (extra: string[]) => parseKnetArgs(['proxy', '--proxy-mode', 'nftables', ...extra]).opts.nftablesNetlink;
  t.is(netlink([]), true);
  t.is(netlink(['--nftables-netlink']), true);
  t.is(netlink(['--no-nftables-netlink']), false);
});
