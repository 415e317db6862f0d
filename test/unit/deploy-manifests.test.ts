// deploy/: every manifest parses; the DaemonSet's command lines are accepted by the real CLI
// (and the agent's flags by its own option checks); the ClusterRole grants exactly what the
// agent's kube subnet manager and the proxy's informers call; the ConfigMap's conflist,
// KubeProxyConfiguration, flannel network config and kubeconfig pass knet's own parsers, and
// the kubeconfig reaches the API server without the `kubernetes` Service. The etcd variant in
// deploy/README.md is parsed by the CLI too.
import test from 'ava';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import pino from 'pino';
import { parseKnetArgs } from '../helpers/cli-args.ts';
import { agentOptionsFromFlags } from '../../src/agent/command.ts';
import { parseNetConf } from '../../src/cni/config.ts';
import { parseKubeProxyConfig, proxySettingsFromConfig } from '../../src/rules/config.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { loadKubeConfig } from '../../src/k8s/kubeconfig.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const DEPLOY = join(ROOT, 'deploy');
const IMAGE = 'ghcr.io/knet/knet:dev';

type Obj = Record<string, any>;

function loadDeploy(): Obj[] {
  const files = readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f)).sort();
  const out: Obj[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(join(DEPLOY, f), 'utf8'))) {
      if (doc.errors.length) throw new Error(`${f}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const v = doc.toJS();
      if (v !== null) out.push({ ...v, __file: f });
    }
  }
  return out;
}

const objects = loadDeploy();
const one = (kind: string): Obj => {
  const all = objects.filter((o) => o.kind === kind);
  if (all.length !== 1) throw new Error(`expected one ${kind} in deploy/, found ${all.length}`);
  return all[0]!;
};
const ds = () => one('DaemonSet');
const configMap = () => one('ConfigMap');
const container = (name: string): Obj => {
  const spec = ds().spec.template.spec;
  const c = [...(spec.initContainers ?? []), ...spec.containers].find((x: Obj) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
};

// Sample values for the downward API, as a node would give them.
const FIELD_SAMPLES: Record<string, string> = { 'spec.nodeName': 'kube-node-1', 'status.hostIP': '192.168.3.147' };

/** The container's environment as the kubelet builds it from the ConfigMap and the downward API. */
function containerEnv(c: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (typeof e.value === 'string') env[e.name] = e.value;
    else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      if (ref.name !== configMap().metadata.name) throw new Error(`${e.name}: unknown ConfigMap ${ref.name}`);
      const v = configMap().data[ref.key];
      if (v === undefined && !ref.optional) throw new Error(`${e.name}: ConfigMap key ${ref.key} missing`);
      if (v !== undefined) env[e.name] = v;
    } else if (e.valueFrom?.fieldRef) {
      const v = FIELD_SAMPLES[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`${e.name}: no sample for ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = v;
    } else throw new Error(`${e.name}: unsupported env source`);
  }
  return env;
}

/** The kubelet's $(VAR) expansion in command and args; an undefined variable fails the test. */
function expand(s: string, env: Record<string, string>): string {
  return s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_m, name: string) => {
    if (env[name] === undefined) throw new Error(`$(${name}) is not defined in the container's env`);
    return env[name]!;
  });
}

function knetArgv(c: Obj): string[] {
  const env = containerEnv(c);
  const argv = [...c.command, ...(c.args ?? [])].map((s: string) => expand(s, env));
  if (argv[0] !== 'knet') throw new Error(`${c.name}: command must start with knet, got ${argv[0]}`);
  return argv.slice(1);
}

/** Where a container path comes from when it lies under a ConfigMap mount: the key. */
function configMapKeyAt(c: Obj, path: string): string | undefined {
  const vols = ds().spec.template.spec.volumes as Obj[];
  for (const m of c.volumeMounts ?? []) {
    const v = vols.find((x) => x.name === m.name);
    if (v?.configMap && path.startsWith(`${m.mountPath}/`)) {
      if (v.configMap.name !== configMap().metadata.name) throw new Error(`unknown ConfigMap ${v.configMap.name}`);
      return path.slice(m.mountPath.length + 1);
    }
  }
  return undefined;
}

