// Debian's real kubectl (1.32) against the lab API on a real etcd, with an administrator's
// kubeconfig, for Namespaces, Nodes, Pods, Services, Endpoints and EndpointSlices: discovery,
// get (all namespaces, -o wide|yaml|json, label selectors, -w), create -f, apply -f (create,
// change, unchanged), replace (and a stale one), patch (strategic, merge, json), label,
// annotate, delete; and the errors kubectl prints from Status objects: 404, 409 AlreadyExists
// and Conflict, 422 Invalid naming the field, 400 for a malformed body.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { startEtcd } from '../helpers/etcd.ts';
import { ADMIN_TOKEN, eventually, startLabApi } from '../helpers/lab-api.ts';
import { kubeconfigText } from '../../src/lab/topology.ts';

interface Out { code: number | null; stdout: string; stderr: string }

async function kubectlLab(t: ExecutionContext) {
  const etcd = await startEtcd(t);
  // kubectl sends no token over plain HTTP: it is trusted as a client in the API's own
  // namespace, as in the lab (the connection comes from the listener's own address).
  const lab = await startLabApi(t, { etcdEndpoint: etcd.endpoint, trustLocalConnections: true });
  const home = mkdtempSync(join(tmpdir(), 'knt-k-kubectl-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const kubeconfig = join(home, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigText(`http://127.0.0.1:${lab.port}`, ADMIN_TOKEN, 'admin'));
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home };
  const file = (name: string, text: string) => { const p = join(home, name); writeFileSync(p, text); return p; };
  const kubectl = (args: string[], input?: string): Promise<Out> => new Promise((resolve, reject) => {
    const p = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(home, 'cache'), ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    p.once('error', (err) => reject(new Error(`kubectl could not run (scripts/setup.sh installs Debian's kubernetes-client): ${err.message}`)));
    // 'close', not 'exit': the last of stdout may arrive after the process has exited.
    p.once('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(input ?? '');
  });
  /** kubectl that must succeed; its stdout. */
  const ok = async (args: string[], input?: string): Promise<string> => {
    const r = await kubectl(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  /** kubectl that must fail; its stderr. */
  const fails = async (args: string[], input?: string): Promise<string> => {
    const r = await kubectl(args, input);
    if (r.code === 0) throw new Error(`kubectl ${args.join(' ')} succeeded: ${r.stdout}`);
    return r.stderr;
  };
  return { lab, kubectl, ok, fails, file, kubeconfig, home, env };
}

const rows = (text: string) => text.trim().split('\n').map((l) => l.trim().split(/\s{2,}/));

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo, labels: {app: db}}
spec:
  type: NodePort
  selector: {app: db}
  ports: [{port: 5432, nodePort: 30432}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: web, image: nginx, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: demo, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [192.168.50.200], conditions: {ready: true}}]
ports: [{name: echo, port: 9090, protocol: TCP}]
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1}}
status:
  addresses: [{type: InternalIP, address: 192.168.50.1}]
  conditions: [{type: Ready, status: "True"}]
