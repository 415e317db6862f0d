// vagrant/: the systemd units' ExecStart lines are accepted by the real CLI once systemd has
// filled in /etc/default/knet as provision.sh writes it; the lab's network config and
// KubeProxyConfiguration pass knet's parsers; the scripts and (where ruby is) the Vagrantfile
// are syntactically valid. Vagrant itself cannot run here.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { parseKnetArgs } from '../helpers/cli-args.ts';
import { agentOptionsFromFlags } from '../../src/agent/command.ts';
import { parseKubeProxyConfig } from '../../src/rules/config.ts';
import { parseNetworkConfig } from '../../src/subnet/config.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const VAGRANT = join(ROOT, 'vagrant');
const read = (f: string) => readFileSync(join(VAGRANT, f), 'utf8');

/** The unit's [Service] keys (one value per key; ExecStart must be a single line). */
function serviceSection(unit: string): Map<string, string> {
  const out = new Map<string, string>();
  let section = '';
  for (const raw of read(unit).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.endsWith('\\')) throw new Error(`${unit}: continuation lines are not used`);
    const sec = /^\[(\w+)\]$/.exec(line);
    if (sec) { section = sec[1]!; continue; }
    const kv = /^(\w+)=(.*)$/.exec(line);
    if (!kv) throw new Error(`${unit}: cannot read ${JSON.stringify(line)}`);
    if (section === 'Service') out.set(kv[1]!, kv[2]!);
  }
  return out;
}

/** The variables provision.sh writes to /etc/default/knet, with values for node-2 of the lab. */
function envFile(): Record<string, string> {
  const prov = read('provision.sh');
  const names = [...prov.matchAll(/echo "(KNET_[A-Z_]+)=/g)].map((m) => m[1]!);
  const sample: Record<string, string> = { KNET_NODE_NAME: 'node-2', KNET_NODE_IP: '192.168.56.12', KNET_ETCD_ENDPOINTS: 'http://192.168.56.11:2379' };
  if (names.sort().join() !== Object.keys(sample).sort().join()) throw new Error(`provision.sh writes ${names.join(', ')}; this test knows ${Object.keys(sample).join(', ')}`);
  return sample;
}

/** systemd's splitting of ExecStart (no quotes are used) and its ${VAR} expansion. */
function execStart(unit: string): string[] {
  const svc = serviceSection(unit);
  if (svc.get('EnvironmentFile') !== '/etc/default/knet') throw new Error(`${unit}: EnvironmentFile=/etc/default/knet expected`);
  const line = svc.get('ExecStart');
  if (!line) throw new Error(`${unit}: no ExecStart`);
  if (/["'$](?!\{)/.test(line.replace(/\$\{[A-Z_]+\}/g, ''))) throw new Error(`${unit}: quotes or $VAR are not expected`);
  const env = envFile();
  return line.split(/\s+/).map((w) => w.replace(/\$\{([A-Z_]+)\}/g, (_m, n: string) => {
    if (env[n] === undefined) throw new Error(`${unit}: \${${n}} is not written by provision.sh`);
    return env[n]!;
  }));
}

test('knet-agent.service runs `knet agent` with flags the CLI and the agent accept', (t) => {
  const argv = execStart('knet-agent.service');
  t.is(argv[0], '/usr/local/bin/knet');
  const parsed = parseKnetArgs(argv.slice(1));
  t.is(parsed.command, 'agent');
  const o = agentOptionsFromFlags(parsed.opts, pino({ level: 'silent' }));
  t.deepEqual(o.source.mode === 'etcd' && o.source.etcd.endpoints, ['http://192.168.56.11:2379']);
  t.is(o.publicIP, '192.168.56.12', 'the private network, not the NAT interface every VM shares');
  t.is(o.subnetFile, '/run/flannel/subnet.env');
});

test('knet-proxy.service runs `knet proxy --manifests` with flags the CLI accepts', (t) => {
  const argv = execStart('knet-proxy.service');
  t.is(argv[0], '/usr/local/bin/knet');
  const parsed = parseKnetArgs(argv.slice(1));
  t.is(parsed.command, 'proxy');
  t.is(parsed.opts.manifests, '/etc/knet/manifests');
  t.is(parsed.opts.config, '/etc/knet/kube-proxy.yaml');
  t.is(parsed.opts.hostnameOverride, 'node-2');
  t.deepEqual(parsed.opts.nodeIp, ['192.168.56.12'], 'no Node object in a manifest directory: the node IP is given');
  t.regex(read('provision.sh'), /install -m 0644 "\$HERE\/kube-proxy\.yaml" \/etc\/knet\/kube-proxy\.yaml/);
});

test('knet-etcd.service serves clients on the node\'s private address, where the agents look', (t) => {
  const argv = execStart('knet-etcd.service');
  t.is(argv[0], '/usr/bin/etcd');
  const flags = new Map(argv.slice(1).map((a) => a.replace(/^--/, '').split('=', 2) as [string, string]));
  t.deepEqual(flags.get('listen-client-urls')!.split(','), ['http://192.168.56.12:2379', 'http://127.0.0.1:2379']);
  t.is(flags.get('advertise-client-urls'), 'http://192.168.56.12:2379');
  t.regex(read('Vagrantfile'), /ETCD_IP = "#\{NET\}\.11"/, 'node-1 (.11) runs etcd');
});

test('the lab\'s network config and KubeProxyConfiguration pass knet\'s parsers and agree', (t) => {
  const net = parseNetworkConfig(read('net-conf.json'));
  t.is(net.backend.type, 'vxlan');
  const cfg = parseKubeProxyConfig(read('kube-proxy.yaml'));
  t.is(cfg.mode, 'iptables');
  t.is(cfg.clusterCIDR, JSON.parse(read('net-conf.json')).Network);
  t.regex(read('provision.sh'), /put \/coreos\.com\/network\/config <"\$HERE\/net-conf\.json"/);
});

test('provision.sh and pod.sh pass bash -n; the Vagrantfile provisions with provision.sh', (t) => {
  for (const f of ['provision.sh', 'pod.sh']) {
    const r = spawnSync('bash', ['-n', join(VAGRANT, f)], { encoding: 'utf8' });
    t.is(r.status, 0, `${f}: ${r.stderr}`);
  }
  t.regex(read('Vagrantfile'), /provision "shell", path: "provision\.sh", args: \[name, ip, ETCD_IP\]/);
  t.regex(read('Vagrantfile'), /debian\/bookworm64/);
  for (const unit of ['knet-etcd.service', 'knet-agent.service', 'knet-proxy.service']) {
    t.regex(read('provision.sh'), new RegExp(`"\\$HERE/${unit.replace('.', '\\.')}"`), `provision.sh installs ${unit}`);
  }
});

const ruby = ['/usr/bin/ruby', '/usr/local/bin/ruby'].find((p) => existsSync(p));
(ruby ? test : test.skip)('the Vagrantfile is valid Ruby (ruby -c; skipped where ruby is not installed)', (t) => {
  const r = spawnSync(ruby!, ['-c', join(VAGRANT, 'Vagrantfile')], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /Syntax OK/);
});
