// KubeProxyConfiguration validation (issue 15.10, 15.14, 15.16): what kube-proxy's validation
// refuses, knet refuses too, in `knet rules` (exit 2, file and line) and in `knet proxy` (it
// does not start); durations are Go durations; unknown fields are warned about.
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ConfigError, goDurationMs, parseKubeProxyConfig } from '../../src/rules/config.ts';
import { runRules } from '../../src/cli/rules.ts';
import { runProxy } from '../../src/cli/proxy-run.ts';
import { hasRawControl, hostileValue, paths, replaced } from '../helpers/hostile.ts';
import { stringify as toYaml } from 'yaml';

function tmp(t: import('ava').ExecutionContext, files: Record<string, string>): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'knet-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return Object.fromEntries(Object.entries(files).map(([name, text]) => { writeFileSync(join(dir, name), text); return [name, join(dir, name)]; }));
}

const SVC = 'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec: {clusterIP: 172.30.0.10, ports: [{port: 80}]}\n';

function rules(t: import('ava').ExecutionContext, config: string, manifests = SVC) {
  const f = tmp(t, { 'kube-proxy.yaml': config, 'in.yaml': manifests });
  let out = '';
  let err = '';
  const code = runRules({ file: [f['in.yaml']!], config: f['kube-proxy.yaml']!, nodeIp: ['192.168.0.2'], ipFamily: 'IPv4', interfaceAddress: [] }, (s) => { out += typeof s === 'string' ? s : Buffer.from(s).toString('utf8'); }, (s) => { err += s; });
  return { code, out, err };
}