`;

test('kubectl: discovery, create -f, get in every form, label/annotate, delete', async (t) => {
  const { ok, fails, kubectl, file } = await kubectlLab(t);
  // Discovery: the resources kubectl can name, with short names.
  const resources = rows(await ok(['api-resources', '--no-headers']));
  t.deepEqual(resources.map((r) => r[0]).sort(), ['endpoints', 'endpointslices', 'namespaces', 'nodes', 'pods', 'services']);
  t.deepEqual(resources.find((r) => r[0] === 'services'), ['services', 'svc', 'v1', 'true', 'Service']);
  t.deepEqual((await ok(['api-versions'])).trim().split('\n'), ['discovery.k8s.io/v1', 'v1']);
  t.regex(await ok(['version']), /Server Version: v1\.32\.0-knet-lab-stand-in/);

  const created = await ok(['create', '-f', file('all.yaml', MANIFEST)]);
  t.deepEqual(created.trim().split('\n'), ['namespace/demo created', 'service/web created', 'service/db created', 'pod/web-1 created', 'endpointslice.discovery.k8s.io/ext-1 created', 'node/node-1 created']);
  t.regex(await fails(['create', '-f', file('one.yaml', MANIFEST.split('---')[1]!)]), /Error from server \(AlreadyExists\): error when creating ".*one\.yaml": services "web" already exists/);

  // get: all namespaces, wide, selectors, yaml, json; the columns a real cluster prints.
  const all = rows(await ok(['get', 'svc', '-A']));
  t.deepEqual(all[0], ['NAMESPACE', 'NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'AGE']);
  t.deepEqual(all.slice(1).map((r) => r.slice(0, 6)), [['demo', 'db', 'NodePort', '10.254.0.11', '<none>', '5432:30432/TCP'], ['demo', 'web', 'ClusterIP', '10.254.0.10', '<none>', '80/TCP']]);
  const wide = rows(await ok(['get', 'svc', '-n', 'demo', '-o', 'wide', '-l', 'app=web']));
  t.deepEqual(wide[0], ['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'AGE', 'SELECTOR']);
  t.is(wide.length, 2);
  t.is(wide[1]![6], 'app=web');
  t.regex(await ok(['get', 'svc', '-n', 'demo', '-l', 'app=nothing']), /^$/);
  const yaml = parseAllDocuments(await ok(['get', 'svc', 'web', '-n', 'demo', '-o', 'yaml']))[0]!.toJS();
  t.like(yaml, { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'demo' }, spec: { clusterIP: '10.254.0.10', ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] } });
  const json = JSON.parse(await ok(['get', 'svc', '-A', '-o', 'json']));
  t.is(json.kind, 'List');
  t.deepEqual(json.items.map((s: { metadata: { name: string } }) => s.metadata.name), ['db', 'web']);
  const pods = rows(await ok(['get', 'pods', '-A', '-o', 'wide']));
  t.deepEqual(pods[0], ['NAMESPACE', 'NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'IP', 'NODE', 'NOMINATED NODE', 'READINESS GATES']);
  t.deepEqual(pods[1]!.slice(0, 5), ['demo', 'web-1', '0/1', 'Pending', '0']);
  const nodes = rows(await ok(['get', 'nodes', '-o', 'wide']));
  t.deepEqual(nodes[0]!.slice(0, 3), ['NAME', 'STATUS', 'ROLES']);
  t.deepEqual(nodes[1]!.slice(0, 2), ['node-1', 'Ready']);
  t.true(nodes[1]!.includes('192.168.50.1'), 'INTERNAL-IP');
  t.regex(await ok(['get', 'node', 'node-1', '-o', 'jsonpath={.spec.podCIDR}']), /^10\.244\.0\.0\/24$/);
  const slices = rows(await ok(['get', 'endpointslices', '-n', 'demo']));
  t.deepEqual(slices[0], ['NAME', 'ADDRESSTYPE', 'PORTS', 'ENDPOINTS', 'AGE']);
  t.deepEqual(slices.find((r) => r[0] === 'ext-1')!.slice(1, 4), ['IPv4', '9090', '192.168.50.200']);
  t.true(slices.some((r) => r[0] === 'web-lab'), 'the slice derived for web');
  t.deepEqual(rows(await ok(['get', 'endpoints', '-n', 'demo']))[0], ['NAME', 'ENDPOINTS', 'AGE']);
  t.deepEqual(rows(await ok(['get', 'ns'])).map((r) => r[0]), ['NAME', 'default', 'demo', 'kube-node-lease', 'kube-public', 'kube-system']);

  // label and annotate (merge patches), including overwrite and removal.
  t.regex(await ok(['label', 'svc', 'web', '-n', 'demo', 'tier=front']), /service\/web labeled/);
  t.regex(await fails(['label', 'svc', 'web', '-n', 'demo', 'tier=back']), /already has a value \(front\)/);
  await ok(['label', 'svc', 'web', '-n', 'demo', 'tier=back', '--overwrite']);
  await ok(['annotate', 'svc', 'web', '-n', 'demo', 'note=hello']);
  await ok(['label', 'svc', 'web', '-n', 'demo', 'app-']);
  const labelled = JSON.parse(await ok(['get', 'svc', 'web', '-n', 'demo', '-o', 'json']));
  t.deepEqual(labelled.metadata.labels, { tier: 'back' });
  t.is(labelled.metadata.annotations.note, 'hello');
  t.regex(await ok(['get', 'svc', '-A', '-l', 'tier=back', '--show-labels']), /web .* tier=back/);

  // delete: waits until gone, then NotFound; a namespace takes its content with it.
  t.regex(await ok(['delete', 'svc', 'db', '-n', 'demo']), /service "db" deleted/);
  t.regex(await fails(['get', 'svc', 'db', '-n', 'demo']), /Error from server \(NotFound\): services "db" not found/);
  t.regex(await ok(['delete', 'ns', 'demo']), /namespace "demo" deleted/);
  t.regex(await fails(['get', 'ns', 'demo']), /NotFound/);
  t.is((await kubectl(['get', 'pods', '-A', '--no-headers'])).stdout, '');
});

test('kubectl: apply (create, change, unchanged), replace and a stale replace, patch of each type, errors', async (t) => {
  const { ok, fails, file, kubectl } = await kubectlLab(t);
  const svc = (targetPort: number, extra = '') => `apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: ${targetPort}}]${extra}
