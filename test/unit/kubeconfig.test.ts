// kubeconfig loading: a user's tokenFile (as in kubeadm's kube-proxy kubeconfig) is resolved
// against the kubeconfig's directory, as client-go does; mistyped sections are not a TypeError.
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig, useTokenFiles } from '../../src/k8s/kubeconfig.ts';

function dir(t: { teardown(f: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'knet-kubeconfig-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const kubeconfig = (user: string) => `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
users:
- name: u
  user: ${user}
`;

test('a relative tokenFile is relative to the kubeconfig, not to the working directory', (t) => {
  const d = dir(t);
  writeFileSync(join(d, 'token'), 'secret\n');
  writeFileSync(join(d, 'kubeconfig'), kubeconfig('{tokenFile: token}'));
  const kc = loadKubeConfig(join(d, 'kubeconfig'));
  t.deepEqual(kc.getCurrentUser()?.authProvider, { name: 'tokenFile', config: { tokenFile: join(d, 'token') } });
  writeFileSync(join(d, 'abs'), kubeconfig('{tokenFile: /var/run/token}'));
  t.deepEqual(loadKubeConfig(join(d, 'abs')).getCurrentUser()?.authProvider?.config, { tokenFile: '/var/run/token' });
});

test('users that are not a list of objects are skipped, not a TypeError', (t) => {
  const d = dir(t);
  for (const users of ['users: {a: 1}', 'users: [null, 3, {user: 7}, {name: u, user: {tokenFile: 5}}]', 'just text', '']) {
    writeFileSync(join(d, 'k'), users + '\n');
    const kc = new KubeConfig();
    t.notThrows(() => useTokenFiles(kc, join(d, 'k')), users);
  }
});
