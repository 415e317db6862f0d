// `knet rules` loads only what kubectl's YAML needs: js-yaml (for YAML the fast reader declines)
// and node:crypto (for chain names that are not short ASCII) load on first use, not at start-up.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const KNET = resolve('dist/knet.js');

/**
 * Runs the built CLI. Whether js-yaml was loaded (as an ES module or through require) shows in
 * Node's own module debug log; whether node:crypto was, in the list of built-ins a preload prints.
 */
function loadedBy(args: string[], dir: string): { status: number | null; stdout: string; loaded: { jsYaml: boolean; crypto: boolean } } {
  const probe = join(dir, 'probe.cjs');
  writeFileSync(probe, `process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify({
    crypto: process.moduleLoadList.includes('NativeModule crypto'),
  }) + '\\n'));\n`);
  const r = spawnSync(process.execPath, ['--require', probe, KNET, ...args], { encoding: 'utf8', env: { ...process.env, NODE_DEBUG: 'esm,module' } });
  const line = /LOADED (.*)/.exec(r.stderr);
  if (!line) throw new Error(`no probe output: ${r.stderr.slice(-2000)}`);
  return { status: r.status, stdout: r.stdout, loaded: { jsYaml: r.stderr.includes('/node_modules/js-yaml/'), ...JSON.parse(line[1]!) } };
}

test('knet rules on a kubectl dump (timestamps, CIDRs, addresses) loads neither js-yaml nor node:crypto; YAML it must fall back on loads js-yaml', (t) => {
  t.true(existsSync(KNET), 'run npm run build first');
  const dir = mkdtempSync(join(tmpdir(), 'knt-startup-'));
  try {
    const dump = `apiVersion: v1
items:
- apiVersion: v1
  kind: Service
  metadata:
    creationTimestamp: "2026-11-02T10:00:00Z"
    name: web
    namespace: default
    resourceVersion: "100"
  spec:
    clusterIP: 10.96.0.10
    loadBalancerSourceRanges:
    - 10.0.0.0/8
    ports:
    - name: http
      port: 80
      protocol: TCP
    type: LoadBalancer
  status:
    loadBalancer:
      ingress:
      - ip: 192.0.2.10
- addressType: IPv4
  apiVersion: discovery.k8s.io/v1
  endpoints:
  - addresses:
    - 10.244.1.5
    conditions:
      ready: true
  kind: EndpointSlice
  metadata:
    creationTimestamp: 2026-11-02T10:00:00Z
    labels:
      kubernetes.io/service-name: web
    name: web-abc
    namespace: default
  ports:
  - name: http
    port: 8080
    protocol: TCP
kind: List
metadata:
  resourceVersion: ""
`;
    const plain = join(dir, 'dump.yaml');
    writeFileSync(plain, dump);
    const fast = loadedBy(['rules', '-f', plain, '--node-name', 'n1', '--node-ip', '192.168.0.2'], dir);
    t.is(fast.status, 0);
    t.regex(fast.stdout, /KUBE-FW-\w+ - \[0:0\]/);
    t.deepEqual(fast.loaded, { jsYaml: false, crypto: false });
    // A flow mapping is outside what the fast reader takes: js-yaml reads it, with the same rules.
    const flow = join(dir, 'flow.yaml');
    writeFileSync(flow, dump.replace('  status:\n    loadBalancer:\n      ingress:\n      - ip: 192.0.2.10\n', '  status: {loadBalancer: {ingress: [{ip: 192.0.2.10}]}}\n'));
    const slow = loadedBy(['rules', '-f', flow, '--node-name', 'n1', '--node-ip', '192.168.0.2'], dir);
    t.is(slow.status, 0);
    t.is(slow.stdout, fast.stdout);
    t.true(slow.loaded.jsYaml);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