`;
  t.is(await ok(['apply', '-f', file('a.yaml', svc(8080))]), 'service/web created\n');
  t.is(await ok(['apply', '-f', file('a.yaml', svc(9090))]), 'service/web configured\n');
  t.is(await ok(['apply', '-f', file('a.yaml', svc(9090))]), 'service/web unchanged\n');
  const applied = JSON.parse(await ok(['get', 'svc', 'web', '-o', 'json']));
  t.is(applied.spec.ports[0].targetPort, 9090);
  t.is(applied.spec.clusterIP, '10.254.0.10');
  t.is(JSON.parse(applied.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']).spec.ports[0].targetPort, 9090, 'client-side apply keeps its last-applied annotation');
  // A field removed from the manifest is removed from the object (three-way merge).
  await ok(['apply', '-f', file('b.yaml', svc(9090, '\n  sessionAffinity: ClientIP'))]);
  t.is(JSON.parse(await ok(['get', 'svc', 'web', '-o', 'json'])).spec.sessionAffinity, 'ClientIP');
  await ok(['apply', '-f', file('b.yaml', svc(9090))]);
  t.is(JSON.parse(await ok(['get', 'svc', 'web', '-o', 'json'])).spec.sessionAffinity, 'None');
  // kubectl validates strictly: the server refuses unknown fields.
  t.regex(await fails(['apply', '-f', file('c.yaml', svc(9090, '\n  selektor: {app: x}'))]), /strict decoding error: unknown field "spec\.selektor"/);

  // replace: what get -o yaml printed goes back; once it is stale, Conflict.
  const current = await ok(['get', 'svc', 'web', '-o', 'yaml']);
  t.is(await ok(['replace', '-f', file('cur.yaml', current.replace('targetPort: 9090', 'targetPort: 7000'))]), 'service/web replaced\n');
  t.regex(await fails(['replace', '-f', file('cur.yaml', current)]), /Error from server \(Conflict\): error when replacing ".*cur\.yaml": Operation cannot be fulfilled on services "web": the object has been modified/);

  // patch: strategic merge (kubectl's default), merge, json.
  await ok(['patch', 'svc', 'web', '-p', '{"spec":{"ports":[{"port":80,"targetPort":6000}]}}']);
  await ok(['patch', 'svc', 'web', '--type', 'merge', '-p', '{"spec":{"type":"NodePort"}}']);
  await ok(['patch', 'svc', 'web', '--type', 'json', '-p', '[{"op":"add","path":"/spec/externalIPs","value":["192.168.50.100"]}]']);
  const patched = JSON.parse(await ok(['get', 'svc', 'web', '-o', 'json']));
  t.like(patched.spec, { type: 'NodePort', externalIPs: ['192.168.50.100'], externalTrafficPolicy: 'Cluster', ports: [{ name: 'http', port: 80, targetPort: 6000, nodePort: 30000, protocol: 'TCP' }] });
  // Back to ClusterIP: the NodePort and the external policy it had go with the type.
  await ok(['patch', 'svc', 'web', '--type', 'merge', '-p', '{"spec":{"type":"ClusterIP"}}']);
  const back = JSON.parse(await ok(['get', 'svc', 'web', '-o', 'json']));
  t.is(back.spec.ports[0].nodePort, undefined);
  t.is(back.spec.externalTrafficPolicy, undefined);

  // 422 names the field; 404; 400 for a body that is not JSON.
  t.regex(await fails(['patch', 'svc', 'web', '--type', 'merge', '-p', '{"spec":{"externalIPs":["127.0.0.1"]}}']),
    /The Service "web" is invalid: spec\.externalIPs\[0\]: Invalid value: "127\.0\.0\.1": may not be in the loopback range/);
  t.regex(await fails(['apply', '-f', file('d.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 70000}]}\n')]),
    /The Service "bad" is invalid: \n\* spec\.ports\[0\]\.port: Invalid value: 70000: must be between 1 and 65535, inclusive\n/);
  t.regex(await fails(['patch', 'svc', 'nope', '-p', '{}']), /Error from server \(NotFound\): services "nope" not found/);
  const malformed = await kubectl(['create', '--raw', '/api/v1/namespaces/default/services', '-f', file('bad.json', '{"metadata": {"name": ')]);
  t.not(malformed.code, 0);
  t.regex(malformed.stderr, /Error from server \(BadRequest\): the request body is not valid JSON/);
  // kubectl's typed generators send protobuf; the lab API reads it for these two kinds.
  t.is(await ok(['create', 'namespace', 'gen']), 'namespace/gen created\n');
  t.is(await ok(['create', 'service', 'nodeport', 'gen', '-n', 'gen', '--tcp', '80:8080', '--node-port', '30123']), 'service/gen created\n');
  t.is(await ok(['create', 'service', 'externalname', 'ext', '-n', 'gen', '--external-name', 'db.example.com']), 'service/ext created\n');
  const gen = JSON.parse(await ok(['get', 'svc', 'gen', '-n', 'gen', '-o', 'json']));
  t.like(gen, { metadata: { labels: { app: 'gen' } }, spec: { type: 'NodePort', selector: { app: 'gen' }, ports: [{ name: '80-8080', port: 80, targetPort: 8080, nodePort: 30123, protocol: 'TCP' }] } });
  t.like(JSON.parse(await ok(['get', 'svc', 'ext', '-n', 'gen', '-o', 'json'])).spec, { type: 'ExternalName', externalName: 'db.example.com' });
  t.regex(await fails(['create', 'configmap', 'x', '--from-literal', 'a=b']), /NotFound|could not find/);
  t.regex(await ok(['delete', '-f', file('a.yaml', svc(1))]), /service "web" deleted/);
});

test('kubectl get -w: the table, then one row per change', async (t) => {
  const { ok, file, kubeconfig, home, env } = await kubectlLab(t);
  await ok(['apply', '-f', file('w.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n')]);
  const p = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(home, 'cache'), 'get', 'svc', '-w'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => p.kill());
  let out = '';
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  await eventually('the first rows', () => out.includes('web'));
  await ok(['label', 'svc', 'web', 'x=y']);
  await ok(['apply', '-f', file('w2.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: 8080}]}\n')]);
  await ok(['delete', 'svc', 'web']);
  await eventually('four rows', () => out.trim().split('\n').length >= 5);
  const lines = rows(out);
  t.deepEqual(lines[0], ['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'AGE']);
  t.deepEqual(lines.slice(1).map((r) => r[0]), ['web', 'web', 'api', 'web']);
  t.deepEqual(lines[3]!.slice(1, 5), ['ClusterIP', '10.254.0.11', '<none>', '8080/TCP']);
});
