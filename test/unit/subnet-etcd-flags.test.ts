import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertEtcdPrefix, etcdClientOptions, parseEndpoints } from '../../src/subnet/etcd-registry.ts';
import { agentOptionsFromFlags } from '../../src/agent/command.ts';
import { makeLogger } from '../../src/util/log.ts';

const flags = (over: Record<string, unknown> = {}) => ({
  etcdEndpoints: 'http://127.0.0.1:2379', etcdPrefix: '/coreos.com/network', subnetFile: '/run/flannel/subnet.env',
  healthzPort: 0, metricsPort: 0, ipMasq: true, iptablesBackend: 'nft', subnetLeaseRenewMargin: 60, resyncPeriod: 60, ...over,
});

test('etcd endpoints and prefixes are validated', (t) => {
  t.deepEqual(parseEndpoints('http://10.0.0.1:2379, https://10.0.0.2:2379'), ['http://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  t.throws(() => parseEndpoints(''), { message: /no etcd endpoints/ });
  t.throws(() => parseEndpoints('10.0.0.1:2379'), { message: /invalid etcd endpoint/ });
  t.throws(() => parseEndpoints('ftp://10.0.0.1:2379'), { message: /scheme must be http or https/ });
  t.throws(() => parseEndpoints('http://10.0.0.1'), { message: /a port is required/ });
  assertEtcdPrefix('/coreos.com/network');
  for (const bad of ['coreos.com/network', '/a b', '/a//b', '/a\nb']) t.throws(() => assertEtcdPrefix(bad), { message: /invalid etcd prefix/ });
});

test('TLS and auth options: CA required, cert and key together, files read', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'knet-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['ca.pem', 'cert.pem', 'key.pem']) writeFileSync(join(dir, f), `fake ${f}`);
  const endpoints = ['https://127.0.0.1:2379'];
  t.throws(() => etcdClientOptions({ endpoints, certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') }), { message: /--etcd-cafile is required/ });
  t.throws(() => etcdClientOptions({ endpoints, caFile: join(dir, 'ca.pem'), certFile: join(dir, 'cert.pem') }), { message: /must be given together/ });
  const o = etcdClientOptions({ endpoints, caFile: join(dir, 'ca.pem'), certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), username: 'knet', password: 'pw' });
  t.is(o.credentials!.rootCertificate.toString(), 'fake ca.pem');
  t.is(o.credentials!.privateKey!.toString(), 'fake key.pem');
  t.deepEqual(o.auth, { username: 'knet', password: 'pw' });
  t.throws(() => etcdClientOptions({ endpoints, caFile: join(dir, 'missing.pem') }), { message: /ENOENT/ });
});

test('agent flags: bad values are refused with the flag name', (t) => {
  const log = makeLogger('test', 'silent');
  const o = agentOptionsFromFlags(flags({ iface: 'eth0', etcdPassword: 's3cret' }), log);
  t.is(o.iface, 'eth0');
  t.is(o.source.mode === 'etcd' && o.source.etcd.password, 's3cret');
  t.throws(() => agentOptionsFromFlags(flags({ iptablesBackend: 'ipvs' }), log), { message: /--iptables-backend must be nft or legacy/ });
  t.throws(() => agentOptionsFromFlags(flags({ etcdPrefix: 'rel' }), log), { message: /invalid etcd prefix/ });
  t.throws(() => agentOptionsFromFlags(flags({ etcdEndpoints: 'nope' }), log), { message: /invalid etcd endpoint/ });
});

test('agent flags: --kube-subnet-mgr takes the kube flags, checks them, and ignores the etcd ones', (t) => {
  const log = makeLogger('test', 'silent');
  const kube = (extra: Record<string, unknown>) => agentOptionsFromFlags(flags({
    kubeSubnetMgr: true, kubeAnnotationPrefix: 'flannel.alpha.coreos.com', netConfigPath: '/etc/kube-flannel/net-conf.json', setNodeNetworkUnavailable: 'true', ...extra,
  }), log);
  const o = kube({ kubeconfigFile: '/etc/knet/kubeconfig.conf', nodeName: 'node-1', etcdEndpoints: 'nope' });
  t.deepEqual(o.source, {
    mode: 'kube', annotationPrefix: 'flannel.alpha.coreos.com', netConfPath: '/etc/kube-flannel/net-conf.json', setNodeNetworkUnavailable: true,
    kubeconfig: '/etc/knet/kubeconfig.conf', nodeName: 'node-1',
  });
  t.is(kube({ setNodeNetworkUnavailable: 'false' }).source.mode === 'kube' && (kube({ setNodeNetworkUnavailable: 'false' }).source as { setNodeNetworkUnavailable: boolean }).setNodeNetworkUnavailable, false);
  t.throws(() => kube({ setNodeNetworkUnavailable: 'no' }), { message: /--set-node-network-unavailable must be true or false/ });
  t.throws(() => kube({ kubeAnnotationPrefix: 'a/b/c' }), { message: /at most one slash/ });
  t.throws(() => kube({ kubeAnnotationPrefix: 'Not_A_Domain' }), { message: /fqdn/ });
  t.throws(() => kube({ netConfigPath: 'net-conf.json' }), { message: /--net-config-path must be an absolute file path/ });
  t.throws(() => kube({ nodeName: 'Node_1' }), { message: /invalid --node-name "Node_1"/ });
  t.throws(() => kube({ kubeconfig: '/a', kubeconfigFile: '/b' }), { message: /name different files/ });
});