test('every manifest in deploy/ parses and names its kind, API version and object', (t) => {
  t.true(objects.length >= 5);
  for (const o of objects) {
    t.is(typeof o.apiVersion, 'string', o.__file);
    t.is(typeof o.kind, 'string', o.__file);
    t.is(typeof o.metadata?.name, 'string', o.__file);
  }
  t.deepEqual([...new Set(objects.map((o) => o.kind))].sort(),
    ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount']);
  for (const o of objects.filter((x) => !x.kind.startsWith('Cluster'))) t.is(o.metadata.namespace, 'kube-system', `${o.kind} ${o.metadata.name}`);
});

test('the DaemonSet runs on every node with host networking, privileges and the host paths', (t) => {
  const d = ds();
  t.is(d.apiVersion, 'apps/v1');
  t.deepEqual(d.spec.selector.matchLabels, Object.fromEntries(Object.entries(d.spec.template.metadata.labels).filter(([k]) => k in d.spec.selector.matchLabels)));
  const spec = d.spec.template.spec;
  t.true(spec.hostNetwork);
  t.is(spec.priorityClassName, 'system-node-critical');
  t.true(spec.tolerations.some((x: Obj) => x.operator === 'Exists' && x.key === undefined && x.effect === undefined), 'a toleration for every taint');
  t.is(spec.serviceAccountName, one('ServiceAccount').metadata.name);
  t.deepEqual(spec.initContainers.map((c: Obj) => c.name), ['install-cni']);
  t.deepEqual(spec.containers.map((c: Obj) => c.name).sort(), ['agent', 'proxy']);
  for (const c of [...spec.initContainers, ...spec.containers]) t.is(c.image, IMAGE, c.name);
  for (const name of ['agent', 'proxy']) {
    const sc = container(name).securityContext;
    t.true(sc.privileged, name);
    t.deepEqual([...sc.capabilities.add].sort(), ['NET_ADMIN', 'NET_RAW'], name);
  }
  const hostPaths = new Map((spec.volumes as Obj[]).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath.path]));
  t.deepEqual([...hostPaths.values()].sort(), ['/etc/cni/net.d', '/lib/modules', '/opt/cni/bin', '/run/flannel', '/run/xtables.lock']);
  const mounted = (c: string) => new Set((container(c).volumeMounts as Obj[]).map((m) => hostPaths.get(m.name)).filter(Boolean));
  t.deepEqual([...mounted('install-cni')].sort(), ['/etc/cni/net.d', '/opt/cni/bin']);
  t.deepEqual([...mounted('agent')].sort(), ['/lib/modules', '/run/flannel', '/run/xtables.lock']);
  t.deepEqual([...mounted('proxy')].sort(), ['/lib/modules', '/run/xtables.lock']);
  const volumeNames = new Set((spec.volumes as Obj[]).map((v) => v.name));
  for (const c of [...spec.initContainers, ...spec.containers]) {
    for (const m of c.volumeMounts) t.true(volumeNames.has(m.name), `${c.name} mounts ${m.name}`);
  }
});

test('the proxy container keeps glibc returning large freed blocks (peak RSS at 10k services, scripts/bench/proxy)', (t) => {
  // Without a fixed threshold, glibc raises it at the first large free and keeps later netlink
  // batches in the process: 149-151 MB at 10k services against 134-136 MB.
  t.is(containerEnv(container('proxy')).MALLOC_MMAP_THRESHOLD_, '131072');
});

test('the agent container runs the kube subnet manager; its command line is accepted by `knet agent` and its option checks', (t) => {
  const c = container('agent');
  const parsed = parseKnetArgs(knetArgv(c));
  t.is(parsed.command, 'agent');
  const o = agentOptionsFromFlags(parsed.opts, pino({ level: 'silent' }));
  if (o.source.mode !== 'kube') { t.fail('the agent must run with --kube-subnet-mgr'); return; }
  t.is(configMapKeyAt(c, o.source.netConfPath), 'net-conf.json');
  t.is(configMapKeyAt(c, o.source.kubeconfig!), 'kubeconfig.conf');
  t.true(o.source.setNodeNetworkUnavailable);
  t.is(o.source.annotationPrefix, 'flannel.alpha.coreos.com');
  // Its node is the pod's node, from the downward API.
  t.is(containerEnv(c).NODE_NAME, FIELD_SAMPLES['spec.nodeName']);
  t.is(o.publicIP, FIELD_SAMPLES['status.hostIP']);
  t.is(o.subnetFile, '/run/flannel/subnet.env');
  t.true(o.healthzPort > 0);
  // The readiness probe asks the port the agent serves.
  t.is(c.readinessProbe.httpGet.port, o.healthzPort);
  t.is(c.readinessProbe.httpGet.host, '127.0.0.1');
  // The subnet file lies on the host's /run/flannel, where the CNI plugin reads it.
  t.true((c.volumeMounts as Obj[]).some((m) => m.mountPath === '/run/flannel'));
});

