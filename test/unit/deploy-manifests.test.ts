// deploy/: every manifest parses; the DaemonSet's command lines are accepted by the real CLI
// (and the agent's flags by its own option checks); the ClusterRole grants exactly what the
// proxy's informers use; the ConfigMap's conflist, KubeProxyConfiguration, flannel network
// config and etcd endpoints pass knet's own parsers.
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import pino from 'pino';
import { parseKnetArgs } from '../helpers/cli-args.ts';
import { agentOptionsFromFlags } from '../../src/agent/command.ts';
import { parseNetConf } from '../../src/cni/config.ts';
import { parseKubeProxyConfig, proxySettingsFromConfig } from '../../src/rules/config.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';
import { parseEndpoints } from '../../src/subnet/etcd-registry.ts';

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

test('the agent container\'s command line is accepted by `knet agent` and its option checks', (t) => {
  const c = container('agent');
  const parsed = parseKnetArgs(knetArgv(c));
  t.is(parsed.command, 'agent');
  const o = agentOptionsFromFlags(parsed.opts, pino({ level: 'silent' }));
  t.deepEqual(o.etcd.endpoints, parseEndpoints(configMap().data['etcd-endpoints']));
  t.is(o.publicIP, FIELD_SAMPLES['status.hostIP']);
  t.is(o.subnetFile, '/run/flannel/subnet.env');
  t.true(o.healthzPort > 0);
  // The readiness probe asks the port the agent serves.
  t.is(c.readinessProbe.httpGet.port, o.healthzPort);
  t.is(c.readinessProbe.httpGet.host, '127.0.0.1');
  // The subnet file lies on the host's /run/flannel, where the CNI plugin reads it.
  t.true((c.volumeMounts as Obj[]).some((m) => m.mountPath === '/run/flannel'));
});

test('the proxy container\'s command line is accepted by `knet proxy`; its config comes from the ConfigMap', (t) => {
  const c = container('proxy');
  const parsed = parseKnetArgs(knetArgv(c));
  t.is(parsed.command, 'proxy');
  t.is(parsed.opts.hostnameOverride, FIELD_SAMPLES['spec.nodeName']);
  t.is(parsed.opts.manifests, undefined, 'the Kubernetes API, not a manifest directory');
  t.is(parsed.opts.cleanup, undefined);
  const key = configMapKeyAt(c, parsed.opts.config as string);
  t.is(key, 'kube-proxy.yaml');
  const cfg = parseKubeProxyConfig(configMap().data[key!]);
  t.is(c.livenessProbe.httpGet.path, '/livez');
  t.is(`0.0.0.0:${c.livenessProbe.httpGet.port}`, cfg.healthzBindAddress ?? '(none)');
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

test('the ClusterRole grants list and watch on exactly the resources the proxy informers use', (t) => {
  const src = readFileSync(join(ROOT, 'src/k8s/informer.ts'), 'utf8');
  const used = new Set<string>();
  for (const m of src.matchAll(/new Kept<\w+>\('[^']*', '([^']+)'/g)) {
    const parts = m[1]!.split('/').filter(Boolean);
    // /api/v1/RESOURCE or /apis/GROUP/VERSION/RESOURCE
    const [group, resource] = parts[0] === 'api' ? ['', parts[2]] : [parts[1], parts[3]];
    used.add(`${group}/${resource}`);
  }
  t.deepEqual([...used].sort(), ['/nodes', '/services', 'discovery.k8s.io/endpointslices'], 'the informers this test knows about');
  const granted = new Map<string, Set<string>>();
  for (const r of one('ClusterRole').rules as Obj[]) {
    t.falsy(r.resourceNames);
    for (const g of r.apiGroups) for (const res of r.resources) {
      const k = `${g}/${res}`;
      granted.set(k, new Set([...(granted.get(k) ?? []), ...r.verbs]));
    }
  }
  t.deepEqual([...granted.keys()].sort(), [...used].sort());
  for (const [k, verbs] of granted) t.deepEqual([...verbs].sort(), ['list', 'watch'], k);
  // Nothing in the proxy writes to the API (no Events): the informers only list (with GET, on
  // the paths they watch) and watch; a new call or API client needs a new rule here.
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

test('the ConfigMap\'s KubeProxyConfiguration, network config and etcd endpoints pass knet\'s parsers and agree', (t) => {
  const data = configMap().data;
  const cfg = parseKubeProxyConfig(data['kube-proxy.yaml']);
  t.is(cfg.mode, 'iptables');
  const settings = proxySettingsFromConfig(data['kube-proxy.yaml'], { nodeName: 'kube-node-1', nodeIPs: ['192.168.3.147'] });
  t.is(settings.nodeName, 'kube-node-1');
  const net = parseNetworkConfig(data['net-conf.json']);
  t.is(net.backend.type, 'vxlan');
  t.is(cfg.clusterCIDR, JSON.parse(data['net-conf.json']).Network, 'clusterCIDR is the pod network');
  t.true(parseEndpoints(data['etcd-endpoints']).length > 0);
  t.is(data['kube-apiserver-host'], undefined, 'optional: a cluster-specific address, documented, not shipped');
});