// Each: config text, the error (field first, after "file:line:col: ").
const refused: Array<[string, RegExp]> = [
  ['nodePortAddresses: ["192.168.50.0/33"]', /:1:\d+: nodePortAddresses\[0\]: must be a valid CIDR \(or "primary"\), got "192.168.50.0\/33"/],
  ['nodePortAddresses: [" 10.0.0.0/8"]', /nodePortAddresses\[0\]: must be a valid CIDR/],
  ['nodePortAddresses: 10.0.0.0/8', /nodePortAddresses: expected a list, got "10.0.0.0\/8"/],
  ['nodePortAddresses: [primary, 10.0.0.0/8]', /nodePortAddresses\[0\]: "primary" must be the only entry/],
  ['clusterCIDR: 10.0.0.0/33', /clusterCIDR: must be a valid CIDR block/],
  ['clusterCIDR: "10.0.0.0/8, fd00::/48"', /clusterCIDR: must be a valid CIDR block .*" fd00::\/48"/],
  ['clusterCIDR: 10.0.0.0/8,10.1.0.0/16', /clusterCIDR: must be a valid dual-stack CIDR pair/],
  ['clusterCIDR: 10.0.0.0/8,fd00::/48,10.1.0.0/16', /clusterCIDR: only one CIDR allowed or a dual-stack pair/],
  ['detectLocal: {clusterCIDRs: [10.0.0.0/8, 300.0.0.0/8]}', /detectLocal\.clusterCIDRs\[1\]: must be a valid CIDR block/],
  ['hello', /expected a KubeProxyConfiguration mapping, got "hello"/],
  ['- clusterCIDR: 10.0.0.0/8', /expected a KubeProxyConfiguration mapping, got a list/],
  ['kind: Pod', /kind: expected KubeProxyConfiguration, got "Pod"/],
  ['apiVersion: v1', /apiVersion: expected kubeproxy\.config\.k8s\.io\/v1alpha1, got "v1"/],
  ['iptables: [1]', /iptables: expected a mapping, got \[1\]/],
  ['iptables: {syncPeriod: 0s}', /iptables\.syncPeriod: must be greater than 0/],
  ['iptables: {syncPeriod: -5s}', /iptables\.syncPeriod: must be greater than 0/],
  ['iptables: {syncPeriod: 30}', /iptables\.syncPeriod: expected a duration like "30s", got 30/],
  ['iptables: {syncPeriod: 3000000h}', /iptables\.syncPeriod: invalid duration "3000000h"/],
  ['iptables: {syncPeriod: 1constructor}', /iptables\.syncPeriod: invalid duration "1constructor"/],
  ['iptables: {syncPeriod: 1__proto__}', /iptables\.syncPeriod: invalid duration "1__proto__"/],
  ['iptables: {syncPeriod: 500ms}', /iptables\.syncPeriod: must be greater than or equal to iptables\.minSyncPeriod/],
  ['iptables: {minSyncPeriod: -1s}', /iptables\.minSyncPeriod: must be greater than or equal to 0/],
  ['iptables: {masqueradeBit: 32}', /iptables\.masqueradeBit: must be within the range \[0, 31\], got 32/],
  ['iptables: {masqueradeAll: "true"}', /iptables\.masqueradeAll: expected true or false, got "true"/],
  ['mode: nftables\nnftables: {minSyncPeriod: 1h, syncPeriod: 30s}', /nftables\.syncPeriod: must be greater than or equal to nftables\.minSyncPeriod/],
  ['mode: ebpf', /mode: unknown proxy mode "ebpf"/],
  ['mode: ipvs\nipvs: {scheduler: fastest}', /ipvs\.scheduler: must be one of rr, /],
  ['detectLocalMode: Pods', /detectLocalMode: unsupported value "Pods"/],
  ['detectLocalMode: BridgeInterface', /detectLocal\.bridgeInterface: must not be empty with detectLocalMode BridgeInterface/],
  ['detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: "veth -j ACCEPT"}', /detectLocal\.interfaceNamePrefix: not an interface name prefix/],
  ['bindAddress: 0.0.0.0.0', /bindAddress: not a valid IP address/],
  ['healthzBindAddress: 0.0.0.0:99999', /healthzBindAddress: must be a valid port, got "99999"/],
  ['metricsBindAddress: localhost:10249', /metricsBindAddress: must be a valid IP, got "localhost"/],
  ['metricsBindAddress: "127.0.0.1:"', /metricsBindAddress: must be IP:port/],
  ['oomScoreAdj: 2000', /oomScoreAdj: must be within the range \[-1000, 1000\], got 2000/],
  ['linux: {oomScoreAdj: -1001}', /linux\.oomScoreAdj: must be within the range/],
  ['conntrack: {maxPerCore: -1}', /conntrack\.maxPerCore: must be within the range \[0, /],
  ['linux: {conntrack: {tcpEstablishedTimeout: -1s}}', /linux\.conntrack\.tcpEstablishedTimeout: must be greater than or equal to 0/],
  ['configSyncPeriod: 0s', /configSyncPeriod: must be greater than 0/],
  ['udpIdleTimeout: -1ms', /udpIdleTimeout: must be greater than 0/],
  ['portRange: 300-200', /portRange: must be a valid port range/],
  ['clientConnection: {burst: -1}', /clientConnection\.burst: must be within the range \[0, /],
  ['featureGates: {NFTablesProxyMode: "on"}', /featureGates\.NFTablesProxyMode: expected true or false/],
  ['showHiddenMetricsForVersion: latest', /showHiddenMetricsForVersion: must be a version like 1\.30/],
  ['hostnameOverride: [a]', /hostnameOverride: expected a string, got \["a"\]/],
];

for (const [config, message] of refused) {
  test(`refused: ${config.replace(/\n/g, '; ')}`, (t) => {
    t.throws(() => parseKubeProxyConfig(config), { instanceOf: ConfigError, message });
    const r = rules(t, config);
    t.is(r.code, 2, r.err);
    t.regex(r.err, /^knet rules: \S*kube-proxy\.yaml:\d+:\d+: /);
    t.regex(r.err, message);
    t.is(r.out, '');
  });
}

test('the line and column point at the field', (t) => {
  const text = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\niptables:\n  masqueradeBit: 14\n  syncPeriod: 10ms\n';
  const e = t.throws(() => parseKubeProxyConfig(text, undefined, 'kp.yaml'), { instanceOf: ConfigError });
  t.is(e!.message, 'kp.yaml:6:15: iptables.syncPeriod: must be greater than or equal to iptables.minSyncPeriod (1000 ms)');
  const listed = t.throws(() => parseKubeProxyConfig('nodePortAddresses:\n  - 10.0.0.0/8\n  - 192.168.50.0/33\n', undefined, 'kp.yaml'));
  t.regex(listed!.message, /^kp\.yaml:3:5: nodePortAddresses\[1\]: /);
  t.regex(t.throws(() => parseKubeProxyConfig('iptables: {syncPeriod: 1s\n', undefined, 'kp.yaml'))!.message, /^kp\.yaml:\d+:\d+: /);
  t.regex(t.throws(() => parseKubeProxyConfig('a: 1\n---\nb: 2\n', undefined, 'kp.yaml'))!.message, /^kp\.yaml:2:1: expected one YAML document/);
});

test('accepted: long and odd durations as Go reads them; bind addresses get their default port', (t) => {
  const c = parseKubeProxyConfig('iptables: {syncPeriod: 720h, minSyncPeriod: 0s}\nhealthzBindAddress: 127.0.0.1\nmetricsBindAddress: "::1"\nbindAddress: 192.168.0.2');
  t.is(c.syncPeriodMs, 720 * 3_600_000);
  t.is(c.minSyncPeriodMs, 0);
  t.is(c.healthzBindAddress, '127.0.0.1:10256');
  t.is(c.metricsBindAddress, '[::1]:10249');
  const table: Array<[string, number | null]> = [
    ['0', 0], ['-0', 0], ['+5m', 300_000], ['1h2m3.5s', 3_723_500], ['.5s', 500], ['1.s', 1000], ['1µs', 0.001], ['1μs', 0.001], ['1us', 0.001],
    ['2562047h', 2562047 * 3_600_000], ['2562048h', null], ['', null], ['1', null], ['s', null], ['1.5.3s', null], ['1e3s', null], [' 1s', null], ['1s ', null], ['1d', null], ['-', null], ['.s', null],
  ];
  for (const [text, ms] of table) t.is(goDurationMs(text), ms, text);
});

test('fields kube-proxy does not know are warned about (a typo is not silently a default)', (t) => {
  const c = parseKubeProxyConfig('clusterCidr: 10.0.0.0/8\niptables: {syncperiod: 5s}\nlinux: {conntrack: {maxperCore: 1}}\n"\\e[2J": 1');
  t.deepEqual(c.warnings, ['clusterCidr: unknown field, ignored', '\\u001b[2J: unknown field, ignored', 'iptables.syncperiod: unknown field, ignored', 'linux.conntrack.maxperCore: unknown field, ignored']);
  const r = rules(t, 'clusterCidr: 10.0.0.0/8\n');
  t.is(r.code, 0);
  t.regex(r.err, /kube-proxy\.yaml: clusterCidr: unknown field, ignored/);
});

test('arbitrary JSON in any field of a config: a config or a ConfigError, never anything else', (t) => {
  const full = {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', mode: 'iptables', clusterCIDR: '10.244.0.0/16', hostnameOverride: 'n1',
    bindAddress: '0.0.0.0', healthzBindAddress: '0.0.0.0:10256', metricsBindAddress: '127.0.0.1:10249', nodePortAddresses: ['10.0.0.0/8'],
    detectLocalMode: 'ClusterCIDR', detectLocal: { clusterCIDRs: ['10.244.0.0/16'], bridgeInterface: 'cni0', interfaceNamePrefix: 'veth' },
    iptables: { masqueradeBit: 14, masqueradeAll: false, localhostNodePorts: true, syncPeriod: '30s', minSyncPeriod: '1s' },
    nftables: { masqueradeBit: 14, syncPeriod: '30s', minSyncPeriod: '1s' }, linux: { masqueradeAll: false, oomScoreAdj: -999, conntrack: { maxPerCore: 32768 } },
    conntrack: { min: 131072, tcpEstablishedTimeout: '24h' }, featureGates: { A: true }, clientConnection: { burst: 10, qps: 5 }, portRange: '', configSyncPeriod: '15m',
  };
  fc.assert(fc.property(fc.constantFrom(...paths(full)), hostileValue, fc.constantFrom(undefined, 'nftables', 'iptables'), (path, value, mode) => {
    const text = toYaml(replaced(full, path, value));
    try {
      parseKubeProxyConfig(text, mode, 'kp.yaml');
    } catch (e) {
      if (!(e instanceof ConfigError)) throw new Error(`${path.join('.')} = ${JSON.stringify(value)}: ${String(e)}`);
      if (hasRawControl(e.message)) throw new Error(`raw control characters: ${e.message}`);
      if (!/^kp\.yaml:\d+:\d+: /.test(e.message)) throw new Error(`no position: ${e.message}`);
    }
  }), { numRuns: 300 });
  t.pass();
});

test('knet proxy refuses a config kube-proxy refuses, before touching anything, naming file, line and field', async (t) => {
  const f = tmp(t, { 'kube-proxy.yaml': 'clusterCIDR: 10.244.0.0/16\nnodePortAddresses: ["192.168.50.0/33"]\n' });
  await t.throwsAsync(runProxy({ config: f['kube-proxy.yaml']!, manifests: '/nonexistent', iptablesBackend: 'nft', nodeIp: [], lockTimeout: '5', userspaceWorkers: '0' }, pino({ level: 'silent' })),
    { instanceOf: ConfigError, message: /kube-proxy\.yaml:2:\d+: nodePortAddresses\[0\]: must be a valid CIDR/ });
});

test('knet proxy --manifests-settle: a duration from 0s to 1m, only with --manifests, refused before touching anything', async (t) => {
  const base = { iptablesBackend: 'nft', nodeIp: [], lockTimeout: '5', userspaceWorkers: '0' };
  const silent = pino({ level: 'silent' });
  for (const [opts, message] of [
    [{ manifests: '/nonexistent', manifestsSettle: 'soon' }, /--manifests-settle: invalid duration "soon"/],
    [{ manifests: '/nonexistent', manifestsSettle: '-1s' }, /--manifests-settle: from 0s to 1m/],
    [{ manifests: '/nonexistent', manifestsSettle: '2m' }, /--manifests-settle: from 0s to 1m/],
    [{ manifestsSettle: '10ms' }, /--manifests-settle: only with --manifests/],
  ] as const) await t.throwsAsync(runProxy({ ...base, ...opts }, silent), { message }, JSON.stringify(opts));
});

test('knet rules: alias bombs and recursive aliases exit 2 with file and line; ordinary aliases work', (t) => {
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 9; i++) bomb.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
  const bombed = `${SVC}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n${bomb.join('\n')}\n`;
  const r = rules(t, '', bombed);
  t.is(r.code, 2);
  t.regex(r.err, /in\.yaml:10:1: aliases expand the document to \d+ nodes .*resource exhaustion/);
  const recursive = rules(t, '', `${SVC}---\napiVersion: v1\nkind: Service\nmetadata: &m {name: loop, namespace: ns, labels: {self: *m}}\n`);
  t.is(recursive.code, 2);
  t.regex(recursive.err, /in\.yaml:\d+:1: an alias refers to a node that contains it/);
  const shared = 'apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: ns}, spec: {clusterIP: 172.30.0.10, ports: &ports [{name: p, port: 80}]}}\n- {apiVersion: v1, kind: Service, metadata: {name: web2, namespace: ns}, spec: {clusterIP: 172.30.0.11, ports: *ports}}\n';
  const ok = rules(t, '', shared);
  t.is(ok.code, 0, ok.err);
  t.regex(ok.out, /ns\/web2:p has no endpoints/);
});

test('knet rules: broken manifests and configs name file and line, escaped', (t) => {
  const badYaml = rules(t, '', `${SVC}---\nmetadata:\n  name: "unterminated\n`);
  t.is(badYaml.code, 2);
  t.regex(badYaml.err, /in\.yaml:\d+:\d+: /);
  const badConfig = rules(t, 'iptables:\n  syncPeriod: [\n');
  t.is(badConfig.code, 2);
  t.regex(badConfig.err, /kube-proxy\.yaml:\d+:\d+: /);
  const escaped = rules(t, '', '{"kind": "Service", "metadata": {"name": "\u001b[31m"}}}');
  t.is(escaped.code, 2);
  t.false(hasRawControl(escaped.err), JSON.stringify(escaped.err));
  const kind = rules(t, '', 'apiVersion: v1\nkind: "Evil\\e[2J\\u009b"\nmetadata: {name: "x\\ny"}\n');
  t.is(kind.code, 0);
  t.regex(kind.err, /Evil\\u001b\[2J\\u009b x\\u000ay is not used by knet rules/);
  t.false(hasRawControl(kind.err));
});