test('the etcd variant in deploy/README.md is a command line `knet agent` accepts', (t) => {
  const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
  const block = /```yaml\n(\s*command: \["knet", "agent"\][\s\S]*?)```/.exec(readme);
  if (!block) { t.fail('no etcd variant of the agent container in deploy/README.md'); return; }
  const doc = parseAllDocuments(block[1]!)[0]!.toJS() as Obj;
  const env = { ETCD_ENDPOINTS: 'http://192.168.3.146:2379', NODE_IP: FIELD_SAMPLES['status.hostIP']! };
  const argv = [...doc.command, ...doc.args].map((a: string) => expand(a, env));
  const o = agentOptionsFromFlags(parseKnetArgs(argv.slice(1)).opts, pino({ level: 'silent' }));
  t.is(o.source.mode, 'etcd');
  t.deepEqual(o.source.mode === 'etcd' && o.source.etcd.endpoints, ['http://192.168.3.146:2379']);
});

test('agent and proxy reach the API server through the ConfigMap\'s kubeconfig: its real address, the pod\'s token and CA', (t) => {
  const text = configMap().data['kubeconfig.conf'];
  const dir = mkdtempSync(join(tmpdir(), 'knet-deploy-kc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'kubeconfig.conf'), text);
  const kc = loadKubeConfig(join(dir, 'kubeconfig.conf'));
  const server = new URL(kc.getCurrentCluster()!.server);
  t.is(server.protocol, 'https:');
  t.notRegex(server.hostname, /^10\.96\.|^kubernetes(\.default)?/, 'not the kubernetes Service');
  t.is(kc.getCurrentCluster()!.caFile, '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
  t.deepEqual(kc.getCurrentUser()!.authProvider, { name: 'tokenFile', config: { tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token' } });
  for (const name of ['agent', 'proxy']) {
    const argv = knetArgv(container(name));
    const flag = argv.find((a) => a.startsWith('--kubeconfig='))!;
    t.is(configMapKeyAt(container(name), flag.slice('--kubeconfig='.length)), 'kubeconfig.conf', name);
    t.false((container(name).env ?? []).some((e: Obj) => e.name.startsWith('KUBERNETES_SERVICE_')), `${name}: no in-cluster address override`);
  }
});

test('the harness rejects what the CLI rejects', (t) => {
  t.throws(() => parseKnetArgs(['agent', '--etcd-endpoint=http://x:1']));
  t.throws(() => parseKnetArgs(['agent', '--healthz-port=http']));
  t.throws(() => parseKnetArgs(['proxy', '--kube-config=/x']));
  t.throws(() => parseKnetArgs(['proxy', 'stray']));
  t.throws(() => expand('--x=$(NOPE)', {}), { message: /NOPE/ });
});

test('the init container installs from the image\'s build into the host mounts', (t) => {
  const c = container('install-cni');
  t.deepEqual(c.command, ['/opt/knet/scripts/install-cni.sh']);
  const args = c.args as string[];
  const value = (flag: string) => args[args.indexOf(flag) + 1]!;
  const mounts = new Map((c.volumeMounts as Obj[]).map((m) => [m.mountPath, m.name]));
  const hostPath = (name: string) => (ds().spec.template.spec.volumes as Obj[]).find((v) => v.name === name)!.hostPath.path;
  t.is(hostPath(mounts.get(value('--bin-dir'))!), '/opt/cni/bin');
  t.is(hostPath(mounts.get(value('--conf-dir'))!), '/etc/cni/net.d');
  t.is(configMapKeyAt(c, value('--conflist')), '10-knet.conflist');
  // The flags themselves are run against the script in test/integration/install-cni.test.ts.
});

/** Resource -> verbs the code calls: the proxy's informers and the agent's kube subnet manager. */
function verbsUsed(): Map<string, Set<string>> {
  const used = new Map<string, Set<string>>();
  const add = (res: string, ...verbs: string[]) => used.set(res, new Set([...(used.get(res) ?? []), ...verbs]));
  const informer = readFileSync(join(ROOT, 'src/k8s/informer.ts'), 'utf8');
  for (const m of informer.matchAll(/new Kept<\w+>\('[^']*', '([^']+)'/g)) {
    const parts = m[1]!.split('/').filter(Boolean);
    // /api/v1/RESOURCE or /apis/GROUP/VERSION/RESOURCE
    const [group, resource] = parts[0] === 'api' ? ['', parts[2]] : [parts[1], parts[3]];
    add(`${group}/${resource}`, 'list', 'watch');
  }
  const kube = readFileSync(join(ROOT, 'src/agent/kube-source.ts'), 'utf8');
  const calls = new Set([...kube.matchAll(/this\.core\.(\w+)\(/g)].map((m) => m[1]!));
  const known: Record<string, [string, string]> = {
    readNode: ['/nodes', 'get'], listNode: ['/nodes', 'list'], patchNodeStatus: ['/nodes/status', 'patch'],
    // Only when the node name comes from POD_NAME; the DaemonSet sets NODE_NAME.
    readNamespacedPod: ['', ''],
  };
  for (const call of calls) {
    const k = known[call];
    if (!k) throw new Error(`kube-source.ts calls ${call}: add it to this test and to deploy/00-rbac.yaml`);
    if (k[0]) add(k[0], k[1]);
  }
  // Raw GETs (src/k8s/informer.ts getJson, listRaw) of core resources.
  for (const m of kube.matchAll(/(getJson|listRaw)\(this\.o\.kubeConfig, [`']\/api\/v1\/(\w+)/g)) {
    const [fn, resource] = [m[1]!, m[2]!];
    if (resource === 'nodes') add('/nodes', fn === 'getJson' ? 'get' : 'list');
    // namespaces/NS/pods/NAME: only when the node name comes from POD_NAME (see above).
    else if (resource !== 'namespaces') throw new Error(`kube-source.ts reads /api/v1/${resource}: add it to this test and to deploy/00-rbac.yaml`);
  }
  if (/new ListWatch/.test(kube)) add('/nodes', 'list', 'watch');
  return used;
}

test('the ClusterRole grants exactly what the agent and the proxy call', (t) => {
  const used = verbsUsed();
  t.deepEqual([...used.keys()].sort(), ['/nodes', '/nodes/status', '/services', 'discovery.k8s.io/endpointslices', 'networking.k8s.io/servicecidrs'], 'the calls this test knows about');
  const granted = new Map<string, Set<string>>();
  for (const r of one('ClusterRole').rules as Obj[]) {
    t.falsy(r.resourceNames);
    for (const g of r.apiGroups) for (const res of r.resources) {
      const k = `${g}/${res}`;
      granted.set(k, new Set([...(granted.get(k) ?? []), ...r.verbs]));
    }
  }
  t.deepEqual([...granted.keys()].sort(), [...used.keys()].sort());
  for (const [k, verbs] of granted) t.deepEqual([...verbs].sort(), [...used.get(k)!].sort(), k);
  // flannel's own ClusterRole for the kube subnet manager, less pods/get (see 00-rbac.yaml).
  t.deepEqual([...granted.get('/nodes')!].sort(), ['get', 'list', 'watch']);
  t.deepEqual([...granted.get('/nodes/status')!], ['patch']);
  // Nothing in the proxy writes to the API (no Events): the informers only list (with GET, on
  // the paths they watch) and watch; a new call or API client needs a new rule here.
  const src = readFileSync(join(ROOT, 'src/k8s/informer.ts'), 'utf8');
  t.deepEqual([...src.matchAll(/makeApiClient\((\w+)\)/g)].map((m) => m[1]), []);
  t.deepEqual([...src.matchAll(/method: '(\w+)'/g)].map((m) => m[1]), ['GET']);
  const listed = [...src.matchAll(/listRaw\(kc, '([^']+)'/g)].map((m) => m[1]!);
  t.deepEqual([...new Set(listed)].sort(), [...src.matchAll(/new Kept<\w+>\('[^']*', '([^']+)'/g)].map((m) => m[1]!).sort());
  t.notRegex(src, /Events?V1Api|createNamespacedEvent/);
  const binding = one('ClusterRoleBinding');
  t.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: one('ClusterRole').metadata.name });
  const sa = one('ServiceAccount');
  t.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
});

test('the ConfigMap\'s conflist is the repository\'s and passes the plugin\'s config parser', (t) => {
  const text = configMap().data['10-knet.conflist'];
  const list = JSON.parse(text);
  t.deepEqual(list, JSON.parse(readFileSync(join(ROOT, 'cni/10-knet.conflist'), 'utf8')));
  const knet = list.plugins.find((p: Obj) => p.type === 'knet');
  // A runtime hands each plugin its entry with the list's cniVersion and name.
  const conf = parseNetConf({ cniVersion: list.cniVersion, name: list.name, ...knet });
  t.is(conf.subnetFile, '/run/flannel/subnet.env');
  t.is(list.plugins[0].type, 'knet', 'knet first: portmap and bandwidth chain after it');
});

test('the ConfigMap\'s KubeProxyConfiguration and network config pass knet\'s parsers and agree', (t) => {
  const data = configMap().data;
  const cfg = parseKubeProxyConfig(data['kube-proxy.yaml']);
  t.is(cfg.mode, 'iptables');
  const settings = proxySettingsFromConfig(data['kube-proxy.yaml'], { nodeName: 'kube-node-1', nodeIPs: ['192.168.3.147'] });
  t.is(settings.nodeName, 'kube-node-1');
  const net = parseNetworkConfig(data['net-conf.json']);
  t.is(net.backend.type, 'vxlan');
  t.is(cfg.clusterCIDR, JSON.parse(data['net-conf.json']).Network, 'clusterCIDR is the pod network');
  t.deepEqual(Object.keys(data).sort(), ['10-knet.conflist', 'kube-proxy.yaml', 'kubeconfig.conf', 'net-conf.json'], 'no etcd endpoints: the kube subnet manager needs none');
});
