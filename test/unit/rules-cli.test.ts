import test from 'ava';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRules } from '../../src/cli/rules.ts';

function run(args: Partial<Parameters<typeof runRules>[0]>) {
  let out = '';
  let err = '';
  const code = runRules({ file: [], nodeIp: [], ipFamily: 'IPv4', interfaceAddress: [], ...args }, (s) => { out += typeof s === 'string' ? s : Buffer.from(s).toString('utf8'); }, (s) => { err += s; });
  return { code, out, err };
}

function tmp(t: import('ava').ExecutionContext, name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'knet-rules-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

test('broken YAML exits 2 naming file and line', (t) => {
  const f = tmp(t, 'bad.yaml', 'apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n');
  const r = run({ file: [f] });
  t.is(r.code, 2);
  t.regex(r.err, /bad\.yaml:\d+:\d+: /);
});

test('broken JSON exits 2 naming file and line', (t) => {
  const f = tmp(t, 'bad.json', '{\n  "kind": "Service",\n  "metadata": {\n}}}\n');
  const r = run({ file: [f] });
  t.is(r.code, 2);
  t.regex(r.err, /bad\.json:4:\d+: /);
});

test('missing file and bad flags are clear errors', (t) => {
  t.regex(run({ file: ['/nonexistent/x.yaml'] }).err, /cannot read \/nonexistent\/x.yaml: ENOENT/);
  t.is(run({ file: [] }).code, 2);
  const f = tmp(t, 'a.yaml', '');
  t.regex(run({ file: [f], ipFamily: 'IPv5' }).err, /--ip-family/);
  t.regex(run({ file: [f], interfaceAddress: ['eth0'] }).err, /IFACE=CIDR/);
});

test('example cluster renders and explains', (t) => {
  const r = run({ file: ['examples/cluster.yaml'], config: 'examples/kube-proxy.yaml', nodeIp: ['192.168.3.147'] });
  t.is(r.code, 0, r.err);
  t.true(r.out.startsWith('*filter\n'));
  const e = run({ file: ['examples/cluster.yaml'], config: 'examples/kube-proxy.yaml', nodeIp: ['192.168.3.147'], explain: true });
  t.regex(e.out, /default\/mysql TCP port 3036: 1 endpoint .*\n.*\n  10\.254\.162\.44:3036 cluster IP .* 192\.168\.3\.180:3306/);
  t.regex(e.out, /other sources +DROP \(loadBalancerSourceRanges/);
  t.regex(e.out, /REJECT: no endpoints/);
});

test('--since prints a partial sync', (t) => {
  const prev = tmp(t, 'prev.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 172.30.0.1, ports: [{port: 80}]}\n');
  const cur = tmp(t, 'cur.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 172.30.0.1, ports: [{port: 81}]}\n');
  const r = run({ file: [cur], since: prev });
  t.is(r.code, 0);
  t.true(r.out.includes('x/a has no endpoints'));
});
